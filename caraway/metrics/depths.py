"""Queue depths, read from the broker when ``/metrics`` is scraped."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from caraway.engines.base.broker import Broker
from caraway.exceptions import OperationalError

logger = logging.getLogger("caraway.metrics")


def queue_depths(broker: Broker, queues: Iterable[str]) -> list[tuple[str, int]]:
    """``(queue, messages waiting)`` for each queue the broker can tell about now; a broker
    that is away leaves its queues out (a missing sample, not a false zero)."""
    depths = []
    for queue in dict.fromkeys(queues):
        try:
            depths.append((queue, broker.size(queue)))
        except OperationalError as exc:
            logger.debug("No depth for queue %r: %s", queue, exc)
    return depths
