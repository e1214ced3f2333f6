"""``Caraway`` (also exported as ``Celery``): the app that ties tasks, config and engines.

Creating an app or declaring tasks never connects to anything: the broker and the result
backend are created on first use (first publish, first result read, or worker start).
"""

from __future__ import annotations

import importlib
import sys
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, tzinfo
from functools import cached_property, partial
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    overload,
)

from caraway import signals
from caraway import task as task_module
from caraway.app import report
from caraway.builtins import register_builtins
from caraway.config import Configuration, load_from_envvar
from caraway.connection import Connection, connection_for
from caraway.current import (
    _all_apps,
    _Proxy,
    get_current_app,
    get_current_task,
    set_current_app,
    set_default_app,
)
from caraway.engines.registry import (
    DEFAULT_BROKER_URL,
    create_backend,
    create_broker,
    default_backend_url,
)
from caraway.exceptions import CarawayWarning
from caraway.registry import TaskRegistry
from caraway.result import AsyncResult, GroupResult
from caraway.routing import QueueDeclarations, prepare_routers
from caraway.schedules import maybe_schedule
from caraway.task import task_from_function
from caraway.utils.clock import LamportClock
from caraway.utils.imports import symbol_by_name
from caraway.utils.time import timezone_for

if TYPE_CHECKING:
    from caraway.control import Control
    from caraway.engines.base.backend import Backend
    from caraway.engines.base.broker import Broker
    from caraway.events.app_events import Events
    from caraway.result import AsyncResult
    from caraway.worker.worker import Worker

P = ParamSpec("P")
R = TypeVar("R")

#: Settings handed to the broker engine with its transport options (which win over them).
BROKER_SETTINGS = (
    "broker_heartbeat", "broker_heartbeat_checkrate", "broker_connection_timeout",
    "broker_use_ssl", "broker_login_method", "broker_failover_strategy", "task_default_queue",
    "task_queues", "task_queue_max_priority", "task_default_queue_type",
    "task_create_missing_queue_type",
)  # fmt: skip

#: Integrations every app loads by dotted name (so this module never imports the front-end layer
#: that holds them); each one decides for itself whether it applies to this process.
BUILTIN_FIXUPS = ("caraway.contrib.django.fixup:fixup",)


class Fixup(Protocol):
    """What a fixup gives its app; ``fixups=`` names factories ``fixup(app) -> Fixup | None``
    (None: it does not apply here).

    ``task_cls`` is the default base task class when the app was given none (or None);
    ``autodiscover_tasks()`` lists the packages ``app.autodiscover_tasks()`` searches when
    called without any (Django: the installed apps), evaluated when the worker starts.
    """

    task_cls: str | None

    def autodiscover_tasks(self) -> Iterable[str]: ...


#: ``shared_task`` and shared ``@app.task`` declarations, replayed on every app that finalizes.
_shared_tasks: list[Callable[[Caraway], object]] = []


