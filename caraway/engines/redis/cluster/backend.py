"""``redis+cluster://`` results: the Redis backend on a cluster.

Results spread over the cluster, one key per task id (no hash tag). A chord's keys (its
parts, counters, claim and the group's result) carry the hash tag ``{<group id>}``, so the
join's scripts run on one slot. Waits subscribe through redis-py's cluster pub/sub: a
PUBLISH reaches the subscribers of every node, so any node serves. The database scheduler's
store keeps its keys on one slot of their own (``cluster/beat_store.py``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any, cast

import redis
from redis.cluster import RedisCluster

from caraway.engines.base.backend import GROUP_KEY_PREFIX, Backend, BackendCapabilities
from caraway.engines.base.beat_store import BeatStore
from caraway.engines.redis.backend import RedisBackend
from caraway.engines.redis.client import CONNECTION_ERRORS, Lane, RedisTarget
from caraway.engines.redis.cluster.beat_store import RedisClusterStore
from caraway.engines.redis.cluster.client import ClusterLane, connect_cluster, parse_cluster_url

#: How long a result wait keeps subscribing again while its node fails over.
RESUBSCRIBE_WITHIN = 15.0


class RedisClusterBackend(RedisBackend):
    capabilities = BackendCapabilities(
        chord_join="native", beat_schedules=True, compressed_results=True
    )

    def parse_target(self, url: str) -> RedisTarget:
        return parse_cluster_url(url)

    def new_client(self) -> redis.Redis:
        ssl, defaults = self._connection
        return connect_cluster(self.target, self.options, ssl, **defaults)  # type: ignore[arg-type]

    def new_lane(self) -> Lane:
        return ClusterLane(self.client)

    def beat_store(self) -> BeatStore:
        return RedisClusterStore(self.client, self.target, self.prefix)

    def key(self, key: str) -> str:
        """A group's keys take its id as hash tag, so they share the chord's slot."""
        if key.startswith(GROUP_KEY_PREFIX):
            return self.chord_key(key[len(GROUP_KEY_PREFIX) :])
        return self.prefix + key

    def chord_key(self, group_id: str, suffix: str = "") -> str:
        return f"{self.prefix}{GROUP_KEY_PREFIX}{{{group_id}}}{suffix}"

    def mget(self, keys: Sequence[str]) -> list[Any]:
        """One MGET per slot (redis-py splits them), not one transaction."""
        return self.client.mget_nonatomic(keys)  # type: ignore[attr-defined,no-any-return]

    def _subscribe_retrying(self, channel: str) -> bytes | None:
        """Subscribe and read. A failover takes the node of the channel's slot (where the
        subscription goes) away for a few seconds: read the slot map again and retry, for
        up to ``RESUBSCRIBE_WITHIN`` seconds, so a waiter rides it out."""
        deadline = time.monotonic() + RESUBSCRIBE_WITHIN
        pause = 0.05
        while True:
            try:
                return self._subscribe_and_get(channel)
            except CONNECTION_ERRORS:
                self._drop_pubsub()
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
            with contextlib.suppress(*CONNECTION_ERRORS):
                cast("RedisCluster", self.client).nodes_manager.initialize()

    async def wait_for_async(
        self, task_id: str, timeout: float | None = None, interval: float = 0.5
    ) -> dict[str, Any]:
        """Reads in worker threads (the shared poll): the asyncio cluster client has no pub/sub."""
        return await Backend.wait_for_async(self, task_id, timeout, interval)
