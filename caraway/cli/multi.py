"""``caraway multi``: start, stop and restart several detached workers from one command line.

Nodes are named on the command line (``w1 w2``, ``w1@%h``) or counted (``3`` means
``celery1``..``celery3``, ``--range-prefix`` changes the prefix); every other argument goes to
each ``caraway worker``. An option with a node selector applies to some nodes only:
``-c:1-3 10`` (node positions 1 to 3), ``-Q:image images`` (the node named ``image``),
``-L:4,5 DEBUG`` (``-L`` is Celery's short form of ``--loglevel`` here too). Each worker
runs detached with ``--pidfile`` (default ``%n.pid``) and ``--logfile`` (default ``%n%I.log``),
and ``stop``, ``stopwait``, ``kill`` and ``restart`` find the workers through the same pidfile
template, so they need the same ``--pidfile`` as ``start`` (nothing else is remembered).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from caraway.cli.audit import rows_for
from caraway.cli.base import ignored_warning, state_of
from caraway.cli.worker import worker as worker_command
from caraway.settings import Status
from caraway.utils.log import expand_node_path

#: How long ``stopwait`` and ``restart`` wait for each worker's warm shutdown.
STOP_WAIT = 60.0
#: Celery's multi spells ``--loglevel`` as ``-L`` too (``-l`` is taken by the option parser).
_ALIASES = {"-L": "-l"}
_COMMANDS = (
    "start", "stop", "stopwait", "stop_verify", "restart", "kill", "show", "names", "get",
    "expand", "help",
)  # fmt: skip
#: multi's own switches (not the workers'): Celery's, as caraway.cli.audit lists them.
_SWITCHES = {spelling: row for row in rows_for("multi") for spelling in row.spellings}


@dataclass
class Node:
    """One worker of the cluster: its full name and the ``caraway worker`` arguments."""

    name: str
    args: list[str] = field(default_factory=list)

    def path(self, template: str) -> Path:
        return Path(expand_node_path(template, self.name))

    @property
    def pidfile(self) -> Path:
        return self.path(_value(self.args, "--pidfile") or "%n.pid")

    def pid(self) -> int | None:
        """The pid its pidfile names, if that process is alive."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _running(pid) else None


def _running(pid: int) -> bool:
    """Alive, and not a zombie: a detached worker's parent is init, which in a container may
    never reap it, so a killed worker can linger as one."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal check is all there is
    return state != "Z"


@dataclass
class _Option:
    spelling: str  # as the worker command takes it (``--concurrency`` or ``-c``)
    key: str  # the worker parameter it sets: two spellings of one option override each other
    value: str | None  # None for a flag
    selector: str | None = None


def _worker_options() -> tuple[dict[str, str], set[str]]:
    """Every spelling the worker command accepts -> its parameter name; and the flags."""
    spellings: dict[str, str] = {}
    flags: set[str] = set()
    for param in worker_command.params:
        if isinstance(param, click.Option):
            for spelling in [*param.opts, *param.secondary_opts]:
                spellings[spelling] = str(param.name)
                if param.is_flag or param.count:
                    flags.add(spelling)
    return spellings, flags


def parse(argv: Sequence[str]) -> tuple[list[str], list[_Option], dict[str, str]]:
    """Node specs, the worker options (with selectors), and multi's own options."""
    spellings, flags = _worker_options()
    specs: list[str] = []
    options: list[_Option] = []
    own: dict[str, str] = {}
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("-") or token == "-":
            if options:
                raise click.UsageError(
                    f"{token!r} follows the options: name the nodes first, or give the "
                    "option it belongs to its value with '=' (e.g. --queues=a,b)"
                )
            specs.append(token)
            continue
        spelling, eq, inline = token.partition("=")
        spelling, colon, selector = spelling.partition(":")
        spelling = _ALIASES.get(spelling, spelling)
        if spelling in ("--range-prefix", "--hostname", "--cmd"):
            own[spelling], i = _take_value(tokens, i, spelling, inline if eq else None)
            continue
        if spelling in _SWITCHES:
            own[_SWITCHES[spelling].spellings[-1]] = ""
            continue
        if spelling not in spellings:
            raise click.UsageError(
                f"caraway worker has no option {spelling!r} (see caraway worker --help)"
            )
        if spelling in flags:
            value = None
        else:
            value, i = _take_value(tokens, i, spelling, inline if eq else None)
        options.append(_Option(spelling, spellings[spelling], value, selector if colon else None))
    return specs, options, own


