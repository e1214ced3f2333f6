"""The database scheduler on Redis Cluster: the Redis store with its keys on one hash slot.

The lease, the states, the definitions and their version carry the hash tag
``{_caraway.beat}``, so the lease-checking scripts and the definitions' transactions run on
one node. A run's message goes to its queue's slot, which one script cannot also write:
the broker publishes it, then the run is recorded (the base store's order; a sender killed
between the two makes its successor send that run again).
"""

from __future__ import annotations

from caraway.engines.base.broker import Broker
from caraway.engines.redis.beat_store import RedisStore
from caraway.engines.redis.broker import RedisBroker

#: The hash tag of every key of the store.
BEAT_TAG = "{_caraway.beat}"


class RedisClusterStore(RedisStore):
    def key_base(self, prefix: str) -> str:
        return f"{prefix}{BEAT_TAG}"

    def _same_server(self, broker: Broker) -> RedisBroker | None:
        """Never: a queue's lists are on the queue's own slot, not the store's."""
        return None
