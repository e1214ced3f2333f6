"""The worker's broker connection: Celery's ``broker_connection_*`` settings.

``broker_connection_retry_on_startup``: retry when the broker cannot be reached at start
(None: as ``broker_connection_retry``). ``broker_connection_retry``: reconnect after a loss.
``broker_connection_max_retries``: retries before the worker gives up (None: forever; 0:
no retry at all, as in Celery). Pauses between tries grow from ``FIRST_PAUSE`` to
``MAX_PAUSE``. While the broker is away the log says so once, then again after 2, 4, 8...
retries, never per try; the reconnection is logged once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from caraway.exceptions import OperationalError, Unreachable

logger = logging.getLogger("caraway.worker")

#: Pause before the first retry, doubling after each failed one up to the maximum (s).
FIRST_PAUSE, MAX_PAUSE = 0.2, 10.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to retry an unreachable broker, read from the app's settings."""

    retry: bool = True
    retry_on_startup: bool = True
    max_retries: int | None = 100

    @classmethod
    def from_conf(cls, conf: Any) -> RetryPolicy:
        retry = bool(conf.broker_connection_retry)
        on_startup = conf.broker_connection_retry_on_startup
        max_retries = conf.broker_connection_max_retries
        return cls(
            retry=retry,
            retry_on_startup=retry if on_startup is None else bool(on_startup),
            max_retries=None if max_retries is None else max(0, int(max_retries)),
        )


class BrokerLink:
    """Whether the worker reaches its broker, and when to try again if not.

    ``failed`` is called for each failed try (it raises ``OperationalError`` once the
    policy allows no more), ``restored`` after a successful one; ``pause`` says how long
    to wait before the next try.
    """

    def __init__(self, where: str, policy: RetryPolicy) -> None:
        self.where = where
        self.policy = policy
        #: False until the first successful try, and from a failed one until the next success.
        self.connected = False
        self._ever_connected = False
        self._down_since: float | None = None
        self._retries = 0
        self._pause = FIRST_PAUSE
        self._retry_at = 0.0
        self._next_report = 2

    def pause(self) -> float:
        """Seconds before the next try is due (0 when connected or due now)."""
        if self.connected:
            return 0.0
        return max(0.0, self._retry_at - time.monotonic())

    def failed(self, exc: Unreachable) -> None:
        """A try failed: log (sparingly), schedule the next, or give up by raising."""
        now = time.monotonic()
        starting = not self._ever_connected
        if self._down_since is None:
            self._down_since, self._retries = now, 0
            self._pause, self._next_report = FIRST_PAUSE, 2
            self.connected = False
        else:
            self._retries += 1
        allowed = self.policy.retry_on_startup if starting else self.policy.retry
        limit = self.policy.max_retries
        if not allowed or (limit is not None and self._retries >= limit):
            raise self._give_up(exc, starting, allowed, now) from exc
        self._report(exc, starting, now)
        self._retry_at = now + self._pause
        self._pause = min(self._pause * 2, MAX_PAUSE)

    def restored(self) -> None:
        """A try succeeded: log the reconnection once."""
        if self.connected:
            return
        self.connected = True
        if self._down_since is None:
            logger.info("Connected to the broker at %s", self.where)
        elif self._ever_connected:
            logger.warning(
                "Reconnected to the broker at %s after %.1f s",
                self.where, time.monotonic() - self._down_since,
            )  # fmt: skip
        else:
            logger.warning(
                "Connected to the broker at %s after %.1f s of retries",
                self.where, time.monotonic() - self._down_since,
            )  # fmt: skip
        self._ever_connected = True
        self._down_since = None

    def _report(self, exc: Unreachable, starting: bool, now: float) -> None:
        limit = self.policy.max_retries
        upto = "forever" if limit is None else f"up to {limit} times"
        if self._retries == 0:
            what = "Cannot connect to" if starting else "Lost the connection to"
            logger.warning(
                "%s the broker at %s (%s); retrying %s", what, self.where, _cause(exc), upto
            )
        elif self._retries >= self._next_report:
            self._next_report *= 2
            of = "" if limit is None else f" of {limit}"
            assert self._down_since is not None
            logger.warning(
                "Still no broker at %s after %.1f s (retry %d%s): %s",
                self.where, now - self._down_since, self._retries, of, _cause(exc),
            )  # fmt: skip

    def _give_up(
        self, exc: Unreachable, starting: bool, allowed: bool, now: float
    ) -> OperationalError:
        if not allowed:
            setting = "retry_on_startup" if starting else "retry"
            why = f"broker_connection_{setting} is off"
        else:
            assert self._down_since is not None
            why = (
                f"gave up after {self._retries} retries in {now - self._down_since:.1f} s,"
                f" broker_connection_max_retries={self.policy.max_retries}"
            )
        what = "Cannot connect to" if starting else "Lost the connection to"
        message = f"{what} the broker at {self.where} ({_cause(exc)}); {why}"
        logger.critical("%s", message)
        return OperationalError(message)


def _cause(exc: BaseException) -> str:
    """The root cause's words (the error our clients raise already names the URL)."""
    cause = exc.__cause__
    return str(cause) if cause is not None and str(cause) else str(exc)
