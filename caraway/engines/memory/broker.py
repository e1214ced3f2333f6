"""``memory://``: the reference broker, one process only (tests and eager development).

All apps in a process that use the same ``memory://name`` share one store, as with kombu's
memory transport, so a worker thread and a client in the same test see the same queues.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from caraway.engines.base.broker import (
    Broker,
    BrokerCapabilities,
    DeadLetter,
    Delivery,
    Outgoing,
    QueueStats,
)
from caraway.engines.base.fanout import Fanout
from caraway.engines.base.topology import QueueDeclaration, fan_out, published_with
from caraway.engines.memory.fanout import MemoryFanout


class _Store:
    def __init__(self) -> None:
        self.ready: dict[str, list[tuple[int, int, Outgoing]]] = {}
        self.delayed: list[tuple[float, int, Outgoing]] = []
        self.held: dict[int, Outgoing] = {}
        self.dead: list[DeadLetter] = []
        self.revoked: list[tuple[str, bool]] = []
        #: Queues bound to named exchanges: {exchange: {queue: declaration}}.
        self.bindings: dict[str, dict[str, QueueDeclaration]] = {}
        self.changed = threading.Condition()
        self.counter = itertools.count()


#: Longest wait between looks at a message held for later: its due time is read on the
#: broker's clock, which a test may move without waking the wait.
DELAY_POLL = 0.05

_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


class MemoryBroker(Broker):
    capabilities = BrokerCapabilities(native_delay=True, broadcast=True, exchanges=True)

    def fanout(self) -> Fanout:
        return MemoryFanout(self)

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        name = url.partition("://")[2]
        with _STORES_LOCK:
            self._store = _STORES.setdefault(name, _Store())
        self._transient: list[QueueDeclaration] = []  # auto-delete: they go on close

    def _push(self, item: Outgoing, seq: int) -> None:
        queue = self._store.ready.setdefault(item.queue, [])
        heapq.heappush(queue, (-item.priority, seq, item))

    def declare_bound(self, declaration: QueueDeclaration) -> None:
        with self._store.changed:
            self._bind(declaration)
        if declaration.auto_delete:
            self._transient.append(declaration)

    def _bind(self, declaration: QueueDeclaration) -> None:
        bound = self._store.bindings.setdefault(declaration.exchange, {})
        bound[declaration.queue] = declaration

    def publish(self, batch: Sequence[Outgoing]) -> None:
        store = self._store
        now = self.clock.time()
        with store.changed:
            if any(item.exchange or item.declaration for item in batch):
                for bound in {i.declaration for i in batch if i.declaration is not None}:
                    self._bind(bound)
                batch = fan_out(batch, lambda name: store.bindings.get(name, {}).values())
            for item in batch:
                seq = next(store.counter)
                if item.deliver_at is not None and item.deliver_at > now:
                    heapq.heappush(store.delayed, (item.deliver_at, seq, item))
                else:
                    self._push(item, seq)
            store.changed.notify_all()

    def _promote_due(self, now: float) -> float | None:
        """Move due delayed messages to their queues; return when the next one is due."""
        store = self._store
        while store.delayed and store.delayed[0][0] <= now:
            _, seq, item = heapq.heappop(store.delayed)
            self._push(item, seq)
        return store.delayed[0][0] if store.delayed else None

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        store = self._store
        deadline = time.monotonic() + timeout  # how long to wait is real time, always
        with store.changed:
            while True:
                now = self.clock.time()
                next_due = self._promote_due(now)
                found = self._take(queues, limit)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                if next_due is not None:
                    remaining = min(remaining, next_due - now, DELAY_POLL)
                store.changed.wait(max(remaining, 0.001))

    def _take(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        store = self._store
        found: list[Delivery] = []
        while len(found) < limit:
            candidates = [store.ready[q][0] + (q,) for q in queues if store.ready.get(q)]
            if not candidates:
                break
            _, seq, item, queue = min(candidates)
            heapq.heappop(store.ready[queue])
            store.held[seq] = item
            found.append(published_with(Delivery(item.message, queue, seq)))
        return found

    def ack(self, tags: Sequence[Any]) -> None:
        with self._store.changed:
            for tag in tags:
                self._store.held.pop(tag, None)

    def release(self, tags: Sequence[Any], delay: float = 0.0) -> None:
        store = self._store
        with store.changed:
            for tag in tags:
                item = store.held.pop(tag, None)
                if item is None:
                    continue
                if delay > 0:
                    heapq.heappush(store.delayed, (self.clock.time() + delay, tag, item))
                else:
                    self._push(item, tag)
            store.changed.notify_all()

    def dead_letter(self, delivery: Delivery, reason: str) -> str:
        store = self._store
        with store.changed:
            store.held.pop(delivery.tag, None)
            dead = DeadLetter(delivery.message, delivery.queue, reason, self.clock.time(),
                              str(next(store.counter)))  # fmt: skip
            store.dead.append(dead)
        return f"the dead letters of {self.url}"

    def purge(self, queue: str) -> int:
        with self._store.changed:
            waiting = self._store.ready.pop(queue, [])
            before = len(self._store.delayed)
            self._store.delayed = [d for d in self._store.delayed if d[2].queue != queue]
            heapq.heapify(self._store.delayed)
            return len(waiting) + before - len(self._store.delayed)

    def size(self, queue: str) -> int:
        with self._store.changed:
            delayed = sum(1 for d in self._store.delayed if d[2].queue == queue)
            return len(self._store.ready.get(queue, ())) + delayed

    def queue_stats(self, queue: str) -> QueueStats:
        with self._store.changed:
            waiting = [item for _, _, item in self._store.ready.get(queue, ())]
            waiting += [item for _, _, item in self._store.delayed if item.queue == queue]
        by_priority: dict[int, int] = {}
        for item in waiting:
            by_priority[item.priority] = by_priority.get(item.priority, 0) + 1
        return QueueStats(len(waiting), by_priority, unknown={
            "consumers": "the memory broker keeps no list of consumers",
            "oldest_age": "the memory broker keeps no publish time",
        })  # fmt: skip

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._store.changed:
            return list(self._store.dead[:limit])

    def settle_dead_letter(self, key: str, requeue: bool) -> bool:
        store = self._store
        with store.changed:
            found = [dead for dead in store.dead if dead.key == key]
            if not found:
                return False
            store.dead.remove(found[0])
        if requeue:
            letter = found[0]
            self.publish([Outgoing(letter.message, letter.queue, letter.message.priority or 0)])
        return True

    def close(self) -> None:
        """Auto-delete queues go with their consumer: their bindings and messages."""
        with self._store.changed:
            for bound in self._transient:
                self._store.bindings.get(bound.exchange, {}).pop(bound.queue, None)
                self._store.ready.pop(bound.queue, None)
        self._transient.clear()

    def revoke(self, task_ids: Sequence[str], terminate: bool = False) -> None:
        with self._store.changed:
            self._store.revoked.extend((task_id, terminate) for task_id in task_ids)

    def revocations(self, cursor: int) -> tuple[list[tuple[str, bool]], int]:
        with self._store.changed:
            revoked = self._store.revoked
            return list(revoked[cursor:]), len(revoked)

    def delayed(self, queues: Sequence[str], limit: int = 1000) -> list[tuple[float, Delivery]]:
        with self._store.changed:
            held = sorted(d for d in self._store.delayed if d[2].queue in queues)[:limit]
        return [(due, Delivery(item.message, item.queue, None)) for due, _, item in held]
