"""``caraway inspect``, ``control``, ``status`` and ``revoke``: talk to running workers.

Replies print as one block per worker (``->  host: OK``) with tables for task lists;
``--json`` prints the replies as one JSON object for scripts. No reply at all exits with
69 (EX_UNAVAILABLE), as Celery does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from caraway.cli.audit import method_row
from caraway.cli.base import comma_list, ignored_warning, refusal, state_of
from caraway.settings import Status
from caraway.utils.text import did_you_mean
from caraway.worker.commands import COMMANDS

#: Exit code when no worker answered (sysexits' EX_UNAVAILABLE, as Celery).
EX_UNAVAILABLE = 69
NO_REPLY = "No nodes replied within time constraint"


def _common(fun: Callable[..., Any]) -> Callable[..., Any]:
    fun = click.option(
        "-d", "--destination", callback=comma_list, multiple=True, metavar="NODES",
        help="Only these workers (comma separated node names, e.g. w1@host).",
    )(fun)  # fmt: skip
    fun = click.option(
        "-t", "--timeout", type=float, default=1.0, show_default=True,
        help="Seconds to wait for replies.",
    )(fun)  # fmt: skip
    fun = click.option("-j", "--json", "as_json", is_flag=True, help="Print JSON.")(fun)
    return fun


def _commands(kind: str) -> dict[str, Any]:
    return {name: spec for name, spec in COMMANDS.items() if spec.kind == kind}


def _arguments(spec: Any, values: tuple[str, ...]) -> dict[str, Any]:
    """The command's arguments from the words after its name (the last may repeat)."""
    names = spec.args
    if len(values) > len(names) and not spec.variadic:
        raise click.UsageError(f"{spec.name} takes at most {len(names)} argument(s)")
    arguments: dict[str, Any] = {}
    for index, (name, convert) in enumerate(names):
        if index >= len(values):
            break
        if spec.variadic and index == len(names) - 1:
            arguments[name] = [convert(value) for value in values[index:]]
        else:
            try:
                arguments[name] = convert(values[index])
            except ValueError:
                raise click.UsageError(f"{name} must be a {convert.__name__}") from None
    if spec.name == "query_task":
        arguments = {"ids": arguments.get("id", [])}
    elif spec.name == "registered" and values:
        arguments = {"taskinfoitems": list(values)}
    return arguments


def _send(
    ctx: click.Context, method: str, arguments: dict[str, Any], destination: list[str],
    timeout: float,
) -> dict[str, Any]:  # fmt: skip
    app = state_of(ctx).app
    replies = app.control.broadcast(
        method, arguments=arguments, destination=destination or None, reply=True,
        timeout=timeout,
    )  # fmt: skip
    merged: dict[str, Any] = {}
    for reply in replies or ():
        merged.update(reply)
    return merged


def _show(ctx: click.Context, replies: dict[str, Any], as_json: bool) -> None:
    if not replies:
        click.echo(f"Error: {NO_REPLY}", err=True)
        ctx.exit(EX_UNAVAILABLE)
    if as_json:
        click.echo(json.dumps(replies, default=str))
        return
    for node in sorted(replies):
        click.echo(format_reply(node, replies[node]))
    count = len(replies)
    click.echo(f"\n{count} node{'s' if count != 1 else ''} online.")


def format_reply(node: str, reply: Any) -> str:
    """One worker's reply, for people."""
    if isinstance(reply, dict) and set(reply) <= {"ok", "error"} and reply:
        status = "ERROR" if "error" in reply else "OK"
        return f"->  {node}: {status}\n{_indent(str(reply.get('error', reply.get('ok'))))}"
    if isinstance(reply, list):
        if not reply:
            return f"->  {node}: OK\n    - empty -"
        if all(isinstance(item, dict) for item in reply):
            return f"->  {node}: OK\n{_indent(_task_table(reply))}"
        return f"->  {node}: OK\n" + "\n".join(f"    * {item}" for item in reply)
    if reply is None:
        return f"->  {node}: OK"
    return f"->  {node}: OK\n{_indent(json.dumps(reply, indent=4, sort_keys=True, default=str))}"


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


def _task_table(items: list[dict[str, Any]]) -> str:
    rows = []
    for item in items:
        request = item.get("request", item)
        when = item.get("eta") or _time(request.get("time_start"))
        args = f"{request.get('args')!r} {request.get('kwargs')!r}"
        rows.append((str(request.get("id", "")), str(request.get("name", "")), when, args))
    headers = ("ID", "NAME", "ETA" if items and "eta" in items[0] else "STARTED", "ARGS")
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(3)]
    lines = ["  ".join(h.ljust(widths[i]) if i < 3 else h for i, h in enumerate(headers))]
    for row in rows:
        lines.append("  ".join(c.ljust(widths[i]) if i < 3 else c for i, c in enumerate(row)))
    return "\n".join(lines)


