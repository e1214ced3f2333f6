"""Comments and docs cite Celery's wire spec as ``§x.y``: the copy in ``docs/celery-wire.md``
(a clone outside the team has no ``shared/``), and every cited section must exist there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "docs" / "celery-wire.md"
CITED = re.compile(r"§(\d+(?:\.\d+)?)")


def _sections() -> set[str]:
    return set(re.findall(r"^#+ (\d+(?:\.\d+)?)[. ]", SPEC.read_text(), re.MULTILINE))


def _citing_files() -> list[Path]:
    files = [*ROOT.glob("caraway/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("docs/*.md")]
    return [path for path in [*files, ROOT / "README.md"] if path != SPEC]


def test_every_cited_section_exists_in_the_spec_copy() -> None:
    sections = _sections()
    missing = [
        f"{path.relative_to(ROOT)}:{number}: §{ref}"
        for path in _citing_files()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for ref in CITED.findall(line)
        if ref not in sections
    ]

    assert {"1.3", "3.6", "5.3", "6.5", "7.3"} <= sections
    assert missing == []


def test_files_that_cite_the_spec_name_the_copy_in_docs() -> None:
    unnamed = [
        str(path.relative_to(ROOT))
        for path in _citing_files()
        if CITED.search(text := path.read_text()) and "celery-wire.md" not in text
    ]

    assert unnamed == []
