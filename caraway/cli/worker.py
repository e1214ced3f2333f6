"""``caraway worker``: parse the options, build ``app.Worker`` and run it in this process."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from caraway.cli.base import comma_list, state_of
from caraway.utils.text import did_you_mean

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")
#: Celery's pools that caraway does not have (yet), so ``-P prefork`` gets a clear answer.
CELERY_ONLY_POOLS = ("prefork", "processes", "eventlet", "gevent", "custom")
NO_EFFECT = "Accepted for Celery compatibility; no effect yet."


def _check_pool(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from caraway.worker.pools import POOLS

    if value is None or value in POOLS:
        return value
    available = ", ".join(sorted(POOLS))
    if value in CELERY_ONLY_POOLS:
        raise click.BadParameter(
            f"caraway has no {value} pool yet. Available pools: {available} "
            "(threads suits I/O-bound tasks; solo runs one task at a time)."
        )
    raise click.BadParameter(
        f"unknown pool {value!r}.{did_you_mean(value, POOLS)} Available pools: {available}."
    )


@click.command()
@click.option(
    "-l",
    "--loglevel",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="WARNING",
    show_default=True,
    help="Logging level.",
)
@click.option(
    "-Q",
    "--queues",
    callback=comma_list,
    multiple=True,
    metavar="QUEUES",
    help="Queues to consume from, comma separated (default: task_default_queue).",
)
@click.option(
    "-X",
    "--exclude-queues",
    callback=comma_list,
    multiple=True,
    metavar="QUEUES",
    help="Queues not to consume from, comma separated.",
)
@click.option(
    "-n",
    "--hostname",
    help="Node name, e.g. w1@%h. %h: host name, %n: its first part, %d: the domain.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    help="Tasks run at once (default: worker_concurrency, else the number of CPUs).",
)
@click.option(
    "-P",
    "--pool",
    callback=_check_pool,
    metavar="POOL",
    help="Pool: threads or solo (default: worker_pool, threads).",
)
@click.option(
    "--prefetch-multiplier",
    type=click.IntRange(min=0),
    help="Messages reserved per concurrency slot, 0: no limit (default: 4, or"
    " worker_prefetch_multiplier).",
)
@click.option("-f", "--logfile", type=click.Path(dir_okay=False), help="Log here, not stderr.")
@click.option("--pidfile", type=click.Path(dir_okay=False), help="Write the process id here.")
@click.option("-E", "--task-events", is_flag=True, help=f"Send task events. {NO_EFFECT}")
@click.option("--without-gossip", is_flag=True, help=NO_EFFECT)
@click.option("--without-mingle", is_flag=True, help=NO_EFFECT)
@click.option("--without-heartbeat", is_flag=True, help=NO_EFFECT)
@click.option(
    "-O",
    "optimization",
    type=click.Choice(["default", "fair"]),
    help=f"Optimization profile. {NO_EFFECT}",
)
@click.pass_context
def worker(
    ctx: click.Context,
    loglevel: str,
    queues: list[str],
    exclude_queues: list[str],
    hostname: str | None,
    concurrency: int | None,
    pool: str | None,
    prefetch_multiplier: int | None,
    logfile: str | None,
    pidfile: str | None,
    task_events: bool,
    without_gossip: bool,
    without_mingle: bool,
    without_heartbeat: bool,
    optimization: str | None,
) -> None:
    """Start a worker in this process; SIGTERM or Ctrl-C stops it warmly.

    A warm shutdown takes no new tasks, gives back the ones reserved but not started,
    and lets running tasks finish; then the exit code is 0. A second Ctrl-C (or SIGQUIT)
    stops at once.
    """
    from caraway import signals

    app = state_of(ctx).app
    if task_events:
        app.conf.worker_send_task_events = True
    level = loglevel.upper()
    instance = app.Worker(
        hostname=hostname,
        queues=queues or None,
        exclude_queues=exclude_queues,
        concurrency=concurrency,
        pool=pool,
        loglevel=level,
        logfile=logfile,
        prefetch_multiplier=prefetch_multiplier,
        setup_logging=True,
        install_signal_handlers=True,
    )

    def show_banner(sender: Any, **kwargs: Any) -> None:
        # The worker logs its banner at INFO; below that level say once that it is up.
        if logging.getLevelName(level) > logging.INFO:
            click.echo(instance.banner())

    signals.worker_ready.connect(show_banner, sender=instance)
    try:
        with _pidfile(pidfile):
            instance.start()
    finally:
        signals.worker_ready.disconnect(show_banner, sender=instance)


@contextmanager
def _pidfile(path: str | None) -> Iterator[None]:
    """Hold ``path`` with this process id; refuse when a live process already holds it."""
    if path is None:
        yield
        return
    pidfile = Path(path)
    holder = _read_pid(pidfile)
    if holder is not None and holder != os.getpid() and _alive(holder):
        raise click.ClickException(
            f"the pidfile {pidfile} names process {holder}, which is running: is another "
            "worker using it? Stop that worker, or choose another --pidfile."
        )
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        if _read_pid(pidfile) == os.getpid():
            pidfile.unlink(missing_ok=True)


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
