"""The remote-control commands a worker answers, with Celery's names, arguments and replies.

``inspect`` commands only read; ``control`` commands change the worker. Each takes the
worker and the request's arguments and returns the reply (``{"ok": ...}`` or
``{"error": ...}`` for most controls, data for inspections). ``args`` lists the positional
arguments of the command line (``caraway control rate_limit TASK RATE``).
"""

from __future__ import annotations

import logging
import os
import resource
import signal as signals_module
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from caraway import states
from caraway.config import _censor
from caraway.control.mailbox import clock_of
from caraway.engines.base.topology import QueueDeclaration
from caraway.protocol import parse_task_message
from caraway.routing import queue_table
from caraway.version import __version__
from caraway.worker.autoscale import resize
from caraway.worker.consumer import FETCH_TIMEOUT, Consumer
from caraway.worker.job import Job
from caraway.worker.ratelimit import parse_rate
from caraway.worker.state import matching_stamp

if TYPE_CHECKING:
    from caraway.worker.worker import Worker

logger = logging.getLogger("caraway.worker")

#: Task attributes ``registered`` shows when none are asked for (Celery's defaults).
DEFAULT_TASK_INFO_ITEMS = ("exchange", "routing_key", "rate_limit")


@dataclass(frozen=True)
class Command:
    name: str
    kind: str  # "inspect" or "control"
    handler: Callable[..., Any]
    args: tuple[tuple[str, Callable[[str], Any]], ...] = ()
    variadic: bool = False
    help: str = ""
    aliases: tuple[str, ...] = field(default=())


COMMANDS: dict[str, Command] = {}


def command(
    kind: str,
    args: tuple[tuple[str, Callable[[str], Any]], ...] = (),
    variadic: bool = False,
    aliases: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fun: Callable[..., Any]) -> Callable[..., Any]:
        doc = (fun.__doc__ or "").strip().splitlines()
        spec = Command(fun.__name__, kind, fun, args, variadic, doc[0] if doc else "", aliases)
        for name in (fun.__name__, *aliases):
            COMMANDS[name] = spec
        return fun

    return register


def ok(value: Any) -> dict[str, Any]:
    return {"ok": value}


def error(value: Any) -> dict[str, Any]:
    return {"error": value}


def dispatch(worker: Worker, method: str, arguments: dict[str, Any]) -> Any:
    """Run ``method``; an unknown one or a failure becomes an ``{"error": ...}`` reply."""
    spec = COMMANDS.get(method)
    if spec is None:
        return error(f"No such control command: {method}")
    if worker.reserving is not None:
        # Children that fetch for themselves report with a little delay: every command
        # sees (and events follow) what they reported up to now.
        worker.reserving.sync()
    try:
        return spec.handler(worker, **arguments)
    except TypeError as exc:
        return error(f"bad arguments for {method}: {exc}")
    except Exception as exc:
        logger.exception("Remote control command %s failed", method)
        return error(f"{type(exc).__name__}: {exc}")


# --- what a job looks like in replies -----------------------------------------------------------


def request_info(worker: Worker, job: Job) -> dict[str, Any]:
    """A job as Celery's ``Request.info()`` shows it (``active``, docs/celery-wire.md §7.2)."""
    request = job.request
    monitor = worker.monitor
    return {
        "id": job.id, "name": job.name, "args": list(request.args or ()),
        "kwargs": dict(request.kwargs or {}), "type": job.name, "hostname": worker.hostname,
        "time_start": monitor.time_start(job.id) if monitor else None,
        # Early acks happen as a task starts (late ones after it ends).
        "acknowledged": not job.acks_late and job.id in worker.state.active,
        "delivery_info": dict(request.delivery_info or {}),
        # A pid only once a process runs it, as Celery (None while reserved or scheduled).
        "worker_pid": os.getpid() if job.id in worker.state.active else None,
    }  # fmt: skip


#: The priority Celery's worker gives every ETA entry of its timer, which ``scheduled``
#: shows; the message's own priority is in ``request.delivery_info``.
ETA_TIMER_PRIORITY = 6


