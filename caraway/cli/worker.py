"""``caraway worker``: parse the options, build ``app.Worker`` and run it in this process."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from caraway import signals
from caraway.cli.base import celery_flags, comma_list, state_of
from caraway.cli.dashboard import embedded_dashboard
from caraway.cli.privileges import drop_privileges
from caraway.dashboard.config import DEFAULT_ADDRESS, DEFAULT_PORT
from caraway.utils.log import expand_node_path
from caraway.utils.text import did_you_mean
from caraway.worker.daemon import detach as become_daemon
from caraway.worker.pools import ALIASES, POOLS

if TYPE_CHECKING:
    from caraway.app import Caraway

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")
#: Celery's pools that caraway does not have (yet), so ``-P prefork`` gets a clear answer.
CELERY_ONLY_POOLS = ("custom",)
#: Why ``-O default`` changes nothing: each pool slot takes a task only when it is free.
ALWAYS_FAIR = (
    "-O default: caraway always schedules fairly (a task goes to a pool slot only when the "
    "slot is free, Celery's -O fair), so this option changes nothing"
)


def _check_pool(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value in POOLS or value in ALIASES:
        return value
    available = ", ".join(sorted(POOLS))
    if value in CELERY_ONLY_POOLS:
        raise click.BadParameter(
            f"caraway has no {value} pool yet. Available pools: {available} "
            "(prefork for CPU-bound tasks, asyncio for async def tasks, gevent or threads for"
            " I/O-bound sync tasks; solo runs one task at a time)."
        )
    raise click.BadParameter(
        f"unknown pool {value!r}.{did_you_mean(value, POOLS)} Available pools: {available}."
    )


@celery_flags("worker")
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
    help="Pool: prefork, threads, gevent, eventlet, asyncio or solo (default: worker_pool,"
    " prefork). gevent and eventlet patch the process first: give them here, not only in"
    " worker_pool.",
)
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(min=1),
    help="prefork: replace a child after this many tasks (default: worker_max_tasks_per_child).",
)
@click.option(
    "--max-memory-per-child",
    type=click.IntRange(min=1),
    help="prefork: replace a child whose resident memory passes this many KiB after a task.",
)
@click.option(
    "--prefetch-multiplier",
    type=click.IntRange(min=0),
    help="Messages reserved per concurrency slot, 0: no limit (default: 4, or"
    " worker_prefetch_multiplier).",
)
@click.option(
    "--autoscale",
    metavar="MAX,MIN",
    help="Grow the pool up to MAX while tasks wait, shrink it back to MIN when idle"
    " (threads and prefork).",
)
@click.option(
    "--disable-prefetch",
    is_flag=True,
    default=None,
    help="Take a message only when a slot is free (default: worker_disable_prefetch).",
)
@click.option(
    "-f",
    "--logfile",
    type=click.Path(dir_okay=False),
    help="Log here, not stderr. %n: node name, %h: host, %i: pool child index (0: supervisor),"
    " %I: the same with a dash (prefork children each get their own file).",
)
@click.option(
    "--pidfile", type=click.Path(dir_okay=False), help="Write the process id here (%n, %h too)."
)
@click.option(
    "--soft-shutdown-timeout",
    type=click.FloatRange(min=0),
    help="Seconds running tasks still get when a cold shutdown is asked for (default:"
    " worker_soft_shutdown_timeout, 0: none).",
)
@click.option(
    "--enable-soft-shutdown-on-idle",
    is_flag=True,
    default=None,
    help="Wait the soft shutdown timeout even with no task running.",
)
@click.option(
    "-S",
    "--statedb",
    type=click.Path(dir_okay=False),
    help="Keep revoked task ids in this file across restarts (%n, %h too).",
)
@click.option(
    "-D",
    "--detach",
    is_flag=True,
    help="Run in the background (default --pidfile %n.pid, --logfile %n%I.log).",
)
@click.option("--workdir", type=click.Path(file_okay=False), help="With --detach: chdir here.")
@click.option("--umask", type=str, help="With --detach: the umask, in octal (e.g. 0o022).")
@click.option(
    "--health-port",
    type=click.IntRange(min=0, max=65535),
    help="Serve HTTP probes here: /livez (the consumer loop turns) and /readyz (consuming).",
)
@click.option(
    "--health-address",
    metavar="ADDRESS",
    help="Address the --health-port binds (default worker_health_address: every interface).",
)
@click.option(
    "--metrics", is_flag=True, default=None,
    help="Also serve Prometheus /metrics on the --health-port (worker_metrics).",
)  # fmt: skip
@click.option(
    "-B", "--beat", is_flag=True,
    help="Also run beat in this worker (for development: run `caraway beat` in production).",
)  # fmt: skip
@click.option(
    "-s", "--schedule-filename", "--schedule", metavar="FILE",
    help="Beat's run-time file (with -B).",
)  # fmt: skip
@click.option("--scheduler", metavar="CLASS", help="Beat's scheduler class (with -B).")
@click.option(
    "-E", "--task-events", "--events", is_flag=True, help="Send task events (for monitors)."
)
@click.option(
    "--without-mingle", is_flag=True,
    help="Do not ask the other workers for revoked task ids at startup.",
)  # fmt: skip
@click.option("--without-heartbeat", is_flag=True, help="Send no worker events (heartbeats).")
@click.option(
    "--heartbeat-interval", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
    help="Seconds between the worker's heartbeat events (default: 2).",
)  # fmt: skip
@click.option(
    "-O",
    "--optimization",
    type=click.Choice(["default", "fair"]),
    help="Scheduling: fair (a task goes to a slot only when it is free) is what caraway does;"
    " default warns that it changes nothing.",
)
@click.option(
    "--time-limit", type=click.FloatRange(min=0, min_open=True),
    help="Hard time limit of every task, in seconds (task_time_limit): the task is killed.",
)  # fmt: skip
@click.option(
    "--soft-time-limit", type=click.FloatRange(min=0, min_open=True),
    help="Soft time limit, in seconds (task_soft_time_limit): SoftTimeLimitExceeded is raised.",
)  # fmt: skip
@click.option(
    "--purge", "--discard", "purge", is_flag=True,
    help="Delete the messages waiting in this worker's queues before it starts (they are lost).",
)  # fmt: skip
@click.option(
    "-I", "--include", callback=comma_list, multiple=True, metavar="MODULES",
    help="More modules to import at startup, comma separated (added to include).",
)  # fmt: skip
@click.option(
    "--pool-restarts", is_flag=True, default=None,
    help="Allow the pool_restart control command (worker_pool_restarts).",
)  # fmt: skip
@click.option("--uid", metavar="USER", help="Run as this user (name or id); needs root.")
@click.option("--gid", metavar="GROUP", help="Run as this group (name or id); needs root.")
@click.option(
    "--dashboard", "with_dashboard", is_flag=True,
    help="Also serve the dashboard from this process (one-box setups; implies -E)."
    " Authentication, read-only mode and history come from the CARAWAY_DASHBOARD_* (or"
    " FLOWER_*) environment variables, as for `caraway dashboard`.",
)  # fmt: skip
@click.option(
    "--dashboard-port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
    envvar=["CARAWAY_DASHBOARD_PORT", "FLOWER_PORT", "CELERY_FLOWER_PORT"],
    help="With --dashboard: the port it listens on.",
)  # fmt: skip
@click.option(
    "--dashboard-address", default=DEFAULT_ADDRESS, show_default=True,
    envvar=["CARAWAY_DASHBOARD_ADDRESS", "FLOWER_ADDRESS", "CELERY_FLOWER_ADDRESS"],
    help="With --dashboard: the address it listens on (any but loopback needs authentication).",
)  # fmt: skip
@click.pass_context
def worker(
    ctx: click.Context,
    loglevel: str,
    queues: list[str],
    exclude_queues: list[str],
    hostname: str | None,
    concurrency: int | None,
    pool: str | None,
    max_tasks_per_child: int | None,
    max_memory_per_child: int | None,
    prefetch_multiplier: int | None,
    autoscale: str | None,
    disable_prefetch: bool | None,
    logfile: str | None,
    pidfile: str | None,
    soft_shutdown_timeout: float | None,
    enable_soft_shutdown_on_idle: bool | None,
    statedb: str | None,
    detach: bool,
    workdir: str | None,
    umask: str | None,
    health_port: int | None,
    health_address: str | None,
    metrics: bool | None,
    task_events: bool,
    without_mingle: bool,
    without_heartbeat: bool,
    heartbeat_interval: float | None,
    optimization: str | None,
    beat: bool,
    schedule_filename: str | None,
    scheduler: str | None,
    time_limit: float | None,
    soft_time_limit: float | None,
    purge: bool,
    include: list[str],
    pool_restarts: bool | None,
    uid: str | None,
    gid: str | None,
    with_dashboard: bool,
    dashboard_port: int,
    dashboard_address: str,
) -> None:
    """Start a worker in this process; SIGTERM or Ctrl-C stops it warmly.

    A warm shutdown takes no new tasks, gives back the ones reserved but not started,
    and lets running tasks finish; then the exit code is 0. A second SIGTERM or Ctrl-C (or
    SIGQUIT) stops at once, after --soft-shutdown-timeout if one is set: running acks_late
    tasks go back to the queue, and the exit code is 1 (Celery's cold shutdown).

    Celery's flags that change nothing here (--without-gossip, ...) warn and go on; those
    caraway cannot honour stop with the reason (docs/differences.md lists both).
    """

    state = state_of(ctx)
    app = state.app
    _configure(app, time_limit, soft_time_limit, include, pool_restarts)
    if optimization == "default":
        click.echo(f"Warning: {ALWAYS_FAIR}", err=True)
    pidfile, logfile = pidfile or app.conf.worker_pidfile, logfile or app.conf.worker_logfile
    if detach:
        pidfile, logfile = pidfile or "%n.pid", logfile or "%n%I.log"
        mask = _octal(umask) if umask is not None else None
        # Relative paths name files where the command was started, as the user reads them.
        pidfile, logfile = os.path.abspath(pidfile), os.path.abspath(logfile)
        become_daemon(workdir, mask)
    drop_privileges(
        uid if uid is not None else _setting_id(app.conf.worker_uid),
        gid if gid is not None else _setting_id(app.conf.worker_gid),
    )
    # Bound now, as the user the worker runs as; it serves once the worker is ready.
    web = embedded_dashboard(app, dashboard_port, dashboard_address) if with_dashboard else None
    if task_events or web is not None:
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
        beat=beat,
        schedule_filename=schedule_filename,
        scheduler=scheduler,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child=max_memory_per_child,
        health_port=health_port,
        health_address=health_address,
        metrics=metrics,
        soft_shutdown_timeout=soft_shutdown_timeout,
        enable_soft_shutdown_on_idle=enable_soft_shutdown_on_idle,
        disable_prefetch=disable_prefetch,
        statedb=statedb,
        without_heartbeat=without_heartbeat,
        heartbeat_interval=heartbeat_interval,
        without_mingle=without_mingle,
        autoscale=autoscale,
    )
    if purge:
        _purge(app, instance.queues)

    def show_banner(sender: Any, **kwargs: Any) -> None:
        # The worker logs its banner at INFO; below that level say once that it is up (on the
        # real stdout, as Celery prints it), unless -q asked for silence.
        if logging.getLevelName(level) > logging.INFO and not state.quiet:
            click.echo(instance.banner(), file=sys.__stdout__)  # sys.stdout may go to the log

    def serve_dashboard(sender: Any, **kwargs: Any) -> None:
        if web is not None:
            web.start()
            logging.getLogger("caraway.dashboard").info(
                "Dashboard on http://%s:%d%s/", dashboard_address, web.port,
                web.dashboard.config.url_prefix,
            )  # fmt: skip

    signals.worker_ready.connect(show_banner, sender=instance)
    signals.worker_ready.connect(serve_dashboard, sender=instance)
    try:
        with _pidfile(expand_node_path(pidfile, instance.hostname) if pidfile else None):
            instance.start()
    finally:
        signals.worker_ready.disconnect(show_banner, sender=instance)
        signals.worker_ready.disconnect(serve_dashboard, sender=instance)
        if web is not None:
            web.stop()
    if instance.restart_requested:
        _restart()
    ctx.exit(instance.exitcode)


def _configure(
    app: Caraway, time_limit: float | None, soft_time_limit: float | None,
    include: list[str], pool_restarts: bool | None,
) -> None:  # fmt: skip
    """The options that are settings: they win over the configuration, as in Celery."""
    if time_limit is not None:
        app.conf.task_time_limit = time_limit
    if soft_time_limit is not None:
        app.conf.task_soft_time_limit = soft_time_limit
    hard, soft = app.conf.task_time_limit, app.conf.task_soft_time_limit
    if hard is not None and soft is not None and soft > hard:
        raise click.UsageError(
            f"the soft time limit ({soft} s) is above the hard one ({hard} s): the task would"
            " be killed before it is warned. Lower --soft-time-limit or raise --time-limit."
        )
    if include:
        app.conf.include = (*(app.conf.include or ()), *include)
    if pool_restarts is not None:
        app.conf.worker_pool_restarts = pool_restarts


def _purge(app: Caraway, queues: list[str]) -> None:
    """``--purge``: empty the queues this worker is about to consume, and say how much."""
    purged = app.control.purge_queues(queues)
    app.close()  # the worker opens its own connections when it starts
    count = sum(purged.values())
    click.echo(
        f"Purged {count} message{'s' if count != 1 else ''} from "
        f"{len(purged)} queue{'s' if len(purged) != 1 else ''} ({', '.join(sorted(purged))})."
    )


def _restart() -> NoReturn:
    """SIGHUP: run this same command again in this process (same pid), as Celery does."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _setting_id(value: int | str | None) -> str | None:
    """``worker_uid``/``worker_gid`` (a name or a number) as the options spell them."""
    return None if value is None else str(value)


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


def _octal(value: str) -> int:
    try:
        return int(value, 8)
    except ValueError:
        raise click.BadParameter(f"--umask {value!r} is not an octal number like 0o022") from None


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
