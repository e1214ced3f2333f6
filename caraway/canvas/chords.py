"""Chords: sending one, and joining its header results in the worker without polling.

A chord is joined in one of three ways, as the result backend declares
(``capabilities.chord_join``):

* ``native``: the backend's own join (``redis://`` uses Celery 5.7's join keys and algorithm,
  docs/celery-wire.md §6.5, so Celery and caraway workers can run parts of the same chord);
* ``counting``: each header result is added to a per-chord set keyed by task id, atomically
  with its count, and the part that completes the count takes a claim and sends the body.
  The header size travels in the body (``chord_size``);
* ``none``, on a backend workers can read: ``celery.chord_unlock`` polls, with bounded
  retries. A backend workers cannot read (``rpc://``) refuses chords with a clear error.

Either way a redelivered header task is counted once, the body is sent once, and the first
failing header task fails the body with ``ChordError`` at once.
"""

from __future__ import annotations

import logging
import traceback as tb
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from caraway import states
from caraway.canvas.chain import _chain, _result_of
from caraway.canvas.group import _chord, _descend, flat_members, group
from caraway.canvas.signatures import Signature, maybe_signature
from caraway.engines.base.backend import GROUP_KEY_PREFIX, expires_seconds
from caraway.engines.base.chord_join import Joiner
from caraway.engines.base.exception_meta import exception_to_meta, meta_to_exception
from caraway.exceptions import ChordError, ImproperlyConfigured
from caraway.request import Context
from caraway.result import GroupResult, result_from_tuple

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.engines.base.backend import Backend

logger = logging.getLogger("caraway.worker")

# --- the client side ---------------------------------------------------------------------


def join_mode(backend: Backend) -> str:
    """``native``, ``counting``, or ``unlock``; raises when chords cannot work."""
    capabilities = backend.capabilities
    if capabilities.chord_join != "none":
        return capabilities.chord_join
    if not capabilities.stores_results:
        raise ImproperlyConfigured(
            "chords need a result backend to collect the header results: set result_backend"
        )
    if not capabilities.readable_by_workers:
        raise ImproperlyConfigured(
            f"the result backend {backend.describe()} cannot join chords: workers can neither"
            " count header results nor read them there. Use redis://, a SQL database"
            " (db+postgresql://...) or sqlite:// as result_backend."
        )
    return "unlock"


def apply_chord(
    app: Caraway,
    header: group,
    body: Signature,
    gid: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: dict[str, Any],
    lazy: Iterator[Any] | None = None,
) -> Any:
    """Send the header tasks (pipelined) with the body in ``embed.chord``; the body's result.

    ``lazy``, a generator header on a backend with a native join, is sent as it is read.
    """
    reply_to = app.thread_oid
    options = dict(options)
    for key in ("link", "link_error"):
        for sig in _as_list(options.pop(key, None)):
            getattr(body, key)(maybe_signature(sig, app))
    rest = options.pop("chain", None)
    if rest:
        if isinstance(body, group | _chain) or body.subtask_type:
            body = _chain(body, *[maybe_signature(s, app) for s in reversed(rest)], app=app)
        else:
            body.options["chain"] = list(rest)
    # A chord inside a group or an outer chord's header: its body is the member that counts.
    membership: dict[str, Any] = {
        k: options.pop(k) for k in ("group_id", "group_index", "chord") if k in options
    }
    body.freeze()
    body.options.setdefault("reply_to", reply_to)
    if options.get("root_id"):
        body.options.setdefault("root_id", options["root_id"])
    if membership:
        body.options.update(membership)
    else:
        body.options["group_id"] = gid
    if lazy is not None:
        return _send_lazily(app, header, lazy, body, gid, args, kwargs, options)
    members = header._members()
    if not members:
        body.apply_async(([],))
        return _result_of(body, None)
    mode = join_mode(app.backend)
    size = sum(_descend(member) for member in members)
    if mode == "counting":
        body["chord_size"] = size  # the counting join reads it from the body
    if mode != "unlock":
        app.backend.chord_joiner(size).begin(gid, size)
    header_options = {**header.options, **options, "task_id": gid, "chord": body}
    header_result = group(members, app=app).apply_async(args, kwargs, **header_options)
    if mode == "unlock":
        _send_unlock(app, gid, body, header_result)
    return _result_of(body, header_result)


