"""An embedded worker for integration tests: a real worker in a thread of the test process.

``start_worker`` boots ``app.Worker`` in a daemon thread, waits until it consumes, checks
that it answers ``celery.ping`` through the broker, and stops it warmly on exit. Every wait
is bounded, and each failure says which step did not happen.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from caraway.contrib.testing.app import logging_enabled
from caraway.current import set_current_app
from caraway.engines.base.disabled import BackendNotConfigured
from caraway.exceptions import CarawayError, TimeoutError
from caraway.signals import Signal

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.worker.worker import Worker

__all__ = [
    "WORKER_LOGLEVEL",
    "EmbeddedWorkerError",
    "setup_app_for_worker",
    "start_worker",
    "test_worker_started",
    "test_worker_starting",
    "test_worker_stopped",
]

#: Log level of embedded workers that set up logging; ``$WORKER_LOGLEVEL`` as in Celery.
WORKER_LOGLEVEL = os.environ.get("WORKER_LOGLEVEL", "error")

test_worker_starting = Signal("test_worker_starting")
test_worker_started = Signal("test_worker_started", frozenset({"worker", "consumer"}))
test_worker_stopped = Signal("test_worker_stopped", frozenset({"worker"}))

_names = itertools.count(2)
#: Default node names of the embedded workers running now in this process.
_running_names: set[str] = set()
_names_lock = threading.Lock()


class EmbeddedWorkerError(CarawayError, RuntimeError):
    """The embedded worker did not start, answer the ping, or stop in time (or it crashed)."""


def setup_app_for_worker(app: Caraway, loglevel: int | str | None, logfile: str | None) -> None:
    """Prepare ``app`` for an embedded worker: finalize it and make it the current app.

    ``loglevel``/``logfile`` are applied by the worker itself when it sets up logging.
    """
    app.finalize()
    app.set_current()
    app.set_default()


@contextmanager
def start_worker(
    app: Caraway,
    concurrency: int = 1,
    pool: str = "solo",
    loglevel: int | str = WORKER_LOGLEVEL,
    logfile: str | None = None,
    perform_ping_check: bool = True,
    ping_task_timeout: float = 10.0,
    shutdown_timeout: float = 10.0,
    *,
    startup_timeout: float = 10.0,
    **kwargs: Any,
) -> Iterator[Worker]:
    """Run a worker for ``app`` in a thread for the duration of the block; yields it.

    ``kwargs`` go to ``app.Worker`` (``queues``, ``hostname``, ``setup_logging``, ...).
    Raises :class:`EmbeddedWorkerError` when the worker is not consuming within
    ``startup_timeout`` seconds, does not answer ``celery.ping`` within
    ``ping_task_timeout``, does not stop within ``shutdown_timeout``, or crashed.
    """
    test_worker_starting.send(sender=app)
    with _start_worker_thread(
        app, concurrency, pool, loglevel, logfile, startup_timeout, shutdown_timeout, **kwargs
    ) as worker:
        if perform_ping_check:
            _ping(app, worker, ping_task_timeout)
        yield worker
    test_worker_stopped.send(sender=app, worker=worker)


@contextmanager
def _start_worker_thread(
    app: Caraway,
    concurrency: int,
    pool: str,
    loglevel: int | str,
    logfile: str | None,
    startup_timeout: float,
    shutdown_timeout: float,
    **kwargs: Any,
) -> Iterator[Worker]:
    setup_app_for_worker(app, loglevel, logfile)
    with (
        _node_name(kwargs.pop("hostname", None)) as hostname,
        _worker_thread(app, concurrency, pool, loglevel, logfile, startup_timeout,
                       shutdown_timeout, hostname=hostname, **kwargs) as worker,
    ):  # fmt: skip
        yield worker


@contextmanager
def _worker_thread(
    app: Caraway,
    concurrency: int,
    pool: str,
    loglevel: int | str,
    logfile: str | None,
    startup_timeout: float,
    shutdown_timeout: float,
    **kwargs: Any,
) -> Iterator[Worker]:
    kwargs.setdefault("setup_logging", logging_enabled(app))
    worker = app.Worker(
        concurrency=concurrency, pool=pool, loglevel=loglevel, logfile=logfile, **kwargs
    )
    crashed: list[BaseException] = []

    def run() -> None:
        # A new thread starts with an empty context: make this app current in it too.
        set_current_app(app)
        try:
            worker.start()
        except BaseException as exc:  # reported in the test's thread, not as a thread crash
            crashed.append(exc)
        finally:
            _close_thread_connections(worker)

    thread = threading.Thread(target=run, name=f"caraway-worker {worker.hostname}", daemon=True)
    thread.start()
    try:
        _wait_until_ready(worker, thread, crashed, startup_timeout)
    except BaseException:
        worker.stop(warm=False)
        thread.join(shutdown_timeout)
        raise
    test_worker_started.send(sender=app, worker=worker, consumer=worker.consumer)
    try:
        yield worker
    finally:
        worker.stop(warm=True)
        thread.join(shutdown_timeout)
        if thread.is_alive():
            raise EmbeddedWorkerError(
                f"worker {worker.hostname} did not stop within {shutdown_timeout} s "
                "(shutdown_timeout): a task is still running; raise shutdown_timeout if your "
                "tasks take longer"
            )
        if crashed:
            raise EmbeddedWorkerError(f"worker {worker.hostname} crashed") from crashed[0]


@contextmanager
def _node_name(given: str | None) -> Iterator[str]:
    """``given``, else ``gen<pid>@<host>`` (Celery's name for a worker nobody named). A second
    embedded worker running at the same time in this process gets ``gen<pid>-<n>@<host>``:
    replies to control commands are told apart by node name."""
    if given is not None:
        yield given
        return
    host = socket.gethostname()
    with _names_lock:
        name = f"gen{os.getpid()}@{host}"
        while name in _running_names:
            name = f"gen{os.getpid()}-{next(_names)}@{host}"
        _running_names.add(name)
    try:
        yield name
    finally:
        with _names_lock:
            _running_names.discard(name)


def _wait_until_ready(
    worker: Worker, thread: threading.Thread, crashed: list[BaseException], timeout: float
) -> None:
    # Waits on the ready event in short slices, so a worker that failed to boot is reported
    # at once instead of after the whole timeout.
    slices = max(1, int(timeout / 0.05))
    for _ in range(slices):
        if worker.ready.wait(timeout / slices):
            return
        if not thread.is_alive():
            break
    thread.join(0.5)
    if crashed:
        raise EmbeddedWorkerError(
            f"worker {worker.hostname} failed to start: {crashed[0]!r}"
        ) from crashed[0]
    if not thread.is_alive():
        raise EmbeddedWorkerError(f"worker {worker.hostname} stopped before it was ready")
    raise EmbeddedWorkerError(
        f"worker {worker.hostname} was not ready within {timeout} s (startup_timeout)"
    )


def _ping(app: Caraway, worker: Worker, timeout: float) -> None:

    # To the worker's own first queue, so a worker started with queues=[...] answers too.
    result = app.tasks["celery.ping"].apply_async(queue=worker.queues[0])
    try:
        answer = result.get(timeout=timeout)
    except BackendNotConfigured as exc:
        raise EmbeddedWorkerError(
            "the ping check reads the result of celery.ping, and this app has no result "
            "backend: set result_backend, or pass perform_ping_check=False"
        ) from exc
    except TimeoutError as exc:
        raise EmbeddedWorkerError(
            f"worker {worker.hostname} did not answer celery.ping within {timeout} s "
            "(ping_task_timeout)"
        ) from exc
    if answer != "pong":
        raise EmbeddedWorkerError(f"celery.ping answered {answer!r} instead of 'pong'")


def _close_thread_connections(worker: Worker) -> None:
    # SQLite connections are per thread: close the worker thread's before the thread ends.
    if worker.consumer is None:
        return
    worker.app.broker.close()
    worker.app.backend.close()