def _take_value(tokens: list[str], i: int, spelling: str, inline: str | None) -> tuple[str, int]:
    if inline is not None:
        return inline, i
    if i >= len(tokens):
        raise click.UsageError(f"{spelling} needs a value")
    return tokens[i], i + 1


def node_names(specs: Sequence[str], own: dict[str, str]) -> list[str]:
    """``3`` -> ``celery1..3``; ``w1`` -> ``w1@<host>``; ``w1@%h`` filled in."""
    host = own.get("--hostname") or socket.gethostname()
    if len(specs) == 1 and specs[0].isdigit():
        prefix = own.get("--range-prefix", "celery")
        specs = [f"{prefix}{n}" for n in range(1, int(specs[0]) + 1)]
    if not specs:
        raise click.UsageError("name the nodes to act on: e.g. `multi start w1 w2` or `3`")
    names = [spec if "@" in spec else f"{spec}@{host}" for spec in specs]
    return [name.replace("%h", host) for name in names]


def _selected(selector: str, position: int, name: str) -> bool:
    """Does ``-x:<selector>`` apply to the node at ``position`` (1-based) named ``name``?"""
    short = name.partition("@")[0]
    for part in selector.split(","):
        low, dash, high = part.partition("-")
        if dash and low.isdigit() and high.isdigit():
            if int(low) <= position <= int(high):
                return True
        elif part in (str(position), short, name):
            return True
    return False


def build_nodes(argv: Sequence[str]) -> tuple[list[Node], dict[str, str]]:
    """The nodes of ``argv`` with the worker arguments each one gets."""
    specs, options, own = parse(argv)
    nodes = []
    for position, name in enumerate(node_names(specs, own), start=1):
        chosen: dict[str, _Option] = {}
        for option in options:  # plain options first, then the selected ones override them
            if option.selector is None:
                chosen[option.key] = option
        for option in options:
            if option.selector is not None and _selected(option.selector, position, name):
                chosen[option.key] = option
        args = ["-n", name]
        for option in chosen.values():
            if option.key == "hostname":
                continue  # the node name is multi's to give
            args += [option.spelling] if option.value is None else [option.spelling, option.value]
        nodes.append(Node(name, args))
    return nodes, own


def _value(args: Sequence[str], *spellings: str) -> str | None:
    for index, arg in enumerate(args):
        if arg in spellings and index + 1 < len(args):
            return args[index + 1]
    return None


def _global_args(ctx: click.Context) -> list[str]:
    """The ``caraway`` options this command was given, for each worker's command line."""
    state = state_of(ctx)
    given = {"-A": state.app_spec, "-b": state.broker, "--config": state.config,
             "--result-backend": state.result_backend}  # fmt: skip
    args: list[str] = []
    for flag, value in given.items():
        if value:
            args += [flag, value]
    return args


Say = Callable[[str], None]


def _start(nodes: Iterable[Node], command: list[str], say: Say, verbose: bool) -> int:
    failed = 0
    for node in nodes:
        args = [*command, "worker", *node.args, "--detach"]
        if _value(node.args, "--pidfile") is None:
            args += ["--pidfile", "%n.pid"]
        if _value(node.args, "-f", "--logfile") is None:
            args += ["--logfile", "%n%I.log"]
        if verbose:
            click.echo(f"> {node.name}: {' '.join(args)}")
        code = subprocess.call(args)
        say(f"> {node.name}: {'OK' if code == 0 else f'FAILED (exit {code})'}")
        failed += code != 0
    return 1 if failed else 0


