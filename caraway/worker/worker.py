"""``Worker``: boots the parts in order and shuts them down warmly.

Boot order (``start``): logging → worker_init → import task modules → engines → pool →
timer (leases, revocations, time limits) → worker_ready → consume. A warm shutdown stops
fetching, gives back what was prefetched but not started, and lets running tasks finish.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from caraway import signals
from caraway.utils.log import setup_logging
from caraway.worker.consumer import Consumer
from caraway.worker.pools import create_pool
from caraway.worker.state import WorkerState
from caraway.worker.timers import Timer

if TYPE_CHECKING:
    from types import FrameType

    from caraway.app import Caraway

logger = logging.getLogger("caraway.worker")
#: Seconds between checks for revocations and for leases of processes that died.
REVOCATION_POLL = 0.5
ORPHAN_POLL = 5.0
CLEANUP_INTERVAL = 3600.0
#: Messages reserved per slot when ``worker_prefetch_multiplier`` is 0 (Celery: unlimited).
UNLIMITED_PREFETCH = 1000


def expand_hostname(template: str | None) -> str:
    """``-n`` with Celery's ``%h`` (full), ``%n`` (name part) and ``%d`` (domain) filled in."""
    host = socket.gethostname()
    name, _, domain = host.partition(".")
    template = template or "caraway@%h"
    value = template.replace("%h", host).replace("%n", name).replace("%d", domain)
    return value if "@" in value else f"{value}@{host}"


