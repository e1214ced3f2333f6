"""Broadcast within one process, for ``memory://`` (apps on the same store name share it)."""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from caraway.engines.base.fanout import Binding, Exchange, Fanout, Subscription, matches
from caraway.protocol import Message

if TYPE_CHECKING:
    from caraway.engines.memory.broker import MemoryBroker


class _Hub:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.bound: list[tuple[str, str, MemorySubscription]] = []


_HUBS: dict[str, _Hub] = {}
_HUBS_LOCK = threading.Lock()


class MemoryFanout(Fanout):
    def __init__(self, broker: MemoryBroker) -> None:
        with _HUBS_LOCK:
            self._hub = _HUBS.setdefault(broker.url.partition("://")[2], _Hub())

    def publish(self, exchange: Exchange, routing_key: str, message: Message) -> None:
        hub = self._hub
        with hub.lock:
            for name, key, subscription in hub.bound:
                if name == exchange.name and matches(exchange, key, routing_key):
                    subscription.inbox.append(message)
            hub.lock.notify_all()

    def subscribe(self, exchange: Exchange, binding: Binding) -> Subscription:
        subscription = MemorySubscription(self._hub)
        with self._hub.lock:
            self._hub.bound.append((exchange.name, binding.routing_key, subscription))
        return subscription


class MemorySubscription(Subscription):
    def __init__(self, hub: _Hub) -> None:
        self._hub = hub
        self.inbox: deque[Message] = deque()

    def get(self, timeout: float) -> list[Message]:
        with self._hub.lock:
            if not self.inbox:
                self._hub.lock.wait(timeout)
            found = list(self.inbox)
            self.inbox.clear()
            return found

    def close(self) -> None:
        with self._hub.lock:
            self._hub.bound = [b for b in self._hub.bound if b[2] is not self]
