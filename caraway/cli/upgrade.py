"""``caraway upgrade settings FILE``: rename Celery 3 setting names in a config module.

Celery 4 renamed its settings (``CELERY_ALWAYS_EAGER`` became ``task_always_eager``); caraway
reads both, but a project moving over is easier to read with one spelling. Assignments at the
start of a line are renamed; comments, strings and everything else stay as they are.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import click

from caraway.settings import OLD_NAMES

_ASSIGNMENT = re.compile(r"^(?P<indent>\s*)(?P<name>[A-Z][A-Z0-9_]*)(?=\s*(?::[^=]*)?=)", re.M)


def upgraded(source: str, django: bool) -> tuple[str, int]:
    """``source`` with old setting names renamed, and how many were."""
    count = 0

    def rename(match: re.Match[str]) -> str:
        nonlocal count
        new = OLD_NAMES.get(match["name"])
        if new is None:
            return match.group()
        count += 1
        # Django reads settings through the CELERY_ namespace: CELERY_TASK_ALWAYS_EAGER.
        return match["indent"] + (f"CELERY_{new.upper()}" if django else new)

    return _ASSIGNMENT.sub(rename, source), count


@click.group()
def upgrade() -> None:
    """Upgrade a project written for an older Celery."""


@upgrade.command()
@click.argument("filename", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--django", is_flag=True, help="Keep the CELERY_ namespace (Django settings).")
@click.option("--compat", is_flag=True, help="The same as --django: upper case, CELERY_ prefix.")
@click.option("--no-backup", is_flag=True, help="Do not keep the original as FILENAME.orig.")
def settings(filename: Path, django: bool, compat: bool, no_backup: bool) -> None:
    """Rename Celery 3 setting names (CELERY_ALWAYS_EAGER, BROKER_URL...) in FILENAME."""
    text, count = upgraded(filename.read_text(), django or compat)
    if not count:
        click.echo(f"{filename}: no old setting names, nothing changed.")
        return
    if not no_backup:
        shutil.copyfile(filename, filename.with_name(filename.name + ".orig"))
    filename.write_text(text)
    click.echo(f"{filename}: renamed {count} setting(s).")
