"""The Queues page's figures for one queue: what the broker tells without consuming
(``Broker.queue_stats``), the workers consuming it, and the rates in and out, counted from
task events. A figure nobody can give is None, with the reason the page shows beside "n/a"."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caraway.dashboard.store import Store
    from caraway.engines.base.broker import QueueStats

#: Seconds the rates in and out are averaged over.
RATE_WINDOW = 60.0
NO_SENT_EVENTS = (
    "no task-sent event named this queue yet: clients send them with"
    " task_send_sent_event = True (workers' events do not name the queue)"
)


@dataclass(frozen=True)
class QueueRow:
    name: str
    messages: int
    #: Messages per priority, in the broker's own numbers.
    by_priority: dict[int, int] | None
    #: Tasks per second sent to the queue, and received from it by workers.
    rate_in: float | None
    rate_out: float | None
    #: Workers that say they consume the queue, and the count the broker itself keeps.
    workers: list[str]
    consumers: int | None
    #: Seconds the oldest waiting message has waited (None: empty, or see ``unknown``).
    oldest_age: float | None
    #: Where the age came from: "broker", or "task-sent events" when the broker only named
    #: the messages next out.
    oldest_from: str = ""
    unknown: dict[str, str] = field(default_factory=dict)


def queue_row(
    name: str, stats: QueueStats, store: Store, workers: list[str], now: float | None = None
) -> QueueRow:
    """Join the broker's figures for ``name`` with what the dashboard's history knows."""
    now = time.time() if now is None else now
    unknown = dict(stats.unknown)
    rates = store.queue_rates(name, now - RATE_WINDOW)
    if rates is None:
        unknown["rates"] = NO_SENT_EVENTS
    oldest, source = stats.oldest_age, "broker" if stats.oldest_age is not None else ""
    if stats.messages == 0:
        oldest, source = None, ""
        unknown.pop("oldest_age", None)  # nothing waits: nothing to age
    elif oldest is None and stats.next_ids:
        sent = store.sent_times(stats.next_ids)
        if sent:
            oldest, source = max(0.0, now - min(sent)), "task-sent events"
            unknown.pop("oldest_age", None)
        else:
            unknown["oldest_age"] = f"{unknown.get('oldest_age', '')}, and {NO_SENT_EVENTS}"
    return QueueRow(
        name, stats.messages, stats.by_priority,
        None if rates is None else rates[0] / RATE_WINDOW,
        None if rates is None else rates[1] / RATE_WINDOW,
        sorted(workers), stats.consumers, oldest, source, unknown,
    )  # fmt: skip
