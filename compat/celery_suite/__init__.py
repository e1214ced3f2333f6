"""Celery's own integration tests, run against caraway workers with ``celery`` imported as caraway.

``python -m compat.celery_suite --broker redis`` fetches the pinned Celery sdist, runs the
selected files of ``t/integration`` and prints per file: collected / passed / failed / excluded.
"""
