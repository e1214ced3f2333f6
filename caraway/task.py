"""``Task``: a function registered with an app, callable here or on a worker.

``@app.task`` makes a subclass of the app's ``Task`` with the function as ``run`` and
registers one instance. ``Task`` is generic over the function's parameters and return type,
so ``add.delay("x")`` is a type error where ``add(x: int, y: int)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, Generic, ParamSpec, TypeVar

from caraway import serialization, states
from caraway.canvas import Signature
from caraway.current import pop_task, push_task
from caraway.exceptions import Ignore, ImproperlyConfigured, MaxRetriesExceededError, Reject, Retry
from caraway.protocol import custom_headers
from caraway.request import Context
from caraway.utils import pydantic_args
from caraway.utils.call_arguments import retry_arguments
from caraway.utils.pydantic_args import ArgumentDumper, PydanticOptions
from caraway.utils.text import did_you_mean
from caraway.utils.time import backoff_countdown

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.engines.base.backend import Backend
    from caraway.result import AsyncResult, EagerResult
    from caraway.utils.einfo import ExceptionInfo

P = ParamSpec("P")
R = TypeVar("R")

#: Options ``@app.task(...)`` accepts besides attributes the base class defines.
TASK_OPTIONS = frozenset(
    {
        "name", "bind", "base", "max_retries", "default_retry_delay", "autoretry_for",
        "dont_autoretry_for", "retry_kwargs", "retry_backoff", "retry_backoff_max",
        "retry_jitter", "ignore_result", "store_errors_even_if_ignored", "serializer",
        "compression", "queue", "routing_key", "exchange", "priority", "rate_limit",
        "time_limit", "soft_time_limit", "acks_late", "acks_on_failure_or_timeout",
        "reject_on_worker_lost", "track_started", "expires", "typing", "shared", "lazy",
        "trail", "send_events", "store_eager_result", "resultrepr_maxsize", "Request",
        "Strategy", "abstract", "filter", "pydantic", "pydantic_strict", "pydantic_context",
        "pydantic_dump_kwargs",
    }
)  # fmt: skip


#: The request a worker (or ``apply``) runs through an overridden ``Task.__call__``, until
#: its ``super().__call__`` takes it (Celery's tracer protects its request stack the same way).
_worker_call: ContextVar[Context | None] = ContextVar("caraway.worker_call", default=None)


#: Task attributes that read a setting unless the task (its options, its class, an
#: annotation) sets them, as Celery binds them from the configuration: ``acks_late`` after
#: ``config_from_object({"task_acks_late": True})`` is True.
FROM_CONFIG = (
    ("serializer", "task_serializer"),
    ("rate_limit", "task_default_rate_limit"),
    ("priority", "task_default_priority"),
    ("time_limit", "task_time_limit"),
    ("soft_time_limit", "task_soft_time_limit"),
    ("track_started", "task_track_started"),
    ("acks_late", "task_acks_late"),
    ("acks_on_failure_or_timeout", "task_acks_on_failure_or_timeout"),
    ("reject_on_worker_lost", "task_reject_on_worker_lost"),
    ("ignore_result", "task_ignore_result"),
    ("store_eager_result", "task_store_eager_result"),
    ("store_errors_even_if_ignored", "task_store_errors_even_if_ignored"),
)


class _FromConfig:
    """A task attribute that reads its setting from the task's app, at each access.

    Read late rather than copied when the task is made, so ``config_from_object`` after the
    ``@app.task`` lines still counts; a value set on a subclass (the task's own option)
    hides it. A task class with no app yet reads ``None``.
    """

    def __init__(self, setting: str) -> None:
        self.setting = setting

    def __get__(self, instance: object, owner: Any) -> Any:
        try:
            conf = owner.app.conf
        except AttributeError:  # a task class no app owns yet
            return None
        # An attribute read: served from the configuration's cache at plain attribute speed.
        return getattr(conf, self.setting)


#: Names of plain parameters and how many of them are required (see ``_binds``).
Plain = tuple[tuple[str, ...], int]


class Task(Generic[P, R]):
    """Base class of every task; subclass it (or ``app.Task``) for shared behaviour."""

    app: ClassVar[Caraway]
    name: ClassVar[str | None] = None
    typing: ClassVar[bool | None] = None
    max_retries: ClassVar[int | None] = 3
    default_retry_delay: ClassVar[float] = 3 * 60
    if TYPE_CHECKING:
        # Set below the class: each reads the app's setting unless the task sets it.
        rate_limit: ClassVar[str | float | None]
        ignore_result: ClassVar[bool | None]
        store_errors_even_if_ignored: ClassVar[bool | None]
        serializer: ClassVar[str | None]
        priority: ClassVar[int | None]
        time_limit: ClassVar[float | None]
        soft_time_limit: ClassVar[float | None]
        acks_late: ClassVar[bool | None]
        acks_on_failure_or_timeout: ClassVar[bool | None]
        reject_on_worker_lost: ClassVar[bool | None]
        track_started: ClassVar[bool | None]
        store_eager_result: ClassVar[bool | None]
    compression: ClassVar[str | None] = None
    queue: ClassVar[str | None] = None
    routing_key: ClassVar[str | None] = None
    exchange: ClassVar[str | None] = None
    expires: ClassVar[Any] = None
    send_events: ClassVar[bool] = True
    autoretry_for: ClassVar[tuple[type[BaseException], ...]] = ()
    dont_autoretry_for: ClassVar[tuple[type[BaseException], ...]] = ()
    retry_kwargs: ClassVar[dict[str, Any]] = {}
    retry_backoff: ClassVar[bool | int] = False
    retry_backoff_max: ClassVar[int] = 600
    retry_jitter: ClassVar[bool] = True
    abstract: ClassVar[bool] = True
    #: Whose hooks the worker calls for each message (caraway.worker.request).
    Request: ClassVar[Any] = "caraway.worker.request:Request"
    MaxRetriesExceededError = MaxRetriesExceededError
    #: ``pydantic=True``: turns model arguments into data the worker rebuilds (see apply_async).
    _dump_arguments: ArgumentDumper | None = None
    #: What plain ``delay()`` calls share (caraway.calling.plain), once one was sent.
    _send_template: Any = None

    _request_var: ContextVar[Context | None]
    _run_signature: tuple[Any, inspect.Signature | None, Plain | None]

    def __init__(self) -> None:
        self._request_var = ContextVar(f"caraway.request:{self.name}", default=None)

    if TYPE_CHECKING:
        run: Callable[..., Any]
    else:

        def run(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError(f"task {self.name!r} must define run()")

    # --- calling ----------------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the task body here and now (no broker, no result stored).

        Reached through an overridden ``__call__`` that a worker (or ``apply``) runs, this is
        that run's body: it keeps the worker's request instead of pushing a direct call's.
        """
        running = _worker_call.get()
        if running is not None and running is self._request_var.get():
            _worker_call.set(None)  # once: the body calling its own task again is a direct call
            result_: R = self.run(*args, **kwargs)
            return result_
        token = push_task(self)
        request_token = self._request_var.set(Context(args=args, kwargs=kwargs))
        try:
            result: R = self.run(*args, **kwargs)
            return result
        finally:
            self._request_var.reset(request_token)
            pop_task(token)

    async def delay_async(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """``delay`` to await: publishes without blocking the event loop.

        See ``caraway.calling.async_api``.
        """
        return await self.send_async(args, kwargs)

    async def send_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """``apply_async`` to await, with the same options (caraway.calling.async_api)."""
        # Lazy, an allow-listed upward import: Celery's Task API reaches up to this layer.
        from caraway.calling.async_api import send_async

        result = await send_async(
            self.app, lambda: self.apply_async(args, kwargs, **options), options
        )
        return result

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task to a worker: ``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult[R]:
        """Send the task with options (countdown, eta, expires, queue, priority, ...)."""
        if self.app.strict_typing if self.typing is None else self.typing:
            self._check_arguments(args, kwargs)
        if self._dump_arguments is not None and not self._sends_pickle(options):
            args, kwargs = self._dump_arguments(tuple(args or ()), dict(kwargs or {}))
        if self.app.conf.task_always_eager:
            return self._apply_eagerly(args, kwargs, task_id, link, link_error, options)
        if not options and task_id is link is link_error is shadow is None:
            plain: AsyncResult[R] = (_send_plain or _import_send_plain())(self, args, kwargs)
            return plain
        # Lazy, an allow-listed upward import: Celery's Task API reaches up to this layer.
        from caraway.calling import send_task_message

        return send_task_message(
            self.app, self.name or "", args, kwargs, task=self, task_id=task_id,
            link=link, link_error=link_error, shadow=shadow, **options,
        )  # fmt: skip

    def _sends_pickle(self, options: dict[str, Any]) -> bool:
        """Pickle carries models as they are, so ``pydantic=True`` leaves them alone."""
        chosen = options.get("serializer") or self.serializer or self.app.conf.task_serializer
        return bool(chosen == "pickle")

    def _apply_eagerly(
        self,
        args: Iterable[Any] | None,
        kwargs: dict[str, Any] | None,
        task_id: str | None,
        link: Any,
        link_error: Any,
        options: dict[str, Any],
    ) -> AsyncResult[R]:
        """Eager calls still pass through the serializer, so bad arguments fail as for real."""
        serializer = options.get("serializer") or self.serializer or self.app.conf.task_serializer
        content_type, encoding, data = serialization.dumps(
            [list(args or ()), dict(kwargs or {})], serializer
        )
        args, kwargs = serialization.loads(data, content_type, encoding)
        return self.apply(
            args, kwargs, task_id=task_id, link=link, link_error=link_error, **options
        )

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        link: Any = None,
        link_error: Any = None,
        task_id: str | None = None,
        retries: int | None = None,
        throw: bool | None = None,
        **options: Any,
    ) -> EagerResult[R]:
        """Run the task in this process, as a worker would, and return an ``EagerResult``."""
        # Lazy, an allow-listed upward import: Celery's Task API reaches up to this layer.
        from caraway.execution import run_eagerly

        if throw is None:
            throw = bool(self.app.conf.task_eager_propagates)
        return run_eagerly(
            self, list(args or ()), dict(kwargs or {}), task_id=task_id, retries=retries or 0,
            link=link, link_error=link_error, throw=throw, options=options,
        )  # fmt: skip

    def _check_arguments(self, args: Iterable[Any] | None, kwargs: dict[str, Any] | None) -> None:
        """Fail at the call site when the arguments cannot bind to ``run`` (``typing=True``)."""
        run = self.run
        function = getattr(run, "__func__", run)
        cached = getattr(self, "_run_signature", None)
        if cached is None or cached[0] is not function:
            # inspect.signature costs more than the rest of a send: once per ``run``
            cached = self._run_signature = (function, *_argument_checker(run))
        _, signature, simple = cached
        if signature is None:
            return
        args = tuple(args or ())
        if simple is not None and _binds(simple, args, kwargs or {}):
            return
        try:
            signature.bind(*args, **(kwargs or {}))
        except TypeError as exc:
            raise TypeError(f"{self.name}{signature}: {exc}") from None

    # --- signatures ---------------------------------------------------------------------

    def signature(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        # Signature's own keywords (immutable, subtask_type) must not end up in its options.
        return Signature(self, args, kwargs, app=self.app, **options)

    subtask = signature

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature with partial arguments: ``add.s(2)`` later called with ``(4,)``."""
        return self.signature(args, kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: a parent's result is not passed to it."""
        return self.signature(args, kwargs, immutable=True)

    def chunks(self, it: Iterable[Any], n: int) -> Signature:
        """``chunks(self.s(), it, n)``: the items in parts of ``n``, one message per part."""
        # Lazy, an allow-listed upward import: Celery's Task API reaches up to this layer.
        from caraway.canvas import chunks

        return chunks(self.s(), it, n, app=self.app)

    def map(self, it: Iterable[Any]) -> Signature:
        """One message calling this task's function on every item (``xmap``)."""
        # Lazy, an allow-listed upward import: Celery's Task API reaches up to this layer.
        from caraway.canvas import xmap

        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Iterable[Any]) -> Signature:
        """One message calling this task's function with every item's arguments."""
        # Lazy, an allow-listed upward import: Celery's Task API reaches up to this layer.
        from caraway.canvas import xstarmap

        return xstarmap(self.s(), it, app=self.app)

    def signature_from_request(
        self,
        request: Context | None = None,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **extra: Any,
    ) -> Signature:
        """The signature that re-sends the current call (used by ``retry``)."""
        request = request or self.request
        delivery_info = request.delivery_info or {}
        hard, soft = request.timelimit or (None, None)
        options: dict[str, Any] = {
            "task_id": request.id,
            "link": request.callbacks,
            "link_error": request.errbacks,
            "group_id": request.group,
            "group_index": request.group_index,
            "shadow": request.shadow,
            "chord": request.chord,
            "chain": request.chain,
            "soft_time_limit": soft,
            "time_limit": hard,
            "reply_to": request.reply_to,
            "root_id": request.root_id,
            "priority": delivery_info.get("priority"),
            "expires": request.expires,
            **_route_of(delivery_info),
            "headers": custom_headers(request.headers) or None,
            **_stamp_options(request),
            **extra,
        }
        return self.signature(
            request.args if args is None else args,
            request.kwargs if kwargs is None else kwargs,
            **options,
        )

    # --- inside a running task ---------------------------------------------------------------

    @property
    def request(self) -> Context:
        """The current call's request; outside any call, an empty one (``called_directly``)."""
        return self._request_var.get() or Context()

    def push_request(self, request: Context) -> Any:
        return self._request_var.set(request)

    def pop_request(self, token: Any) -> None:
        self._request_var.reset(token)

    @property
    def backend(self) -> Backend:
        return self.app.backend

    def retry(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Send this call again later and raise ``Retry`` (Celery's semantics).

        Past ``max_retries`` it raises ``exc`` when given, else ``MaxRetriesExceededError``.
        Called outside a worker, it raises ``exc`` (or ``Retry``) at once.
        """
        request = self.request
        retries = request.retries + 1
        limit = self.max_retries if max_retries is None else max_retries
        if request.called_directly:
            raise exc if exc is not None else Retry("Task can be retried", None)
        if not eta and countdown is None:
            countdown = self.default_retry_delay
        if (args is None) != (kwargs is None):
            args, kwargs = retry_arguments(
                self.run, request.args or (), request.kwargs or {}, args, kwargs
            )
        sig = self.signature_from_request(
            request, args, kwargs, countdown=countdown, eta=eta, retries=retries, **options
        )
        if limit is not None and retries > limit:
            if exc is not None:
                raise exc
            raise self.MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args}"
                f" kwargs:{request.kwargs}",
                task_args=sig.args,
                task_kwargs=sig.kwargs,
            )
        when: Any = eta or countdown
        signal = Retry(exc=exc, when=when, is_eager=request.is_eager, sig=sig)
        if not request.is_eager:
            try:
                sig.apply_async()
            except Exception as publish_error:
                raise Reject(publish_error, requeue=False) from publish_error
        if throw:
            raise signal
        return signal

    def replace(self, sig: Signature) -> Any:
        """Replace this running task by ``sig``: it takes this task's id and its place in a
        chain, group or chord (its callbacks too), and this task stops here (``Ignore``).

        A group is made a chord whose body gathers its results, as Celery does.
        """
        # Lazy, an allow-listed upward import: Celery's Task API reaches up to this layer.
        from caraway.canvas.chain import _chain

        # Lazy, an allow-listed upward import: Celery's Task API reaches up to this layer.
        from caraway.canvas.group import _chord, group

        request = self.request
        if request.called_directly:
            raise RuntimeError("replace() can only be called from a running task")
        if isinstance(sig, _chain) and not sig.tasks:
            raise ImproperlyConfigured("Cannot replace with an empty chain")
        if request.is_eager:
            return self.on_replace(sig)
        ends_in_group = isinstance(sig, _chain) and _ends_in_group(sig, group, _chord)
        if (isinstance(sig, group) and not isinstance(sig, _chord)) or ends_in_group:
            # The group's results become this task's result through a chord body.
            sig = sig | self.app.tasks["celery.accumulate"].s(index=0)
        sig = sig.clone()
        sig.freeze(request.id)
        options: dict[str, Any] = {
            "group_id": request.group, "group_index": request.group_index,
            "chord": request.chord, "root_id": request.root_id, "parent_id": request.id,
            "chain": request.chain, "link": request.callbacks,
            "replaced_task_nesting": (request.replaced_task_nesting or 0) + 1,
        }  # fmt: skip
        options = {key: value for key, value in options.items() if value is not None}
        if not isinstance(sig, _chain | _chord):
            options["task_id"] = request.id
        inherited = _stamp_options(request)
        if inherited:  # the replacement carries this task's stamps
            sig.stamp(**inherited)
        sig.set(**options)
        for errback in request.errbacks or ():  # beside the replacement's own errbacks
            sig.link_error(errback)
        return self.on_replace(sig)

    def on_replace(self, sig: Signature) -> Any:
        """Send ``sig``, which replaces this task, and stop here; an override may change
        ``sig`` (stamp it, say) and must end with ``super().on_replace(sig)``."""
        if self.request.is_eager:
            return sig.apply().get()
        sig.apply_async()
        raise Ignore("Replaced by new task")

    def add_to_chord(self, sig: Signature, lazy: bool = False) -> Any:
        """From a chord header task: one more task whose result the body will receive."""
        # Lazy, an allow-listed upward import: Celery's Task API reaches up to this layer.
        from caraway.canvas.chords import add_to_chord

        request = self.request
        if not request.group or not request.chord:
            raise ValueError("add_to_chord() works only inside a task of a chord's header")
        sig = sig.clone().set(group_id=request.group, chord=request.chord, root_id=request.root_id)
        sig.freeze()
        add_to_chord(self.app, request.group, sig)
        return sig if lazy else sig.delay()

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None, **kwargs: Any
    ) -> None:
        """Store a state (e.g. a custom ``PROGRESS`` with a dict) for this or another task."""
        task_id = task_id or self.request.id
        if task_id is None:
            raise ValueError("update_state() outside a running task needs a task_id")
        self.backend.store_result(task_id, meta, state or states.PENDING, request=self.request)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult[R]:
        return self.app.AsyncResult(task_id, task_name=self.name, **kwargs)

    def send_event(self, type_: str, retry: bool = True, **fields: Any) -> None:
        """Task events are sent by the worker's event dispatcher when events are enabled."""

    # --- hooks: override in a base class -----------------------------------------------------

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Called in the worker just before the task runs."""

    def on_success(
        self, retval: Any, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Called in the worker after the task returned."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        """Called in the worker after the task raised."""

    def on_retry(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        """Called in the worker when the task is to be retried."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo | None,
    ) -> None:
        """Called in the worker after the task finished, whatever the outcome."""

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main}>"


def call_overridden(task: Task[Any, Any], request: Context, args: Any, kwargs: Any) -> Any:
    """Run ``task`` through its own ``__call__`` (a Flask app context, a tracing span, ...), as
    Celery's worker does when a task class overrides it; ``request`` is already pushed."""
    token = _worker_call.set(request)
    try:
        return task(*args, **kwargs)
    finally:
        _worker_call.reset(token)


#: ``Task.__call__`` as defined here: the worker calls ``run`` directly while it is not overridden.
BASE_CALL = Task.__call__


for _attribute, _setting in FROM_CONFIG:
    setattr(Task, _attribute, _FromConfig(_setting))


def task_from_function(
    app: Caraway, fun: Callable[..., Any], base: type[Task[Any, Any]], options: dict[str, Any]
) -> Task[Any, Any]:
    """Build the task class for ``fun`` and its one instance; unknown options are errors."""

    bind = bool(options.pop("bind", False))
    name = options.pop("name", None) or app.gen_task_name(fun.__name__, fun.__module__)
    for option in options:
        if option not in TASK_OPTIONS and (option.startswith("_") or not hasattr(base, option)):
            raise ImproperlyConfigured(
                f"unknown task option {option!r} for {name!r}."
                f"{did_you_mean(option, TASK_OPTIONS)} Valid options: see Task's attributes."
            )
    for ignored in ("shared", "lazy", "filter", "base"):
        options.pop(ignored, None)
    body, dump_arguments = _with_pydantic(app, fun, name, bind, options)
    if dump_arguments is not None:
        options["_dump_arguments"] = staticmethod(dump_arguments)
    run = body if bind else staticmethod(body)
    attrs = {
        "app": app,
        "name": name,
        "run": run,
        "abstract": False,
        "__doc__": fun.__doc__,
        "__module__": fun.__module__,
        "__qualname__": getattr(fun, "__qualname__", fun.__name__),
        "__wrapped__": fun,
        **options,
    }
    cls = type(fun.__name__, (base,), attrs)
    task: Task[Any, Any] = cls()
    if task.autoretry_for:
        _add_autoretry(task)
    return task


def _with_pydantic(
    app: Caraway, fun: Callable[..., Any], name: str, bind: bool, options: dict[str, Any]
) -> tuple[Callable[..., Any], ArgumentDumper | None]:
    """``fun`` wrapped for ``pydantic=True`` (with the caller's argument dumper), else as is."""
    wanted = bool(options.pop("pydantic", False))
    settings = PydanticOptions(
        strict=bool(options.pop("pydantic_strict", False)),
        context=dict(options.pop("pydantic_context", None) or {}),
        dump_kwargs=dict(options.pop("pydantic_dump_kwargs", None) or {}),
    )
    if not wanted:
        return fun, None
    return pydantic_args.wrap(fun, name, app, settings, bind)


def add_autoretry_behaviour(task: Task[Any, Any]) -> None:
    """For a class-based task registered with ``app.register_task`` (Celery's name): its
    ``autoretry_for`` works as on a decorated function's. Wrapping twice is a no-op."""
    if task.autoretry_for and not getattr(task.run, "autoretries", False):
        _add_autoretry(task)


def _add_autoretry(task: Task[Any, Any]) -> None:
    """Wrap ``run`` so exceptions in ``autoretry_for`` become ``self.retry(exc=...)``."""
    import inspect

    run = task.run

    def retry_for(exc: BaseException) -> BaseException:
        retry_kwargs = dict(task.retry_kwargs)
        if task.retry_backoff:
            retry_kwargs["countdown"] = backoff_countdown(
                int(task.retry_backoff),
                task.request.retries,
                maximum=task.retry_backoff_max,
                full_jitter=task.retry_jitter,
            )
        return task.retry(exc=exc, **retry_kwargs)

    def run_with_autoretry(*args: Any, **kwargs: Any) -> Any:
        try:
            return run(*args, **kwargs)
        except Retry:
            raise
        except task.dont_autoretry_for:
            raise
        except task.autoretry_for as exc:
            raise retry_for(exc) from None

    async def run_async_with_autoretry(*args: Any, **kwargs: Any) -> Any:
        try:
            return await run(*args, **kwargs)
        except Retry:
            raise
        except task.dont_autoretry_for:
            raise
        except task.autoretry_for as exc:
            raise retry_for(exc) from None

    # An async body's exceptions come out of the await, not the call: wrap it with a coroutine.
    wrapped = run_async_with_autoretry if inspect.iscoroutinefunction(run) else run_with_autoretry
    wrapped.autoretries = True  # type: ignore[union-attr]
    task.run = wrapped


def _argument_checker(
    run: Any,
) -> tuple[inspect.Signature | None, tuple[tuple[str, ...], int] | None]:
    """``run``'s signature, and for plain parameters (no ``*``, ``**``, keyword-only or
    positional-only) their names and how many are required: what ``_binds`` checks."""
    try:
        signature = inspect.signature(run)
    except (TypeError, ValueError):
        return None, None
    params = list(signature.parameters.values())
    if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params):
        return signature, None
    required = sum(1 for p in params if p.default is inspect.Parameter.empty)
    return signature, (tuple(p.name for p in params), required)


