"""``--autoscale=MAX,MIN``: grow the pool while work waits, shrink it after a quiet spell.

Celery's rule: the pool starts at MIN; once a second, when more tasks are running or waiting
in the pool than it has slots, it grows to cover them (up to MAX); when fewer, and nothing
made it grow for ``AUTOSCALE_KEEPALIVE`` seconds (30), it shrinks back (down to MIN). The
prefetch window follows the pool's size.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from caraway.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from caraway.worker.worker import Worker

logger = logging.getLogger("caraway.worker")

#: Seconds without a reason to grow before the pool shrinks (Celery's environment variable).
KEEPALIVE = float(os.environ.get("AUTOSCALE_KEEPALIVE", "30"))


def parse_autoscale(value: str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``"10,3"`` (or ``(10, 3)``) -> (max, min); ``"10"`` means max 10, min 0 as in Celery."""
    parts = [str(p).strip() for p in (value.split(",") if isinstance(value, str) else value)]
    try:
        numbers = [int(p) for p in parts if p]
    except ValueError:
        raise ImproperlyConfigured(
            f"--autoscale takes MAX,MIN (whole numbers), got {value!r}"
        ) from None
    if not 1 <= len(numbers) <= 2:
        raise ImproperlyConfigured(f"--autoscale takes MAX,MIN, got {value!r}")
    most, least = numbers[0], numbers[1] if len(numbers) == 2 else 0
    if most < 1 or least < 0 or least > most:
        raise ImproperlyConfigured(f"--autoscale needs MAX >= MIN >= 0 and MAX >= 1, got {value!r}")
    return most, least


def resize(worker: Worker, delta: int) -> None:
    """Grow (``delta`` > 0) or shrink the pool, and let the prefetch window follow."""
    consumer = worker.consumer
    assert consumer is not None
    pool = consumer.pool
    if delta > 0:
        pool.grow(delta)
    elif delta < 0:
        pool.shrink(-delta)
    worker.concurrency = pool.limit
    consumer.window = pool.limit * worker.prefetch_multiplier
    worker.app.broker.qos(consumer.window)


class Autoscaler:
    def __init__(self, worker: Worker, max_concurrency: int, min_concurrency: int) -> None:
        self.worker = worker
        self.max_concurrency = max_concurrency
        self.min_concurrency = min_concurrency
        self.keepalive = KEEPALIVE
        self._last_needed = time.monotonic()
        self._lock = threading.Lock()

    def update(self, max_concurrency: int | None, min_concurrency: int | None) -> None:
        """New bounds (the ``autoscale`` control command); the next tick applies them."""
        with self._lock:
            if max_concurrency is not None:
                self.max_concurrency = int(max_concurrency)
            if min_concurrency is not None:
                self.min_concurrency = int(min_concurrency)

    def busy(self) -> int:
        """Tasks running, plus those handed to the pool and waiting for a slot."""
        worker = self.worker
        waiting = worker.reserving.waiting() if worker.reserving is not None else []
        return len(worker.state.active) + len(waiting)

    def tick(self) -> None:
        consumer = self.worker.consumer
        if consumer is None:
            return
        with self._lock:
            size, busy, now = consumer.pool.limit, self.busy(), time.monotonic()
            most, least = self.max_concurrency, max(1, self.min_concurrency)
            target = min(max(busy, least), most)
            if target > size:
                self._last_needed = now
            elif target == size or now - self._last_needed < self.keepalive:
                return
            logger.info("Autoscaler: pool %s from %d to %d (%d busy)",
                        "grows" if target > size else "shrinks", size, target, busy)  # fmt: skip
            resize(self.worker, target - size)
