"""Broadcast exchanges for remote control and events, one engine per broker kind."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from caraway.engines.base.fanout import Binding, Exchange, Fanout, Subscription, matches
from caraway.exceptions import ImproperlyConfigured
from caraway.utils.imports import symbol_by_name

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.engines.base.broker import Broker

__all__ = ["Binding", "Exchange", "Fanout", "Subscription", "create_fanout", "fanout_of", "matches"]

#: The broadcast engine of each broker engine (by the broker's module), built from the broker.
ENGINES = {
    "caraway.engines.memory.broker": "caraway.engines.memory.fanout:MemoryFanout",
    "caraway.engines.sqlite.broker": "caraway.engines.sqlite.fanout:SQLiteFanout",
    "caraway.engines.redis.broker": "caraway.engines.redis.fanout:RedisFanout",
    "caraway.engines.amqp.broker": "caraway.engines.amqp.fanout:AMQPFanout",
}


def create_fanout(broker: Broker) -> Fanout:
    """A new broadcast engine on the same server (and settings) as ``broker``."""
    path = ENGINES.get(type(broker).__module__)
    if path is None:
        raise ImproperlyConfigured(
            f"the broker {broker.describe()} cannot broadcast: remote control and events need "
            "Redis, RabbitMQ, SQLite or memory"
        )
    engine: Any = symbol_by_name(path)
    made: Fanout = engine(broker)
    return made


def fanout_of(app: Caraway) -> Fanout:
    """The app's client-side broadcast engine, made on first use and closed by ``app.close()``."""
    found: Fanout | None = app.__dict__.get("_fanout")
    if found is None:
        found = app.__dict__["_fanout"] = create_fanout(app.broker)
    return found
