"""The embedded SQLite file holds every task's arguments and results: only its owner reads it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from caraway import Celery


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual umask 022, under which files are readable by every local user."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_the_default_file_its_wal_and_the_folders_made_for_it_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "made" / "home"
    monkeypatch.setenv("CARAWAY_HOME", str(home))
    app = Celery("private", set_as_current=False)
    try:
        app.send_task("private.task", args=("secret",))
        app.backend.mark_as_done("some-id", "secret result")

        files = sorted(home.iterdir())
        assert [f.name for f in files] == [
            "caraway.sqlite3", "caraway.sqlite3-shm", "caraway.sqlite3-wal",
        ]  # fmt: skip
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert (mode(home), mode(home.parent)) == (0o700, 0o700)
    finally:
        app.close()


@pytest.mark.usefixtures("open_umask")
def test_a_named_file_is_private_and_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    app = Celery("named", broker=f"sqlite:///{folder}/b.sqlite3", set_as_current=False)
    try:
        app.send_task("named.task")

        assert mode(folder / "b.sqlite3") == 0o600
        assert mode(folder) == 0o755  # not ours to change
    finally:
        app.close()
