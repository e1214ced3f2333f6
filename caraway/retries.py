"""Retry delays: exponential backoff with optional full jitter, as Celery computes them."""

from __future__ import annotations

import random


def backoff_countdown(
    factor: int, retries: int, maximum: float | None = 600, full_jitter: bool = True
) -> float:
    """``factor * 2**retries`` seconds, capped at ``maximum``, then jittered in ``[0, delay]``."""
    delay = factor * (2**retries)
    if maximum is not None:
        delay = min(maximum, delay)
    if full_jitter:
        delay = random.randrange(int(delay) + 1)
    return float(max(0, delay))