def _send_lazily(
    app: Caraway,
    header: group,
    lazy: Iterator[Any],
    body: Signature,
    gid: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: dict[str, Any],
) -> Any:
    """Send each header task as the generator gives it; the size goes to the join before
    the last one is sent (read one ahead to know it is the last), so a part finishing
    earlier waits for it."""
    # Lazy, breaks the cycle canvas.chords -> calling -> calling.batch -> canvas.
    from caraway.calling import send_batch

    header_options = {**header.options, **options, "chord": body}
    members = flat_members(lazy, app)
    prepared = header._prepared(members, gid, args, kwargs, header_options)
    current = next(prepared, None)
    if current is None:
        body.apply_async(([],))
        return _result_of(body, None)
    joiner = app.backend.chord_joiner(None)
    results, size = [], 0
    while current is not None:
        following = next(prepared, None)
        size += _descend(current)
        if following is None:
            joiner.begin(gid, size)
        results.extend(send_batch(app, [current]))
        current = following
    return _result_of(body, GroupResult(gid, results, app=app))


def _send_unlock(app: Caraway, gid: str, body: Signature, header_result: Any) -> None:
    conf = app.conf
    interval = float(conf.result_chord_retry_interval or 1.0)
    app.tasks["celery.chord_unlock"].apply_async(
        (gid, dict(body)),
        {"result": [r.as_tuple() for r in header_result.results], "interval": interval,
         "max_retries": unlock_retries(app)},
        countdown=1,
    )  # fmt: skip


def unlock_retries(app: Caraway) -> int:
    """Bounded: poll no longer than the header results are kept (``result_expires``)."""
    interval = float(app.conf.result_chord_retry_interval or 1.0)
    keep = expires_seconds(app.conf.result_expires) or 86400.0
    return max(1, int(keep / interval))


# --- the worker side ----------------------------------------------------------------------


def joiner_for(app: Caraway, body: Signature) -> Joiner | None:
    """How this chord is joined here; None when Celery's ``chord_unlock`` task joins it."""
    backend = app.backend
    kind = backend.capabilities.chord_join
    if kind == "none" or (kind == "counting" and body.chord_size is None):
        return None
    return backend.chord_joiner(None if body.chord_size is None else int(body.chord_size))


def on_part_return(app: Caraway, request: Context, state: str, value: Any) -> None:
    """A header task finished: record it; the last one sends the body, a failure fails it."""
    gid, body_dict = request.group, request.chord
    if not gid or not body_dict or not request.id:
        return
    body = maybe_signature(body_dict, app)
    joiner = joiner_for(app, body)
    if joiner is None:
        return
    failed = state in states.PROPAGATE_STATES
    stored = exception_to_meta(value) if isinstance(value, BaseException) else value
    join = joiner.add(gid, request.id, request.group_index, state, stored)
    if join.done:
        return
    if failed:
        if join.claimed or joiner.claim(gid, join):
            try:
                fail_body(app, body, _dependency_error(request.id, value), gid)
            finally:
                joiner.finish(gid, join, failed=True)
        return
    if not join.claimed:
        return
    failed_part = False
    try:
        parts = joiner.results(gid)
        for task_id, part_state, result in parts:
            if part_state in states.PROPAGATE_STATES:
                failed_part = True
                fail_body(app, body, _dependency_error(task_id, meta_to_exception(result)), gid)
                return
        try:
            body.apply_async(([result for _, _, result in parts],),
                             parent_id=request.id, root_id=request.root_id)  # fmt: skip
        except Exception as exc:
            logger.exception("Chord %s: could not send the body %r", gid, body)
            fail_body(app, body, _caused(ChordError(f"Callback error: {exc!r}"), exc), gid)
    finally:
        joiner.finish(gid, join, failed=failed_part)


def _dependency_error(task_id: str, exc: Any) -> ChordError:
    return _caused(ChordError(f"Dependency {task_id} raised {exc!r}"), exc)


def _caused(error: ChordError, cause: Any) -> ChordError:
    if isinstance(cause, BaseException):
        error.__cause__ = cause
    return error


def fail_body(app: Caraway, body: Signature, exc: ChordError, gid: str | None) -> None:
    """Store the chord's failure on its body (and what follows it), and run its errbacks."""
    # Lazy, breaks the cycle canvas.chords -> execution (its package imports canvas.chords).
    from caraway.execution.errbacks import call_errbacks

    text = "".join(tb.format_exception(exc))
    logger.error("Chord %s failed: %s", gid, exc)
    backend = app.backend
    # A chain body's own errbacks (linked to every step when it runs) run once here.
    own = _as_list(body.options.get("link_error")) if isinstance(body, _chain) else []
    for sig in _result_carriers(body, app):
        task_id = sig.options.get("task_id")
        if not task_id:
            continue
        errbacks = _as_list(sig.options.get("link_error"))
        errbacks += [errback for errback in own if errback not in errbacks]
        own = []
        request = Context(
            id=task_id, task=sig.task, group=sig.options.get("group_id") or gid,
            group_index=sig.options.get("group_index"), chord=sig.options.get("chord"),
            parent_id=None, root_id=sig.options.get("root_id"), args=sig.args,
            kwargs=sig.kwargs, errbacks=errbacks,
            called_directly=False,
        )  # fmt: skip
        sent = call_errbacks(app, request, exc, text)
        if sent is not None:  # Celery: the errbacks sent are the failed body's children
            request.children.append(sent.as_tuple())
        backend.mark_as_failure(task_id, exc, text, request)
        if request.chord:  # this body is a member of an outer chord's header: that one fails too
            on_part_return(app, request, states.FAILURE, exc)