def _signal(nodes: Iterable[Node], signum: int, say: Say) -> list[tuple[Node, int]]:
    """Send ``signum`` to each running node; the nodes signalled, with their pids."""
    sent = []
    for node in nodes:
        pid = node.pid()
        if pid is None:
            say(f"> {node.name}: DOWN")
            continue
        os.kill(pid, signum)
        say(f"> {node.name}: {signal.Signals(signum).name} -> {pid}")
        sent.append((node, pid))
    return sent


def _wait_gone(sent: list[tuple[Node, int]], say: Say, timeout: float = STOP_WAIT) -> int:
    deadline = time.monotonic() + timeout
    waiting = list(sent)
    while waiting and time.monotonic() < deadline:
        still = []
        for node, pid in waiting:
            if _running(pid):  # its pidfile goes a moment before the process does
                still.append((node, pid))
            else:
                say(f"> {node.name}: OK")
        waiting = still
        if waiting:
            time.sleep(0.1)
    for node, pid in waiting:
        click.echo(f"> {node.name}: still running ({pid}) after {timeout:.0f} s", err=True)
    return 1 if waiting else 0


def _quietly(text: str) -> None:
    """``-q``: progress lines are dropped; failures still go to stderr."""


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("action", type=click.Choice(_COMMANDS))
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def multi(ctx: click.Context, action: str, argv: tuple[str, ...]) -> None:
    """Start, stop, restart or kill several detached workers, as `celery multi` does.

    \b
      caraway -A proj multi start 3 -c 2 -l INFO       # celery1..3@<host>
      caraway -A proj multi start image video -c 3 -c:image 10
      caraway -A proj multi start 4 -Q:1,2 images -Q default --pidfile=/run/%n.pid
      caraway -A proj multi stopwait 3 --pidfile=/run/%n.pid
      caraway multi show|names 3 ...                   # the command lines / the node names
      caraway multi get w1@box w1 w2 ... / expand %n.log 3 ...   # one command line / paths

    Every option after the nodes goes to each worker; `-x:SEL value` only to the nodes SEL
    names (positions 1-3, 1,3 or node names). Pidfiles (--pidfile, default %n.pid) are how
    stop/stopwait/kill/restart find the workers: give them the same --pidfile as start.
    multi's own switches: -q/--quiet (no progress lines), --verbose (print each command run).
    """
    if action == "help":
        click.echo(ctx.get_help())
        return
    first, argv = (argv[0], argv[1:]) if action in ("get", "expand") and argv else ("", argv)
    nodes, own = build_nodes(argv)
    for switch in own:
        if switch in _SWITCHES and _SWITCHES[switch].status is Status.IGNORED:
            click.echo(ignored_warning(_SWITCHES[switch]), err=True)
    say: Say = _quietly if "--quiet" in own or state_of(ctx).quiet else click.echo
    base = [own["--cmd"]] if "--cmd" in own else [sys.executable, "-m", "caraway"]
    command = [*base, *_global_args(ctx)]
    if action == "names":
        click.echo("\n".join(node.name for node in nodes))
    elif action == "expand":  # a path template, as each node's %n, %h, %d, %i... fill it
        click.echo("\n".join(expand_node_path(first, node.name) for node in nodes))
    elif action in ("show", "get"):
        chosen = [node for node in nodes if action == "show" or first in _names(node)]
        if not chosen:
            raise click.UsageError(f"no node named {first!r} among {_names_of(nodes)}")
        click.echo("\n".join(" ".join([*command, "worker", *node.args]) for node in chosen))
    elif action == "start":
        ctx.exit(_start(nodes, command, say, "--verbose" in own))
    elif action == "kill":
        _signal(nodes, signal.SIGKILL, say)
    else:
        sent = _signal(nodes, signal.SIGTERM, say)
        if action == "stop":
            return
        code = _wait_gone(sent, say)  # stopwait and stop_verify (Celery's old name) end here
        if action == "restart":
            code = code or _start(nodes, command, say, "--verbose" in own)
        ctx.exit(code)


def _names(node: Node) -> tuple[str, str]:
    return node.name, node.name.partition("@")[0]


def _names_of(nodes: Iterable[Node]) -> str:
    return ", ".join(node.name for node in nodes)
