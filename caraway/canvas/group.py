"""``group`` (signatures run in parallel) and ``chord`` (a group whose results go to one
task), published as Celery does (docs/celery-wire.md §6.4, §6.5); chords are joined by
``caraway.canvas.chords``."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from caraway.canvas.chain import _chain, _freeze_with_reply_to, _result_of
from caraway.canvas.signatures import (
    Composite,
    Signature,
    _as_list,
    _keep_extra_keys,
    _new_id,
    maybe_signature,
    member_signature,
)
from caraway.result import GroupResult

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.result import GroupResult


# --- group ---------------------------------------------------------------------------------


@Signature.register_type("group")
class group(Composite):
    """Run signatures in parallel; the result is a ``GroupResult`` of their results.

    A generator is read once, when the group is built.
    """

    task_name, kind = "celery.group", "group"

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: Caraway | None = None) -> group:
        tasks = data["kwargs"]["tasks"]
        if isinstance(tasks, dict):  # Celery writes a generator-built group this way too
            tasks = tasks.get("tasks", [])
        sig = cls([maybe_signature(t, app) for t in tasks], app=app, **(data.get("options") or {}))
        sig["immutable"] = bool(data.get("immutable"))
        return _keep_extra_keys(sig, data)

    def __len__(self) -> int:
        return len(self["kwargs"]["tasks"])

    def __or__(self, other: Any) -> Any:
        if isinstance(other, Signature):
            return _chord(self, body=other, app=self._app)
        return NotImplemented

    def clone(
        self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **opts: Any
    ) -> Signature:
        members = [member.clone(args, kwargs) for member in self.tasks]
        clone = group(members, app=self._app, **{**copy.deepcopy(self.options), **opts})
        clone["immutable"] = self.immutable
        return clone

    def link(self, callback: Signature) -> Signature:
        """As in Celery: linked to the first task only, made immutable (it gets no results)."""
        callback = callback.clone().set(immutable=True)
        tasks = self.tasks
        if not tasks:
            raise ValueError("cannot link a callback to an empty group")
        return tasks[0].link(callback)

    def link_error(self, errback: Signature) -> Signature:
        """Linked to every task of the group."""
        for member in self.tasks:
            member.link_error(errback.clone().set(immutable=errback.immutable))
        return errback

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        gid = str(self.options.setdefault("task_id", _id or _new_id()))
        reply_to = self.app.thread_oid
        for index, member in enumerate(self.tasks):
            _freeze_with_reply_to(member, reply_to)
            member.options.setdefault("group_index", index)
        return self._frozen_result(None, gid)

    def _frozen_result(self, parent: Any, gid: str | None = None) -> GroupResult:
        gid = gid or str(self.options.setdefault("task_id", _new_id()))
        results = [_result_of(member, None) for member in self.tasks]
        return GroupResult(gid, results, app=self.app, parent=parent)

    def _members(self) -> list[Signature]:
        """Members with nested groups flattened in (each of their tasks counts on its own)."""
        return list(flat_members(self.tasks, self._app))

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        # Lazy, breaks the cycle canvas.group -> calling -> calling.batch -> canvas -> canvas.group.
        from caraway.calling import send_batch

        if self.app.conf.task_always_eager:
            return self.apply(args, kwargs, **options)
        options = {**self.options, **options}
        gid = str(options.pop("task_id", None) or _new_id())
        prepared = list(self._prepared(self._members(), gid, args, kwargs, options))
        results = send_batch(self.app, prepared)
        if len(results) == 1 and isinstance(results[0], GroupResult):
            # group(a | group(b, c)): the one member's group results are the group's (Celery).
            return results[0]
        return GroupResult(gid, results, app=self.app)

    def _prepared(
        self,
        members: Iterable[Signature],
        gid: str,
        args: Iterable[Any] | None,
        kwargs: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> Iterator[Signature]:
        """Copies of ``members`` ready to send as this group, one at a time (a generator
        header is read as it is sent): ids fixed, the call's arguments and options added,
        a callback on the first task and errbacks on every task (Celery's rules)."""
        options = dict(options)
        for key in ("chain", "group_index", "group_id"):  # a group followed by steps is a chord
            options.pop(key, None)
        app = self._app
        callbacks = [maybe_signature(c, app) for c in _as_list(options.pop("link", None))]
        errbacks = [maybe_signature(e, app) for e in _as_list(options.pop("link_error", None))]
        reply_to = self.app.thread_oid
        for index, member in enumerate(members):
            sig = member.clone(args, kwargs) if args or kwargs else member.clone()
            if index == 0:
                for callback in callbacks:
                    sig.link(callback.clone().set(immutable=True))
            for errback in errbacks:
                sig.link_error(errback)
            _freeze_with_reply_to(sig, reply_to)
            sig.options.update(options)
            sig.options.update(group_id=gid, group_index=index)
            yield sig

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        gid = str(self.options.get("task_id") or _new_id())
        results = [member.apply(args, kwargs, **options) for member in self._members()]
        return GroupResult(gid, results, app=self.app)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"


def flat_members(tasks: Iterable[Any], app: Caraway | None) -> Iterator[Signature]:
    """Members with nested groups flattened in, read one at a time from ``tasks``; empty
    chains are left out (they run nothing and give no result, as in Celery)."""
    for task in tasks:
        member = member_signature(task, app)
        if isinstance(member, _chain) and not member.tasks:
            continue
        if isinstance(member, group) and not isinstance(member, _chord):
            yield from flat_members(member.tasks, app)
        else:
            yield member


# --- chord ---------------------------------------------------------------------------------


@Signature.register_type("chord")
class _chord(Signature):
    """A group (the header) whose results, in order, are passed to one task (the body).

    ``chord(header, body)`` or ``chord(header)(body)``. The header keeps the form it was
    given: a list travels as a list, a group as a group (docs/celery-wire.md §6.1).
    """

    def __init__(
        self,
        header: Any = (),
        body: Any = None,
        task: str = "celery.chord",
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        app: Caraway | None = None,
        **options: Any,
    ) -> None:
        #: A generator header, read as it is sent (Celery #3021); anything else reads it all.
        self._lazy: Iterator[Any] | None = None
        if isinstance(header, Iterator):
            self._lazy, header = header, []
        if isinstance(header, dict) and not isinstance(header, group):
            header = maybe_signature(header, app)
        if isinstance(header, _chain):
            header = [header]
        if isinstance(header, group):
            head: Any = header
            first = header.tasks[0] if header.tasks else None
        elif isinstance(header, Signature):
            head = [header]
            first = header
        else:  # copies, as Celery: linking the chord's tasks leaves the caller's list alone
            head = [member_signature(t, app).clone() for t in header]
            first = head[0] if head else None
        body_sig = maybe_signature(body, app) if body is not None else None
        super().__init__(
            task,
            list(args or ()),
            {**(kwargs or {"kwargs": {}}), "header": head, "body": body_sig},
            options,
            subtask_type="chord",
            app=app or (first._app if first is not None else None),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: Caraway | None = None) -> _chord:
        kwargs = dict(data["kwargs"])
        header, body = kwargs.pop("header"), kwargs.pop("body", None)
        if isinstance(header, dict):
            header = maybe_signature(header, app)
        sig = cls(header, body, args=data.get("args"), kwargs=kwargs, app=app,
                  **(data.get("options") or {}))  # fmt: skip
        sig["immutable"] = bool(data.get("immutable"))
        return _keep_extra_keys(sig, data)

    @property
    def body(self) -> Signature:
        body = self["kwargs"].get("body")
        if body is None:
            raise ValueError("this chord has no body: call chord(header)(body) or pass body=")
        return body  # type: ignore[no-any-return]

    @body.setter
    def body(self, value: Signature) -> None:
        self["kwargs"]["body"] = value

    def _read_header(self) -> None:
        """Read the rest of a generator header into the header list."""
        lazy, self._lazy = self._lazy, None
        if lazy is not None:
            self["kwargs"]["header"].extend(member_signature(t, self._app).clone() for t in lazy)

    @property
    def header_group(self) -> group:
        self._read_header()
        header = self["kwargs"]["header"]
        if isinstance(header, group):
            return header
        return group(list(header), app=self._app)

    @property
    def tasks(self) -> list[Signature]:
        return self.header_group.tasks

    def __length_hint__(self) -> int:
        return sum(_descend(t) for t in self.tasks)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, Signature) and not isinstance(other, group):
            clone = self.clone()
            assert isinstance(clone, _chord)
            clone.body = clone.body | other
            return clone
        if isinstance(other, Signature):
            return _chain(self, other, app=self._app)
        return NotImplemented

    def clone(
        self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **opts: Any
    ) -> Signature:
        self._read_header()
        data = copy.deepcopy(dict(self))
        data["options"] = {**data.get("options", {}), **opts}
        clone = _chord.from_dict(data, self._app)
        if args:
            clone["args"] = [*args, *clone.args]
        return clone

    def link(self, callback: Signature) -> Signature:
        return self.body.link(callback)

    def link_error(self, errback: Signature) -> Signature:
        """Linked to the body; also to every header task with
        ``task_allow_error_cb_on_chord_header``."""
        if self.app.conf.task_allow_error_cb_on_chord_header:
            for member in self.tasks:
                member.link_error(errback.clone())
        return self.body.link_error(errback)

    def _freeze_parts(self, reply_to: str) -> str:
        """Ids as Celery fixes them for a chord in a chain (docs/celery-wire.md §6.3 capture)."""
        gid = str(self.options.setdefault("task_id", _new_id()))
        self._read_header()
        header = self["kwargs"]["header"]
        if isinstance(header, group):
            header.options.setdefault("task_id", gid)
            header.options.setdefault("root_id", None)
            header.options.setdefault("parent_id", None)
        for index, member in enumerate(self.tasks):
            _freeze_with_reply_to(member, reply_to)
            if not isinstance(member, group | _chain):
                member.options["group_index"] = index
        _freeze_with_reply_to(self.body, reply_to)
        return gid

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        if _id is not None:  # the id asked for is the body's: it carries the chord's result
            if isinstance(self.body, _chain):  # a chain's result is its last step's
                self.body.freeze(_id)
            else:
                self.body.options["task_id"] = _id
        self._freeze_parts(self.app.thread_oid)
        return self.body.freeze(_id, group_id, chord, root_id, parent_id, group_index)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        **options: Any,
    ) -> Any:
        # Lazy, breaks the cycle canvas.group -> canvas.chords -> canvas.group.
        from caraway.canvas.chords import apply_chord, join_mode

        kwargs = dict(kwargs or {})
        body = kwargs.pop("body", None) or self["kwargs"].get("body")
        if body is None:
            raise ValueError("a chord needs a body: chord(header)(body) or chord(header, body)")
        body = maybe_signature(body, self._app).clone()
        if self._app is None:  # a generator header names no app until read: the body's
            self._app = body._app
        partial_args = (*(args or ()), *self.args)
        if self.app.conf.task_always_eager:
            return self._apply_here(body, partial_args, kwargs)
        options = {**self.options, **options}
        gid = str(options.pop("task_id", None) or _new_id())
        if task_id is not None:  # the chord's result is its body's: the id asked for is the body's
            body.freeze(task_id)
        lazy = None
        if self._lazy is not None and join_mode(self.app.backend) == "native":
            # Only a native join can learn the size after the first parts ran.
            lazy, self._lazy = self._lazy, None
        header = self.header_group
        return apply_chord(self.app, header, body, gid, partial_args, kwargs, options, lazy)

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        kwargs = dict(kwargs or {})
        body = maybe_signature(kwargs.pop("body", None) or self.body, self._app).clone()
        return self._apply_here(body, (*(args or ()), *self.args), kwargs)

    def _apply_here(self, body: Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        header_result = self.header_group.apply(args, kwargs)
        values = header_result.get(propagate=True)
        result = body.apply((values,))
        result.parent = header_result
        return result

    def __call__(self, body: Any = None, **options: Any) -> Any:
        return self.apply_async((), {"body": body} if body is not None else {}, **options)

    def __deepcopy__(self, memo: dict[int, Any]) -> Signature:
        self._read_header()
        return super().__deepcopy__(memo)

    def __reduce__(self) -> Any:
        self._read_header()
        return super().__reduce__()

    def __repr__(self) -> str:
        self._read_header()
        body = self["kwargs"].get("body")
        return f"chord([{', '.join(repr(t) for t in self.tasks)}], {body!r})"


chord = _chord


def _descend(sig: Signature) -> int:
    """How many header results a header member contributes (Celery's counting rule)."""
    if isinstance(sig, _chord):
        return _descend(sig.body)
    if isinstance(sig, group):
        return sum(_descend(t) for t in sig.tasks)
    if isinstance(sig, _chain):  # its last step counts; a group there gives one list
        for step in reversed(sig.tasks):
            size = _descend(step)
            if size:
                return 1 if isinstance(step, group) and not isinstance(step, _chord) else size
        return 0
    return 1
