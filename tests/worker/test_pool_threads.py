"""The threads pool (and prefork, whose supervisor threads are the same loop) keeps every slot."""

from __future__ import annotations

import logging
import threading

import pytest
from worker_support import WAIT

from caraway.worker.pools.threads import ThreadPool


def test_a_pool_thread_survives_an_error_that_escapes_its_work(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> None:
        raise RuntimeError("escaped its job")

    pool = ThreadPool(2)
    pool.start()
    try:
        for _ in range(4):
            pool.submit(broken)
        both = threading.Barrier(3, timeout=WAIT)
        for _ in range(2):
            pool.submit(both.wait)
        both.wait()  # two jobs run at once: no thread was lost
    finally:
        pool.stop()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 4
    assert all("escaped its job" in str(r.exc_info[1]) for r in errors)
