"""Task results: ``AsyncResult`` reads what a worker stored, ``EagerResult`` holds a local run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from caraway import states
from caraway.current import get_current_worker_task
from caraway.utils.time import parse_iso

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.backends.base import Backend

R = TypeVar("R")

SYNC_SUBTASK_ERROR = (
    "Never call result.get() within a task! Waiting on another task from inside a task can"
    " deadlock the worker; chain the tasks instead, or pass disable_sync_subtasks=False."
)


def assert_will_not_block() -> None:
    if get_current_worker_task() is not None:
        raise RuntimeError(SYNC_SUBTASK_ERROR)


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
            from caraway.current import get_current_app

            app = get_current_app()
        self.app = app
        self.id = id
        self._backend = backend
        self.task_name = task_name
        self.parent = parent
        self._cache: dict[str, Any] | None = None

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
        return list(self._get_task_meta().get("children") or [])

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
        if follow_parents and propagate and self.parent is not None:
            self.parent._raise_if_failed()
        meta = self._set_cache(self.backend.wait_for(self.id, timeout, interval, on_interval))
        if on_message is not None:
            on_message(meta)
        if callback is not None:
            callback(self.id, meta["result"])
        status = meta["status"]
        if status in PROPAGATE_STATES and propagate:
            raise self.backend.exception_from_meta(meta)
        if status in EXCEPTION_STATES:
            value: Any = self.backend.exception_from_meta(meta)
            return value  # type: ignore[no-any-return]
        return meta["result"]  # type: ignore[no-any-return]

    wait = get

    def _raise_if_failed(self) -> None:
        if self.parent is not None:
            self.parent._raise_if_failed()
        meta = self._get_task_meta()
        if meta["status"] in states.PROPAGATE_STATES:
            raise self.backend.exception_from_meta(meta)

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


__all__ = ["AsyncResult", "EagerResult", "ResultBase"]
