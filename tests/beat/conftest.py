"""Fixtures for ``tests/beat``: beat processes against the embedded SQLite file and Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from beat_support import BeatProject


@pytest.fixture
def beat_project(tmp_path: Path) -> Iterator[Callable[[str], BeatProject]]:
    """``beat_project(source)``: a folder with ``beat_app.py``; its processes die after."""
    made: list[BeatProject] = []

    def make(source: str) -> BeatProject:
        project = BeatProject(tmp_path, source)
        made.append(project)
        return project

    yield make
    for project in made:
        project.close()
