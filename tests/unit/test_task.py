"""Tasks: request context, retries (eager and as a worker runs them), hooks, eager mode."""

from __future__ import annotations

import inspect
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from caraway import Caraway, EagerResult, chain, states
from caraway.engines.base.broker import Delivery, Outgoing
from caraway.exceptions import EncodeError, ImproperlyConfigured, MaxRetriesExceededError, Retry
from caraway.execution import Outcome, execute
from caraway.protocol import parse_task_message
from caraway.task import Task
from caraway.utils.time import backoff_countdown
from caraway.worker.job import Job

JSON = frozenset({"application/json"})


def _run_as_worker(app: Caraway, outgoing: Outgoing) -> Outcome:
    """Execute a published message the way a worker does: request built from the message."""
    call = parse_task_message(outgoing.message, JSON)
    delivery = Delivery(outgoing.message, outgoing.queue, tag=None)
    job = Job(delivery, call, app.tasks[call.name], "w1@test")
    return execute(job.task, job.request)


# --- the request --------------------------------------------------------------------------


def test_bound_task_sees_its_request_in_apply(app: Caraway) -> None:
    seen: dict[str, Any] = {}

    @app.task(bind=True)
    def inspect(self: Task[Any, Any], x: int, y: int = 0) -> int:
        request = self.request
        seen.update(
            id=request.id, task=request.task, args=request.args, kwargs=request.kwargs,
            retries=request.retries, is_eager=request.is_eager,
            called_directly=request.called_directly, root_id=request.root_id,
            parent_id=request.parent_id, hostname=request.hostname,
            delivery_info=request.delivery_info, unknown=request.no_such_field,
        )  # fmt: skip
        return x + y

    result = inspect.apply((1,), {"y": 2}, task_id="fixed-id")

    assert isinstance(result, EagerResult)
    assert result.get() == 3
    assert result.id == "fixed-id"
    assert seen["id"] == seen["root_id"] == "fixed-id"
    assert seen["task"] == inspect.name
    assert list(seen["args"]) == [1]
    assert seen["kwargs"] == {"y": 2}
    assert seen["retries"] == 0
    assert seen["is_eager"] is True
    assert seen["called_directly"] is False
    assert seen["parent_id"] is None
    assert seen["hostname"]
    assert seen["delivery_info"]["is_eager"] is True
    assert seen["unknown"] is None


def test_direct_call_runs_in_place_and_is_called_directly(app: Caraway) -> None:
    @app.task(bind=True)
    def whoami(self: Task[Any, Any]) -> tuple[bool, Any]:
        return self.request.called_directly, self.request.id

    assert whoami() == (True, None)
    assert whoami.request.called_directly is True  # outside any call: an empty request


def test_request_is_cleared_after_the_call(app: Caraway) -> None:
    @app.task(bind=True)
    def noop(self: Task[Any, Any]) -> None:
        return None

    noop.apply(task_id="t-1")

    assert noop.request.id is None


# --- retry in eager mode ------------------------------------------------------------------


def test_eager_retry_runs_again_until_success(app: Caraway) -> None:
    attempts: list[int] = []

    @app.task(bind=True, max_retries=5)
    def flaky(self: Task[Any, Any]) -> str:
        attempts.append(self.request.retries)
        if self.request.retries < 2:
            raise self.retry(countdown=10)
        return f"ok after {self.request.retries}"

    result = flaky.apply(task_id="same-id")

    assert result.get() == "ok after 2"
    assert result.state == states.SUCCESS
    assert result.id == "same-id"
    assert attempts == [0, 1, 2]


def test_eager_retry_past_max_retries_raises_max_retries_exceeded(app: Caraway) -> None:
    attempts: list[int] = []

    @app.task(bind=True, max_retries=2)
    def always(self: Task[Any, Any], x: int) -> None:
        attempts.append(self.request.retries)
        raise self.retry(countdown=1)

    result = always.apply((7,))

    assert attempts == [0, 1, 2]
    assert result.state == states.FAILURE
    assert isinstance(result.result, MaxRetriesExceededError)
    assert result.result.task_args == (7,)
    with pytest.raises(MaxRetriesExceededError, match="Can't retry"):
        result.get()