def _scheduled_info(worker: Worker, when: float, job: Job) -> dict[str, Any]:
    eta = datetime.fromtimestamp(when).astimezone().isoformat()
    return {"eta": eta, "priority": ETA_TIMER_PRIORITY, "request": request_info(worker, job)}


def _reserved_jobs(worker: Worker) -> list[Job]:
    consumer = worker.consumer
    waiting = list(worker.reserving.waiting()) if worker.reserving is not None else []
    if consumer is not None:
        waiting += [job for _, job, kind in consumer.held_jobs() if kind == "rate"]
    active = worker.state.active
    return [job for job in waiting if job.id not in active]


# --- inspect ------------------------------------------------------------------------------------


@command("inspect")
def ping(worker: Worker, **kwargs: Any) -> Any:
    """Ping the workers."""
    return ok("pong")


@command("inspect")
def clock(worker: Worker, **kwargs: Any) -> Any:
    """The worker's Lamport clock."""
    return {"clock": clock_of(worker.app).value}


@command("inspect", aliases=("dump_active",))
def active(worker: Worker, safe: Any = None, **kwargs: Any) -> Any:
    """Tasks running now."""
    return [request_info(worker, job) for job in list(worker.state.active.values())]


@command("inspect", aliases=("dump_reserved",))
def reserved(worker: Worker, **kwargs: Any) -> Any:
    """Tasks received and waiting for a free slot or a rate-limit token."""
    return [request_info(worker, job) for job in _reserved_jobs(worker)]


@command("inspect", aliases=("dump_schedule",))
def scheduled(worker: Worker, **kwargs: Any) -> Any:
    """Tasks held until their ETA (countdown)."""
    consumer = worker.consumer
    if consumer is None:
        return []
    held = [
        _scheduled_info(worker, when, job)
        for when, job, kind in consumer.held_jobs()
        if kind == "eta"
    ]
    return held + _stored_scheduled(worker, consumer)


def _stored_scheduled(worker: Worker, consumer: Consumer) -> list[dict[str, Any]]:
    """ETA messages of the worker's queues that the broker keeps until due (SQLite, memory):
    a retry's countdown waits there, and Celery users look for it in ``inspect scheduled``."""
    listed = []
    for when, delivery in worker.app.broker.delayed(consumer.queues):
        try:
            call = parse_task_message(delivery.message, consumer.accept)
        except Exception:  # undecodable: the worker sets it aside when it comes due
            continue
        task = worker.app.tasks.get(call.name)
        if task is not None:
            listed.append(_scheduled_info(worker, when, Job(delivery, call, task, worker.hostname)))
    return listed


@command("inspect", aliases=("dump_revoked",))
def revoked(worker: Worker, **kwargs: Any) -> Any:
    """Ids of revoked tasks this worker remembers."""
    return list(worker.state.revoked)


@command("inspect", variadic=True, aliases=("dump_tasks",))
def registered(worker: Worker, taskinfoitems: Any = None, builtins: bool = False,
               **kwargs: Any) -> Any:  # fmt: skip
    """Registered tasks (with attributes such as rate_limit when set)."""
    items = list(taskinfoitems or DEFAULT_TASK_INFO_ITEMS)
    tasks = worker.app.tasks
    names = sorted(name for name in tasks if builtins or not name.startswith("celery."))
    listed = []
    for name in names:
        task = tasks[name]
        fields = [(item, getattr(task, item, None)) for item in items]
        shown = " ".join(f"{item}={value}" for item, value in fields if value is not None)
        listed.append(f"{name} [{shown}]" if shown else name)
    return listed