def _result_carriers(body: Signature, app: Caraway) -> list[Signature]:
    """The signatures whose results wait on this body: itself, its steps, what follows."""
    if isinstance(body, _chain):
        found: list[Signature] = []
        for step in body.tasks:
            found.extend(_result_carriers(step, app))
        return found
    if isinstance(body, _chord):  # a later chord in the chain: its body carries the result
        return _result_carriers(body.body, app)
    if isinstance(body, group):
        return [m for member in body.tasks for m in _result_carriers(member, app)]
    carriers = [body]
    for later in reversed(body.options.get("chain") or []):
        carriers.extend(_result_carriers(maybe_signature(later, app), app))
    return carriers


def propagate_chain_failure(app: Caraway, request: Context, exc: BaseException, text: str) -> None:
    """A chain step failed: its remaining steps fail too, so the chain's result is ready
    with the error (as Celery marks them), and a chord among them is failed."""
    for raw in reversed(request.chain or []):
        sig = maybe_signature(raw, app)
        for carrier in _chain_step_carriers(sig, app):
            options = carrier.options
            task_id = options.get("task_id")
            if task_id:
                step_request = Context(id=task_id, task=carrier.task,
                                       group=options.get("group_id"),
                                       group_index=options.get("group_index"),
                                       chord=options.get("chord"), called_directly=False,
                                       root_id=request.root_id)  # fmt: skip
                app.backend.mark_as_failure(task_id, exc, text, step_request)
                if step_request.chord:  # the chain was a chord member: its chord fails too
                    on_part_return(app, step_request, states.FAILURE, exc)


def _chain_step_carriers(sig: Signature, app: Caraway) -> list[Signature]:
    if isinstance(sig, _chord):
        return _result_carriers(sig.body, app)
    if isinstance(sig, group):
        return [c for member in sig.tasks for c in _chain_step_carriers(member, app)]
    return [sig]


def add_to_chord(app: Caraway, gid: str, body: Signature) -> None:
    """One more header result to wait for (``Task.add_to_chord``)."""
    backend = app.backend
    if backend.capabilities.chord_join == "none":
        raise ImproperlyConfigured(
            f"add_to_chord needs a result backend that counts; {backend.describe()} does not"
        )
    backend.chord_joiner().grow(gid)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def unlock_chord(
    task: Any,
    gid: str,
    callback: Any,
    interval: float | None,
    max_retries: int | None,
    result: list[Any],
) -> None:
    """One poll of ``celery.chord_unlock``: send the body, fail it, or check again later.

    Retries are bounded (by ``result_expires`` when the sender gave no limit): a header
    whose results expired would otherwise be polled for ever.
    """
    app = task.app
    body = maybe_signature(callback, app)
    deps = GroupResult(gid, [result_from_tuple(r, app) for r in result], app=app)
    limit = unlock_retries(app) if max_retries is None else int(max_retries)
    failed = next((r for r in deps.results if r.failed()), None)
    if failed is not None:
        fail_body(app, body, _dependency_error(failed.id, failed.result), gid)
        return
    if not deps.ready():
        if task.request.retries >= limit:
            waiting = [r.id for r in deps.results if not r.ready()]
            fail_body(app, body, ChordError(
                f"chord_unlock gave up on chord {gid} after {limit} checks: header results"
                f" {waiting[:5]} never became ready (expired, lost, or not readable from"
                " workers on this result backend)"), gid)  # fmt: skip
            return
        seconds = interval if interval is not None else task.default_retry_delay
        raise task.retry(countdown=seconds, max_retries=limit)
    values = deps.join(propagate=False, disable_sync_subtasks=False)
    body.apply_async((values,))


def count_group_success(app: Caraway, request: Context) -> None:
    """One more member of ``request.group`` succeeded: ``GroupResult.completed_count()``
    reads this counter instead of every member's result."""
    backend = app.backend
    if backend.capabilities.chord_join == "none":
        return
    try:
        backend.incr(f"{GROUP_KEY_PREFIX}{request.group}.n", 1, backend.expires)
    except Exception:
        logger.exception("Could not count a success of group %s", request.group)