#: ``caraway.calling.plain.send_plain`` once imported: an import statement in
#: ``apply_async`` would cost more than the rest of the call's own Python.
_send_plain: Callable[..., Any] | None = None


def _import_send_plain() -> Callable[..., Any]:
    global _send_plain
    # Lazy, an allow-listed upward import: a plain call, from the task's template.
    from caraway.calling.plain import send_plain

    _send_plain = send_plain
    return send_plain


def _binds(
    simple: tuple[tuple[str, ...], int], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bool:
    """True when ``args``/``kwargs`` surely bind to plain parameters; False means "ask
    ``Signature.bind``" (which also words the error)."""
    names, required = simple
    given = len(args)
    if given > len(names):
        return False
    for key in kwargs:
        try:
            if names.index(key) < given:  # given twice
                return False
        except ValueError:  # not a parameter
            return False
    return all(names[i] in kwargs for i in range(given, required))


def _stamp_options(request: Context) -> dict[str, Any]:
    """The call's stamps as signature options, so a retry or a replacement keeps them."""
    names = list(request.stamped_headers or ())
    if not names:
        return {}
    stamps = request.stamps or {}
    return {"stamped_headers": names, **{name: stamps[name] for name in names if name in stamps}}


def _route_of(delivery_info: dict[str, Any]) -> dict[str, Any]:
    """Where a retry goes: the queue a message was sent straight to, else the exchange and
    routing key it was published with (Celery's rule)."""
    exchange, routing_key = delivery_info.get("exchange"), delivery_info.get("routing_key")
    if not exchange:
        return {"queue": routing_key}
    return {"exchange": exchange, "routing_key": routing_key}


def _ends_in_group(sig: Any, group: type, chord: type) -> bool:
    last = sig.tasks[-1] if sig.tasks else None
    return isinstance(last, group) and not isinstance(last, chord)