def test_eager_retry_reraises_the_original_exception_when_given(app: Caraway) -> None:
    attempts: list[int] = []

    @app.task(bind=True, max_retries=1)
    def lookup(self: Task[Any, Any]) -> None:
        attempts.append(self.request.retries)
        raise self.retry(exc=KeyError("try-again"), countdown=1)

    with pytest.raises(KeyError, match="try-again"):
        lookup.apply(throw=True)
    assert attempts == [0, 1]


def test_retry_max_retries_argument_overrides_the_task(app: Caraway) -> None:
    attempts: list[int] = []

    @app.task(bind=True, max_retries=10)
    def limited(self: Task[Any, Any]) -> None:
        attempts.append(self.request.retries)
        raise self.retry(max_retries=1, countdown=0)

    assert limited.apply().state == states.FAILURE
    assert attempts == [0, 1]


def test_retry_with_new_arguments(app: Caraway) -> None:
    @app.task(bind=True)
    def countdown(self: Task[Any, Any], n: int) -> int:
        if n > 0:
            raise self.retry(args=(n - 1,), countdown=0)
        return self.request.retries

    assert countdown.apply((3,)).get() == 3


def test_retry_outside_a_task_run_raises_at_once(app: Caraway) -> None:
    @app.task(bind=True)
    def direct(self: Task[Any, Any], exc: BaseException | None) -> None:
        raise self.retry(exc=exc)

    with pytest.raises(ValueError, match="boom"):
        direct(ValueError("boom"))
    with pytest.raises(Retry):
        direct(None)


# --- retry as a worker runs it: the published retry message ----------------------------------


def test_worker_retry_publishes_the_same_id_with_incremented_retries(
    app: Caraway, published: list[Outgoing]
) -> None:
    @app.task(bind=True, max_retries=3)
    def flaky(self: Task[Any, Any], x: int) -> None:
        raise self.retry(exc=KeyError("try-again"), countdown=30)

    sent = flaky.delay(1)
    before = datetime.now(timezone.utc)
    outcome = _run_as_worker(app, published[0])

    assert outcome.state == states.RETRY
    retry = published[1].message
    assert retry.headers["id"] == sent.id
    assert retry.headers["retries"] == 1
    assert retry.headers["parent_id"] == sent.id  # docs/celery-wire.md §1.5: its own id
    assert retry.headers["root_id"] == sent.id
    eta = datetime.fromisoformat(retry.headers["eta"])
    assert before + timedelta(seconds=29) < eta < before + timedelta(seconds=31)
    assert parse_task_message(retry, JSON).args == [1]
    meta = app.backend.get_task_meta(sent.id)
    assert meta["status"] == states.RETRY
    assert meta["result"]["exc_type"] == "KeyError"
    assert meta["children"] == [[[sent.id, None], None]]


def test_autoretry_uses_exponential_backoff_without_jitter(
    app: Caraway, published: list[Outgoing]
) -> None:
    @app.task(autoretry_for=(KeyError,), retry_backoff=2, retry_jitter=False, max_retries=5)
    def fetch() -> None:
        raise KeyError("missing")

    fetch.delay()
    countdowns = []
    for _ in range(4):
        before = datetime.now(timezone.utc)
        outcome = _run_as_worker(app, published[-1])
        assert outcome.state == states.RETRY
        eta = datetime.fromisoformat(published[-1].message.headers["eta"])
        countdowns.append(round((eta - before).total_seconds()))

    assert countdowns == [2, 4, 8, 16]
    assert [o.message.headers["retries"] for o in published] == [0, 1, 2, 3, 4]


def test_autoretry_backoff_is_capped_and_jittered(app: Caraway, published: list[Outgoing]) -> None:
    @app.task(
        autoretry_for=(KeyError,), retry_backoff=True, retry_backoff_max=5, max_retries=20,
    )  # fmt: skip
    def fetch() -> None:
        raise KeyError("missing")

    fetch.delay()
    for _ in range(6):
        before = datetime.now(timezone.utc)
        _run_as_worker(app, published[-1])
        eta = datetime.fromisoformat(published[-1].message.headers["eta"])
        assert -0.5 <= (eta - before).total_seconds() <= 5.5