@command("inspect")
def stats(worker: Worker, **kwargs: Any) -> Any:
    """Statistics of the worker: counts, pool, broker, resource usage."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    pool = worker.consumer.pool if worker.consumer is not None else None
    return {
        "total": dict(worker.state.processed),
        "pid": os.getpid(),
        "clock": str(clock_of(worker.app).value),
        "uptime": int(time.monotonic() - worker.started_at),
        "pool": {
            "implementation": f"caraway.worker.pools:{worker.pool_name}",
            "max-concurrency": pool.limit if pool is not None else worker.concurrency,
            "processes": pool.processes() if pool is not None else [os.getpid()],
            # Only child processes are recycled, so only prefork applies the setting.
            "max-tasks-per-child": (
                pool.options.max_tasks_per_child
                if pool is not None and worker.pool_name in ("prefork", "processes")
                else None
            ),
            "put-guarded-by-semaphore": False,
            "timeouts": [
                worker.app.conf.task_soft_time_limit or 0,
                worker.app.conf.task_time_limit or 0,
            ],
        },
        "prefetch_count": worker.consumer.window if worker.consumer is not None else 0,
        "broker": _broker_info(worker),
        "rusage": {
            "utime": usage.ru_utime,
            "stime": usage.ru_stime,
            "maxrss": usage.ru_maxrss,
            "minflt": usage.ru_minflt,
            "majflt": usage.ru_majflt,
            "nvcsw": usage.ru_nvcsw,
            "nivcsw": usage.ru_nivcsw,
            "inblock": usage.ru_inblock,
            "oublock": usage.ru_oublock,
        },
        "sw_ident": "py-caraway",
        "sw_ver": __version__,
    }


def _broker_info(worker: Worker) -> dict[str, Any]:
    from urllib.parse import urlsplit

    url = worker.app.broker.describe()
    parts = urlsplit(url)
    return {
        "hostname": parts.hostname or socket.gethostname(), "port": parts.port,
        "transport": parts.scheme, "virtual_host": parts.path.lstrip("/") or "/",
        "userid": parts.username, "ssl": worker.app.broker.uses_tls(),
        "uri_prefix": None, "heartbeat": worker.app.conf.broker_heartbeat,
    }  # fmt: skip


def _queue_info(worker: Worker, name: str) -> dict[str, Any]:
    """A queue in the shape of kombu's ``Queue.as_dict(recurse=True)`` (Flower reads it)."""
    bound = worker.declarations.get(name) or QueueDeclaration.plain(name)
    return {
        "name": name,
        "exchange": {
            "name": bound.exchange,
            "type": bound.exchange_type,
            "arguments": None,
            "durable": bound.exchange_durable,
            "passive": False,
            "auto_delete": bound.exchange_auto_delete,
            "delivery_mode": None,
            "no_declare": False,
        },
        "routing_key": bound.routing_key,
        "queue_arguments": None,
        "binding_arguments": None,
        "consumer_arguments": None,
        "durable": bound.durable,
        "exclusive": bound.exclusive,
        "auto_delete": bound.auto_delete,
        "no_ack": False,
        "alias": None,
        "bindings": [],
        "no_declare": None,
        "expires": None,
        "message_ttl": None,
        "max_length": None,
        "max_length_bytes": None,
        "max_priority": None,
    }


@command("inspect")
def active_queues(worker: Worker, **kwargs: Any) -> Any:
    """The queues the worker consumes from."""
    queues = worker.consumer.queues if worker.consumer is not None else worker.queues
    return [_queue_info(worker, name) for name in queues]


@command("inspect", aliases=("dump_conf",))
def conf(worker: Worker, with_defaults: bool = False, **kwargs: Any) -> Any:
    """The worker's settings (secrets masked; values that are not JSON shown as text)."""
    conf = worker.app.conf
    table = conf.table(with_defaults)
    shown = {key: _jsonable(_censor(key, value)) for key, value in sorted(table.items())}
    shown["deprecated_settings"] = sorted(conf.deprecated_settings)  # as Celery's report
    # Celery's worker records every module its tasks come from as ``include``.
    modules = {type(task).__module__ for task in worker.app.tasks.values()}
    shown["include"] = sorted({*conf.include, *modules})
    return shown


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return repr(value)


