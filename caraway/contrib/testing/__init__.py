"""Helpers for testing code that uses caraway: a test app and an embedded worker.

``caraway.contrib.testing.app`` builds apps with in-memory engines;
``caraway.contrib.testing.worker.start_worker`` runs a real worker in a thread.
"""
