"""Signatures: a task call packed as a JSON-serializable dict (Celery's wire form, §6.1).

``chain`` here covers plain task signatures; groups and chords build on it in the canvas work.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.result import AsyncResult, EagerResult
    from caraway.task import Task


class Signature(dict[str, Any]):
    """A task name with partial args, kwargs and call options; ``s()``/``si()`` build one."""

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
    def from_dict(cls, data: dict[str, Any], app: Caraway | None = None) -> Signature:
        if data.get("subtask_type") == "chain":
            return _chain.from_dict(data, app)
        return cls(data, app=app)

    # --- dict-backed fields ---------------------------------------------------------------

    @property
    def task(self) -> str:
        return str(self["task"])

    @property
    def args(self) -> list[Any]:
        return list(self.get("args") or [])

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.get("kwargs") or {})

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
    def app(self) -> Caraway:
        if self._app is not None:
            return self._app
        from caraway.current import get_current_app

        return get_current_app()

    @property
    def type(self) -> Task[Any, Any] | None:
        """The task object, when the app knows the name."""
        if self._type is None:
            self._type = self.app.tasks.get(self.task)
        return self._type

    # --- building -------------------------------------------------------------------------

    def _merge(
        self, args: Iterable[Any] | None, kwargs: dict[str, Any] | None, options: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        """New args go in front of the partial ones (unless immutable); options merge.

        Args come back as a tuple, as Celery passes them, so ``argsrepr`` reads ``(1, 2)``.
        """
        merged_options = {**self.options, **options}
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
        clone = self.clone()
        if args is not None:
            clone["args"] = list(args)
        if kwargs is not None:
            clone["kwargs"] = dict(kwargs)
        if options is not None:
            clone["options"] = dict(options)
        return clone

    def link(self, callback: Signature) -> Signature:
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def freeze(self, _id: str | None = None) -> AsyncResult[Any]:
        """Fix the task id now, so it is known before the task is sent."""
        task_id = str(self.options.setdefault("task_id", _id or str(uuid.uuid4())))
        return self.app.AsyncResult(task_id, task_name=self.task)

    def __or__(self, other: Any) -> Any:
        if not isinstance(other, Signature):
            return NotImplemented
        return _chain(*_steps(self), *_steps(other), app=self._app)

    # --- calling --------------------------------------------------------------------------

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        new_args, new_kwargs, new_options = self._merge(args, kwargs, options)
        task = self.type
        if task is not None:
            return task.apply_async(new_args, new_kwargs, **new_options)
        return self.app.send_task(self.task, new_args, new_kwargs, **new_options)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        return self.apply_async(args, kwargs)

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult[Any]:
        new_args, new_kwargs, new_options = self._merge(args, kwargs, options)
        return self._require_type().apply(new_args, new_kwargs, **new_options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here and now, in this process."""
        new_args, new_kwargs, _ = self._merge(args, kwargs, {})
        return self._require_type()(*new_args, **new_kwargs)

    def _require_type(self) -> Task[Any, Any]:
        task = self.type
        if task is None:
            from caraway.exceptions import NotRegistered

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


def _rebuild(data: dict[str, Any]) -> Signature:
    return Signature.from_dict(data)


def _steps(sig: Signature) -> list[Signature]:
    return list(sig.tasks) if isinstance(sig, _chain) else [sig]


class _chain(Signature):
    """Run signatures one after another, each receiving the previous result."""

    def __init__(self, *tasks: Any, app: Caraway | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Signature | str):
            tasks = tuple(tasks[0])
        steps = [maybe_signature(t, app) for t in tasks]
        super().__init__(
            "celery.chain",
            (),
            {"tasks": steps},
            options,
            subtask_type="chain",
            app=app or (steps[0]._app if steps else None),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: Caraway | None = None) -> _chain:
        tasks = [maybe_signature(t, app) for t in data["kwargs"]["tasks"]]
        return cls(*tasks, app=app, **(data.get("options") or {}))

    @property
    def tasks(self) -> list[Signature]:
        return list(self["kwargs"]["tasks"])

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult[Any]:
        if self.app.conf.task_always_eager:
            # An eager first step would drop the rest of the chain: run every step here.
            return self.apply(args, kwargs, **options)
        steps = [step.clone() for step in self.tasks]
        if not steps:
            raise ValueError("cannot apply an empty chain")
        reply_to = self.app.thread_oid
        for step in steps:
            step.options.setdefault("task_id", str(uuid.uuid4()))
            step.options.setdefault("reply_to", reply_to)
        first, rest = steps[0], steps[1:]
        for later in rest:
            later.options.pop("chain", None)
        first.apply_async(args, kwargs, chain=[dict(s) for s in reversed(rest)], **options)
        result = None
        for step in steps:
            result = self.app.AsyncResult(str(step.id), task_name=step.task, parent=result)
        assert result is not None
        return result

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult[Any]:
        result: EagerResult[Any] | None = None
        for index, step in enumerate(self.tasks):
            call_args = args if index == 0 else ([result.get()] if result else [])
            result = step.apply(call_args, kwargs if index == 0 else None, **options)
        assert result is not None
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return " | ".join(repr(step) for step in self.tasks)


chain = _chain


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
    if isinstance(value, Signature):
        if app is not None and value._app is None:
            value._app = app
        return value
    if isinstance(value, dict):
        return Signature.from_dict(value, app)
    raise TypeError(f"expected a signature or a signature dict, got {type(value).__name__}")
