"""Retry delays: exponential backoff with optional full jitter, as Celery computes them."""

from __future__ import annotations

import random


def backoff_countdown(
    factor: int, retries: int, maximum: int | None = 600, full_jitter: bool = True
) -> int:
    """``factor * 2**retries`` whole seconds, capped at ``maximum``, jittered in ``[0, delay]``."""
    delay = factor * (1 << retries)
    if maximum is not None:
        delay = min(int(maximum), delay)
    if full_jitter:
        delay = random.randrange(delay + 1)
    return max(0, delay)
