"""Celery's published examples, from the pinned Celery sdist on PyPI, with ``celery`` imports
changed to ``caraway`` and nothing else.

The sdist is downloaded once with ``pip download`` into the git-ignored ``.cache/pypi`` and
checked against its sha256: Celery's files are measured against, never committed.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from services import missing

CELERY_VERSION = "5.7.0"
SDIST = f"celery-{CELERY_VERSION}.tar.gz"
SDIST_SHA256 = "6a5dfcf6662287204f009a02002b9e66c83d4105e47ebabdc7079108772fc6f0"
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "pypi"

#: The one substitution: ``from celery import ...`` lines.
IMPORT_LINE = re.compile(r"^(\s*)from celery import ", re.MULTILINE)


def celery_sdist() -> Path:
    """The Celery sdist, downloaded once; a changed file fails the test."""
    path = CACHE / SDIST
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        download = CACHE / f"download-{CELERY_VERSION}"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             "-d", str(download), f"celery=={CELERY_VERSION}"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            missing(f"cannot download {SDIST} from PyPI: {done.stderr[-500:]}")
        (download / SDIST).replace(path)
        shutil.rmtree(download, ignore_errors=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == SDIST_SHA256, f"{path} is not the pinned {SDIST} (sha256 {digest})"
    return path


def copy_example(name: str, target: Path) -> int:
    """Extract ``examples/<name>`` into ``target`` with ``celery`` imports changed; returns
    how many lines were changed."""
    prefix = f"celery-{CELERY_VERSION}/examples/{name}/"
    with tarfile.open(celery_sdist()) as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.startswith(prefix):
                destination = target / member.name.removeprefix(prefix)
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                destination.write_bytes(source.read())
    changed = 0
    for path in target.rglob("*.py"):
        text, count = IMPORT_LINE.subn(r"\1from caraway import ", path.read_text())
        path.write_text(text)
        changed += count
    return changed
