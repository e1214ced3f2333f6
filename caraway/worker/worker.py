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
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from caraway import signals
from caraway.beat import EmbeddedService
from caraway.current import get_current_task
from caraway.exceptions import ImproperlyConfigured, OperationalError, Unreachable
from caraway.queues import worker_direct
from caraway.routing import queue_table, worker_queues
from caraway.utils.imports import symbol_by_name
from caraway.utils.log import expand_node_path, redirect_stdouts, restore_stdouts, setup_logging
from caraway.utils.time import SYSTEM_CLOCK, Clock
from caraway.worker.autoscale import Autoscaler, parse_autoscale
from caraway.worker.connection import BrokerLink, RetryPolicy
from caraway.worker.consumer import Consumer
from caraway.worker.health import STUCK_AFTER, HealthServer
from caraway.worker.pools import create_pool
from caraway.worker.pools.base import Pool, PoolOptions
from caraway.worker.pools.watching import WatchingPool
from caraway.worker.remote import RemoteControl
from caraway.worker.reserved import ReservingPool
from caraway.worker.state import WorkerState
from caraway.worker.timers import Timer

if TYPE_CHECKING:
    from types import FrameType

    from caraway.app import Caraway
    from caraway.beat import EmbeddedService
    from caraway.engines.base.broker import Broker
    from caraway.events.dispatcher import EventDispatcher
    from caraway.metrics.worker import WorkerMetrics
    from caraway.worker.health import Document
    from caraway.worker.monitor import TaskMonitor

