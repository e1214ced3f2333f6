"""docs/ builds as a site (mkdocs-material, ``mkdocs.yml``) with ``--strict``: a broken link,
a missing anchor or a page left out of the navigation fails here, not on publication."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_build_strictly_with_the_generated_pages(tmp_path: Path) -> None:
    site = tmp_path / "site"
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # the theme's end-of-life banner
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    assert "database_url" in (site / "differences" / "index.html").read_text()
    assert "result_compression" in (site / "settings" / "index.html").read_text()