def test_autoretry_gives_up_with_the_original_exception(
    app: Caraway, published: list[Outgoing]
) -> None:
    @app.task(autoretry_for=(KeyError,), retry_kwargs={"max_retries": 1, "countdown": 0})
    def fetch() -> None:
        raise KeyError("missing")

    sent = fetch.delay()
    assert _run_as_worker(app, published[-1]).state == states.RETRY
    outcome = _run_as_worker(app, published[-1])

    assert outcome.state == states.FAILURE
    assert isinstance(outcome.retval, KeyError)
    assert app.backend.get_task_meta(sent.id)["result"]["exc_type"] == "KeyError"


def test_dont_autoretry_for_wins(app: Caraway) -> None:
    @app.task(autoretry_for=(LookupError,), dont_autoretry_for=(IndexError,))
    def pick() -> None:
        raise IndexError("no")

    result = pick.apply()

    assert result.state == states.FAILURE
    assert isinstance(result.result, IndexError)


@pytest.mark.parametrize(
    ("factor", "retries", "maximum", "expected"),
    [(1, 0, 600, 1), (2, 3, 600, 16), (3, 10, 600, 600), (5, 2, None, 20), (1, 4, 10, 10)],
)
def test_backoff_countdown_without_jitter(
    factor: int, retries: int, maximum: int | None, expected: float
) -> None:
    assert backoff_countdown(factor, retries, maximum, full_jitter=False) == expected


def test_backoff_countdown_with_full_jitter_stays_in_bounds() -> None:
    values = {backoff_countdown(4, 3, 600, full_jitter=True) for _ in range(300)}

    assert all(0 <= value <= 32 for value in values)
    assert len(values) > 5


# --- hooks --------------------------------------------------------------------------------