logger = logging.getLogger("caraway.worker")
#: Seconds between checks for revocations and for leases of processes that died.
REVOCATION_POLL = 0.5
ORPHAN_POLL = 5.0
AUTOSCALE_INTERVAL = 1.0
#: Pools that can grow and shrink while they run.
AUTOSCALED_POOLS = ("threads", "prefork", "gevent", "eventlet")
CLEANUP_INTERVAL = 3600.0
#: Messages reserved per slot when ``worker_prefetch_multiplier`` is 0 (Celery: unlimited).
UNLIMITED_PREFETCH = 1000
#: Seconds between saves of ``--statedb`` (and once more at shutdown).
STATEDB_INTERVAL = 10.0
#: How often a shutdown looks whether running tasks are done, in seconds.
DRAIN_POLL = 0.05
#: The exit code after a cold shutdown, as Celery's (``EX_FAILURE``); a warm one exits 0.
COLD_EXITCODE = 1
#: Longest wait between looks at a stop request while the broker is retried at boot (s).
CONNECT_POLL = 0.1
#: Pools whose tasks run in child processes.
PROCESS_POOLS = ("prefork", "processes")


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
        clock: Clock = SYSTEM_CLOCK,
        **options: Any,
    ) -> None:
        conf = app.conf
        self.app = app
        self.hostname = expand_hostname(hostname)
        if isinstance(queues, str):
            queues = [q for q in queues.split(",") if q]
        self.queues = worker_queues(
            queues, conf.task_default_queue, conf.task_queues, conf.task_create_missing_queues
        )
        excluded = set(exclude_queues or ())
        self.queues = [q for q in self.queues if q not in excluded]
        table = queue_table(conf)
        #: How each consumed queue is declared and bound (``task_queues``' exchanges).
        self.declarations = {name: table.declaration(table.get(name)) for name in self.queues}
        if conf.worker_direct:  # a queue only this worker consumes, as Celery names it
            direct = table.declaration(worker_direct(self.hostname))
            self.declarations[direct.queue] = direct
            self.queues.append(direct.queue)
        self.pool_name = pool or conf.worker_pool or "prefork"
        self.concurrency = concurrency or conf.worker_concurrency or os.cpu_count() or 1
        if self.pool_name == "solo":
            self.concurrency = 1
        #: ``--autoscale=MAX,MIN``: the pool starts at MIN (at least one) and follows the load.
        self.autoscale = parse_autoscale(options["autoscale"]) if options.get("autoscale") else None
        self.autoscaler: Autoscaler | None = None
        if self.autoscale is not None:
            if self.pool_name not in AUTOSCALED_POOLS:
                raise ImproperlyConfigured(
                    f"--autoscale needs a pool that can grow ({', '.join(AUTOSCALED_POOLS)}),"
                    f" not {self.pool_name!r}"
                )
            self.concurrency = max(1, self.autoscale[1])
        multiplier = int(
            conf.worker_prefetch_multiplier if prefetch_multiplier is None else prefetch_multiplier
        )
        # 0 means "no limit" in Celery; a bounded window still keeps the lease renewals cheap.
        self.prefetch_multiplier = multiplier or UNLIMITED_PREFETCH
        self.prefetch = self.concurrency * self.prefetch_multiplier
        self.disable_prefetch = bool(
            options.get("disable_prefetch") or conf.worker_disable_prefetch
        )
        if self.disable_prefetch:
            self.prefetch = self.concurrency  # take a message only when a slot is free
        self.loglevel = loglevel if loglevel is not None else logging.WARNING
        #: ``%n``, ``%i``... filled in; prefork children fill in their own index.
        self.logfile_template = logfile
        self.logfile = expand_node_path(logfile, self.hostname) if logfile else None
        statedb = options.get("statedb") or conf.worker_state_db
        #: ``--statedb``: revoked ids survive restarts (brokers that broadcast forget them).
        self.statedb = expand_node_path(str(statedb), self.hostname) if statedb else None
        self._setup_logging = setup_logging
        self._install_signals = install_signal_handlers
        self.state = WorkerState()
        #: Times ETAs, expiry, rate limits, time limits and housekeeping, and the broker's own
        #: holds and leases: a test passes a ``FakeClock`` to run "in 30 s" in virtual time.
        self.timer = Timer(clock)
        self.consumer: Consumer | None = None
        #: Whether the broker is reachable, and Celery's retry policy for when it is not.
        self.link: BrokerLink | None = None
        self.health: HealthServer | None = None
        #: ``--metrics``: Prometheus metrics on the health port (made at boot).
        self.metrics: WorkerMetrics | None = None
        self._serve_metrics = bool(options.get("metrics") or conf.worker_metrics)
        if self._serve_metrics and options.get("health_port") is None:
            raise ImproperlyConfigured(
                "--metrics (worker_metrics) serves /metrics on the health port: give"
                " --health-port too"
            )
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self._cold = False
        #: What the process should exit with once ``start()`` returned (Celery's ``exitcode``).
        self.exitcode = 0
        self._stop_requested = threading.Event()
        #: Set by SIGHUP: whoever started the worker (the CLI) starts it again once stopped.
        self.restart_requested = False
        self.options = options
        self.beat: EmbeddedService | None = None  # beat in a thread, with ``-B``
        # Remote control and events (caraway.worker.remote), set up at boot.
        self.started_at = time.monotonic()
        self.reserving: ReservingPool | None = None
        self.events: EventDispatcher | None = None
        self.monitor: TaskMonitor | None = None
        self.remote = RemoteControl(
            self,
            task_events=bool(options.get("task_events") or conf.worker_send_task_events),
            without_heartbeat=bool(options.get("without_heartbeat")),
            without_mingle=bool(options.get("without_mingle")),
            heartbeat_interval=options.get("heartbeat_interval"),
        )

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Run until stopped (SIGTERM/SIGINT with signal handlers, or ``stop()``)."""
        try:
            self._boot()
            if self.consumer is None:  # stopped while waiting for the broker
                return
            if self._stop_requested.is_set():  # stop() came while booting
                self.consumer.stop()
            signals.worker_ready.send(sender=self)
            self.ready.set()
            logger.info("%s ready.", self.hostname)
            self.consumer.run()
        finally:
            self._shutdown()
            if self._setup_logging:
                restore_stdouts()

    def _boot(self) -> None:
        app = self.app
        if self._setup_logging:
            self._configure_logging()
        signals.celeryd_init.send(sender=self.hostname, instance=self, conf=app.conf)
        signals.worker_init.send(sender=self)
        app.import_task_modules()
        app.finalize()
        broker = app.broker
        broker.clock = self.timer.clock  # the broker's own holds and leases on this clock too
        app.backend  # noqa: B018 - create the backend now, so a bad URL fails at boot
        if self.statedb:
            restored = self.state.load(self.statedb)
            logger.info("Restored %d revoked task id(s) from %s", restored, self.statedb)
        if self._install_signals:
            self._install_signal_handlers()
        pool = self.reserving = ReservingPool(self._create_pool(broker))
        pool.start()
        if self.options.get("health_port") is not None:  # after the fork: children skip it
            self.health = HealthServer(
                int(self.options["health_port"]), self.live, self.serving, self._health_address(),
                self._metrics_documents(),
            )  # fmt: skip
            self.health.start()
        if self.pool_name not in PROCESS_POOLS:  # prefork children send it themselves
            signals.worker_process_init.send(sender=self)
        self.link = BrokerLink(broker.describe(), RetryPolicy.from_conf(app.conf))
        if not self._connect(broker, self.link):
            return
        # Every queue, plain ones too: a plain queue is bound to the direct exchange of its
        # name, so a message sent to that exchange (``call --exchange q --routing-key q``)
        # reaches it on every engine, as kombu's declaration makes it on RabbitMQ and Redis.
        for declaration in self.declarations.values():
            broker.declare_bound(declaration)
        self.consumer = Consumer(
            app, broker, self.queues, pool, self.timer, self.state, self.hostname, self.prefetch,
            self.link, count_running=self.disable_prefetch,
        )  # fmt: skip
        self.consumer.metrics = self.metrics
        self._start_housekeeping(broker)
        if self.options.get("beat"):
            self._start_beat()
        self.remote.start()
        signals.celeryd_after_setup.send(sender=self.hostname, instance=self, conf=app.conf)
        logger.info("%s", self.banner())

    def _connect(self, broker: Broker, link: BrokerLink) -> bool:
        """Reach the broker before saying ready, retrying per ``broker_connection_*``.

        False if the worker was asked to stop meanwhile; ``OperationalError`` (naming the
        masked URL and the cause) when the policy gives up.
        """
        while not self._stop_requested.is_set():
            try:
                broker.connect()
            except Unreachable as exc:
                link.failed(exc)  # raises once the retries are spent
                deadline = time.monotonic() + link.pause()
                while not self._stop_requested.is_set() and time.monotonic() < deadline:
                    self._stop_requested.wait(min(CONNECT_POLL, deadline - time.monotonic()))
                continue
            link.restored()
            return True
        return False

    def _health_address(self) -> str:
        """``--health-address`` or ``worker_health_address``; empty: every interface."""
        address = self.options.get("health_address")
        if address is None:
            address = self.app.conf.worker_health_address
        return str(address or "")

    def _metrics_documents(self) -> dict[str, Document]:
        """``/metrics`` when asked for (``--metrics``), else nothing."""
        if not self._serve_metrics:
            return {}
        # Lazy, prometheus_client is an extra: only a worker serving metrics loads it.
        from caraway.metrics import WorkerMetrics

        self.metrics = WorkerMetrics(self)
        return {"/metrics": self.metrics.render}

    def _create_pool(self, broker: Broker) -> Pool:
        """Prefork children fetch for themselves when asked (``worker_prefork_children_fetch``)
        and the broker lets any connection settle any delivery (``settle_anywhere``);
        otherwise the supervisor hands them each job, as Celery's prefork does."""
        options = self._pool_options()
        children_fetch = self.app.conf.worker_prefork_children_fetch
        if self.pool_name in PROCESS_POOLS and children_fetch:
            if not broker.capabilities.settle_anywhere:
                raise ImproperlyConfigured(
                    "worker_prefork_children_fetch needs a broker whose deliveries any "
                    f"connection may settle (Redis); {type(broker).__name__} is not one: "
                    "remove the setting, or use a redis:// broker"
                )
            return WatchingPool(self.concurrency, options)
            return WatchingPool(self.concurrency, options)
        return create_pool(self.pool_name, self.concurrency, options)

    def _pool_options(self) -> PoolOptions:
        conf, options = self.app.conf, self.options
        max_tasks = options.get("max_tasks_per_child") or conf.worker_max_tasks_per_child
        max_memory = options.get("max_memory_per_child") or conf.worker_max_memory_per_child
        return PoolOptions(
            self.app, max_tasks, max_memory, self.logfile_template, self.hostname,
            tuple(self.queues), self.prefetch,
        )  # fmt: skip

    def live(self) -> bool:
        """Liveness: booting, or the consumer loop turned within ``STUCK_AFTER`` seconds
        and every pool slot can still run a task (none died unreplaced)."""
        consumer = self.consumer
        if consumer is None or self.stopped.is_set():
            return not self.stopped.is_set()
        if time.monotonic() - consumer.heartbeat >= STUCK_AFTER:
            return False
        pool = consumer.pool
        return self._stop_requested.is_set() or pool.live_slots() >= pool.limit

    def serving(self) -> bool:
        """Readiness: consuming with the broker reachable; not booting or stopping."""
        link = self.link
        ready = self.ready.is_set() and not self._stop_requested.is_set()
        return ready and link is not None and link.connected

    def _start_housekeeping(self, broker: Broker) -> None:
        assert self.consumer is not None
        capabilities = broker.capabilities
        if capabilities.reclaims_orphans:
            given_back = broker.reclaim_orphans()
            if given_back:
                logger.warning("Restored %d message(s) left by a worker that died", given_back)
            self.timer.call_repeatedly(ORPHAN_POLL, broker.reclaim_orphans)
        self.consumer.poll_revocations()
        self.timer.call_repeatedly(REVOCATION_POLL, self.consumer.poll_revocations)
        if capabilities.leases:
            renew_every = max(capabilities.lease_seconds / 3, 0.05)
            self.timer.call_repeatedly(renew_every, self.consumer.renew_leases)
        self.timer.call_repeatedly(CLEANUP_INTERVAL, self.app.backend.cleanup)
        if self.statedb:
            self.timer.call_repeatedly(STATEDB_INTERVAL, self._save_state)
        if self.autoscale is not None:
            scaler_class = symbol_by_name(self.app.conf.worker_autoscaler)
            self.autoscaler = scaler_class(self, *self.autoscale)
            self.timer.call_repeatedly(AUTOSCALE_INTERVAL, self.autoscaler.tick)
        self.timer.start()

    def _start_beat(self) -> None:
        """``-B``: beat in a thread of this worker, as Celery's embedded beat."""
        if self.concurrency > 1:
            logger.warning(
                "Running beat inside the worker (-B) is meant for development. In production "
                "run `caraway beat` as its own service: any number of beats may run with "
                "-S database, and exactly one of them sends each task."
            )
        self.beat = EmbeddedService(
            self.app,
            schedule_filename=self.options.get("schedule_filename"),
            scheduler_cls=self.options.get("scheduler"),
        )
        self.beat.run_in_background()

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
        signals.worker_shutting_down.send(
            sender=self.hostname, sig="SIGTERM", how=how, exitcode=self._exitcode()
        )
        consumer = self.consumer
        if consumer is not None:
            try:
                given_back = consumer.give_back()
            except OperationalError as exc:  # they come back after the visibility timeout
                logger.warning("Could not give back the prefetched messages: %s", exc)
                given_back = 0
            if given_back:
                logger.info("Gave back %d prefetched message(s) to the broker", given_back)
            self._drain()
            if self._cold:
                self._soft_shutdown()
            consumer.pool.stop(wait=not self._cold)
        elif self.reserving is not None:  # boot ended before consuming (stopped, gave up)
            self.reserving.stop(wait=True)
        self.timer.stop()
        if self.beat is not None:
            self.beat.stop(wait=True)
        self.remote.stop()
        if self.statedb:
            self._save_state()
        if self.health is not None:
            self.health.stop()
        # A second signal may have turned the warm shutdown cold while it drained.
        self.exitcode = self._exitcode()
        signals.worker_process_shutdown.send(sender=self, pid=os.getpid(), exitcode=self.exitcode)
        signals.worker_shutdown.send(sender=self)
        self.stopped.set()
        how = "cold" if self._cold else "warm"
        logger.info("%s stopped (%s shutdown).", self.hostname, how)

    def _exitcode(self) -> int:
        return COLD_EXITCODE if self._cold else 0

    def _save_state(self) -> None:
        assert self.statedb is not None
        self.state.save(self.statedb)

    def _drain(self) -> None:
        """Warm shutdown: wait for running tasks, until a cold shutdown is asked for."""
        while self.state.active and not self._cold:
            time.sleep(DRAIN_POLL)

    def _soft_shutdown(self) -> None:
        """Celery's soft shutdown: before a cold shutdown, running tasks get a last delay."""
        conf = self.app.conf
        timeout = float(
            self.options.get("soft_shutdown_timeout") or conf.worker_soft_shutdown_timeout or 0
        )
        on_idle = self.options.get("enable_soft_shutdown_on_idle")
        if on_idle is None:
            on_idle = conf.worker_enable_soft_shutdown_on_idle
        if timeout <= 0 or not (self.state.active or on_idle):
            return
        logger.warning("Soft shutdown: running tasks get %.1f s before the cold shutdown", timeout)
        deadline = time.monotonic() + timeout
        while (self.state.active or on_idle) and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL)

    # --- process-level concerns ----------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        def on_term(signum: int, frame: FrameType | None) -> None:
            if self._stop_requested.is_set():
                logger.warning("Second %s: cold shutdown", _name(signum))
                self.stop(warm=False)
                return
            again = "Ctrl-C" if signum == signal.SIGINT else _name(signum)
            logger.warning(
                "%s received: warm shutdown (finishing running tasks; %s again stops them now)",
                _name(signum), again,
            )  # fmt: skip
            self.stop(warm=True)

        def on_hup(signum: int, frame: FrameType | None) -> None:
            logger.warning("SIGHUP received: restarting (warm shutdown, then a new start)")
            self.restart_requested = True
            self.stop(warm=True)

        def on_cold(signum: int, frame: FrameType | None) -> None:
            logger.warning("%s received: cold shutdown", _name(signum))
            self.stop(warm=False)

        # Celery's REMAP_SIGTERM=SIGQUIT: SIGTERM asks for the (soft, then) cold shutdown, so
        # an orchestrator's single SIGTERM drains for --soft-shutdown-timeout at most.
        remapped = os.environ.get("REMAP_SIGTERM", "").upper() == "SIGQUIT"
        signal.signal(signal.SIGTERM, on_cold if remapped else on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGQUIT, on_cold)
        signal.signal(signal.SIGHUP, on_hup)

    def _configure_logging(self) -> None:
        conf = self.app.conf
        handled = signals.setup_logging.send(
            sender=None, loglevel=self.loglevel, logfile=self.logfile,
            format=conf.worker_log_format, colorize=False,
        )  # fmt: skip
        if not handled:
            setup_logging(
                self.loglevel, self.logfile, conf.worker_log_format, conf.worker_task_log_format,
                current_task=get_current_task, hijack=conf.worker_hijack_root_logger,
            )  # fmt: skip
        root = logging.getLogger()
        signals.after_setup_logger.send(
            sender=None, logger=root, loglevel=self.loglevel, logfile=self.logfile,
            format=conf.worker_log_format, colorize=False,
        )  # fmt: skip
        signals.after_setup_task_logger.send(
            sender=None, logger=logging.getLogger("caraway.task"), loglevel=self.loglevel,
            logfile=self.logfile, format=conf.worker_task_log_format, colorize=False,
        )  # fmt: skip
        if conf.worker_redirect_stdouts:  # after the handlers, so they keep the real streams
            redirect_stdouts(conf.worker_redirect_stdouts_level)

    def _queue_line(self, queue: str) -> str:
        """A queue as Celery's banner shows it: name, exchange (type) and key."""
        bound = self.declarations[queue]
        return (
            f"{queue:<16} exchange={bound.exchange}({bound.exchange_type}) key={bound.routing_key}"
        )

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
            + "".join(f"                .> {self._queue_line(q)}\n" for q in self.queues)
            + f"\n[tasks]\n{tasks}\n"
        )


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
