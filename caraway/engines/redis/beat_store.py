"""The database scheduler on Redis: the lease is ``SET NX PX`` renewed by its holder, and a
run is published and recorded in one Lua script that first checks the lease.

When the broker is on the same Redis server, the script also pushes the task message: the
message and the record of the run are written together or not at all, so a sender killed at
any point leaves no run sent twice and none lost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from caraway import serialization
from caraway.engines.base.beat_store import BeatStore, EntryState
from caraway.engines.redis.broker import RedisBroker
from caraway.engines.redis.client import RedisTarget, translated

if TYPE_CHECKING:
    import redis

    from caraway.engines.base.broker import Broker, Outgoing
    from caraway.engines.redis.broker import RedisBroker

# Take the lease when free, renew it when ours. KEYS: lease; ARGV: owner, ttl ms.
ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Record states (and push messages) only for the lease holder.
# KEYS: lease, state hash, list per message; ARGV: owner, n, n x (field, state), envelopes.
RECORD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[2])
for i = 0, n - 1 do
  redis.call('HSET', KEYS[2], ARGV[3 + 2 * i], ARGV[4 + 2 * i])
end
local first = 3 + 2 * n
for k = 3, #KEYS do
  redis.call('LPUSH', KEYS[k], ARGV[first + k - 3])
end
return 1
"""


class RedisStore(BeatStore):
    def __init__(self, client: redis.Redis, target: RedisTarget, prefix: str = "") -> None:
        self.client = client
        self.target = target
        base = self.key_base(prefix)
        self.lease_key = f"{base}.lease"
        self.state_key = f"{base}.state"
        self.entries_key = f"{base}.entries"
        self.version_key = f"{base}.version"
        self._acquire = client.register_script(ACQUIRE)
        self._release = client.register_script(RELEASE)
        self._record = client.register_script(RECORD)
        self._declared: set[str] = set()

    def key_base(self, prefix: str) -> str:
        """What the store's keys (lease, states, definitions, version) start with."""
        return f"{prefix}_caraway.beat"

    def describe(self) -> str:
        return self.target.masked

    def acquire(self, owner: str, ttl: float) -> bool:
        with translated(self.target, "to take the beat lease"):
            return bool(self._acquire(keys=[self.lease_key], args=[owner, max(1, int(ttl * 1000))]))

    def release(self, owner: str) -> None:
        with translated(self.target, "to release the beat lease"):
            self._release(keys=[self.lease_key], args=[owner])

    def still_held(self, owner: str) -> bool:
        with translated(self.target, "to read the beat lease"):
            return _text(self.client.get(self.lease_key)) == owner

    def states(self) -> dict[str, EntryState]:
        with translated(self.target, "to read beat state"):
            raw = self.client.hgetall(self.state_key)
        return {_text(k): EntryState.from_json(json.loads(v)) for k, v in raw.items()}

    def save_states(self, owner: str, states: Mapping[str, EntryState]) -> bool:
        return self._run_record(owner, states, [], [])

    def _run_record(
        self, owner: str, states: Mapping[str, EntryState], lists: list[str], envelopes: list[bytes]
    ) -> bool:
        pairs: list[Any] = []
        for name, state in states.items():
            pairs += [name, json.dumps(state.to_json())]
        keys = [self.lease_key, self.state_key, *lists]
        with translated(self.target, "to record a beat run"):
            return bool(self._record(keys=keys, args=[owner, len(states), *pairs, *envelopes]))

    def send(
        self, owner: str, name: str, state: EntryState, batch: Sequence[Outgoing], broker: Broker
    ) -> bool:
        same = self._same_server(broker)
        # Sent through an exchange, a message's lists are known only once the broker read the
        # binding table (or it goes to pub/sub): the broker publishes it, then the run is kept.
        if same is None or any(item.exchange or item.declaration for item in batch):
            return super().send(owner, name, state, batch, broker)
        lists, envelopes = [], []
        for item in batch:
            if item.queue not in self._declared:  # bindings first: harmless if we stop here
                same.declare(item.queue)
                self._declared.add(item.queue)
            envelope = same.envelope(item.message, item.queue, item.priority)
            lists.append(same.prefix + same.list_name(item.queue, item.priority))
            envelopes.append(serialization.json_dumps(envelope))
        return self._run_record(owner, {name: state}, lists, envelopes)

    def _same_server(self, broker: Broker) -> RedisBroker | None:
        """The broker, when it is caraway's Redis broker on this store's server and db."""
        if not isinstance(broker, RedisBroker) or type(broker).envelope is not RedisBroker.envelope:
            return None
        other, mine = broker.target, self.target
        same = (other.host, other.port, other.db, other.unix_path, other.sentinels) == (
            mine.host, mine.port, mine.db, mine.unix_path, mine.sentinels,
        )  # fmt: skip
        return broker if same else None

    def forget_state(self, name: str) -> None:
        with translated(self.target, "to forget beat state"):
            self.client.hdel(self.state_key, name)

    def definitions(self) -> dict[str, dict[str, Any]]:
        with translated(self.target, "to read stored schedules"):
            raw = self.client.hgetall(self.entries_key)
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def put_definition(self, name: str, definition: Mapping[str, Any]) -> None:
        with translated(self.target, "to store a schedule"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self.entries_key, name, json.dumps(dict(definition)))
            pipe.incr(self.version_key)
            pipe.execute()

    def delete_definition(self, name: str) -> bool:
        with translated(self.target, "to delete a schedule"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(self.entries_key, name)
            pipe.hdel(self.state_key, name)
            pipe.incr(self.version_key)
            found, _, _ = pipe.execute()
        return bool(found)

    def version(self) -> int:
        with translated(self.target, "to read the schedules' version"):
            value = self.client.get(self.version_key)
        return int(value or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
