"""``caraway beat``: run the periodic-task scheduler; ``caraway beat schedules ...``: edit the
database scheduler's schedules while beats run."""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime
from typing import Any

import click

from caraway.beat import PeriodicTasks, Service
from caraway.beat.entry import schedule_to_dict
from caraway.cli.base import celery_flags, state_of
from caraway.cli.privileges import drop_privileges
from caraway.cli.worker import LOG_LEVELS, _octal, _pidfile
from caraway.schedules import crontab
from caraway.schedules import solar as solar_schedule
from caraway.utils.log import setup_logging
from caraway.worker.daemon import detach as become_daemon

SOLAR_HELP = "EVENT:LAT:LON, e.g. sunset:48.85:2.35"


@celery_flags("beat")
@click.group(invoke_without_command=True)
@click.option(
    "-l",
    "--loglevel",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="WARNING",
    show_default=True,
    help="Logging level.",
)
@click.option(
    "-f", "--logfile", type=click.Path(dir_okay=False),
    help="Log here, not stderr (default: beat_logfile).",
)  # fmt: skip
@click.option(
    "-s",
    "--schedule",
    "schedule_filename",
    metavar="FILE",
    help="File of the last run times (PersistentScheduler); default: beat_schedule_filename.",
)
@click.option(
    "-S",
    "--scheduler",
    metavar="CLASS",
    help=(
        "Scheduler: persistent (default), database, django (the Django admin's tables), or a"
        " class path (default: beat_scheduler)."
    ),
)
@click.option(
    "--max-interval",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Longest sleep between two checks (default: beat_max_loop_interval).",
)
@click.option(
    "--pidfile", type=click.Path(dir_okay=False),
    help="Write the process id here (default: beat_pidfile).",
)  # fmt: skip
@click.option(
    "--detach", is_flag=True,
    help="Run in the background (default --pidfile celerybeat.pid, --logfile celerybeat.log).",
)  # fmt: skip
@click.option("--umask", help="With --detach: the umask, in octal (e.g. 0o022).")
@click.option("--uid", metavar="USER", help="Run as this user (name or id); needs root.")
@click.option("--gid", metavar="GROUP", help="Run as this group (name or id); needs root.")
@click.pass_context
def beat(
    ctx: click.Context,
    loglevel: str,
    logfile: str | None,
    schedule_filename: str | None,
    scheduler: str | None,
    max_interval: float | None,
    pidfile: str | None,
    detach: bool,
    umask: str | None,
    uid: str | None,
    gid: str | None,
) -> None:
    """Send periodic tasks when due. Run as many as you like: one sends, the others stand by.

    SIGTERM or Ctrl-C stops beat and hands the sender lease over at once.
    """
    if ctx.invoked_subcommand is not None:
        return

    app = state_of(ctx).app
    logfile = logfile or app.conf.beat_logfile
    pidfile = pidfile or app.conf.beat_pidfile
    if detach:
        # Relative paths name files where the command was started, as the user reads them.
        pidfile = os.path.abspath(pidfile or "celerybeat.pid")
        logfile = os.path.abspath(logfile or "celerybeat.log")
        if schedule_filename is not None:
            schedule_filename = os.path.abspath(schedule_filename)
        become_daemon(None, _octal(umask) if umask is not None else None)
    drop_privileges(uid, gid)
    setup_logging(loglevel.upper(), logfile, app.conf.worker_log_format)
    service = Service(
        app,
        max_interval=max_interval,
        schedule_filename=schedule_filename,
        scheduler_cls=scheduler,
    )

    def on_signal(signum: int, frame: Any) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with _pidfile(pidfile):
        service.start()


@beat.group()
def schedules() -> None:
    """List, add, remove, enable and disable the schedules stored in the result backend."""


def _periodic(ctx: click.Context) -> Any:
    return PeriodicTasks(state_of(ctx).app)


