"""Fixtures for ``tests/cli``: every test gets its own project folder and module names.

``sys.modules`` outlives a test, so module names are unique per test; the current app and
``sys.path`` are restored afterwards.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import APP_MODULE, ISOLATED_VARIABLES, Project

from caraway import current


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep the app modules a test imports, and the app they make current, to that test."""
    # Saved by hand: monkeypatch forgets a variable that was absent, and `-b` sets one.
    saved = {name: os.environ.pop(name, None) for name in ISOLATED_VARIABLES}
    monkeypatch.setattr(sys, "path", list(sys.path))
    modules = set(sys.modules)
    current_app = current._current_app.get()
    default_app = list(current._default_app)
    yield
    for name in set(sys.modules) - modules:
        if name.startswith("cli_"):
            del sys.modules[name]
    current._current_app.set(current_app)
    current._default_app[:] = default_app
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    module = f"cli_proj_{uuid.uuid4().hex[:8]}"
    proj = Project(tmp_path, module)
    proj.write(module, APP_MODULE.format(name=module))
    monkeypatch.chdir(tmp_path)
    try:
        yield proj
    finally:
        proj.kill_all()
