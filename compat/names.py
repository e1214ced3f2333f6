# ruff: noqa: E501  (the table reads best as one row per line)
"""Celery 5.7's documented import paths, and what caraway gives for each.

``MODULES`` lists the modules of Celery's API reference (plus ``celery.canvas``,
``celery.utils.log``, ``celery.contrib.testing.tasks`` and ``celery.app.base``, which user code
imports from).
For each, ``caraway.<rest>`` holds every public name of Celery's module (its ``__all__``, or the
public names it defines when it has none) unless the gap is listed here: a whole module in
``MISSING_MODULES`` or single names in ``MISSING_NAMES``, each *refused* (the import fails;
the reason says what to use instead) or *ignored* (the name exists and does nothing, for a
reason given). Names that start with ``_`` (private, and metadata such as ``__author__``) are
not audited.

``tests/unit/test_import_paths.py`` measures the installed Celery against this table and
caraway; ``tools/gen-settings-docs`` writes it into docs/differences.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from caraway.settings import Status

#: Celery's API reference (docs/reference/index.rst), then the four paths user code adds.
MODULES: tuple[str, ...] = (
    "celery", "celery.app", "celery.app.task", "celery.app.amqp", "celery.app.defaults",
    "celery.app.control", "celery.app.registry", "celery.app.backends", "celery.app.builtins",
    "celery.app.events", "celery.app.log", "celery.app.utils", "celery.app.autoretry",
    "celery.bootsteps", "celery.result", "celery.schedules", "celery.signals", "celery.security",
    "celery.utils.debug", "celery.exceptions", "celery.loaders", "celery.loaders.app",
    "celery.loaders.default", "celery.loaders.base", "celery.states",
    "celery.contrib.abortable", "celery.contrib.django.task", "celery.contrib.migrate",
    "celery.contrib.pytest", "celery.contrib.sphinx", "celery.contrib.testing.worker",
    "celery.contrib.testing.app", "celery.contrib.testing.manager",
    "celery.contrib.testing.mocks", "celery.contrib.rdb", "celery.events",
    "celery.events.receiver", "celery.events.dispatcher", "celery.events.event",
    "celery.events.state", "celery.beat", "celery.apps.worker", "celery.apps.beat",
    "celery.apps.multi", "celery.worker", "celery.worker.request", "celery.worker.state",
    "celery.worker.strategy", "celery.worker.consumer", "celery.worker.consumer.agent",
    "celery.worker.consumer.connection", "celery.worker.consumer.consumer",
    "celery.worker.consumer.control", "celery.worker.consumer.events",
    "celery.worker.consumer.gossip", "celery.worker.consumer.heart",
    "celery.worker.consumer.mingle", "celery.worker.consumer.tasks", "celery.worker.worker",
    "celery.bin.base", "celery.bin.celery", "celery.bin.worker", "celery.bin.beat",
    "celery.bin.events", "celery.bin.logtool", "celery.bin.amqp", "celery.bin.graph",
    "celery.bin.multi", "celery.bin.call", "celery.bin.control", "celery.bin.list",
    "celery.bin.migrate", "celery.bin.purge", "celery.bin.result", "celery.bin.shell",
    "celery.bin.upgrade",
    "celery.canvas", "celery.utils.log", "celery.contrib.testing.tasks", "celery.app.base",
)  # fmt: skip


@dataclass(frozen=True)
class Gap:
    """A Celery module or name caraway does not give as Celery does, and why."""

    status: Status
    reason: str


def refused(reason: str) -> Gap:
    return Gap(Status.REFUSED, reason)


_BOOTSTEPS = (
    "Celery's worker is assembled from bootsteps; caraway's is plain composition with no "
    "steps to add or replace: hook in with the worker signals (worker_init, worker_ready, "
    "worker_process_init, worker_shutdown)"
)
_CLI = (
    "the modules behind the command line; caraway's CLI is audited command by command below "
    "(embed it with caraway.cli.main.cli, or app.start(argv) / app.worker_main(argv))"
)
_LOADERS = (
    "caraway has no loaders: settings come from app.config_from_object(...) or "
    "app.conf.update(...), task modules from include / imports (app.import_task_modules())"
)
_WORKER_STATE = (
    "a worker's bookkeeping, global in Celery, belongs to each caraway worker object "
    "(worker.state); ask a running worker with caraway inspect active|reserved|revoked|stats"
)
_APP_INTERNALS = "internals of Celery's app"

#: Celery modules caraway has no module for.
MISSING_MODULES: dict[str, Gap] = {
    "celery.app.amqp": refused(f"{_APP_INTERNALS}: queues and exchanges are caraway.queues (Queue, Exchange, Broadcast); messages are built by caraway.protocol"),
    "celery.app.defaults": refused(f"{_APP_INTERNALS}: every setting, its default and its status is caraway.settings.SETTINGS"),
    "celery.app.backends": refused(f"{_APP_INTERNALS}: engines are chosen by caraway.engines.registry from the URL scheme, an entry point or a class path"),
    "celery.app.builtins": refused(f"{_APP_INTERNALS}: the built-in tasks are in caraway.builtins"),
    "celery.app.utils": refused(f"{_APP_INTERNALS}: app.conf is caraway.config.Configuration; app.bugreport() gives the report"),
    "celery.app.autoretry": refused(f"{_APP_INTERNALS}: autoretry_for is applied by caraway.task.Task itself"),
    "celery.bootsteps": refused(_BOOTSTEPS),
    "celery.utils.debug": refused("memory sampling helpers: ask a worker with caraway inspect memsample / memdump, or use tracemalloc"),
    "celery.loaders": refused(_LOADERS),
    "celery.loaders.app": refused(_LOADERS),
    "celery.loaders.default": refused(_LOADERS),
    "celery.loaders.base": refused(_LOADERS),
    "celery.contrib.migrate": refused("move messages with the caraway migrate command (--tasks, --queues, --ack-messages), or read them with app.broker"),
    "celery.contrib.sphinx": refused("a Sphinx extension for task signatures; caraway tasks keep their function's signature and docstring, which autodoc reads as it is"),
    "celery.contrib.testing.mocks": refused("message mocks for Celery's unit tests; run a task with task.apply() or a real worker (caraway.contrib.testing.worker.start_worker)"),
    "celery.contrib.rdb": refused("a remote pdb; run the worker in the foreground with -P solo and breakpoint(), or use a remote debugger such as remote-pdb"),
    "celery.apps.worker": refused("the worker command's internals: start a worker with app.Worker(...).start() or caraway worker"),
    "celery.apps.beat": refused("the beat command's internals: run beat with caraway.beat.Service(app).start() or caraway beat"),
    "celery.apps.multi": refused("the multi command's internals: use the caraway multi command"),
    "celery.worker.strategy": refused(_BOOTSTEPS),
    **{f"celery.worker.consumer.{name}": refused(_BOOTSTEPS) for name in (
        "agent", "connection", "consumer", "control", "events", "gossip", "heart", "mingle",
        "tasks",
    )},
    **{f"celery.bin.{name}": refused(_CLI) for name in (
        "base", "celery", "worker", "beat", "events", "logtool", "amqp", "graph", "multi",
        "call", "control", "list", "migrate", "purge", "result", "shell", "upgrade",
    )},
}  # fmt: skip

_METADATA = "package metadata: read importlib.metadata.metadata('caraway') or caraway.VERSION"
_OLD_ALIASES = (
    "Celery 3's lazy module aliases, kept for old code; import the module by its own path"
)

#: Names a caraway module lacks from Celery's module of the same path.
MISSING_NAMES: dict[str, dict[str, Gap]] = {
    "celery": {
        "SERIES": refused(_METADATA),
        "VERSION_BANNER": refused(_METADATA),
        "version_info": refused(f"{_METADATA} (a tuple too)"),
        "version_info_t": refused(f"{_METADATA} (a tuple too)"),
        "maybe_patch_concurrency": refused("caraway worker -P gevent|eventlet patches the process itself before anything else is imported"),
        "local": refused(f"{_OLD_ALIASES} (proxies: caraway.current_app, caraway.current_task)"),
        "execute": refused(_OLD_ALIASES),
        "messaging": refused(_OLD_ALIASES),
        "log": refused(f"{_OLD_ALIASES} (logging: caraway.utils.log)"),
    },
    "celery.app": {
        "AppPickler": refused("apps are pickled by reference to their module, not rebuilt from their settings"),
        "default_app": refused("use caraway.current_app, or app_or_default() from caraway.app"),
        "enable_trace": refused("Celery's app-creation tracing (C_TRACE_APP) for debugging; caraway does not trace where apps are made"),
        "disable_trace": refused("Celery's app-creation tracing (C_TRACE_APP) for debugging; caraway does not trace where apps are made"),
        "push_current_task": refused("internal: caraway keeps the current task in a contextvar; read it with caraway.current_task"),
        "pop_current_task": refused("internal: caraway keeps the current task in a contextvar; read it with caraway.current_task"),
    },
    "celery.exceptions": {
        "reraise": refused("a Python 2 helper: raise exc.with_traceback(tb)"),
        "AlwaysEagerIgnored": refused("Celery warns that send_task does not run eagerly under task_always_eager; caraway's send_task sends the message too, without that warning"),
        "DuplicateNodenameWarning": refused("caraway does not look for another worker with the same node name at startup, so it has no such warning"),
        "DuplicateTaskNameWarning": refused("registering a second task under a name replaces the first without a warning, as Celery's registry does for shared tasks"),
        "FixupWarning": refused("caraway's Django fixup reports what it cannot do with ConfigurationWarning"),
        "SecurityWarning": refused("message signing problems are SecurityError (refused messages) or ConfigurationWarning (settings)"),
        "BackendError": refused("a result store that cannot be reached raises OperationalError (caraway.exceptions), after the retries of result_backend_always_retry"),
        "BackendGetMetaError": refused("a result store that cannot be read raises OperationalError (caraway.exceptions), after the retries of result_backend_always_retry"),
        "BackendStoreError": refused("a result store that cannot be written raises OperationalError (caraway.exceptions), after the retries of result_backend_always_retry"),
        "CDeprecationWarning": refused("caraway's deprecations (old setting names) warn with ConfigurationWarning"),
        "CPendingDeprecationWarning": refused("caraway's deprecations (old setting names) warn with ConfigurationWarning"),
        "CeleryCommandException": refused("the command line reports errors as click does: the message, exit status 1 or 2"),
    },
    "celery.app.log": {
        "Logging": refused("caraway sets logging up itself (caraway.utils.log.setup_logging, called by the worker and beat); change it through the setup_logging and after_setup_logger signals"),
    },
    "celery.schedules": {
        "crontab_parser": refused("crontab fields are parsed by crontab(...) itself (caraway.utils.cronfield); a bad field raises ValueError naming it"),
    },
    "celery.signals": {
        **{name: refused("caraway's eventlet pool sends the signals every pool sends (worker_process_init, task_prerun, task_postrun, worker_shutdown); connect to those") for name in (
            "eventlet_pool_started", "eventlet_pool_preshutdown", "eventlet_pool_postshutdown", "eventlet_pool_apply",
        )},
    },
    "celery.utils.log": {
        "ColorFormatter": refused("caraway writes plain log lines (no colour); give a formatter of your own through the setup_logging signal"),
        "base_logger": refused("use logging.getLogger('caraway'), the parent of caraway's loggers"),
        "in_sighandler": refused("internal to Celery's logging in signal handlers"),
        "set_in_sighandler": refused("internal to Celery's logging in signal handlers"),
        "get_multiprocessing_logger": refused("caraway's prefork pool does not use multiprocessing; its children log through caraway's handlers"),
        "reset_multiprocessing_logger": refused("caraway's prefork pool does not use multiprocessing; its children log through caraway's handlers"),
    },
    "celery.contrib.testing.worker": {
        "TestWorkController": refused("start_worker runs caraway's own worker (app.Worker) in a thread; there is no test subclass to import"),
    },
    "celery.contrib.testing.app": {
        "UnitLogging": refused("Celery's logging stub for its unit tests; caraway's test app logs through the standard logging module"),
    },
    "celery.events": {
        "get_exchange": refused("the events exchange is caraway.events.event.EXCHANGE (celeryev, topic); engines declare it"),
        "event_exchange": refused("the events exchange is caraway.events.event.EXCHANGE (celeryev, topic); engines declare it"),
    },
    "celery.events.event": {
        "get_exchange": refused("the events exchange is caraway.events.event.EXCHANGE (celeryev, topic); engines declare it"),
        "event_exchange": refused("the events exchange is caraway.events.event.EXCHANGE (celeryev, topic); engines declare it"),
    },
    "celery.beat": {
        "BeatPidbox": refused("caraway beat takes no remote-control commands (edit schedules with caraway.beat.PeriodicTasks)"),
    },
    "celery.worker": {
        "WorkController": refused("a worker is app.Worker(...) (caraway.worker.worker.Worker), started with .start()"),
    },
    "celery.worker.worker": {
        "WorkController": refused("a worker is app.Worker(...) (caraway.worker.worker.Worker), started with .start()"),
    },
    "celery.worker.state": {
        name: refused(_WORKER_STATE) for name in (
            "SOFTWARE_INFO", "reserved_requests", "active_requests", "scheduled_requests",
            "total_count", "revoked", "task_reserved", "task_scheduled", "maybe_shutdown",
            "task_accepted", "task_ready", "merge_revoked", "Persistent",
        )
    },
    "celery.worker.consumer": {
        name: refused(_BOOTSTEPS) for name in (
            "Agent", "Connection", "Control", "Events", "Gossip", "Heart", "Mingle", "Tasks",
        )
    },
}  # fmt: skip


def caraway_path(module: str) -> str:
    """``celery.app.task`` -> ``caraway.app.task``."""
    return "caraway" + module.removeprefix("celery")