@command("inspect", args=(("id", str),), variadic=True)
def query_task(worker: Worker, ids: Any = (), **kwargs: Any) -> Any:
    """Where tasks are on this worker: active, reserved or scheduled."""
    wanted = {ids} if isinstance(ids, str) else set(ids or ())
    found: dict[str, Any] = {}
    for job in list(worker.state.active.values()):
        if job.id in wanted:
            found[job.id] = ["active", request_info(worker, job)]
    for job in _reserved_jobs(worker):
        if job.id in wanted:
            found.setdefault(job.id, ["reserved", request_info(worker, job)])
    if worker.consumer is not None:
        for _, job, kind in worker.consumer.held_jobs():
            if job.id in wanted and kind == "eta":
                found.setdefault(job.id, ["scheduled", request_info(worker, job)])
    return found


@command("inspect")
def report(worker: Worker, **kwargs: Any) -> Any:
    """Versions and settings, as ``caraway report`` prints them (``app.bugreport()``)."""
    return ok(worker.app.bugreport())


@command("inspect")
def memsample(worker: Worker, **kwargs: Any) -> Any:
    """The worker's resident memory now (its peak, where the system reports only that)."""
    return _rss_text()


@command("inspect")
def memdump(worker: Worker, samples: int = 10, **kwargs: Any) -> Any:
    """Memory of the worker: resident size and the live Python object count."""
    import gc

    return f"{_rss_text()}, {len(gc.get_objects())} live Python objects"


def _rss_text() -> str:
    try:
        with open(f"/proc/{os.getpid()}/statm") as statm:
            pages = int(statm.read().split()[1])
        return f"rss {pages * os.sysconf('SC_PAGE_SIZE') // 1024} KiB"
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return f"peak rss {peak // 1024 if sys.platform == 'darwin' else peak} KiB"


@command("inspect", args=(("from_node", str),))
def hello(worker: Worker, from_node: str = "", revoked: Any = None, **kwargs: Any) -> Any:
    """A new worker's greeting: answers with the revoked ids this worker knows."""
    if from_node == worker.hostname:
        return None
    return {"revoked": dict.fromkeys(worker.state.revoked, None), "clock": 0}


# --- control ---------------------------------------------------------------------------------


def _signum(name: Any) -> int | None:
    if name is None or isinstance(name, int):
        return name
    text = str(name).upper()
    text = text if text.startswith("SIG") else f"SIG{text}"
    number = getattr(signals_module, text, None)
    return int(number) if number is not None else None


@command("control", args=(("task_id", str),), variadic=True)
def revoke(worker: Worker, task_id: Any = None, terminate: bool = False,
           signal: Any = None, **kwargs: Any) -> Any:  # fmt: skip
    """Revoke tasks by id (with terminate, stop them if they run)."""
    ids = [task_id] if isinstance(task_id, str) else list(task_id or ())
    if not ids:
        return error("no task id given")
    for one in ids:
        worker.state.revoke(one, bool(terminate))
    _store_revoked(worker, ids)
    if terminate:
        signum = _signum(signal or "SIGTERM")
        stopped = [one for one in ids if worker.monitor and worker.monitor.terminate(one, signum)]
        if stopped:
            return ok(f"terminate: {', '.join(stopped)}")
        return ok("terminate: tasks unknown")
    return ok(f"tasks {', '.join(ids)} flagged as revoked")


#: States in which no worker runs the task: a revoke stores REVOKED at once (Celery 5.7), so
#: the result says so before any worker meets the message. A task another worker started
#: keeps its state: that worker decides (it runs on, or stores REVOKED when terminated).
_NOT_RUNNING = frozenset({states.PENDING, states.RECEIVED, states.RETRY})


def _store_revoked(worker: Worker, ids: list[str]) -> None:
    backend = worker.app.backend
    capabilities = backend.capabilities
    if not capabilities.stores_results or not capabilities.readable_by_workers:
        return
    for task_id in ids:
        if task_id in worker.state.active:  # running here: the job stores its own end
            continue
        try:
            if backend.get_state(task_id) in _NOT_RUNNING:
                backend.mark_as_revoked(task_id, "revoked")
        except Exception as exc:  # the revoke itself holds; only its early record failed
            logger.warning("Could not store task %s as revoked: %r", task_id, exc)


