"""Task results: ``AsyncResult`` reads what a worker stored, ``EagerResult`` holds a local run."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from caraway import states
from caraway.current import get_current_app, get_current_worker_task
from caraway.engines.base.backend import GROUP_KEY_PREFIX
from caraway.exceptions import ChordError, IncompleteStream, TimeoutError
from caraway.utils.time import parse_iso

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.engines.base.backend import Backend

R = TypeVar("R")

SYNC_SUBTASK_ERROR = (
    "Never call result.get() within a task! Waiting on another task from inside a task can"
    " deadlock the worker; chain the tasks instead, or pass disable_sync_subtasks=False."
)


#: Set by ``allow_join_result()``: waiting inside a task is then the caller's decision.
_join_allowed: ContextVar[bool] = ContextVar("caraway.join_allowed", default=False)


def assert_will_not_block() -> None:
    if get_current_worker_task() is not None and not _join_allowed.get():
        raise RuntimeError(SYNC_SUBTASK_ERROR)


@contextlib.contextmanager
def allow_join_result() -> Iterator[None]:
    """Let ``result.get()`` wait inside a task for this block (Celery's escape hatch).

    Waiting on another task from a task can deadlock a worker whose slots are all waiting;
    use it only when the awaited task runs elsewhere (another queue, another worker).
    """
    token = _join_allowed.set(True)
    try:
        yield
    finally:
        _join_allowed.reset(token)


@contextlib.contextmanager
def denied_join_result() -> Iterator[None]:
    """The opposite: inside this block, waiting inside a task raises again."""
    token = _join_allowed.set(False)
    try:
        yield
    finally:
        _join_allowed.reset(token)


class ResultBase:
    parent: AsyncResult[Any] | None = None


class AsyncResult(ResultBase, Generic[R]):
    """The result of a task sent to a worker, read from the result backend."""

    def __init__(
        self,
        id: str,
        backend: Backend | None = None,
        task_name: str | None = None,
        app: Caraway | None = None,
        parent: AsyncResult[Any] | None = None,
    ) -> None:
        if id is None:
            raise ValueError(f"AsyncResult needs a task id, got {id!r}")
        if app is None:
            app = get_current_app()
        self.app = app
        self.id = id
        self._backend = backend
        self.task_name = task_name
        self.parent = parent
        self._cache: dict[str, Any] | None = None
        #: Sent with ``ignore_result``: no result will be stored, so ``get()`` returns None
        #: at once instead of waiting for ever (as in Celery).
        self.ignored = False

    @property
    def task_id(self) -> str:
        return self.id

    @property
    def backend(self) -> Backend:
        return self._backend or self.app.backend

    # --- state ------------------------------------------------------------------------------

    def _get_task_meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get_task_meta(self.id)
        if meta["status"] in states.READY_STATES:
            self._cache = meta
        return meta

    def _set_cache(self, meta: dict[str, Any]) -> dict[str, Any]:
        if meta["status"] in states.READY_STATES:
            self._cache = meta
        return meta

    @property
    def state(self) -> str:
        return str(self._get_task_meta()["status"])

    status = state

    @property
    def info(self) -> Any:
        """The return value, the exception for failures, or the meta of a custom state."""
        meta = self._get_task_meta()
        if meta["status"] in states.EXCEPTION_STATES:
            return self.backend.exception_from_meta(meta)
        return meta["result"]

    result = info

    @property
    def traceback(self) -> str | None:
        return self._get_task_meta().get("traceback")

    @property
    def date_done(self) -> datetime | None:
        return parse_iso(self._get_task_meta().get("date_done"))

    @property
    def children(self) -> list[Any]:
        """Results of the tasks this one sent (callbacks, chain successors, groups)."""
        return [result_from_tuple(child, self.app) for child in self._get_task_meta().get(
            "children") or []]  # fmt: skip

    def iterdeps(self, intermediate: bool = False) -> Iterator[tuple[Any, Any]]:
        """Walk the graph of children: ``(parent, child)`` pairs, breadth first."""
        stack: deque[tuple[Any, Any]] = deque([(None, self)])
        while stack:
            parent, node = stack.popleft()
            yield parent, node
            if node.ready():
                stack.extend((node, child) for child in node.children or [])
            elif not intermediate:
                raise IncompleteStream(f"{node!r} is not ready: its children are unknown yet")

    def collect(self, intermediate: bool = False, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        """``(result, value)`` for this task and every task it sent, waiting for each."""
        for _, node in self.iterdeps(intermediate=intermediate):
            yield node, node.get(**kwargs)

    @property
    def name(self) -> str | None:
        return self._get_task_meta().get("name") or self.task_name

    @property
    def args(self) -> Any:
        return self._get_task_meta().get("args")

    @property
    def kwargs(self) -> Any:
        return self._get_task_meta().get("kwargs")

    @property
    def worker(self) -> Any:
        return self._get_task_meta().get("worker")

    @property
    def retries(self) -> Any:
        return self._get_task_meta().get("retries")

    @property
    def queue(self) -> Any:
        return self._get_task_meta().get("queue")

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    # --- waiting ----------------------------------------------------------------------------

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        no_ack: bool = True,
        follow_parents: bool = True,
        callback: Callable[[str, Any], Any] | None = None,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        on_interval: Callable[[], Any] | None = None,
        disable_sync_subtasks: bool = True,
        EXCEPTION_STATES: frozenset[str] = states.EXCEPTION_STATES,
        PROPAGATE_STATES: frozenset[str] = states.PROPAGATE_STATES,
    ) -> R:
        """Wait for the result; re-raise the task's exception when ``propagate``."""
        if disable_sync_subtasks:
            assert_will_not_block()
        if self.ignored:
            return None  # type: ignore[return-value]
        if follow_parents and propagate and self.parent is not None:
            self.parent._raise_if_failed()
            parent, user_hook = self.parent, on_interval

            def on_interval() -> None:  # a failed step ends the wait on a chain's result
                parent._raise_if_failed()
                if user_hook is not None:
                    user_hook()

        meta = self._cache or self._set_cache(
            self.backend.wait_for(self.id, timeout, interval, on_interval)
        )
        if on_message is not None:
            on_message(meta)
        if callback is not None:
            callback(self.id, meta["result"])
        status = meta["status"]
        if status in PROPAGATE_STATES and propagate:
            if follow_parents and self.parent is not None:
                # A failed parent caused this failure (a chord body fails because a header
                # task did): as in Celery, the caller sees the parent's own exception.
                self.parent._raise_if_failed()
            raise self.backend.exception_from_meta(meta)
        if status in EXCEPTION_STATES:
            value: Any = self.backend.exception_from_meta(meta)
            return value  # type: ignore[no-any-return]
        return meta["result"]  # type: ignore[no-any-return]

    wait = get

    async def get_async(
        self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5
    ) -> R:
        """``get`` to await: waits without blocking the event loop (the backend's asyncio wait)."""
        meta = await self.backend.wait_for_async(self.id, timeout, interval)
        self._set_cache(meta)
        status = meta["status"]
        if status in states.PROPAGATE_STATES and propagate:
            raise self.backend.exception_from_meta(meta)
        if status in states.EXCEPTION_STATES:
            value: Any = self.backend.exception_from_meta(meta)
            return value  # type: ignore[no-any-return]
        return meta["result"]  # type: ignore[no-any-return]

    def _raise_if_failed(self) -> None:
        if self.parent is not None:
            self.parent._raise_if_failed()
        meta = self._get_task_meta()
        if meta["status"] in states.PROPAGATE_STATES:
            raise self.backend.exception_from_meta(meta)

    def as_list(self) -> list[Any]:
        return [self]

    def maybe_throw(self, propagate: bool = True) -> None:
        meta = self._get_task_meta()
        if propagate and meta["status"] in states.PROPAGATE_STATES:
            raise self.backend.exception_from_meta(meta)

    maybe_reraise = maybe_throw

    # --- actions ----------------------------------------------------------------------------

    def forget(self) -> None:
        """Delete the stored result."""
        self._cache = None
        if self.parent is not None:
            self.parent.forget()
        self.backend.forget(self.id)

    def revoke(
        self,
        connection: Any = None,
        terminate: bool = False,
        signal: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Ask workers not to run this task (it becomes REVOKED)."""
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

    def revoke_by_stamped_headers(
        self,
        headers: dict[str, Any],
        connection: Any = None,
        terminate: bool = False,
        signal: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Ask workers not to run any task carrying these stamp values (Celery's API on a
        result: it concerns every task so stamped, not only this one)."""
        self.app.control.revoke_by_stamped_headers(
            headers, terminate=terminate, signal=signal, reply=wait, timeout=timeout or 1.0
        )

    def as_tuple(self) -> list[Any]:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return [[self.id, parent], None]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id


class EagerResult(AsyncResult[R]):
    """The outcome of ``apply()``: already known, nothing to wait for."""

    def __init__(
        self,
        id: str,
        ret_value: Any,
        state: str,
        traceback: str | None = None,
        name: str | None = None,
        app: Caraway | None = None,
    ) -> None:
        super().__init__(id, task_name=name, app=app)
        self._result = ret_value
        self._state = state
        self._traceback = traceback
        self._cache = {
            "status": state,
            "result": ret_value,
            "traceback": traceback,
            "children": [],
            "date_done": None,
            "task_id": id,
        }

    def _get_task_meta(self) -> dict[str, Any]:
        assert self._cache is not None
        return self._cache

    @property
    def state(self) -> str:
        return self._state

    status = state

    @property
    def info(self) -> Any:
        return self._result

    result = info

    @property
    def traceback(self) -> str | None:
        return self._traceback

    def get(  # type: ignore[override]
        self, timeout: float | None = None, propagate: bool = True, **kwargs: Any
    ) -> R:
        if self._state == states.SUCCESS:
            return self._result  # type: ignore[no-any-return]
        if self._state in states.PROPAGATE_STATES:
            if propagate:
                raise (
                    self._result
                    if isinstance(self._result, BaseException)
                    else Exception(self._result)
                )
            return self._result  # type: ignore[no-any-return]
        return self._result  # type: ignore[no-any-return]

    wait = get  # type: ignore[assignment]

    def forget(self) -> None:
        """Nothing is stored for an eager result."""

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        self._state = states.REVOKED


class ResultSet(ResultBase):
    """Several results handled as one: wait for all, count, revoke."""

    def __init__(self, results: Iterable[Any], app: Caraway | None = None, **kwargs: Any) -> None:
        if app is None:
            app = get_current_app()
        self.app = app
        self.results: list[Any] = list(results)

    @property
    def backend(self) -> Backend:
        return self.results[0].backend if self.results else self.app.backend

    # --- membership ---------------------------------------------------------------------

    def add(self, result: Any) -> None:
        if result not in self.results:
            self.results.append(result)

    def remove(self, result: Any) -> None:
        if isinstance(result, str):
            result = self.app.AsyncResult(result)
        self.results.remove(result)

    def discard(self, result: Any) -> None:
        with contextlib.suppress(ValueError):
            self.remove(result)

    def update(self, results: Iterable[Any]) -> None:
        self.results.extend(r for r in results if r not in self.results)

    def clear(self) -> None:
        self.results[:] = []

    @property
    def children(self) -> list[Any]:
        return self.results

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    # --- state --------------------------------------------------------------------------

    def _states(self) -> list[str | ResultSet]:
        """Each member's state, read in batched requests (a nested set stands for itself)."""
        read = _read_together(self.results)
        return [
            result
            if isinstance(result, ResultSet)
            else str(read[id(result)]["status"])
            if id(result) in read
            else result.state
            for result in self.results
        ]

    def successful(self) -> bool:
        return all(
            s.successful() if isinstance(s, ResultSet) else s == states.SUCCESS
            for s in self._states()
        )

    def failed(self) -> bool:
        return any(
            s.failed() if isinstance(s, ResultSet) else s == states.FAILURE for s in self._states()
        )

    def ready(self) -> bool:
        return all(
            s.ready() if isinstance(s, ResultSet) else s in states.READY_STATES
            for s in self._states()
        )

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        """How many members succeeded."""
        return sum(
            int(s.successful() if isinstance(s, ResultSet) else s == states.SUCCESS)
            for s in self._states()
        )

    def maybe_throw(self, callback: Any = None, propagate: bool = True) -> None:
        for result in self.results:
            result.maybe_throw(propagate=propagate)

    maybe_reraise = maybe_throw

    def _raise_if_failed(self) -> None:
        if self.parent is not None:
            self.parent._raise_if_failed()
        self.maybe_throw()

    # --- actions ------------------------------------------------------------------------

    def forget(self) -> None:
        for result in self.results:
            result.forget()

    def revoke(
        self,
        connection: Any = None,
        terminate: bool = False,
        signal: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Revoke every member with one request to the workers."""
        ids = [node.id for node in self.as_list()]
        self.app.control.revoke(ids, terminate=terminate, signal=signal)

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Callable[[str, Any], Any] | None = None,
        no_ack: bool = True,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        disable_sync_subtasks: bool = True,
        on_interval: Callable[[], Any] | None = None,
    ) -> list[Any]:
        """Wait for every member; their values, in order.

        With ``propagate``, the first failure seen is raised, as in Celery's native join: a
        member already failed (or failing while an earlier one is waited for) ends the join
        without waiting for the members before it.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        ahead, read_at = 0, 0.0  # members before ``ahead`` were read in a batch at ``read_at``
        failed = None  # the first member that batch read as failed
        for index, result in enumerate(self.results):
            if index >= ahead:
                _read_together(self.results[index : index + READ_AHEAD])
                ahead, read_at = index + READ_AHEAD, time.monotonic()
                failed = _first_failed(self.results[index:ahead]) if propagate else None
            if getattr(result, "_cache", True) is None and time.monotonic() - read_at > 0.1:
                ahead = index + 1  # it is waited for: after it, read the rest again
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if remaining is not None and remaining <= 0 and not result.ready():
                raise TimeoutError("the join operation timed out")
            hook = on_interval
            if propagate:
                result = failed or result  # a failed member's get() raises at once
                hook = _FailureWatch(self.results, index + 1, ahead, interval, on_interval)
            # A member's own state decides, as in Celery's native join: a member after a
            # failed step is failed itself, so waiting on it sees the whole failure stored.
            own = {} if isinstance(result, ResultSet) else {"follow_parents": False}
            try:
                value = result.get(
                    timeout=remaining, propagate=propagate, interval=interval,
                    on_message=on_message, on_interval=hook,
                    disable_sync_subtasks=disable_sync_subtasks, **own,
                )  # fmt: skip
            except ChordError:
                # A chord's group body failed because a header task did: as for a single
                # body, the caller sees that task's own exception (Celery).
                if self.parent is not None:
                    self.parent._raise_if_failed()
                raise
            if callback is not None and not isinstance(result, ResultSet):
                callback(result.id, value)
            else:
                values.append(value)
        return values

    join_native = join

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Callable[[str, Any], Any] | None = None,
        no_ack: bool = True,
        on_message: Callable[[dict[str, Any]], Any] | None = None,
        disable_sync_subtasks: bool = True,
        on_interval: Callable[[], Any] | None = None,
    ) -> list[Any]:
        return self.join(
            timeout=timeout, propagate=propagate, interval=interval, callback=callback,
            on_message=on_message, disable_sync_subtasks=disable_sync_subtasks,
            on_interval=on_interval,
        )  # fmt: skip

    def as_list(self) -> list[Any]:
        return [node for result in self.results for node in result.as_list()]

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"


class GroupResult(ResultSet):
    """The results of a group, under the group's id; ``save()`` stores it for ``restore()``."""

    def __init__(
        self,
        id: str | None = None,
        results: Iterable[Any] | None = None,
        parent: Any = None,
        app: Caraway | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(results or [], app=app)
        self.id = id
        self.parent = parent

    @property
    def group_id(self) -> str | None:
        return self.id

    def completed_count(self) -> int:
        """O(1) where the backend counts the group's successes, else one read per member.

        A worker counts a success just after storing its result, so a client that already
        read every result (``get()``) could see the counter one behind: successes this
        object has read count too.
        """
        counted = _group_counter(self)
        if counted is None:
            return super().completed_count()
        return min(max(counted, self._successes_read()), len(self.results))

    def _successes_read(self) -> int:
        """Members already read as SUCCESS (ready results are kept by their ``AsyncResult``)."""
        return sum(
            1
            for result in self.results
            if type(result) is AsyncResult
            and result._cache is not None
            and result._cache["status"] == states.SUCCESS
        )

    def save(self, backend: Backend | None = None) -> Any:
        return (backend or self.app.backend).save_group(str(self.id), self.as_tuple())

    def delete(self, backend: Backend | None = None) -> None:
        (backend or self.app.backend).delete_group(str(self.id))

    @classmethod
    def restore(
        cls, id: str, backend: Backend | None = None, app: Caraway | None = None
    ) -> GroupResult | None:
        if app is None:
            app = get_current_app()
        stored = (backend or app.backend).restore_group(id)
        if stored is None:
            return None
        result = result_from_tuple(stored, app)
        return result if isinstance(result, GroupResult) else None

    def as_tuple(self) -> list[Any]:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return [[self.id, parent], [result.as_tuple() for result in self.results]]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id} [{', '.join(r.id for r in self.results)}]>"


def _group_counter(result: GroupResult) -> int | None:
    """The success count workers keep per group (``caraway.canvas.chords.count_group_success``)."""
    backend = result.backend
    if not result.id or backend.capabilities.chord_join == "none":
        return None
    value = backend.read_counter(f"{GROUP_KEY_PREFIX}{result.id}.n")
    return value


def result_from_tuple(value: Any, app: Caraway | None = None) -> Any:
    """A result from its tuple form (``[[id, parent], children]``, docs/celery-wire.md §5.5)."""
    if isinstance(value, ResultBase):
        return value
    head, nodes = value
    task_id, parent = head if isinstance(head, list | tuple) else (head, None)
    parent_result = result_from_tuple(parent, app) if parent else None
    if nodes is not None:
        children = [result_from_tuple(child, app) for child in nodes]
        return GroupResult(task_id, children, parent=parent_result, app=app)
    return AsyncResult(task_id, app=app, parent=parent_result)


#: Members of a result set read per batch while joining it.
READ_AHEAD = 1000


def _first_failed(results: list[Any]) -> AsyncResult[Any] | None:
    """The first plain member already read as failed (revoked, ...), by its cached state."""
    for result in results:
        cache = getattr(result, "_cache", None) if type(result) is AsyncResult else None
        if cache is not None and cache["status"] in states.PROPAGATE_STATES:
            return result  # type: ignore[no-any-return]
    return None


class _FailureWatch:
    """A join's ``on_interval`` while it waits for one member: every ``interval`` seconds
    it reads ``results[start:end]`` (one batched request) and raises the first failure
    there, so a failure ends the join as soon as it is stored (Celery's native join)."""

    def __init__(
        self,
        results: list[Any],
        start: int,
        end: int,
        interval: float,
        then: Callable[[], Any] | None,
    ) -> None:
        self.results, self.start, self.end = results, start, end
        self.interval = interval
        self.then = then
        self.read_at = time.monotonic()

    def __call__(self) -> None:
        if self.start < self.end and time.monotonic() - self.read_at >= self.interval:
            self.read_at = time.monotonic()
            members = self.results[self.start : self.end]
            _read_together(members)
            failed = _first_failed(members)
            if failed is not None:
                failed.maybe_throw()
        if self.then is not None:
            self.then()


def _read_together(results: list[Any]) -> dict[int, dict[str, Any]]:
    """Read plain members not yet known to be ready, one batched request per backend.

    Ready ones are cached by their ``AsyncResult``; every meta read is returned by the
    ``id()`` of its result. Without it, ``ready()`` or ``join()`` of a 10,000-member group
    is 10,000 requests.
    """
    unread: dict[int, tuple[Backend, list[AsyncResult[Any]]]] = {}
    for result in results:
        if type(result) is AsyncResult and result._cache is None:
            backend = result.backend
            unread.setdefault(id(backend), (backend, []))[1].append(result)
    read: dict[int, dict[str, Any]] = {}
    for backend, members in unread.values():
        metas = backend.get_many_task_meta([member.id for member in members])
        for member, meta in zip(members, metas, strict=True):
            read[id(member)] = member._set_cache(meta)
    return read


__all__ = [
    "AsyncResult",
    "EagerResult",
    "GroupResult",
    "ResultBase",
    "ResultSet",
    "allow_join_result",
    "denied_join_result",
    "result_from_tuple",
]
