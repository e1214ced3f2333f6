"""The repository stands alone: a clone anywhere runs its tests with nothing beside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from services import captures_dir

ROOT = Path(__file__).resolve().parents[2]
#: What reaching outside the clone looks like: the team folder beside it, or its variable.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "CARAWAY_" + "SHARED"]))


def test_no_tracked_file_reaches_outside_the_repository() -> None:
    files = subprocess.run(
        ["git", "ls-files", "caraway", "tests", ".ci", "pyproject.toml"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert files, "git ls-files listed nothing: is this a clone?"
    offenders = [
        f"{name}:{number}"
        for name in files
        if name.endswith((".py", ".toml", ".cfg", ".ini")) or name.startswith(".ci/")
        for number, line in enumerate((ROOT / name).read_text().splitlines(), 1)
        if OUTSIDE.search(line) and name != "tests/unit/test_standalone.py"
    ]
    assert offenders == []


def test_captures_are_in_the_repository() -> None:
    folder = captures_dir()
    assert folder.is_relative_to(ROOT)
    names = {path.name for path in folder.iterdir()}
    assert {"redis_messages.json", "amqp.json", "interop.json"} <= names


def test_every_install_is_pinned() -> None:
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    for needed in ("redis", "mypy", "ruff", "pytest", "sqlalchemy", "celery", "hatchling"):
        assert needed in pins, f"constraints.txt does not pin {needed}"
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'PIP_CONSTRAINT="$PWD/constraints.txt"' in ci
