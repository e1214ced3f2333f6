"""Helpers for testing code that uses caraway: a test app and an embedded worker.

``caraway.contrib.testing.app`` builds apps with in-memory engines;
``caraway.contrib.testing.worker.start_worker`` runs a real worker in a thread;
``caraway.contrib.testing.tasks`` holds the ``ping`` task it checks with, and
``caraway.contrib.testing.manager.Manager`` waits and asserts on running workers.
"""
