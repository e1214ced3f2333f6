"""Fixtures shared by the unit tests (no services needed)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def captures_dir() -> Path:
    """The golden captures of real Celery traffic, in the shared/ checkout beside the repo."""
    path = Path(__file__).resolve().parents[3] / "shared" / "spec" / "captures"
    if not path.is_dir():
        pytest.fail(
            f"Celery captures not found at {path}: check out shared/ beside the caraway repo "
            "(the unit tests read shared/spec/captures/*.json)."
        )
    return path