def _time(value: Any) -> str:
    if not value:
        return "-"
    return datetime.fromtimestamp(float(value)).astimezone().isoformat(" ", "seconds")


def _help(kind: str) -> str:
    return "\n".join(
        f"  {name:<16} {spec.help}"
        for name, spec in sorted(_commands(kind).items())
        if name == spec.name
    )


class _MethodHelp(click.Command):
    """Lists the methods under the usage line."""

    def __init__(self, *args: Any, kind: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kind = kind

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        formatter.write_text("Methods:")
        formatter.write(_help(self.kind) + "\n")


def _list_methods(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--list``: the methods of this command, one a line, then stop (as Celery's)."""
    if value and isinstance(ctx.command, _MethodHelp):
        click.echo(_help(ctx.command.kind))
        ctx.exit()


_list_option = click.option(
    "--list", is_flag=True, is_eager=True, expose_value=False, callback=_list_methods,
    help="List the methods and exit.",
)  # fmt: skip


def _run(
    ctx: click.Context, kind: str, method: str, words: tuple[str, ...],
    destination: list[str], timeout: float, as_json: bool,
) -> None:  # fmt: skip
    row = method_row(kind, method)
    if row is not None and row.status is Status.REFUSED:
        raise click.UsageError(refusal(row))
    if row is not None and row.status is Status.IGNORED:
        click.echo(ignored_warning(row), err=True)
    known = _commands(kind)
    spec = known.get(method)
    if spec is None:
        raise click.UsageError(
            f"unknown {kind} method {method!r}.{did_you_mean(method, known)} "
            f"See caraway {kind} --help."
        )
    replies = _send(ctx, spec.name, _arguments(spec, words), destination, timeout)
    _show(ctx, replies, as_json)


@click.command(cls=_MethodHelp, kind="inspect")
@click.argument("method")
@click.argument("args", nargs=-1)
@_list_option
@_common
@click.pass_context
def inspect(
    ctx: click.Context, method: str, args: tuple[str, ...], destination: list[str],
    timeout: float, as_json: bool,
) -> None:  # fmt: skip
    """Ask the workers: caraway inspect active|reserved|scheduled|registered|stats|ping|...

    Examples: caraway -A proj inspect active; caraway -A proj inspect query_task ID
    """
    _run(ctx, "inspect", method, args, destination, timeout, as_json)


@click.command(cls=_MethodHelp, kind="control")
@click.argument("method")
@click.argument("args", nargs=-1)
@_list_option
@_common
@click.pass_context
def control(
    ctx: click.Context, method: str, args: tuple[str, ...], destination: list[str],
    timeout: float, as_json: bool,
) -> None:  # fmt: skip
    """Change the workers: caraway control rate_limit TASK 10/m, add_consumer QUEUE, ...

    Examples: caraway -A proj control enable_events; caraway -A proj control pool_grow 2
    """
    _run(ctx, "control", method, args, destination, timeout, as_json)


@click.command()
@_common
@click.pass_context
def status(ctx: click.Context, destination: list[str], timeout: float, as_json: bool) -> None:
    """Which workers are online (they answer a ping)."""
    _show(ctx, _send(ctx, "ping", {}, destination, timeout), as_json)


@click.command()
@click.argument("task_ids", nargs=-1, required=True)
@click.option("--terminate", is_flag=True, help="Also stop the tasks if they are running.")
@click.option(
    "-s", "--signal", default="SIGTERM", show_default=True,
    help="Signal named in the revocation (with --terminate).",
)  # fmt: skip
@_common
@click.pass_context
def revoke(
    ctx: click.Context, task_ids: tuple[str, ...], terminate: bool, signal: str,
    destination: list[str], timeout: float, as_json: bool,
) -> None:  # fmt: skip
    """Revoke tasks by id: no worker will start them (now or after a restart)."""
    app = state_of(ctx).app
    replies = app.control.revoke(
        list(task_ids), destination=destination or None, terminate=terminate, signal=signal,
        reply=True, timeout=timeout,
    )  # fmt: skip
    merged: dict[str, Any] = {}
    for reply in replies or ():
        merged.update(reply)
    if not merged and destination:
        _show(ctx, merged, as_json)
    if as_json:
        click.echo(json.dumps(merged))
        return
    for node in sorted(merged):
        click.echo(format_reply(node, merged[node]))
    count = len(task_ids)
    click.echo(f"Revoked {count} task{'s' if count != 1 else ''}.")