@pytest.fixture
def hooked(app: Caraway) -> tuple[Task[Any, Any], list[Any]]:
    calls: list[Any] = []

    class Hooked(app.Task):  # type: ignore[name-defined, misc]
        def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
            calls.append(("before_start", args))

        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            calls.append(("on_success", retval))

        def on_failure(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            calls.append(("on_failure", type(exc).__name__, "ValueError: x" in einfo.traceback))

        def on_retry(self, exc: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
            calls.append(("on_retry", type(exc).__name__))

        def after_return(self, status: str, retval: Any, *rest: Any) -> None:
            calls.append(("after_return", status))

    @app.task(base=Hooked, bind=True, max_retries=1)
    def work(self: Task[Any, Any], mode: str) -> str:
        calls.append(("run", self.request.retries))
        if mode == "fail":
            raise ValueError("x")
        if mode == "retry" and not self.request.retries:
            raise self.retry(exc=KeyError("k"), countdown=0)
        return mode

    return work, calls


def test_hooks_order_on_success(hooked: tuple[Task[Any, Any], list[Any]]) -> None:
    work, calls = hooked

    work.apply(("ok",))

    assert calls == [
        ("before_start", ("ok",)),
        ("run", 0),
        ("on_success", "ok"),
        ("after_return", states.SUCCESS),
    ]


def test_hooks_order_on_failure(hooked: tuple[Task[Any, Any], list[Any]]) -> None:
    work, calls = hooked

    work.apply(("fail",))

    assert calls == [
        ("before_start", ("fail",)),
        ("run", 0),
        ("on_failure", "ValueError", True),
        ("after_return", states.FAILURE),
    ]


def test_hooks_order_on_retry(hooked: tuple[Task[Any, Any], list[Any]]) -> None:
    work, calls = hooked

    work.apply(("retry",))

    assert calls == [
        ("before_start", ("retry",)),
        ("run", 0),
        ("on_retry", "KeyError"),
        ("after_return", states.RETRY),
        ("before_start", ("retry",)),
        ("run", 1),
        ("on_success", "retry"),
        ("after_return", states.SUCCESS),
    ]


# --- eager mode ---------------------------------------------------------------------------


def test_always_eager_runs_in_place_and_returns_an_eager_result(app: Caraway) -> None:
    app.conf.task_always_eager = True

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(2, 3)

    assert isinstance(result, EagerResult)
    assert result.get() == 5
    assert result.successful()
    assert app.broker.size("celery") == 0


def test_always_eager_failure_is_stored_in_the_result_unless_propagating(app: Caraway) -> None:
    app.conf.task_always_eager = True

    @app.task
    def boom() -> None:
        raise ValueError("boom")

    result = boom.delay()
    assert result.state == states.FAILURE
    assert result.failed()
    assert "ValueError: boom" in (result.traceback or "")
    with pytest.raises(ValueError, match="boom"):
        result.get()
    assert isinstance(result.get(propagate=False), ValueError)

    app.conf.task_eager_propagates = True
    with pytest.raises(ValueError, match="boom"):
        boom.delay()


def test_eager_calls_still_go_through_the_serializer(app: Caraway) -> None:
    app.conf.task_always_eager = True
    received: list[Any] = []

    @app.task
    def keep(value: Any) -> None:
        received.append(value)

    with pytest.raises(EncodeError):
        keep.delay(object())
    keep.delay((1, 2))
    when = datetime(2024, 5, 6, tzinfo=timezone.utc)
    keep.apply_async(kwargs={"value": {"when": when}})

    assert received == [[1, 2], {"when": when}]  # a tuple arrives as a list, as from a worker


def test_eager_serializer_option_is_honoured(app: Caraway) -> None:
    app.conf.task_always_eager = True

    @app.task
    def keep(value: Any) -> Any:
        return value

    assert keep.apply_async(((1, 2),), serializer="pickle").get() == (1, 2)


def test_eager_results_are_not_stored_by_default(app: Caraway) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.apply((1, 2))

    assert app.backend.get_task_meta(result.id)["status"] == states.PENDING


def test_store_eager_result_stores_it(app: Caraway) -> None:
    app.conf.task_store_eager_result = True

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.apply((1, 2))

    assert app.AsyncResult(result.id).get(timeout=1) == 3


def test_update_state_stores_a_custom_state(app: Caraway) -> None:
    @app.task(bind=True)
    def progress(self: Task[Any, Any]) -> str:
        self.update_state(state="PROGRESS", meta={"current": 1, "total": 3})
        return "done"

    result = progress.apply(task_id=str(uuid.uuid4()))

    stored = app.AsyncResult(result.id)
    assert stored.state == "PROGRESS"
    assert stored.info == {"current": 1, "total": 3}
    meta = app.backend.get_task_meta(result.id)
    assert meta["date_done"] is None


def test_update_state_outside_a_task_needs_an_id(app: Caraway) -> None:
    @app.task
    def noop() -> None:
        return None

    with pytest.raises(ValueError, match="task_id"):
        noop.update_state(state="PROGRESS", meta={})


# --- sending ------------------------------------------------------------------------------


def test_delay_publishes_and_returns_an_async_result(
    app: Caraway, published: list[Outgoing]
) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    result = add.delay(2, 3)

    assert result.id == published[0].message.headers["id"]
    assert result.state == states.PENDING
    assert published[0].queue == "celery"
    outcome = _run_as_worker(app, published[0])
    assert outcome.state == states.SUCCESS
    assert result.get(timeout=1) == 5


def test_bad_arguments_fail_at_the_call_site(app: Caraway) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError, match="add"):
        add.delay(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        add.apply_async((1, 2, 3))


def test_typing_false_skips_the_argument_check(app: Caraway, published: list[Outgoing]) -> None:
    @app.task(typing=False)
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(1)  # type: ignore[call-arg]

    assert len(published) == 1


def test_task_defaults_are_call_options(app: Caraway, published: list[Outgoing]) -> None:
    @app.task(queue="slow", priority=3, serializer="pickle", ignore_result=True, expires=60)
    def crunch() -> None:
        return None

    crunch.delay()

    sent = published[0]
    assert sent.queue == "slow"
    assert sent.priority == 3
    assert sent.message.content_type == "application/x-python-serialize"
    assert sent.message.headers["ignore_result"] is True
    assert sent.message.headers["expires"] is not None
    assert sent.message.properties["expiration"] == "60000"


def _plain(a, b, c=3):  # type: ignore[no-untyped-def]
    return a


def _starred(a, *rest, key=None, **extra):  # type: ignore[no-untyped-def]
    return a


@pytest.mark.parametrize("function", [_plain, _starred])
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1,), {}), ((1, 2), {}), ((1, 2, 3), {}), ((1, 2, 3, 4), {}),
     ((1,), {"b": 2}), ((1,), {"a": 2}), ((), {"a": 1, "b": 2}), ((1, 2), {"d": 1}),
     ((), {"b": 1, "c": 2}), ((1, 2), {"c": 5})],
)  # fmt: skip
def test_call_site_argument_checks_agree_with_python(
    app: Caraway, function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    task = app.task(name=f"proj.{function.__name__}")(function)
    try:
        inspect.signature(function).bind(*args, **kwargs)
        binds = True
    except TypeError:
        binds = False

    if binds:
        task._check_arguments(args, kwargs)
    else:
        with pytest.raises(TypeError, match=rf"proj\.{function.__name__}\("):
            task._check_arguments(args, kwargs)


def test_task_attributes_follow_the_settings_unless_the_task_sets_them(app: Caraway) -> None:
    """Celery binds these from the configuration: a task without its own value reads it."""

    @app.task
    def plain() -> None: ...

    @app.task(acks_late=False, rate_limit="5/s", serializer="json")
    def own() -> None: ...

    assert plain.acks_late is False  # task_acks_late defaults to False
    app.config_from_object(
        {
            "task_acks_late": True,
            "task_default_rate_limit": "10/m",
            "task_track_started": True,
            "task_ignore_result": True,
            "task_serializer": "pickle",
            "task_time_limit": 30,
            "accept_content": ["json", "pickle"],
        }
    )
    assert (plain.acks_late, plain.rate_limit, plain.track_started) == (True, "10/m", True)
    assert (plain.ignore_result, plain.serializer, plain.time_limit) == (True, "pickle", 30)
    assert (own.acks_late, own.rate_limit, own.serializer) == (False, "5/s", "json")


def test_the_configured_serializer_is_the_one_sent(app: Caraway, published: list[Any]) -> None:
    @app.task
    def work(value: object) -> None: ...

    app.conf.update(task_serializer="pickle", accept_content=["pickle", "json"])
    work.delay({1, 2})  # a set: only pickle can carry it
    assert published[-1].message.content_type == "application/x-python-serialize"


def test_replace_with_an_empty_chain_is_refused(app: Caraway) -> None:
    @app.task(bind=True, name="proj.replace_with_nothing")
    def replace_with_nothing(self: Task[Any, Any]) -> Any:
        return self.replace(chain())

    result = replace_with_nothing.apply()
    assert result.failed()
    with pytest.raises(ImproperlyConfigured, match="Cannot replace with an empty chain"):
        result.get()


def test_a_result_sent_with_ignore_result_knows_it_and_get_returns_none(app: Caraway) -> None:
    @app.task(name="proj.quiet", ignore_result=True)
    def quiet() -> int:
        return 1

    @app.task(name="proj.loud")
    def loud() -> int:
        return 2

    ignored = quiet.delay()
    assert ignored.ignored is True
    assert ignored.get(timeout=0.1) is None  # no worker runs: it must not wait
    assert loud.apply_async(ignore_result=True).ignored is True
    assert loud.delay().ignored is False


def test_a_soft_time_limit_above_the_hard_one_is_refused_before_sending(
    app: Caraway, published: list[Outgoing]
) -> None:
    @app.task(name="proj.limited", soft_time_limit=2, time_limit=1)
    def limited() -> None:
        return None

    with pytest.raises(ValueError, match="soft_time_limit must be less than or equal to"):
        limited.delay()
    with pytest.raises(ValueError, match="soft_time_limit must be less than or equal to"):
        app.send_task("proj.other", time_limit=1, soft_time_limit=5)
    assert published == []


def test_apply_inside_apply_links_parent_and_root(app: Caraway) -> None:
    @app.task(bind=True, name="proj.inner")
    def inner(self: Task[Any, Any]) -> list[Any]:
        return [self.request.id, self.request.parent_id, self.request.root_id]

    @app.task(bind=True, name="proj.outer")
    def outer(self: Task[Any, Any]) -> list[Any]:
        return [self.request.id, self.request.parent_id, self.request.root_id, inner.apply().get()]

    outer_id, outer_parent, outer_root, (inner_id, inner_parent, inner_root) = outer.apply().get()
    assert (outer_parent, outer_root) == (None, outer_id)
    assert (inner_parent, inner_root) == (outer_id, outer_id)
    assert inner_id != outer_id
