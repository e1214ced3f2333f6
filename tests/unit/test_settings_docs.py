"""docs/settings.md and docs/differences.md are what tools/gen-settings-docs writes from the
settings table: change a row, run the tool, commit both (the docs cannot drift)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from caraway.settings import SETTINGS, Status

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_settings_docs_are_what_the_table_generates() -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen-settings-docs"), "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr


def test_every_setting_is_on_the_reference_page_and_every_gap_on_the_differences_page() -> None:
    reference = (ROOT / "docs" / "settings.md").read_text()
    differences = (ROOT / "docs" / "differences.md").read_text()
    for row in SETTINGS.values():
        assert f"| `{row.name}` |" in reference
        assert (f"| `{row.name}` |" in differences) is (row.status is not Status.WORKS)
