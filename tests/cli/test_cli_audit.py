"""caraway.cli.audit against the installed Celery (the test extra): every Celery command and
option has a row with a status; caraway's commands accept what the table says works or is
ignored, refuse what it says is refused with the reason, and warn about the ignored ones.

Celery's commands are measured through its click objects (and ``celery multi``'s own parser
for its actions and switches), so a flag a new Celery adds fails here until it has a row.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

import click
import pytest
from celery.bin.celery import celery as celery_command
from celery.bin.multi import MultiTool
from celery.worker.control import Panel
from click.testing import CliRunner

from caraway.cli import multi as caraway_multi
from caraway.cli.audit import CLI, METHODS, Flag
from caraway.cli.main import cli
from caraway.settings import Status
from caraway.worker.commands import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
Key = tuple[str, frozenset[str]]


def _key(row: Flag) -> Key:
    return row.command, frozenset(row.spellings)


def _walk(command: click.Command, path: str) -> set[Key]:
    found = {(path, frozenset())} if path else set()
    for param in command.params:
        if isinstance(param, click.Option):
            found.add((path, frozenset([*param.opts, *param.secondary_opts])))
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            found |= _walk(sub, f"{path} {name}".strip())
    return found


@cache
def celery_keys() -> frozenset[Key]:
    """Celery's commands and options: its click tree, multi's own actions and switches, and
    the methods of inspect and control (its remote-control panel)."""
    keys = _walk(celery_command, "") | {("", frozenset())}
    tool = MultiTool()
    keys |= {(f"multi {action}", frozenset()) for action in tool.commands}
    switches: dict[str, set[str]] = {}
    for spelling, dest in tool.reserved_options:
        switches.setdefault(dest, set()).add(spelling)
    keys |= {("multi", frozenset(spellings)) for spellings in switches.values()}
    keys |= {(f"{meta.type} {name}", frozenset()) for name, meta in Panel.meta.items()}
    return frozenset(keys)


ROWS = [*CLI, *METHODS]
IDS = [row.label or "caraway" for row in ROWS]


def _rows(status: Status) -> list[Flag]:
    return [row for row in ROWS if row.status is status]


def test_every_celery_command_and_option_has_a_row() -> None:
    missing = celery_keys() - {_key(row) for row in ROWS}

    assert sorted((c, sorted(s)) for c, s in missing) == []


def test_every_row_is_one_of_celerys_once() -> None:
    keys = [_key(row) for row in ROWS]
    plugins = {"flower"} if importlib.util.find_spec("flower") is None else set()

    assert len(keys) == len(set(keys))
    stale = {key for key in keys if key not in celery_keys() and key[0] not in plugins}
    assert sorted((c, sorted(s)) for c, s in stale) == []


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_every_row_has_a_status_and_a_test_or_a_reason(row: Flag) -> None:
    assert isinstance(row.status, Status)
    if row.status is Status.WORKS:
        assert row.test
        assert not row.reason
    else:
        assert len(row.reason) > 20, f"{row.label}: say why in a sentence"
        assert not row.test


def _test_source(reference: str) -> str:
    path, _, name = reference.partition("::")
    source = (ROOT / path).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(source, node) or ""
    raise AssertionError(f"no test {reference}")


@pytest.mark.parametrize("row", _rows(Status.WORKS), ids=[r.label for r in _rows(Status.WORKS)])
def test_the_test_named_for_a_working_row_runs_it(row: Flag) -> None:
    source = _test_source(row.test)
    words = row.spellings or ((row.command.split()[-1],) if row.command else ("--version",))
    if row in METHODS:  # a method is asked for by name, or through app.control / inspect()
        assert f'"{words[0]}"' in source or f".{words[0]}(" in source, row.test
        return

    assert any(f'"{word}' in source for word in words), f"{row.test} never uses {row.label}"


def _caraway_command(path: str) -> click.Command | None:
    command: click.Command | None = cli
    for word in path.split():
        if not isinstance(command, click.Group):
            return None
        command = command.get_command(click.Context(command), word)
    return command


def _accepted(row: Flag) -> bool:
    if row in METHODS:
        kind, method = row.command.split()
        return method in COMMANDS and COMMANDS[method].kind == kind
    if row.command.startswith("multi"):
        action = row.command.partition(" ")[2]
        if action:
            return action in caraway_multi._COMMANDS
        return all(spelling in caraway_multi._SWITCHES for spelling in row.spellings)
    command = _caraway_command(row.command)
    if command is None:
        return False
    spellings = {
        spelling
        for param in command.params
        if row.status is Status.IGNORED or not str(param.name).startswith("celery_")
        for spelling in (*param.opts, *param.secondary_opts)
    }
    return set(row.spellings) <= spellings


ACCEPTED = _rows(Status.WORKS) + _rows(Status.IGNORED)


@pytest.mark.parametrize("row", ACCEPTED, ids=[r.label or "caraway" for r in ACCEPTED])
def test_caraway_accepts_every_working_and_ignored_row(row: Flag) -> None:
    assert _accepted(row), f"caraway lacks {row.label}"


def _argv(row: Flag, spelling: str) -> list[str]:
    value = ["1"] if row.takes_value else []
    if row in METHODS:  # sent for real: to an in-process broker no worker listens to
        return ["-b", f"memory://audit-{id(row)}", *row.command.split(), "-t", "0.1"]
    if row.command.startswith("multi"):
        return ["multi", "names", "2", spelling]
    return [*row.command.split(), spelling, *value, "--help"]


def _flat(text: str) -> str:
    return " ".join(text.split())


def _own_spellings(command: str) -> set[str]:
    """Spellings a caraway command uses for options of its own (``events -d`` is --dump)."""
    found = _caraway_command(command)
    params = found.params if found is not None else []
    return {s for p in params if not str(p.name).startswith("celery_") for s in p.opts}


@pytest.mark.parametrize("row", _rows(Status.REFUSED), ids=[r.label for r in _rows(Status.REFUSED)])
def test_a_refused_row_stops_with_its_reason(row: Flag) -> None:
    spellings = [s for s in row.spellings if s not in _own_spellings(row.command)]
    assert spellings or not row.spellings, f"no spelling of {row.label} is refused"
    if row in METHODS:  # once a worker answers it, the row must say it works
        assert row.command.split()[1] not in COMMANDS, f"{row.label} exists now"
    for spelling in spellings or ("",):
        argv = _argv(row, spelling) if spelling else row.command.split()
        result = CliRunner().invoke(cli, argv)

        assert result.exit_code == 2, (argv, result.output)
        assert _flat(row.reason) in _flat(result.output), argv


@pytest.mark.parametrize("row", _rows(Status.IGNORED), ids=[r.label for r in _rows(Status.IGNORED)])
def test_an_ignored_row_warns_once_naming_it_and_goes_on(row: Flag) -> None:
    for spelling in row.spellings or ("",):
        argv = _argv(row, spelling)
        result = CliRunner().invoke(cli, argv)

        assert result.exit_code in ((0, 69) if row in METHODS else (0,)), (argv, result.output)
        warning = _flat(f"Celery's {row.label} changes nothing in caraway: {row.reason}")
        assert _flat(result.stderr).count(warning) == 1, argv
