"""``Manager``: waits and assertions for tests that drive real workers, as Celery's
``celery.contrib.testing.manager`` offers them (its integration suite uses them).

Every wait is bounded by ``timeout`` and fails with :class:`Sentinel` naming what was
awaited; nothing sleeps longer than ``interval`` between two looks.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from caraway.exceptions import CarawayError
from caraway.result import ResultSet

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.control import Inspect

__all__ = ["Manager", "ManagerMixin", "Sentinel"]

T = TypeVar("T")


class Sentinel(CarawayError):
    """What a test waited for did not happen in time."""


class ManagerMixin:
    """The waits; the class using it provides ``app``."""

    app: Caraway

    def remark(self, message: str, sep: str = "-") -> None:
        print(f"{sep}{message}")

    def wait_for(
        self,
        fun: Callable[[], T],
        catch: tuple[type[BaseException], ...] = (),
        desc: str = "thing",
        timeout: float = 10.0,
        interval: float = 0.1,
        errback: Callable[[BaseException, float], None] | None = None,
        **_: Any,
    ) -> T:
        """``fun()``'s first value, trying again on ``catch`` until ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fun()
            except catch as exc:
                if time.monotonic() >= deadline:
                    raise Sentinel(f"Test {desc} timed out after {timeout} s: {exc!r}") from exc
                if errback is not None:
                    errback(exc, interval)
                time.sleep(interval)

    retry_over_time = wait_for

    def ensure_not_for_a_while(
        self, fun: Callable[[], Any], catch: tuple[type[BaseException], ...],
        desc: str = "thing", max_retries: int = 20, interval: float = 0.1, **_: Any,
    ) -> None:  # fmt: skip
        """Fail if ``fun`` succeeds within ``max_retries`` tries (it must keep raising)."""
        for _attempt in range(max_retries):
            try:
                fun()
            except catch:
                time.sleep(interval)
                continue
            raise AssertionError(f"Should not have happened: {desc}")

    def true_or_raise(self, fun: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fun(...)``, raising ``Sentinel`` when it is falsy (a step of ``wait_for``)."""
        value = fun(*args, **kwargs)
        if not value:
            raise Sentinel(f"{getattr(fun, '__name__', fun)} returned {value!r}")
        return value

    def join(self, r: Any, propagate: bool = False, max_retries: int = 10, **kwargs: Any) -> Any:
        """``r.get()``; with ``propagate=False`` a failed task gives its exception."""
        return r.get(propagate=propagate, **kwargs)

    def inspect(self, timeout: float = 3.0) -> Inspect:
        return self.app.control.inspect(timeout=timeout)

    def query_tasks(self, ids: Iterable[str], timeout: float = 0.5) -> dict[str, Any]:
        """Per node, where each of ``ids`` is: ``{node: {id: [state, request]}}``."""
        return self.inspect(timeout).query_task(*ids) or {}

    def query_task_states(self, ids: Iterable[str], timeout: float = 0.5) -> dict[str, set[str]]:
        """``{id: {'active' | 'reserved' | 'scheduled', ...}}`` over every node."""
        found: dict[str, set[str]] = defaultdict(set)
        for node_reply in self.query_tasks(ids, timeout).values():
            for task_id, (state, _request) in _entries(node_reply):
                found[task_id].add(state)
        return found

    def is_accepted(self, ids: Iterable[str], **kwargs: Any) -> bool:
        return self._ids_in_state({"active"}, list(ids), **kwargs)

    def is_received(self, ids: Iterable[str], **kwargs: Any) -> bool:
        return self._ids_in_state({"reserved"}, list(ids), **kwargs)

    def _ids_in_state(self, wanted: set[str], ids: list[str], **kwargs: Any) -> bool:
        states = self.query_task_states(ids, **kwargs)
        return all(states.get(task_id, set()) & wanted for task_id in ids)

    def assert_accepted(
        self, ids: Iterable[str], interval: float = 0.5,
        desc: str = "waiting for tasks to be accepted", **policy: Any,
    ) -> bool:  # fmt: skip
        """Wait until every task of ``ids`` is running on some worker."""
        ids = list(ids)
        return self.wait_for(
            lambda: self.true_or_raise(self.is_accepted, ids),
            (Sentinel,), desc=desc, interval=interval, **policy,
        )  # fmt: skip

    def assert_received(
        self, ids: Iterable[str], interval: float = 0.5,
        desc: str = "waiting for tasks to be received", **policy: Any,
    ) -> bool:  # fmt: skip
        """Wait until every task of ``ids`` is reserved (received, not started) by a worker."""
        ids = list(ids)
        return self.wait_for(
            lambda: self.true_or_raise(self.is_received, ids),
            (Sentinel,), desc=desc, interval=interval, **policy,
        )  # fmt: skip

    def assert_result_tasks_in_progress_or_completed(
        self, async_results: Iterable[Any], interval: float = 0.5,
        desc: str = "waiting for tasks to be started or completed", **policy: Any,
    ) -> bool:  # fmt: skip
        """Wait until each result is STARTED or finished (needs ``task_track_started``)."""
        results = list(async_results)
        return self.wait_for(
            lambda: self.true_or_raise(
                lambda: all(r.state == "STARTED" or r.ready() for r in results)
            ),
            (Sentinel,), desc=desc, interval=interval, **policy,
        )  # fmt: skip

    def missing_results(self, r: ResultSet) -> list[str]:
        """Ids of the results of ``r`` the backend does not have yet."""
        return [res.id for res in r.results if not res.ready()]


def _entries(node_reply: Any) -> Iterable[tuple[str, Any]]:
    # A node answers {id: [state, request]}; a node that failed answers {"error": ...}.
    if not isinstance(node_reply, Mapping):
        return ()
    return [(key, value) for key, value in node_reply.items() if isinstance(value, list | tuple)]


class Manager(ManagerMixin):
    """Test helper for an app whose workers run: ``Manager(app).assert_accepted(ids)``."""

    def __init__(self, app: Caraway, **kwargs: Any) -> None:
        self.app = app
