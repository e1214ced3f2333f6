"""``caraway call`` sends a task by name; ``caraway result`` shows what a task left behind."""

from __future__ import annotations

import json
import pprint
from datetime import datetime
from typing import Any

import click

from caraway import states
from caraway.cli.base import state_of
from caraway.exceptions import TimeoutError
from caraway.result import AsyncResult
from caraway.utils.text import did_you_mean
from caraway.utils.time import parse_iso


def _json(kind: type, example: str) -> Any:
    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            loaded = json.loads(value)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON ({exc}); for example {example}") from None
        if not isinstance(loaded, kind):
            raise click.BadParameter(
                f"expected a JSON {'array' if kind is list else 'object'}, e.g. {example}"
            )
        return loaded

    return convert


def _iso(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    try:
        return parse_iso(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO-8601 time, e.g. 2030-01-31T09:00:00+00:00 (no offset: UTC)"
        ) from None


def _expires(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> float | datetime | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return _iso(ctx, param, value)


@click.command()
@click.argument("name")
@click.option("-a", "--args", callback=_json(list, "'[2, 2]'"), help="Positional args, JSON.")
@click.option("-k", "--kwargs", callback=_json(dict, "'{\"x\": 1}'"), help="Keyword args, JSON.")
@click.option("--countdown", type=click.FloatRange(min=0), help="Run in this many seconds.")
@click.option("--eta", callback=_iso, help="Run at this ISO-8601 time.")
@click.option("--queue", help="Queue to send to (default: by the app's routes).")
@click.option(
    "--expires", callback=_expires,
    help="Discard the task if it has not started by then: seconds from now, or ISO-8601 time.",
)  # fmt: skip
@click.option("--serializer", help="Serializer of the arguments (default: task_serializer).")
@click.option("--priority", type=click.IntRange(0, 255), help="Message priority, 0-255.")
@click.option("--exchange", help="Exchange to publish to (default: by the app's routes).")
@click.option("--routing-key", help="Routing key of the message (default: by the app's routes).")
@click.pass_context
def call(
    ctx: click.Context,
    name: str,
    args: list[Any] | None,
    kwargs: dict[str, Any] | None,
    countdown: float | None,
    eta: datetime | None,
    queue: str | None,
    expires: float | datetime | None,
    serializer: str | None,
    priority: int | None,
    exchange: str | None,
    routing_key: str | None,
) -> None:
    """Send task NAME to the workers and print its id."""
    state = state_of(ctx)
    app = state.app
    if state.app_given and name not in app.tasks:
        # Only a near miss is worth a word: tasks of modules in `include` are not known here.
        hint = did_you_mean(name, app.tasks.regular())
        if hint:
            click.echo(f"Note: {name!r} is not a task of this app.{hint} Sent anyway.", err=True)
    sent = app.send_task(
        name, args, kwargs, countdown=countdown, eta=eta, queue=queue, expires=expires,
        serializer=serializer, priority=priority, exchange=exchange, routing_key=routing_key,
    )  # fmt: skip
    click.echo(sent.id)


@click.command()
@click.argument("task_id")
@click.option("--traceback", is_flag=True, help="Show the traceback of a failed task.")
@click.option(
    "--timeout", type=click.FloatRange(min=0),
    help="Wait at most this many seconds for the task to finish (default: as long as it takes).",
)  # fmt: skip
@click.option("--no-wait", is_flag=True, help="Show the state now, finished or not.")
@click.option("-t", "--task", metavar="NAME", help="The task's name, to use its result class.")
@click.pass_context
def result(
    ctx: click.Context, task_id: str, traceback: bool, timeout: float | None, no_wait: bool,
    task: str | None,
) -> None:  # fmt: skip
    """Wait for task TASK_ID to finish and show its result, as ``celery result`` does.

    Prints the return value of a successful task; otherwise the state and what is known
    (the exception of a failure, the meta of a custom state such as PROGRESS). With
    --timeout, a task still unfinished by then is an error (exit 1); --no-wait shows the
    state at once; --traceback shows a failure's traceback without waiting.
    """
    app = state_of(ctx).app
    if not (traceback or no_wait):
        _wait(app.tasks[task].AsyncResult(task_id) if task else app.AsyncResult(task_id),
              timeout)  # fmt: skip
    meta = app.backend.get_task_meta(task_id)
    status = meta["status"]
    if traceback:
        text = meta.get("traceback")
        click.echo(text.rstrip() if text else f"{status}: no traceback stored for {task_id}")
        return
    if status == states.SUCCESS:
        click.echo(_pretty(meta["result"]))
    elif status == states.PENDING:
        click.echo(f"PENDING: no result stored yet (unknown task id, or not run yet): {task_id}")
    elif status in states.EXCEPTION_STATES:
        exc = app.backend.exception_from_meta(meta)
        click.echo(f"{status}: {type(exc).__name__}: {exc}")
    else:
        click.echo(f"{status}: {_pretty(meta['result'])}")


def _wait(found: AsyncResult[Any], timeout: float | None) -> None:
    try:
        found.get(timeout=timeout, propagate=False, disable_sync_subtasks=False)
    except TimeoutError:
        raise click.ClickException(
            f"task {found.id} did not finish within {timeout} s (state now: {found.state})"
        ) from None


def _pretty(value: Any) -> str:
    return value if isinstance(value, str) else pprint.pformat(value, width=100)
