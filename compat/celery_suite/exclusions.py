"""Tests of Celery's integration suite left out because they exercise Celery internals.

Key: a test id relative to the sdist root (a file, a class, or a test; parameters ignored).
Value: one line saying which internal it needs. Everything else runs and is counted.
"""

from __future__ import annotations

EXCLUDED: dict[str, str] = {}
