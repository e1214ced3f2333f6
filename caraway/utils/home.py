"""Where caraway keeps its own files when the user names a place: ``$CARAWAY_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "CARAWAY_HOME"


def home_folder() -> Path | None:
    """``$CARAWAY_HOME`` (``~`` expanded), or None when it is not set."""
    home = os.environ.get(ENV_HOME)
    return Path(home).expanduser() if home else None
