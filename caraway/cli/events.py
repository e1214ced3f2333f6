"""``caraway events``: a live view of workers and tasks, or ``--dump`` of every event."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime
from typing import Any

import click

from caraway.cli.base import celery_flags, state_of
from caraway.events import EventReceiver, State

#: ANSI: cursor home, clear the screen (the view redraws in place).
CLEAR = "\x1b[H\x1b[2J"
#: Event fields every event has: left out of the dump's detail.
COMMON = ("hostname", "timestamp", "type", "clock", "pid", "utcoffset")


def dump_line(event: dict[str, Any]) -> str:
    """``hostname [time] type: field=value ...``, one line per event."""
    when = datetime.fromtimestamp(float(event.get("timestamp") or 0)).isoformat(" ", "seconds")
    fields = ", ".join(
        f"{key}={json.dumps(value, default=str)}"
        for key, value in event.items()
        if key not in COMMON
    )
    return f"{event.get('hostname')} [{when}] {event.get('type')}: {fields}"


def render(state: Any, width: int = 100, tasks: int = 20) -> str:
    """The view: workers with their status, then the latest tasks."""
    lines = [f"caraway events — {time.strftime('%H:%M:%S')}  (Ctrl-C to quit)", ""]
    lines.append(f"{'WORKER':<40} {'STATUS':<8} {'ACTIVE':>6} {'PROCESSED':>9}  LOAD")
    for worker in list(state.workers.values()):
        status = "online" if worker.alive else "offline"
        load = " ".join(f"{v:.2f}" for v in worker.loadavg or ())
        lines.append(
            f"{worker.hostname[:40]:<40} {status:<8} {worker.active or 0:>6} "
            f"{worker.processed or 0:>9}  {load}"
        )
    if not state.workers:
        lines.append("(no worker seen yet)")
    lines += ["", f"{'TASK':<36} {'NAME':<24} {'STATE':<9} {'WORKER':<20} RESULT"]
    for uuid, task in state.itertasks(tasks):
        result = task.exception if task.exception else task.result
        line = (
            f"{uuid:<36} {(task.name or '?')[:24]:<24} {task.state:<9} "
            f"{(task.hostname or '-')[:20]:<20} {'' if result is None else result}"
        )
        lines.append(line[:width])
    lines.append(f"\n{state.event_count} events, {state.task_count} tasks seen.")
    return "\n".join(lines)


@celery_flags("events")
@click.command()
@click.option("-d", "--dump", is_flag=True, help="Print every event as a line instead.")
@click.option(
    "-F", "--frequency", "--freq", type=float, default=1.0, show_default=True,
    help="Seconds between redraws of the view.",
)  # fmt: skip
@click.option("--timeout", type=float, help="Stop after this many seconds (default: never).")
@click.pass_context
def events(ctx: click.Context, dump: bool, frequency: float, timeout: float | None) -> None:
    """Watch the cluster: workers (online by heartbeat) and tasks as they run.

    Task events need workers started with -E (or `caraway control enable_events`).
    """
    app = state_of(ctx).app
    state = State()
    deadline = None if timeout is None else time.monotonic() + timeout
    with EventReceiver(app) as receiver:
        if dump:
            click.echo("-> caraway events: dumping events (Ctrl-C to stop)")
            for event in receiver.itercapture(timeout=timeout):
                click.echo(dump_line(event))
            return
        next_draw = 0.0
        try:
            while deadline is None or time.monotonic() < deadline:
                remaining = frequency if deadline is None else deadline - time.monotonic()
                for event in receiver.itercapture(
                    timeout=max(0.0, min(frequency, remaining)), wakeup=next_draw == 0.0
                ):
                    state.event(event)
                if time.monotonic() >= next_draw:
                    width = shutil.get_terminal_size((120, 40)).columns
                    click.echo(CLEAR + render(state, width), nl=False)
                    next_draw = time.monotonic() + frequency
        except KeyboardInterrupt:
            pass
        click.echo("")