@schedules.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per schedule.")
@click.pass_context
def list_schedules(ctx: click.Context, as_json: bool) -> None:
    """Show every stored schedule with its last run and run count."""
    found = _periodic(ctx).list()
    if not found and not as_json:
        click.echo("No stored schedules.")
    for item in found:
        if as_json:
            click.echo(json.dumps({
                "name": item.name, "task": item.task,
                "schedule": schedule_to_dict(item.schedule), "args": list(item.args),
                "kwargs": item.kwargs, "options": item.options, "enabled": item.enabled,
                "one_off": item.one_off, "start_time": _text(item.start_time),
                "expires": _text(item.expires), "last_run_at": _text(item.last_run_at),
                "total_run_count": item.total_run_count,
            }))  # fmt: skip
            continue
        state = "enabled" if item.enabled else "disabled"
        extra = " one-off" if item.one_off else ""
        click.echo(
            f"{item.name}: {item.task} {item.schedule!r} [{state}{extra}] "
            f"runs={item.total_run_count} last={_text(item.last_run_at) or 'never'}"
        )


@schedules.command("add")
@click.argument("name")
@click.argument("task")
@click.option("--every", type=click.FloatRange(min=0, min_open=True), help="Interval, seconds.")
@click.option("--crontab", "cron", metavar="'M H DoM MoY DoW'", help="Cron expression.")
@click.option("--solar", metavar="EVENT:LAT:LON", help=f"Solar event, {SOLAR_HELP}.")
@click.option("-a", "--args", default="[]", help="Positional args, JSON array.")
@click.option("-k", "--kwargs", default="{}", help="Keyword args, JSON object.")
@click.option("-Q", "--queue", help="Queue to send to.")
@click.option("--options", "extra", default="{}", help="More send options, JSON object.")
@click.option("--one-off", is_flag=True, help="Run once, then stay idle.")
@click.option("--start", "start_time", help="Not before this ISO-8601 time.")
@click.option("--expires", help="Not after this ISO-8601 time.")
@click.option("--disabled", is_flag=True, help="Store it disabled.")
@click.option("--replace", is_flag=True, help="Overwrite a schedule of the same name.")
@click.pass_context
def add_schedule(
    ctx: click.Context,
    name: str,
    task: str,
    every: float | None,
    cron: str | None,
    solar: str | None,
    args: str,
    kwargs: str,
    queue: str | None,
    extra: str,
    one_off: bool,
    start_time: str | None,
    expires: str | None,
    disabled: bool,
    replace: bool,
) -> None:
    """Store schedule NAME that sends TASK (takes effect in running beats within ~1 s)."""
    options = _json_arg(extra, dict, "--options")
    if queue:
        options["queue"] = queue
    _periodic(ctx).add(
        name, task, _schedule(every, cron, solar), _json_arg(args, list, "--args"),
        _json_arg(kwargs, dict, "--kwargs"), options, enabled=not disabled, one_off=one_off,
        start_time=start_time, expires=expires, replace=replace,
    )  # fmt: skip
    click.echo(f"Added {name}.")


@schedules.command("remove")
@click.argument("name")
@click.pass_context
def remove_schedule(ctx: click.Context, name: str) -> None:
    """Delete a stored schedule and its run record."""
    _periodic(ctx).remove(name)
    click.echo(f"Removed {name}.")


@schedules.command("enable")
@click.argument("name")
@click.pass_context
def enable_schedule(ctx: click.Context, name: str) -> None:
    """Let a stored schedule run again."""
    _periodic(ctx).enable(name)
    click.echo(f"Enabled {name}.")


@schedules.command("disable")
@click.argument("name")
@click.pass_context
def disable_schedule(ctx: click.Context, name: str) -> None:
    """Keep a stored schedule but stop sending it."""
    _periodic(ctx).disable(name)
    click.echo(f"Disabled {name}.")


def _schedule(every: float | None, cron: str | None, solar: str | None) -> Any:

    given = [value for value in (every, cron, solar) if value is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --every, --crontab and --solar")
    try:
        if every is not None:
            return every
        if cron is not None:
            return crontab.from_string(cron)
        event, lat, lon = str(solar).split(":")
        return solar_schedule(event, float(lat), float(lon))
    except ValueError as exc:
        raise click.BadParameter(str(exc) if cron else f"{exc}; expected {SOLAR_HELP}") from None


def _json_arg(text: str, kind: type, option: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint=option) from None
    if not isinstance(value, kind):
        raise click.BadParameter(
            f"expected a JSON {'array' if kind is list else 'object'}", param_hint=option
        )
    return value


def _text(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
