"""A test manager: waits on a running worker through the broker, for integration tests.

Celery's integration tests drive their session worker through ``Manager(app)``: they ask it to
inspect the worker, to retry a check until it holds, to wait for results, and to wait until the
worker has nothing active. Every wait here is bounded and its failure names what it waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from caraway.exceptions import CarawayError, TimeoutError
from caraway.states import READY_STATES, STARTED

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.control import Inspect
    from caraway.result import AsyncResult

__all__ = ["Manager", "ManagerMixin", "Sentinel"]


class Sentinel(CarawayError):
    """Raised inside a check to mean "not yet"; the wait goes on."""


class ManagerMixin:
    """The waiting helpers; a subclass sets ``app``."""

    app: Caraway
    block_timeout: float = 30 * 60.0

    def wait_for(
        self,
        fun: Callable[..., Any],
        catch: Sequence[type[BaseException]],
        desc: str = "thing",
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        errback: Callable[[BaseException, float, int], None] | None = None,
        max_retries: int = 10,
        interval_start: float = 0.1,
        interval_step: float = 0.5,
        interval_max: float = 5.0,
        emit_warning: bool = False,
        **options: Any,
    ) -> Any:
        """``fun(*args, **kwargs)`` retried while it raises one of ``catch``, then its value.

        The pause grows from ``interval_start`` by ``interval_step`` up to ``interval_max``;
        after ``max_retries`` retries, or once ``timeout`` seconds would pass, the last error
        propagates (kombu's ``retry_over_time`` rules, which Celery's Manager uses).
        """
        del emit_warning  # accepted for Celery's signature; nothing to warn here
        timeout = options.pop("timeout", None)
        if options:
            raise TypeError(f"wait_for() got unexpected options: {sorted(options)}")
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        pause = interval_start
        for attempt in range(max_retries + 1):
            try:
                return fun(*args, **(kwargs or {}))
            except tuple(catch) as exc:
                late = deadline is not None and time.monotonic() + pause > deadline
                if attempt == max_retries or late:
                    raise
                if errback is not None:
                    errback(exc, pause, attempt + 1)
                time.sleep(pause)
                pause = min(pause + interval_step, interval_max)
        raise AssertionError(f"waiting for {desc}: unreachable")  # pragma: no cover

    def ensure_not_for_a_while(
        self, fun: Callable[..., Any], catch: Sequence[type[BaseException]], desc: str = "thing",
        max_retries: int = 20, interval_start: float = 0.1, interval_step: float = 0.02,
        interval_max: float = 1.0, **options: Any,
    ) -> None:  # fmt: skip
        """Fail if ``fun`` stops raising one of ``catch`` within the retries."""
        try:
            self.wait_for(
                fun, catch, desc=desc, max_retries=max_retries, interval_start=interval_start,
                interval_step=interval_step, interval_max=interval_max, **options,
            )  # fmt: skip
        except tuple(catch):
            return
        raise AssertionError(f"Should not have happened: {desc}")

    def join(self, r: Any, propagate: bool = False, max_retries: int = 10, **kwargs: Any) -> Any:
        """``r.get(...)``, tried again on a timeout up to ``max_retries`` times."""
        kwargs.setdefault("timeout", self.block_timeout)
        return self.wait_for(
            lambda: r.get(propagate=propagate, **kwargs),
            catch=(TimeoutError,),
            desc="results",
            max_retries=max_retries,
        )

    def inspect(self, timeout: float = 3.0) -> Inspect:
        return self.app.control.inspect(timeout=timeout)

    def query_tasks(self, ids: Iterable[str], timeout: float = 0.5) -> dict[str, Any]:
        return self.inspect(timeout).query_task(*ids) or {}

    def query_task_states(self, ids: Iterable[str], timeout: float = 0.5) -> dict[str, set[str]]:
        """For each task id, the states that the workers report for it."""
        states: dict[str, set[str]] = {}
        for reply in self.query_tasks(ids, timeout).values():
            for task_id, (state, _info) in reply.items():
                states.setdefault(task_id, set()).add(state)
        return states

    def assert_accepted(
        self, ids: Sequence[str], interval: float = 0.5,
        desc: str = "waiting for tasks to be accepted", **policy: Any,
    ) -> Any:  # fmt: skip
        return self._wait_worker_states({"active"}, ids, interval, desc, **policy)

    def assert_received(
        self, ids: Sequence[str], interval: float = 0.5,
        desc: str = "waiting for tasks to be received", **policy: Any,
    ) -> Any:  # fmt: skip
        return self._wait_worker_states({"reserved", "active"}, ids, interval, desc, **policy)

    def _wait_worker_states(
        self, expected: set[str], ids: Sequence[str], interval: float, desc: str, **policy: Any
    ) -> Any:
        def matches() -> bool:
            found = self.query_task_states(ids)
            if all(found.get(task_id, set()) & expected for task_id in ids):
                return True
            raise Sentinel(f"{desc}: {found}")

        return self.wait_for(matches, (Sentinel,), desc=desc, interval_start=interval, **policy)

    def assert_result_tasks_in_progress_or_completed(
        self, async_results: Sequence[AsyncResult[Any]], interval: float = 0.5,
        desc: str = "waiting for tasks to be started or completed", **policy: Any,
    ) -> Any:  # fmt: skip
        """Wait until every result is started or finished (``task_track_started`` helps)."""

        def in_progress() -> bool:
            states = [result.state for result in async_results]
            if all(state == STARTED or state in READY_STATES for state in states):
                return True
            raise Sentinel(f"{desc}: {states}")

        return self.wait_for(in_progress, (Sentinel,), desc=desc, interval_start=interval, **policy)

    def remark(self, message: str, sep: str = "-") -> None:
        """Print a note in the test's output, as Celery's Manager does."""
        print(f"{sep}{message}")

    def is_accepted(self, ids: Iterable[str], **kwargs: Any) -> bool:
        """Whether every task of ``ids`` is running on some worker now."""
        return self._all_in({"active"}, list(ids), **kwargs)

    def is_received(self, ids: Iterable[str], **kwargs: Any) -> bool:
        """Whether every task of ``ids`` is reserved (received, not started) now."""
        return self._all_in({"reserved"}, list(ids), **kwargs)

    def _all_in(self, wanted: set[str], ids: list[str], **kwargs: Any) -> bool:
        states = self.query_task_states(ids, **kwargs)
        return all(states.get(task_id, set()) & wanted for task_id in ids)

    def missing_results(self, r: Any) -> list[str]:
        """Ids of the results of ``r`` (a ResultSet) the backend does not have yet."""
        return [res.id for res in r.results if not res.ready()]

    def true_or_raise(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        value = fun(*args, **kwargs)
        if not value:
            raise Sentinel()
        return value

    def wait_until_idle(self, timeout: float = 30.0) -> None:
        """Purge the waiting tasks, then return once no worker reports an active task; fail
        after ``timeout`` seconds. The purge is Celery's: what one test left queued must not
        keep the next waiting."""
        while self.app.control.purge():  # again until none is left: sends may still land
            continue
        deadline = time.monotonic() + timeout
        while True:
            # One second per question: every test's teardown asks, and workers answer fast.
            active = self.inspect(timeout=1.0).active() or {}
            if not any(active.values()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers still busy after {timeout} s: {active}")
            time.sleep(0.1)


class Manager(ManagerMixin):
    """Test helpers bound to one app (``Manager(app)`` as in Celery's integration tests)."""

    def __init__(self, app: Caraway, **kwargs: Any) -> None:
        self.app = app
        self.block_timeout = float(kwargs.pop("block_timeout", self.block_timeout))
        if kwargs:
            raise TypeError(f"Manager() got unexpected options: {sorted(kwargs)}")
