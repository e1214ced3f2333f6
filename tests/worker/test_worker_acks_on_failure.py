"""``task_acks_on_failure`` and ``task_acks_on_timeout`` (Celery 5.7, replacing
``task_acks_on_failure_or_timeout``): whether a late-ack task that failed, or hit its time
limit, has its message acked or set aside as a dead letter."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from worker_support import WAIT, memory_app

from caraway.exceptions import TimeLimitExceeded


@pytest.mark.parametrize(
    ("settings", "kept"),
    [
        ({}, []),  # the default: both acked
        ({"task_acks_on_failure": False}, ["failed"]),
        ({"task_acks_on_timeout": False}, ["timed out"]),
        ({"task_acks_on_failure_or_timeout": False}, ["failed", "timed out"]),
        (
            {"task_acks_on_failure_or_timeout": False, "task_acks_on_failure": True},
            ["timed out"],
        ),
    ],
    ids=["default", "failure-off", "timeout-off", "both-off", "failure-overrides"],
)
def test_late_ack_failures_and_timeouts_are_acked_or_kept_as_configured(
    start_worker: Any, settings: dict[str, bool], kept: list[str]
) -> None:
    app = memory_app(f"acks-{uuid.uuid4().hex[:6]}", **settings)

    @app.task(name="acks.fail", acks_late=True)
    def fail() -> None:
        raise ValueError("failed")

    @app.task(name="acks.spin", acks_late=True, time_limit=0.2)
    def spin() -> None:
        deadline = time.monotonic() + 5  # Python steps, so the limit's exception lands
        while time.monotonic() < deadline:
            pass

    start_worker(app, pool="solo")
    failed, timed_out = fail.delay(), spin.delay()
    with pytest.raises(TimeLimitExceeded):
        timed_out.get(timeout=WAIT)
    # The solo worker settles each message before it takes the next: once this ran, both are.
    assert app.send_task("celery.ping").get(timeout=WAIT) == "pong"

    names = {failed.id: "failed", timed_out.id: "timed out"}
    assert [names[d.message.task_id] for d in app.broker.dead_letters()] == kept
    assert app.broker.size("celery") == 0
    app.close()