class Worker:
    def __init__(
        self,
        app: Caraway,
        hostname: str | None = None,
        queues: Iterable[str] | str | None = None,
        exclude_queues: Iterable[str] | None = None,
        concurrency: int | None = None,
        pool: str | None = None,
        loglevel: int | str | None = None,
        logfile: str | None = None,
        prefetch_multiplier: int | None = None,
        setup_logging: bool = False,
        install_signal_handlers: bool = False,
        **options: Any,
    ) -> None:
        conf = app.conf
        self.app = app
        self.hostname = expand_hostname(hostname)
        if isinstance(queues, str):
            queues = [q for q in queues.split(",") if q]
        self.queues = list(queues or [conf.task_default_queue])
        excluded = set(exclude_queues or ())
        self.queues = [q for q in self.queues if q not in excluded]
        self.pool_name = pool or conf.worker_pool or "threads"
        self.concurrency = concurrency or conf.worker_concurrency or os.cpu_count() or 1
        if self.pool_name == "solo":
            self.concurrency = 1
        multiplier = int(
            conf.worker_prefetch_multiplier if prefetch_multiplier is None else prefetch_multiplier
        )
        # 0 means "no limit" in Celery; a bounded window still keeps the lease renewals cheap.
        self.prefetch = self.concurrency * (multiplier or UNLIMITED_PREFETCH)
        self.loglevel = loglevel if loglevel is not None else logging.WARNING
        self.logfile = logfile
        self._setup_logging = setup_logging
        self._install_signals = install_signal_handlers
        self.state = WorkerState()
        self.timer = Timer()
        self.consumer: Consumer | None = None
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self._cold = False
        self._stop_requested = threading.Event()
        self.options = options

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Run until stopped (SIGTERM/SIGINT with signal handlers, or ``stop()``)."""
        try:
            self._boot()
            assert self.consumer is not None
            if self._stop_requested.is_set():  # stop() came while booting
                self.consumer.stop()
            signals.worker_ready.send(sender=self)
            self.ready.set()
            logger.info("%s ready.", self.hostname)
            self.consumer.run()
        finally:
            self._shutdown()

    def _boot(self) -> None:
        app = self.app
        if self._setup_logging:
            self._configure_logging()
        signals.celeryd_init.send(sender=self.hostname, instance=self, conf=app.conf)
        signals.worker_init.send(sender=self)
        app.import_task_modules()
        app.finalize()
        broker = app.broker
        app.backend  # noqa: B018 - create the backend now, so a bad URL fails at boot
        if self._install_signals:
            self._install_signal_handlers()
        pool = create_pool(self.pool_name, self.concurrency)
        pool.start()
        signals.worker_process_init.send(sender=self)
        self.consumer = Consumer(
            app, broker, self.queues, pool, self.timer, self.state, self.hostname, self.prefetch
        )
        self._start_housekeeping(broker)
        signals.celeryd_after_setup.send(sender=self.hostname, instance=self, conf=app.conf)
        logger.info("%s", self.banner())

    def _start_housekeeping(self, broker: Any) -> None:
        assert self.consumer is not None
        reclaim = getattr(broker, "reclaim_orphans", None)
        if reclaim is not None:
            given_back = reclaim()
            if given_back:
                logger.warning("Restored %d message(s) left by a worker that died", given_back)
            self.timer.call_repeatedly(ORPHAN_POLL, reclaim)
        self.consumer.poll_revocations()
        self.timer.call_repeatedly(REVOCATION_POLL, self.consumer.poll_revocations)
        if broker.leases:
            lease = float(getattr(broker, "lease_seconds", 60.0))
            self.timer.call_repeatedly(max(lease / 3, 0.05), self.consumer.renew_leases)
        self.timer.call_repeatedly(CLEANUP_INTERVAL, self.app.backend.cleanup)
        self.timer.start()

    def stop(self, warm: bool = True) -> None:
        """Ask the worker to stop; safe from any thread and from signal handlers."""
        self._cold = self._cold or not warm
        self._stop_requested.set()
        if self.consumer is not None:
            self.consumer.stop()

    def reload(
        self, modules: Iterable[str] | None = None, reload: bool = False, reloader: Any = None
    ) -> None:
        """Import ``modules`` (again, with ``reload``), as Celery's ``WorkController.reload``.

        Tasks are looked up by name for each message, so tasks registered after the start
        (``celery_worker.reload()`` in Celery's testing docs) need nothing more.
        """
        import importlib
        import sys

        for name in modules or ():
            if reload and name in sys.modules:
                (reloader or importlib.reload)(sys.modules[name])
            else:
                importlib.import_module(name)

    def _shutdown(self) -> None:
        how = "Cold" if self._cold else "Warm"
        signals.worker_shutting_down.send(sender=self.hostname, sig="SIGTERM", how=how, exitcode=0)
        consumer = self.consumer
        if consumer is not None:
            given_back = consumer.give_back()
            if given_back:
                logger.info("Gave back %d prefetched message(s) to the broker", given_back)
            consumer.pool.stop(wait=not self._cold)
        self.timer.stop()
        signals.worker_process_shutdown.send(sender=self, pid=os.getpid(), exitcode=0)
        signals.worker_shutdown.send(sender=self)
        self.stopped.set()
        logger.info("%s stopped (%s shutdown).", self.hostname, how.lower())

    # --- process-level concerns ----------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        def on_term(signum: int, frame: FrameType | None) -> None:
            logger.warning("%s received: warm shutdown (finishing running tasks)", _name(signum))
            self.stop(warm=True)

        def on_int(signum: int, frame: FrameType | None) -> None:
            if self.consumer is not None and self.consumer._stopping.is_set():
                logger.warning("Second SIGINT: cold shutdown")
                self.stop(warm=False)
                return
            on_term(signum, frame)

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_int)
        signal.signal(signal.SIGQUIT, lambda s, f: self.stop(warm=False))

    def _configure_logging(self) -> None:
        conf = self.app.conf
        handled = signals.setup_logging.send(
            sender=None, loglevel=self.loglevel, logfile=self.logfile,
            format=conf.worker_log_format, colorize=False,
        )  # fmt: skip
        if not handled:
            setup_logging(
                self.loglevel, self.logfile, conf.worker_log_format, conf.worker_task_log_format
            )
        root = logging.getLogger()
        signals.after_setup_logger.send(
            sender=None, logger=root, loglevel=self.loglevel, logfile=self.logfile,
            format=conf.worker_log_format, colorize=False,
        )  # fmt: skip
        signals.after_setup_task_logger.send(
            sender=None, logger=logging.getLogger("caraway.task"), loglevel=self.loglevel,
            logfile=self.logfile, format=conf.worker_task_log_format, colorize=False,
        )  # fmt: skip

    def banner(self) -> str:
        app = self.app
        tasks = "\n".join(f"  . {name}" for name in sorted(app.tasks.regular()))
        return (
            f"\n-------------- {self.hostname} v0.1.0 (caraway)\n"
            f"- ** ---------- [config]\n"
            f"- ** ---------- .> app:         {app.main or '__main__'}:{id(app):#x}\n"
            f"- ** ---------- .> transport:   {app.broker.describe()}\n"
            f"- ** ---------- .> results:     {app.backend.describe()}\n"
            f"- *** --- * --- .> concurrency: {self.concurrency} ({self.pool_name})\n"
            f"-------------- [queues]\n"
            + "".join(f"                .> {q}\n" for q in self.queues)
            + f"\n[tasks]\n{tasks}\n"
        )


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
