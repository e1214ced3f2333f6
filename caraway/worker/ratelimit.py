"""Per-task rate limits (``'10/s'``, ``'10/m'``, ``'10/h'``) as token buckets."""

from __future__ import annotations

from caraway.exceptions import ImproperlyConfigured
from caraway.utils.time import SYSTEM_CLOCK, Clock

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: str | float | int | None) -> float:
    """Tasks per second; 0 means no limit. A bare number is per second, as in Celery."""
    if rate is None or rate == "":
        return 0.0
    if isinstance(rate, int | float):
        return float(rate)
    count, _, period = rate.partition("/")
    try:
        per_period = float(count)
    except ValueError:
        per_period = -1.0
    if per_period < 0 or (period and period not in _PERIODS):
        raise ImproperlyConfigured(
            f"invalid rate limit {rate!r}: use a number of tasks per second or 'N/s', 'N/m', 'N/h'"
        )
    return per_period / _PERIODS[period or "s"]


class TokenBucket:
    """Holds up to ``capacity`` tokens, refilled at ``rate`` per second."""

    def __init__(self, rate: float, capacity: float = 1.0, clock: Clock = SYSTEM_CLOCK) -> None:
        self.rate = rate
        self.capacity = capacity
        self.clock = clock
        self._tokens = capacity
        self._stamp = clock.monotonic()

    def _refill(self) -> None:
        now = self.clock.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> float:
        """Take a token; returns 0 when one was there, else seconds until one will be.

        A caller that gets a wait reserves that future token: the bucket goes negative, so
        later callers queue behind it instead of all waking at the same moment.
        """
        self._refill()
        self._tokens -= 1
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate
