"""``self.retry`` on a real worker: re-sent, counted, and bounded.

``autoretry_for`` with backoff runs on a fake clock: here on SQLite and memory, which hold
the retries themselves (on the clock the worker hands them), and in ``test_redis_worker``,
where the worker holds them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from worker_support import WAIT, ThreadedWorker, autojump, make_app, sqlite_app, wait_until

from caraway import states
from caraway.exceptions import MaxRetriesExceededError
from caraway.utils.time import FakeClock, parse_iso


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    path = tmp_path_factory.mktemp("retries") / "b.sqlite3"
    # result_extended: the stored meta carries the request's ``retries``.
    app = sqlite_app("retries", path, result_extended=True)
    attempts: dict[str, list[float]] = defaultdict(list)

    @app.task(bind=True, max_retries=5)
    def flaky(self: Any, key: str, failures: int) -> int:
        attempts[key].append(time.monotonic())
        if self.request.retries < failures:
            raise self.retry(countdown=0.05)
        return int(self.request.retries)

    @app.task(bind=True, max_retries=2)
    def hopeless(self: Any, key: str) -> None:
        attempts[key].append(time.monotonic())
        raise self.retry(countdown=0.01)

    @app.task(bind=True, max_retries=1)
    def hopeless_with_exc(self: Any, key: str) -> None:
        attempts[key].append(time.monotonic())
        try:
            raise ValueError("backend down")
        except ValueError as exc:
            raise self.retry(exc=exc, countdown=0.01) from exc

    @app.task(bind=True, max_retries=1)
    def headers_after_retry(self: Any) -> Any:
        if self.request.retries:
            return self.request.headers.get("x-test-header")
        raise self.retry(countdown=0.01)

    @app.task(bind=True, max_retries=1)
    def new_args(self: Any, foo: int, bar: int, label: str | None = None) -> Any:
        if not self.request.retries:
            raise self.retry(args=(foo + 1, bar + 1), countdown=0)
        return [foo, bar, label]

    @app.task(bind=True, max_retries=1)
    def new_kwargs(self: Any, foo: int, bar: int) -> Any:
        if not self.request.retries:
            raise self.retry(kwargs={"foo": foo + 1}, countdown=0)
        return [foo, bar]

    worker = ThreadedWorker(app, pool="threads", concurrency=2).start()
    yield SimpleNamespace(
        app=app, attempts=attempts, flaky=flaky, hopeless=hopeless,
        hopeless_with_exc=hopeless_with_exc, headers_after_retry=headers_after_retry,
        new_args=new_args, new_kwargs=new_kwargs,
    )  # fmt: skip
    worker.stop()


def test_retry_reaches_success_with_the_retry_count(served: SimpleNamespace) -> None:
    result = served.flaky.delay("flaky", 2)

    assert result.get(timeout=WAIT) == 2
    assert result.state == states.SUCCESS
    assert result.retries == 2
    assert len(served.attempts["flaky"]) == 3
    assert served.app.broker.size("celery") == 0


def test_retrying_past_max_retries_fails_with_max_retries_exceeded(
    served: SimpleNamespace,
) -> None:
    result = served.hopeless.delay("hopeless")

    with pytest.raises(MaxRetriesExceededError):
        result.get(timeout=WAIT)
    assert result.state == states.FAILURE
    assert len(served.attempts["hopeless"]) == 3  # the first run and max_retries=2 retries


def test_retrying_past_max_retries_with_exc_fails_with_that_exception(
    served: SimpleNamespace,
) -> None:
    result = served.hopeless_with_exc.delay("with-exc")

    with pytest.raises(ValueError, match="backend down"):
        result.get(timeout=WAIT)
    assert result.state == states.FAILURE
    assert len(served.attempts["with-exc"]) == 2


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_autoretry_backoff_waits_on_the_brokers_clock(
    kind: str, tmp_path: Path, start_worker: Callable[..., Any]
) -> None:
    """Backoff of 1, 2 then 4 s: the broker holds each retry until the worker's (fake) clock
    reaches its ETA, so the 7 s of waiting take no real time, and none runs early."""
    app = make_app(kind, "backoff", tmp_path / "b.sqlite3", result_extended=True)
    clock = FakeClock(time.time())
    attempts: list[SimpleNamespace] = []

    @app.task(
        name="backoff.flaky", bind=True, autoretry_for=(ConnectionError,),
        retry_backoff=True, retry_jitter=False, max_retries=3,
    )  # fmt: skip
    def flaky(self: Any) -> int:
        eta = parse_iso(self.request.eta)
        attempts.append(SimpleNamespace(sent=time.time(), ran=clock.time(), eta=eta))
        if self.request.retries < 3:
            raise ConnectionError("unreachable")
        return int(self.request.retries)

    worker = start_worker(app, pool="threads", concurrency=2, clock=clock)
    started = time.monotonic()
    result = flaky.delay()

    # The clock stands still: the first retry waits in the broker, not in the worker.
    wait_until(lambda: app.broker.delayed(["celery"]), what="the first retry held")
    assert len(attempts) == 1
    assert worker.consumer.held_jobs() == []
    with autojump(clock, worker):
        assert result.get(timeout=WAIT) == 3

    assert time.monotonic() - started < 4  # far less than the 7 s of backoff
    for before, retry, countdown in zip(attempts[:-1], attempts[1:], (1, 2, 4), strict=True):
        assert countdown <= retry.eta.timestamp() - before.sent < countdown + 0.5
        assert retry.ran >= retry.eta.timestamp()  # held until the clock reached its ETA
    assert app.broker.size("celery") == 0


def test_a_retry_keeps_the_callers_own_headers(served: SimpleNamespace) -> None:
    result = served.headers_after_retry.apply_async(headers={"x-test-header": "kept"})

    assert result.get(timeout=WAIT) == "kept"


def test_a_retry_with_new_args_of_a_call_made_by_keyword_replaces_those_keywords(
    served: SimpleNamespace,
) -> None:
    called_by_name = served.new_args.apply_async(kwargs={"foo": 1, "bar": 2, "label": "kept"})
    called_in_order = served.new_kwargs.apply_async((1, 2))

    assert called_by_name.get(timeout=WAIT) == [2, 3, "kept"]
    assert called_in_order.get(timeout=WAIT) == [2, 2]
