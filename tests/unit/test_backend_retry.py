"""``result_backend_always_retry`` and its limits: a store that finds the backend away."""

from __future__ import annotations

import logging

import pytest
from services import free_port

from caraway import Celery, states
from caraway.exceptions import Unreachable


def dead_backend_app(**conf: object) -> Celery:
    return Celery(
        "retry",
        broker="memory://",
        backend=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        redis_socket_connect_timeout=0.2,
        **conf,
    )


def test_with_always_retry_off_a_store_fails_at_once(caplog: pytest.LogCaptureFixture) -> None:
    backend = dead_backend_app(result_backend_always_retry=False).backend
    with caplog.at_level(logging.WARNING, "caraway.backend"), pytest.raises(Unreachable):
        backend.store_result("t1", 1, states.SUCCESS)
    assert "Could not store" not in caplog.text


def test_always_retry_tries_max_retries_more_times_then_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = dead_backend_app(  # always_retry is caraway's default
        result_backend_max_retries=2,
        result_backend_base_sleep_between_retries_ms=1,
        result_backend_max_sleep_between_retries_ms=5,
    )
    with caplog.at_level(logging.WARNING, "caraway.backend"), pytest.raises(Unreachable):
        app.backend.mark_as_done("t2", 2)
    tries = [r for r in caplog.records if "Could not store the result of t2" in r.getMessage()]
    assert len(tries) == 2, caplog.text


def test_a_block_without_retries_fails_at_once(caplog: pytest.LogCaptureFixture) -> None:
    backend = dead_backend_app().backend  # retrying by default
    with (
        caplog.at_level(logging.WARNING, "caraway.backend"),
        pytest.raises(Unreachable),
        backend.without_retries(),
    ):
        backend.mark_as_failure("t3", KeyError("k"))
    assert "Could not store" not in caplog.text
