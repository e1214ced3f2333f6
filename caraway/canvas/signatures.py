"""``Signature``: one task call (name, partial arguments, options) as Celery's wire dict."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from caraway.canvas.stamping import Stamper, StampingVisitor
from caraway.canvas.stamps import keep_stamps
from caraway.current import get_current_app
from caraway.exceptions import NotRegistered

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.result import AsyncResult
    from caraway.task import Task


S = TypeVar("S", bound="Signature")


def _new_id() -> str:
    return str(uuid.uuid4())


class Signature(dict[str, Any]):
    """A task name with partial args, kwargs and call options; ``s()``/``si()`` build one."""

    #: ``subtask_type`` -> class, so ``signature(d)`` rebuilds the right kind.
    TYPES: ClassVar[dict[str, type[Signature]]] = {}

    def __init__(
        self,
        task: str | Task[Any, Any] | dict[str, Any] | None = None,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        type: Task[Any, Any] | None = None,
        subtask_type: str | None = None,
        immutable: bool = False,
        app: Caraway | None = None,
        **extra_options: Any,
    ) -> None:
        if isinstance(task, dict):
            super().__init__(task)
            self._type = None
            self._app = app
            return
        self._type = type if type is not None else (None if isinstance(task, str) else task)
        self._app = app or (getattr(task, "app", None) if not isinstance(task, str) else None)
        name = task if isinstance(task, str) else getattr(task, "name", None)
        super().__init__(
            task=name,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            options={**(options or {}), **extra_options},
            subtask_type=subtask_type,
            immutable=immutable,
        )

    @classmethod
    def register_type(cls, name: str) -> Callable[[type[Signature]], type[Signature]]:
        def register(kind: type[Signature]) -> type[Signature]:
            cls.TYPES[name] = kind
            return kind

        return register

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: Caraway | None = None) -> Signature:
        kind = cls.TYPES.get(str(data.get("subtask_type")))
        if kind is not None and kind is not cls:
            return kind.from_dict(data, app)
        return Signature(data, app=app)

    # --- dict-backed fields ---------------------------------------------------------------

    @property
    def task(self) -> str:
        return str(self["task"])

    name = task

    @property
    def args(self) -> tuple[Any, ...]:
        """A tuple, as Celery gives it (``add.s(1, 2).args == (1, 2)``)."""
        return tuple(self.get("args") or ())

    @args.setter
    def args(self, value: Iterable[Any]) -> None:
        """Replace the partial arguments (Celery code assigns ``sig.args = (...)``)."""
        self["args"] = list(value)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.get("kwargs") or {})

    @kwargs.setter
    def kwargs(self, value: dict[str, Any]) -> None:
        self["kwargs"] = dict(value)

    @property
    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = self.setdefault("options", {})
        return options

    @property
    def immutable(self) -> bool:
        return bool(self.get("immutable"))

    @property
    def subtask_type(self) -> str | None:
        return self.get("subtask_type")

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    @property
    def chord_size(self) -> int | None:
        """Header size, carried by a chord body on backends that join by counting (Celery's
        key)."""
        return self.get("chord_size")

    @property
    def app(self) -> Caraway:
        if self._app is not None:
            return self._app

        return get_current_app()

    @property
    def type(self) -> Task[Any, Any] | None:
        """The task object, when the app knows the name."""
        if self._type is None:
            self._type = self.app.tasks.get(self.task)
        return self._type

    def AsyncResult(self, task_id: str) -> AsyncResult[Any]:
        return self.app.AsyncResult(task_id, task_name=self.task)

    # --- building -------------------------------------------------------------------------

    def _merge(
        self, args: Iterable[Any] | None, kwargs: dict[str, Any] | None, options: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        """New args go in front of the partial ones (unless immutable); options merge.

        Args come back as a tuple, as Celery passes them, so ``argsrepr`` reads ``(1, 2)``.
        """
        merged_options = {**self.options, **keep_stamps(self.options, options)}
        if self.immutable:
            return tuple(self.args), self.kwargs, merged_options
        return (*(args or ()), *self.args), {**self.kwargs, **(kwargs or {})}, merged_options

    def clone(
        self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **opts: Any
    ) -> Signature:
        new_args, new_kwargs, new_options = self._merge(args, kwargs, opts)
        data = copy.deepcopy(dict(self))
        data.update(args=list(new_args), kwargs=new_kwargs, options=new_options)
        clone = type(self).from_dict(data, self._app)
        clone._type = self._type
        return clone

    partial = clone

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        if immutable is not None:
            self["immutable"] = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = immutable

    def replace(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> Signature:
        """A copy with args, kwargs or options replaced (not merged)."""
        clone = self.clone()
        if args is not None:
            clone["args"] = list(args)
        if kwargs is not None:
            clone["kwargs"] = dict(kwargs)
        if options is not None:
            clone["options"] = dict(options)
        return clone

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` with this task's result when it succeeds."""
        links = self.options.setdefault("link", [])
        if callback not in links:
            links.append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` when this task fails (see ``docs/canvas.md`` for its arguments)."""
        links = self.options.setdefault("link_error", [])
        if errback not in links:
            links.append(errback)
        return errback

    def on_error(self, errback: Signature) -> Signature:
        """``link_error`` that returns this signature, for building in one expression."""
        self.link_error(errback)
        return self

    def stamp(
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> Signature:
        """Stamp this signature and every task under it (``caraway.canvas.stamping``)."""
        Stamper(visitor, append_stamps, maybe_signature).stamp(self, headers)
        return self

    def stamp_links(
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> None:
        """Stamp only the callbacks and errbacks of this signature."""
        Stamper(visitor, append_stamps, maybe_signature).links(self, headers)

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        """Fix the task id (and workflow ids) now, so they are known before sending."""
        options = self.options
        task_id = str(options.setdefault("task_id", _id or _new_id()))
        for key, value in (
            ("group_id", group_id), ("chord", chord), ("root_id", root_id),
            ("parent_id", parent_id), ("group_index", group_index),
        ):  # fmt: skip
            if value is not None:
                options[key] = value
        return self.app.AsyncResult(task_id, task_name=self.task)

    def __or__(self, other: Any) -> Any:
        # Lazy, breaks the cycle canvas.signatures -> canvas.chain -> canvas.signatures.
        from caraway.canvas.chain import _chain, _steps

        # Lazy, breaks the cycle canvas.signatures -> canvas.group -> canvas.signatures.
        from caraway.canvas.group import group

        if isinstance(other, group):
            return _chain(self, other, app=self._app)
        if isinstance(other, Signature):
            return _chain(*_steps(self), *_steps(other), app=self._app)
        return NotImplemented

    # --- calling --------------------------------------------------------------------------

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        new_args, new_kwargs, new_options = self._merge(args, kwargs, options)
        new_options.pop("route_name", None)
        task = self.type
        if task is not None:
            return task.apply_async(new_args, new_kwargs, **new_options)
        return self.app.send_task(self.task, new_args, new_kwargs, **new_options)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        new_args, new_kwargs, new_options = self._merge(args, kwargs, options)
        for key in ("chord", "chain", "group_id", "group_index", "reply_to", "root_id"):
            new_options.pop(key, None)
        return self._require_type().apply(new_args, new_kwargs, **new_options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here and now, in this process."""
        new_args, new_kwargs, _ = self._merge(args, kwargs, {})
        return self._require_type()(*new_args, **new_kwargs)

    def _require_type(self) -> Task[Any, Any]:
        task = self.type
        if task is None:
            raise NotRegistered(self.task)
        return task

    def __repr__(self) -> str:
        args = ", ".join(
            [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        )
        return f"{self.task}({args}){'!' if self.immutable else ''}"

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        clone = type(self).from_dict(copy.deepcopy(dict(self), memo), self._app)
        clone._type = self._type
        return clone

    def __reduce__(self) -> Any:
        return (_rebuild, (dict(self),))


def _keep_extra_keys(sig: S, data: dict[str, Any]) -> S:
    """Keys beyond the six (``chord_size`` on a chord body) survive a rebuild."""
    for key in data.keys() - sig.keys():
        sig[key] = data[key]
    return sig


def _rebuild(data: dict[str, Any]) -> Signature:
    return Signature.from_dict(data)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


# --- building from anything ------------------------------------------------------------------


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """Build a signature from a task name, a task, or a signature dict."""
    app = kwargs.pop("app", None)
    if isinstance(varies, dict):
        if isinstance(varies, Signature):
            return varies.clone()
        return Signature.from_dict(varies, app)
    kwargs["app"] = app
    return Signature(varies, *args, **kwargs)


subtask = signature


def maybe_signature(value: Any, app: Caraway | None = None) -> Signature:
    """A signature from a signature or its dict form (as it arrives in a message)."""
    if isinstance(value, Signature):
        if app is not None and value._app is None:
            value._app = app
        return value
    if isinstance(value, dict):
        return Signature.from_dict(value, app)
    raise TypeError(f"expected a signature or a signature dict, got {type(value).__name__}")


def member_signature(value: Any, app: Caraway | None = None) -> Signature:
    """A workflow member: a signature, its dict form, or a task itself (``chord([tsum, tsum],
    ...)``), which stands for its signature without arguments, as in Celery."""
    if _is_task(value):
        return maybe_signature(value.signature(), app)
    return maybe_signature(value, app)


def _is_task(value: Any) -> bool:
    return not isinstance(value, Signature | dict) and callable(getattr(value, "signature", None))


class Composite(Signature):
    """A signature whose kwargs hold others (``chain``, ``group``): built from signatures,
    one list of them, or a generator (read once, when built)."""

    #: The task name and ``subtask_type`` Celery writes for this kind.
    task_name: ClassVar[str]
    kind: ClassVar[str]

    def __init__(self, *tasks: Any, app: Caraway | None = None, **options: Any) -> None:
        one = tasks[0] if len(tasks) == 1 else None
        if one is not None and not isinstance(one, Signature | str | dict) and not _is_task(one):
            tasks = tuple(one)
        members = [member_signature(t, app) for t in tasks]
        super().__init__(
            self.task_name, (), {"tasks": members}, options, subtask_type=self.kind,
            app=app or (members[0]._app if members else None),
        )  # fmt: skip

    @property
    def tasks(self) -> list[Signature]:
        return list(self["kwargs"]["tasks"])
