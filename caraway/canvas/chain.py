"""``chain``: signatures run in turn, each given the previous result (docs/celery-wire.md §6.3)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from caraway.canvas.signatures import (
    Composite,
    Signature,
    _keep_extra_keys,
    _new_id,
    maybe_signature,
)

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.result import ResultBase


def _steps(sig: Signature) -> list[Signature]:
    return list(sig.tasks) if isinstance(sig, _chain) else [sig]


def _result_of(sig: Signature, parent: ResultBase | None) -> Any:
    """The result object a frozen signature will produce (for building result graphs)."""
    # Lazy, breaks the cycle canvas.chain -> canvas.group -> canvas.chain.
    from caraway.canvas.group import _chord, group

    if isinstance(sig, _chain):
        result = parent
        for step in sig.tasks:
            result = _result_of(step, result)
        return result
    if isinstance(sig, _chord):
        header_result = sig.header_group._frozen_result(parent)
        return _result_of(sig.body, header_result)
    if isinstance(sig, group):
        return sig._frozen_result(parent)
    return _with_parent(sig.AsyncResult(str(sig.freeze().id)), parent)


def _with_parent(result: Any, parent: Any) -> Any:
    result.parent = parent
    return result


# --- chain ---------------------------------------------------------------------------------


@Signature.register_type("chain")
class _chain(Composite):
    """Run signatures one after another, each receiving the previous result."""

    task_name, kind = "celery.chain", "chain"

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: Caraway | None = None) -> _chain:
        tasks = [maybe_signature(t, app) for t in data["kwargs"]["tasks"]]
        sig = cls(*tasks, app=app, **(data.get("options") or {}))
        sig["immutable"] = bool(data.get("immutable"))
        return _keep_extra_keys(sig, data)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, Signature):
            return _chain(*self.tasks, *_steps(other), app=self._app, **self.options)
        return NotImplemented

    def clone(
        self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **opts: Any
    ) -> Signature:
        steps = [step.clone() for step in self.tasks]
        if steps and (args or kwargs):
            steps[0] = steps[0].clone(args, kwargs)
        clone = _chain(*steps, app=self._app, **{**copy.deepcopy(self.options), **opts})
        clone["immutable"] = self.immutable
        return clone

    def _prepared(self) -> list[Signature]:
        """Copies of the steps, nested chains flattened, empty groups left out, a group
        followed by a step made a chord (Celery's upgrade), and every id fixed."""
        # Lazy, breaks the cycle canvas.chain -> canvas.group -> canvas.chain.
        from caraway.canvas.group import _chord, group

        steps: list[Signature] = []
        for step in _flatten_chain(self.tasks):
            if isinstance(step, group) and not isinstance(step, _chord) and not step.tasks:
                continue  # an empty group passes nothing on: skipped, as Celery does
            step = step.clone()
            if steps and isinstance(steps[-1], group) and not isinstance(steps[-1], _chord):
                steps[-1] = _chord(steps[-1], body=step, app=self._app)
            else:
                steps.append(step)
        reply_to = self.app.thread_oid
        for step in steps:
            _freeze_with_reply_to(step, reply_to)
        return steps

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        if self.app.conf.task_always_eager:
            # An eager first step would drop the rest of the chain: run every step here.
            return self.apply(args, kwargs, **options)
        steps = self._prepared()
        if not steps:
            raise ValueError("cannot apply an empty chain")
        options = {**self.options, **options, **_joined_links(self.options, options)}
        task_id = options.pop("task_id", None)
        if task_id and not steps[-1].subtask_type:  # Celery: the chain's id is its last step's
            steps[-1].options["task_id"] = task_id
        # A chain inside a group or chord header: its last step is the member that counts.
        membership: dict[str, Any] = {
            k: options.pop(k) for k in ("group_id", "group_index", "chord") if k in options
        }
        links = {k: options.pop(k) for k in ("link", "link_error") if k in options}
        if "chord" in membership:
            _keep_tail_group_together(steps, self.app)
        last = steps[-1]
        last.options.update(membership)
        for name, value in links.items():
            for sig in value if isinstance(value, list | tuple) else [value]:
                if name == "link":
                    last.link(maybe_signature(sig, self._app))
                else:
                    _link_error_to_every_step(steps, maybe_signature(sig, self._app))
        rest_after = options.pop("chain", None) or []
        first, rest = steps[0], steps[1:]
        # Reversed: the next step is the last element; steps after this chain come first.
        chain_embed = list(rest_after) + [dict(s) for s in reversed(rest)]
        first.apply_async(args, kwargs, chain=chain_embed, **options)
        result: Any = None
        for step in steps:
            result = _result_of(step, result)
        return result

    def apply(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        result: Any = None
        for index, step in enumerate(_flatten_chain(self.tasks)):
            if index == 0:
                call_args: Iterable[Any] | None = args
            else:
                call_args = (result.get(),) if result is not None else ()
            result = step.apply(call_args, kwargs if index == 0 else None, **options)
        if result is None:
            raise ValueError("cannot apply an empty chain")
        return result

    def freeze(
        self,
        _id: str | None = None,
        group_id: str | None = None,
        chord: Any = None,
        root_id: str | None = None,
        parent_id: str | None = None,
        group_index: int | None = None,
    ) -> Any:
        steps = self.tasks
        reply_to = self.app.thread_oid
        for step in steps[:-1]:
            _freeze_with_reply_to(step, reply_to)
        if not steps:
            return None
        result = steps[-1].freeze(_id, group_id, chord, root_id, parent_id, group_index)
        if result is not None and result.id:
            self.options["task_id"] = result.id  # Celery: a frozen chain's id is its last task's
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return " | ".join(repr(step) for step in self.tasks)


def _keep_tail_group_together(steps: list[Signature], app: Caraway) -> None:
    """A chain ending in a group, as a chord header member, gives that chord one value: the
    list of its group's results (the chain keeps the group from being unrolled into the
    header, as in Celery). A chord with a body that returns its list does that."""
    # Lazy, breaks the cycle canvas.chain -> canvas.group -> canvas.chain.
    from caraway.canvas.group import _chord, group

    tail = steps[-1]
    if isinstance(tail, group) and not isinstance(tail, _chord):
        collect = app.tasks["celery.accumulate"].s(index=0)
        steps[-1] = _chord(tail, body=collect, app=app)
        _freeze_with_reply_to(steps[-1], app.thread_oid)


def _joined_links(own: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The chain's own callbacks and errbacks, and those given to this call, all kept (the
    call's do not replace them: a replaced task's errbacks join those of its chain)."""
    joined: dict[str, Any] = {}
    for key in ("link", "link_error"):
        if key in own and key in given:
            links = _listed(own[key])
            joined[key] = links + [link for link in _listed(given[key]) if link not in links]
    return joined


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _link_error_to_every_step(steps: list[Signature], errback: Signature) -> None:
    """Whichever step fails, the chain's errback runs (Celery links it to every task)."""
    for step in steps:
        step.link_error(errback.clone().set(immutable=errback.immutable))


def _flatten_chain(tasks: Iterable[Signature]) -> Iterator[Signature]:
    """The steps of nested chains in order; an inner chain's links stay with its steps (its
    errbacks on each, its callbacks on its last), as Celery keeps them when flattening. A
    group of one task is that task, as Celery unrolls it in a chain (issue #1656)."""
    for step in tasks:
        step = _unrolled(step)
        if not isinstance(step, _chain):
            yield step
            continue
        inner = [s.clone() for s in _flatten_chain(step.tasks)]
        if inner:
            for errback in step.options.get("link_error") or ():
                _link_error_to_every_step(inner, maybe_signature(errback, step._app))
            for callback in step.options.get("link") or ():
                inner[-1].link(maybe_signature(callback, step._app))
        yield from inner


def _unrolled(step: Signature) -> Signature:
    # Lazy, breaks the cycle canvas.chain -> canvas.group -> canvas.chain.
    from caraway.canvas.group import _chord, group

    if isinstance(step, group) and not isinstance(step, _chord) and len(step.tasks) == 1:
        return maybe_signature(step.tasks[0], step._app)
    return step


def _freeze_with_reply_to(sig: Signature, reply_to: str) -> None:
    """Pre-assign ids as Celery does when applying a workflow (docs/celery-wire.md §6.1, §6.3)."""
    # Lazy, breaks the cycle canvas.chain -> canvas.group -> canvas.chain.
    from caraway.canvas.group import _chord, group

    if isinstance(sig, _chord):
        sig._freeze_parts(reply_to)
    elif isinstance(sig, group):
        sig.options.setdefault("task_id", _new_id())
        for index, member in enumerate(sig.tasks):
            _freeze_with_reply_to(member, reply_to)
            if not isinstance(member, group | _chain):
                member.options["group_index"] = index
    elif isinstance(sig, _chain):
        for step in sig.tasks:
            _freeze_with_reply_to(step, reply_to)
    else:
        sig.options.setdefault("task_id", _new_id())
        sig.options.setdefault("reply_to", reply_to)


chain = _chain