@command("control", args=(("signal", str), ("task_id", str)), variadic=True)
def terminate(worker: Worker, signal: Any = None, task_id: Any = None, **kwargs: Any) -> Any:
    """Revoke tasks by id and stop them with a signal: terminate SIGKILL ID [ID ...]."""
    if _signum(signal or "SIGTERM") is None:
        return error(f"unknown signal {signal!r}: use a name such as SIGTERM or SIGKILL")
    return revoke(worker, task_id, terminate=True, signal=signal)


@command("control", args=(("headers", str),), variadic=True)
def revoke_by_stamped_headers(worker: Worker, headers: Any = None, terminate: bool = False,
                              signal: Any = None, **kwargs: Any) -> Any:  # fmt: skip
    """Revoke tasks by stamp: key=value [key=value ...] (with terminate, stop running ones)."""
    if isinstance(headers, list | tuple):  # the command line's words: name=value
        headers = dict(str(word).partition("=")[::2] for word in headers)
    if not isinstance(headers, dict) or not headers:
        return error("no stamped headers given")
    worker.state.revoke_stamps(headers)
    if not terminate:
        return ok(f"headers {headers} flagged as revoked, but not terminated")
    signum = _signum(signal or "SIGTERM")
    stopped: dict[str, list[Any]] = {}
    for job in list(worker.state.active.values()):
        match = matching_stamp(job.request.stamps, headers)
        if match and worker.monitor and worker.monitor.terminate(job.id, signum):
            stopped.setdefault(match[0], []).append(match[1])
    if not stopped:
        return ok(f"headers {headers} were not terminated")
    return ok(f"headers {stopped} revoked")


@command("control", args=(("task_name", str), ("rate_limit", str)))
def rate_limit(worker: Worker, task_name: str = "", rate_limit: Any = None,
               **kwargs: Any) -> Any:  # fmt: skip
    """Set a task's rate limit (e.g. 10/m; 0 removes it)."""
    try:
        rate = parse_rate(rate_limit)
    except Exception as exc:
        return error(f"Invalid rate limit string: {exc}")
    try:
        task = worker.app.tasks[task_name]
    except KeyError:
        return error(f"unknown task {task_name!r}")
    if worker.app.conf.worker_disable_rate_limits:
        return error("rate limits are disabled on this worker (worker_disable_rate_limits)")
    task.rate_limit = rate_limit if rate else None  # type: ignore[misc]
    if worker.consumer is not None:
        worker.consumer.reset_rate_limit(task_name)
        worker.consumer.pool.reconfigure(("task", task_name, {"rate_limit": task.rate_limit}))
    if not rate:
        return ok("rate limit disabled successfully")
    return ok("new rate limit set successfully")


@command("control", args=(("task_name", str), ("soft", float), ("hard", float)))
def time_limit(worker: Worker, task_name: str = "", soft: Any = None, hard: Any = None,
               **kwargs: Any) -> Any:  # fmt: skip
    """Set a task's soft and hard time limits (seconds)."""
    try:
        task = worker.app.tasks[task_name]
    except KeyError:
        return error(f"unknown task {task_name!r}")
    task.soft_time_limit = None if soft is None else float(soft)  # type: ignore[misc]
    task.time_limit = None if hard is None else float(hard)  # type: ignore[misc]
    if worker.consumer is not None:
        limits = {"soft_time_limit": task.soft_time_limit, "time_limit": task.time_limit}
        worker.consumer.pool.reconfigure(("task", task_name, limits))
    return ok("time limits set successfully")


@command("control", args=(("queue", str),))
def add_consumer(worker: Worker, queue: str = "", **kwargs: Any) -> Any:
    """Start consuming from a queue."""
    consumer = worker.consumer
    if consumer is None or not queue:
        return error("no queue given" if not queue else "the worker is not consuming yet")
    if queue in consumer.queues:
        return ok(f"already consuming from {queue!r}")
    table = queue_table(worker.app.conf)
    declaration = worker.declarations.get(queue) or table.declaration(table.get(queue))
    worker.declarations[queue] = declaration
    worker.app.broker.declare_bound(declaration)
    worker.app.broker.resume_consuming(queue)
    consumer.queues = [*consumer.queues, queue]
    consumer.pool.reconfigure(("queues", consumer.queues, None, queue))
    return ok(f"add consumer {queue}")


