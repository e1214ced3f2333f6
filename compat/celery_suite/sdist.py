"""The pinned Celery sdist: downloaded once with pip, checked by hash, unpacked in a cache."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

VERSION = "5.7.0"
#: sha256 of celery-5.7.0.tar.gz as published on PyPI; a different file is refused.
SHA256 = "6a5dfcf6662287204f009a02002b9e66c83d4105e47ebabdc7079108772fc6f0"
#: Git-ignored: Celery's files are never committed to this repository.
CACHE = Path(__file__).resolve().parent / ".cache"


class SdistError(RuntimeError):
    """The sdist could not be fetched, or it is not the file we pinned."""


def sdist_root(cache: Path = CACHE) -> Path:
    """The unpacked ``celery-5.7.0`` folder (with ``t/integration``), fetched if needed."""
    root = cache / f"celery-{VERSION}"
    if (root / "t" / "integration" / "conftest.py").is_file():
        return root
    archive = _download(cache)
    with tarfile.open(archive) as tar:
        tar.extractall(cache, filter="data")
    return root


def _download(cache: Path) -> Path:
    archive = cache / f"celery-{VERSION}.tar.gz"
    if not archive.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
                   "--no-deps", "--disable-pip-version-check", "-q", "-d", str(cache),
                   f"celery=={VERSION}"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not archive.is_file():
            raise SdistError(f"pip could not download celery=={VERSION}: {done.stderr.strip()}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != SHA256:
        archive.unlink()
        raise SdistError(f"{archive.name} has sha256 {digest}, expected {SHA256}; removed it")
    return archive