class Caraway:
    """A task queue application: ``app = Caraway('proj', broker=..., backend=...)``."""

    def __init__(
        self,
        main: str | None = None,
        broker: str | None = None,
        backend: str | None = None,
        include: Iterable[str] | None = None,
        set_as_current: bool = True,
        config_source: Any = None,
        namespace: str | None = None,
        task_cls: type[task_module.Task[Any, Any]] | str | None = None,
        strict_typing: bool = True,
        autofinalize: bool = True,
        fixups: Iterable[str] | None = None,
        **preconf: Any,
    ) -> None:
        self.main = main
        self.strict_typing = strict_typing
        self.autofinalize = autofinalize
        settings: dict[str, Any] = dict(preconf)
        if broker is not None:
            settings["broker_url"] = broker
        if backend is not None:
            settings["result_backend"] = backend
        if include is not None:
            settings["include"] = tuple(include)
        self.conf = Configuration(settings)
        if config_source is not None:
            self.conf.set_source(config_source, namespace)
        self.fixups = tuple(BUILTIN_FIXUPS if fixups is None else fixups)
        self._fixups: list[Fixup] = [
            fixup for name in self.fixups if (fixup := symbol_by_name(name)(self)) is not None
        ]
        self._task_cls = task_cls or next((f.task_cls for f in self._fixups if f.task_cls), None)
        self._base_task: type[task_module.Task[Any, Any]] | None = None
        self._tasks = TaskRegistry()
        self._finalized = False
        # Set once finalize() has returned: ``tasks``, read for every message a worker runs,
        # then skips the lock (which the consumer and the pool threads would contend for).
        self._finalize_done = False
        self._pending: list[Callable[[], task_module.Task[Any, Any]]] = []
        self._lock = threading.RLock()
        self._broker: Broker | None = None
        self._backend: Backend | None = None
        self._local = threading.local()
        self._routers: list[Any] | None = None
        self._autodiscover: list[tuple[Callable[[], Iterable[str]], str]] = []
        self.on_after_configure = signals.Signal("app.on_after_configure")
        self.on_after_finalize = signals.Signal("app.on_after_finalize")
        #: Orders this app's control messages and events (Celery's ``app.clock``).
        self.clock = LamportClock()
        _all_apps.add(self)
        if set_as_current:
            set_current_app(self)
        self.on_init()

    def on_init(self) -> None:
        """Called at the end of ``__init__``: override in a subclass to set the app up."""

    def _make_default(self) -> Caraway:
        set_default_app(self)
        return self

    # --- configuration ------------------------------------------------------------------

    def config_from_object(
        self, obj: Any, silent: bool = False, force: bool = False, namespace: str | None = None
    ) -> None:
        """Read settings from a dict, an object, a module or ``'module'``/``'module:attr'``."""
        self.conf.set_source(obj, namespace, silent=silent)
        self._routers = None

    def config_from_envvar(
        self, variable_name: str, silent: bool = False, force: bool = False
    ) -> bool:
        """Read settings from the module named by an environment variable."""
        self._routers = None
        return load_from_envvar(self.conf, variable_name, silent)

    def add_defaults(self, fun_or_mapping: Any) -> None:
        mapping = fun_or_mapping() if callable(fun_or_mapping) else fun_or_mapping
        for key, value in dict(mapping).items():
            self.conf.setdefault(key, value)

    @property
    def routers(self) -> list[Any]:
        if self._routers is None:
            self._routers = prepare_routers(self.conf.task_routes)
        return self._routers

    # --- tasks --------------------------------------------------------------------------

    @property
    def Task(self) -> type[task_module.Task[Any, Any]]:
        """The app's base task class: subclass it for custom behaviour shared by tasks."""
        if self._base_task is None:
            base = symbol_by_name(self._task_cls) if self._task_cls else task_module.Task
            self._base_task = type("Task", (base,), {"app": self, "__module__": base.__module__})
        return self._base_task

    @Task.setter
    def Task(self, value: type[task_module.Task[Any, Any]]) -> None:
        self._base_task = value

    @overload
    def task(self, fun: Callable[P, R]) -> task_module.Task[P, R]: ...

    @overload
    def task(
        self, *, bind: Literal[True], **options: Any
    ) -> Callable[[Callable[Concatenate[Any, P], R]], task_module.Task[P, R]]: ...

    @overload
    def task(
        self, *, bind: Literal[False] = False, **options: Any
    ) -> Callable[[Callable[P, R]], task_module.Task[P, R]]: ...

    def task(self, fun: Any = None, **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(bind=True, ...)``.

        As in Celery, ``shared=True`` is the default: apps finalized later (a test app, a
        second app in the process) get the task too, unless they define that name themselves.
        """
        shared = options.pop("shared", True)

        def decorate(function: Callable[..., Any]) -> task_module.Task[Any, Any]:
            task = self._register(function, dict(options))
            if shared:
                _shared_tasks.append(partial(_adopt, function=function, options=dict(options)))
            return task

        if fun is not None and callable(fun):
            return decorate(fun)
        if fun is not None:
            raise TypeError("use @app.task or @app.task(**options), not @app.task(<value>)")
        return decorate

    def _register(
        self, fun: Callable[..., Any], options: dict[str, Any]
    ) -> task_module.Task[Any, Any]:
        base = options.pop("base", None) or self.Task
        if not (isinstance(base, type) and issubclass(base, task_module.Task)):
            raise TypeError(f"base= must be a Task subclass, got {base!r}")
        if base is not self.Task and getattr(base, "app", None) is not self:
            base = type(base.__name__, (base,), {"app": self, "__module__": base.__module__})
        task = task_from_function(self, fun, base, options)
        existing = self._tasks.get(task.name or "")
        # Read on the class: through the instance, the function would be a bound method.
        if existing is not None and getattr(type(existing), "__wrapped__", None) is fun:
            return existing
        self._tasks.register(self._annotate(task) if self._finalized else task)
        return task

    def _annotate(self, task: task_module.Task[Any, Any]) -> task_module.Task[Any, Any]:
        """Apply ``task_annotations``: ``{name or '*': {attribute: value}}`` dicts or routers."""
        annotations = self.conf.task_annotations
        if not annotations:
            return task
        for annotation in annotations if isinstance(annotations, list | tuple) else [annotations]:
            if callable(annotation):
                values = annotation(task) or {}
            else:
                values = annotation.get(task.name) or annotation.get("*") or {}
            for attribute, value in values.items():
                setattr(type(task), attribute, value)
        return task

    def register_task(self, task: Any) -> task_module.Task[Any, Any]:
        """Register a class-based task (an instance or a class); binds it to this app."""
        cls: Any = task if isinstance(task, type) else type(task)
        if not getattr(cls, "name", None):
            raise ValueError(f"{cls.__qualname__} needs a 'name' attribute to be registered")
        if getattr(cls, "app", None) is not self:
            cls = type(cls.__name__, (cls,), {"app": self, "__module__": cls.__module__})
        if isinstance(task, type):
            registered: task_module.Task[Any, Any] = cls()
        else:  # the caller's own instance is bound, as in Celery: it then calls this app
            task.__class__ = cls
            registered = task
        task_module.add_autoretry_behaviour(registered)
        self._tasks.register(self._annotate(registered) if self._finalized else registered)
        return registered

    def gen_task_name(self, name: str, module: str) -> str:
        """``module.function``; tasks in ``__main__`` take the app's ``main`` name instead."""
        if module == "__main__" and self.main:
            module = self.main
        return f"{module}.{name}"

    @property
    def tasks(self) -> TaskRegistry:
        """Every registered task; reading it finalizes the app (shared tasks join it)."""
        self.finalize()
        return self._tasks

    def finalize(self, auto: bool = False) -> None:
        if self._finalize_done:
            return
        with self._lock:
            if self._finalized:
                return
            self.conf.check()  # a refused setting fails here, as in Celery
            self._finalized = True
            self._announce_configured()

            register_builtins(self)
            for make in list(_shared_tasks):
                make(self)
            for task in self._tasks.values():
                self._annotate(task)
            self.on_after_finalize.send(sender=self)
            self._finalize_done = True

    @property
    def finalized(self) -> bool:
        return self._finalized

    def _announce_configured(self) -> None:
        """Send ``on_after_configure`` once, before tasks are finalized (as Celery orders it)."""
        if not self.__dict__.get("_configured_sent"):
            self.__dict__["_configured_sent"] = True
            self.on_after_configure.send(sender=self, source=self.conf)

    # --- periodic tasks ---------------------------------------------------------------------

    def add_periodic_task(
        self,
        schedule: Any,
        sig: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        **opts: Any,
    ) -> str:
        """Add an entry to ``beat_schedule``; usually from an ``on_after_configure`` handler.

        ``schedule`` is seconds, a ``timedelta`` or a schedule object; ``sig`` a signature
        whose args, kwargs and options are extended by these. Returns the entry's name.
        """
        key = name or repr(sig)
        entry = {
            "task": getattr(sig, "task", None) or getattr(sig, "name", None) or str(sig),
            "schedule": maybe_schedule(schedule, app=self),
            "args": (*tuple(getattr(sig, "args", ()) or ()), *args),
            "kwargs": {**dict(getattr(sig, "kwargs", {}) or {}), **(kwargs or {})},
            "options": {**dict(getattr(sig, "options", {}) or {}), **opts},
        }
        table = dict(self.conf.beat_schedule or {})  # a copy: never change the shared default
        table[key] = entry
        self.conf.beat_schedule = table
        return key

    def setup_security(
        self,
        allowed_serializers: Iterable[str] | None = None,
        key: str | None = None,
        key_password: bytes | str | None = None,
        cert: str | None = None,
        store: str | None = None,
        digest: str | None = None,
        serializer: str = "json",
    ) -> None:
        """Sign every task this process sends and run only signed ones (process-wide, as in
        Celery): see ``caraway.security``. Needs ``task_serializer = "auth"`` and
        ``accept_content = ["auth"]``, and the ``security_*`` files."""
        # Lazy, optional: caraway.security needs the cryptography package (caraway[auth]).
        from caraway.security import setup_security

        setup_security(
            allowed_serializers, key, key_password, cert, store, digest, serializer, app=self
        )

    def autodiscover_tasks(
        self,
        packages: Iterable[str] | Callable[[], Iterable[str]] | None = None,
        related_name: str = "tasks",
        force: bool = False,
    ) -> None:
        """Import ``<package>.<related_name>`` for each package, when the worker starts.

        Lazy unless ``force``: the list may be a callable evaluated only then (Django's
        ``lambda: settings.INSTALLED_APPS``). Without packages, the app's fixups name them
        (under Django: every installed app). Packages without the module are skipped; an
        ``AppConfig`` path (``"polls.apps.PollsConfig"``) stands for its app's ``name``.
        """
        if packages is None:
            packages = self._packages_from_fixups
        source = packages if callable(packages) else (lambda p=tuple(packages): p)
        self._autodiscover.append((source, related_name))
        if force:
            self.import_task_modules()

    def import_task_modules(self) -> list[str]:
        """Import ``imports``, ``include`` and autodiscovered modules; returns their names."""
        names = [*(self.conf.imports or ()), *(self.conf.include or ())]
        signals.import_modules.send(sender=self)
        for module in names:
            importlib.import_module(module)
        for source, related_name in self._autodiscover:
            for package in map(_package_of, source()):
                candidate = f"{package}.{related_name}" if related_name else package
                try:
                    importlib.import_module(candidate)
                except ModuleNotFoundError as exc:
                    if exc.name not in {candidate, package}:
                        raise
                    continue
                names.append(candidate)
        return names

    def _packages_from_fixups(self) -> list[str]:
        if not self._fixups:
            return list(self.conf.get("installed_apps") or ())
        return [package for fixup in self._fixups for package in fixup.autodiscover_tasks()]

    # --- engines ------------------------------------------------------------------------

    @property
    def broker(self) -> Broker:
        """The broker engine, created on first use from ``broker_url`` (default: the
        embedded file)."""
        if self._broker is None:
            with self._lock:
                if self._broker is None:
                    url = self.conf.broker_url or DEFAULT_BROKER_URL
                    self._broker = create_broker(url, self._broker_options())
        return self._broker

    def _broker_options(self) -> dict[str, Any]:
        """Transport options, plus the settings an engine may need (it cannot see ``conf``)."""
        conf = self.conf
        passed = {name: getattr(conf, name) for name in BROKER_SETTINGS}
        return {**passed, **conf.broker_transport_options}

    @property
    def backend(self) -> Backend:
        """The result backend, created on first use from ``result_backend``.

        With no backend configured, results go to the broker's own store when its engine
        keeps results there (the embedded default); otherwise results are disabled, as in
        Celery.
        """
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = create_backend(
                        self, self._backend_url(), self.conf.result_backend_transport_options
                    )
        return self._backend

    def _backend_url(self) -> str:
        url = self.conf.result_backend
        return str(url) if url else default_backend_url(self.conf.broker_url)

    def connection(self, url: str | None = None, **options: Any) -> Connection:
        """Celery's ``app.connection()``: a handle on this app's broker (caraway.connection)."""
        return connection_for(self, url, **options)

    connection_for_read = connection_for_write = broker_connection = connection

    @cached_property
    def events(self) -> Events:
        """Celery's ``app.events``: ``Receiver``, ``Dispatcher``, ``State``."""
        # Lazy, an allow-listed upward import: Celery's app API reaches up to this layer.
        from caraway.events.app_events import Events

        return Events(self)

    @property
    def amqp(self) -> QueueDeclarations:
        """Celery's ``app.amqp``, reduced to what caraway declares: ``app.amqp.queues``."""
        return QueueDeclarations(self.conf.task_queues, self.conf.task_default_queue)

    @property
    def control(self) -> Control:
        # Lazy, an allow-listed upward import: Celery's app API reaches up to this layer.
        from caraway.control import Control

        return Control(self)

    @property
    def current_task(self) -> task_module.Task[Any, Any] | None:
        """The task running in this thread or coroutine, or None (Celery's ``current_task``)."""
        return get_current_task()

    @property
    def oid(self) -> str:
        """This app's id in ``reply_to``: one per app instance, as in Celery."""
        value: str | None = self.__dict__.get("_oid")
        if value is None:
            value = self.__dict__["_oid"] = str(uuid.uuid4())
        return value

    @property
    def thread_oid(self) -> str:
        return self.oid

    def close(self) -> None:
        """Release connections held by the engines."""
        for engine in (self._broker, self._backend, self.__dict__.pop("_fanout", None)):
            if engine is not None:
                engine.close()
        self._broker = self._backend = None

    # --- calling and results ---------------------------------------------------------------

    def send_task(
        self,
        name: str,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        countdown: float | None = None,
        eta: Any = None,
        task_id: str | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        """Send a task by name, without needing its code here."""
        # Lazy, an allow-listed upward import: Celery's app API reaches up to this layer.
        from caraway.calling import send_task_message

        if self.conf.task_always_eager:
            import warnings

            warnings.warn(
                "send_task() ignores task_always_eager: the task is sent to the broker",
                CarawayWarning,
                stacklevel=2,
            )
        options.setdefault("ignore_result", None)
        return send_task_message(
            self, name, args, kwargs, task_id=task_id, countdown=countdown, eta=eta, **options
        )

    async def send_task_async(
        self, name: str, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:  # fmt: skip
        """``send_task`` to await: publishes without blocking the event loop.

        See ``caraway.calling.async_api``.
        """
        # Lazy, an allow-listed upward import: Celery's app API reaches up to this layer.
        from caraway.calling.async_api import send_async

        return await send_async(self, lambda: self.send_task(name, args, kwargs, **options),
                                options)  # fmt: skip

    def AsyncResult(self, id: str, **kwargs: Any) -> AsyncResult[Any]:
        return AsyncResult(id, app=self, **kwargs)

    def GroupResult(self, id: str | None = None, results: Any = None, **kwargs: Any) -> Any:
        return GroupResult(id, results, app=self, **kwargs)

    def signature(self, *args: Any, **kwargs: Any) -> Any:
        # Lazy, an allow-listed upward import: Celery's app API reaches up to this layer.
        from caraway.canvas import signature

        kwargs.setdefault("app", self)
        return signature(*args, **kwargs)

    def Worker(self, **kwargs: Any) -> Worker:
        # Lazy, an allow-listed upward import: Celery's app API reaches up to this layer.
        from caraway.worker.worker import Worker

        return Worker(self, **kwargs)

    def start(self, argv: list[str] | None = None) -> None:
        """Run a ``caraway`` command for this app: ``app.start(['worker', '-l', 'INFO'])``.

        Without ``argv``, the script's own arguments, so a module ending in
        ``if __name__ == "__main__": app.start()`` runs as ``python myapp.py worker``.
        """
        # Lazy, an allow-listed upward import: Celery's app API reaches up to this layer.
        from caraway.cli.main import run_with_app

        args = sys.argv[1:] if argv is None else list(argv)
        if argv is not None and args[:1] == sys.argv[:1]:
            args = args[1:]  # app.start(sys.argv): the program name is not a command
        run_with_app(self, args)

    def worker_main(self, argv: list[str] | None = None) -> None:
        """Run a worker for this app as ``caraway worker`` would: ``['worker', '-l', 'INFO']``."""
        # Lazy, an allow-listed upward import: Celery's app API reaches up to this layer.
        from caraway.cli.main import run_with_app

        argv = list(argv or ["worker"])
        run_with_app(self, argv if "worker" in argv else ["worker", *argv])

    def set_current(self) -> None:
        set_current_app(self)

    def set_default(self) -> None:
        set_default_app(self)

    def now(self) -> datetime:
        """The current time, aware, in the app's zone (``timezone``), as Celery's."""
        return datetime.now(self.timezone)

    @property
    def timezone(self) -> tzinfo:
        """The zone of schedules (``timezone``/``enable_utc``), as Celery's ``app.timezone``."""
        return timezone_for(self.conf.timezone, bool(self.conf.enable_utc))

    def bugreport(self) -> str:
        """Versions, engines and settings (secrets masked), as ``caraway report`` prints them."""
        return report.bugreport(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.main or '__main__'} at {id(self):#x}>"


Celery = Caraway


def _package_of(name: str) -> str:
    """The package an installed-app entry names: itself, or an ``AppConfig`` path's ``name``."""
    module, _, attribute = name.rpartition(".")
    if not module or not attribute[:1].isupper():  # classes are capitalised, packages are not
        return name
    try:
        config = getattr(importlib.import_module(module), attribute, None)
    except ImportError:
        return name
    package = getattr(config, "name", None) if isinstance(config, type) else None
    return package if isinstance(package, str) else name


def _adopt(app: Caraway, function: Callable[..., Any], options: dict[str, Any]) -> None:
    """Another app's shared ``@app.task``, registered here unless this app has the name."""
    name = options.get("name") or app.gen_task_name(function.__name__, function.__module__)
    if name not in app._tasks:
        app._register(function, dict(options))


def shared_task(fun: Any = None, **options: Any) -> Any:
    """Declare a task for every app (current and future), as Celery's ``shared_task``.

    Returns a proxy that resolves to the task of the current app at each use.
    """

    def decorate(function: Callable[..., Any]) -> Any:
        name = options.get("name")

        def make(app: Caraway) -> task_module.Task[Any, Any]:
            return app._register(function, dict(options))

        _shared_tasks.append(make)
        for app in list(_all_apps):
            if app.finalized:
                make(app)

        def resolve() -> task_module.Task[Any, Any]:
            app = get_current_app()
            task_name = name or app.gen_task_name(function.__name__, function.__module__)
            if task_name not in app.tasks:
                make(app)
            return app.tasks[task_name]

        return _Proxy(resolve)

    if fun is not None and callable(fun):
        return decorate(fun)
    return decorate


def app_or_default(app: Caraway | None = None) -> Caraway:
    """``app``, or the current app when None: Celery's helper for code that takes an
    optional app (``from celery.app import app_or_default``)."""
    return app if app is not None else get_current_app()


def bugreport(app: Caraway | None = None) -> str:
    """``app.bugreport()`` of ``app``, or of the current app (Celery's ``celery.bugreport``)."""
    return app_or_default(app).bugreport()