@command("control", args=(("queue", str),))
def cancel_consumer(worker: Worker, queue: str = "", **kwargs: Any) -> Any:
    """Stop consuming from a queue."""
    consumer = worker.consumer
    if consumer is None or queue not in consumer.queues:
        return ok(f"no longer consuming from {queue}")
    consumer.queues = [name for name in consumer.queues if name != queue]
    worker.app.broker.stop_consuming(queue)
    consumer.pool.reconfigure(("queues", consumer.queues, queue, None))
    # A fetch that began before may still take one message from the queue; it ends within
    # FETCH_TIMEOUT. Answering after it means: from the reply on, nothing more is taken.
    time.sleep(FETCH_TIMEOUT + 0.05)
    return ok(f"no longer consuming from {queue}")


@command("control")
def enable_events(worker: Worker, **kwargs: Any) -> Any:
    """Start sending task events."""
    events = worker.events
    if events is None:
        return error("the worker is not started yet")
    if events.enabled and events.groups is None:
        return ok("task events already enabled")
    events.enabled, events.groups = True, None
    return ok("task events enabled")


@command("control")
def disable_events(worker: Worker, **kwargs: Any) -> Any:
    """Stop sending task events."""
    events = worker.events
    if events is None:
        return error("the worker is not started yet")
    if events.groups is not None:
        return ok("task events already disabled")
    events.groups = {"worker"}
    return ok("task events disabled")


@command("control")
def heartbeat(worker: Worker, **kwargs: Any) -> Any:
    """Send a heartbeat event now."""
    if worker.monitor is not None:
        worker.monitor.heartbeat()
    return None


def _resize(worker: Worker, n: Any, grow: bool) -> Any:
    consumer = worker.consumer
    if consumer is None:
        return error("the worker is not consuming yet")
    try:
        resize(worker, int(n) if grow else -int(n))
    except NotImplementedError as exc:
        return error(f"{exc} (use -P threads, gevent or prefork)")
    return ok(f"pool will {'grow' if grow else 'shrink'}")


@command("control", args=(("n", int),))
def pool_grow(worker: Worker, n: int = 1, **kwargs: Any) -> Any:
    """Run N more tasks at once."""
    return _resize(worker, n, grow=True)


@command("control", args=(("n", int),))
def pool_shrink(worker: Worker, n: int = 1, **kwargs: Any) -> Any:
    """Run N fewer tasks at once."""
    return _resize(worker, n, grow=False)


@command("control", args=(("max", int), ("min", int)))
def autoscale(worker: Worker, max: Any = None, min: Any = None, **kwargs: Any) -> Any:
    """Change the autoscaler's bounds (a worker started with --autoscale)."""
    scaler = worker.autoscaler
    if scaler is None:
        return error("Autoscale not enabled")
    scaler.update(None if max is None else int(max), None if min is None else int(min))
    return ok(f"autoscale now max={scaler.max_concurrency} min={scaler.min_concurrency}")


@command("control")
def shutdown(worker: Worker, msg: str = "Got shutdown from remote", **kwargs: Any) -> Any:
    """Warm shutdown: finish running tasks, give back the rest, exit."""
    logger.warning("%s", msg)
    worker.stop(warm=True)
    return ok("shutting down")


@command("control", args=(("modules", str),), variadic=True)
def pool_restart(worker: Worker, modules: Any = None, reload: bool = False,
                 reloader: Any = None, **kwargs: Any) -> Any:  # fmt: skip
    """Import (with reload, re-import) task modules; needs worker_pool_restarts."""
    if not worker.app.conf.worker_pool_restarts:
        return error("Pool restarts not enabled: set worker_pool_restarts = True")
    names = [modules] if isinstance(modules, str) else list(modules or ())
    worker.reload(names, reload=bool(reload))
    return ok("reload started")


@command("control")
def election(worker: Worker, id: Any = None, topic: Any = None, action: Any = None,
             **kwargs: Any) -> Any:  # fmt: skip
    """Gossip elections: caraway workers run no gossip, so none takes part."""
    return None
