"""The chord join on Redis: Celery 5.7's keys and protocol (docs/celery-wire.md §6.5), written anew.

Imported only when the result backend is Redis, so workers without the extra never need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from caraway.engines.base.chord_join import CLAIM_SECONDS, DONE_SECONDS, Join, new_token
from caraway.engines.redis.client import translated

if TYPE_CHECKING:
    from caraway.engines.redis.backend import RedisBackend


# KEYS: .j .t .s .d group-key .c
# ARGV: task id, encoded part, ordered ("1": zset), score, expires (s, 0: none),
#       group expires, claim seconds, claim token
# Returns {count, .t, .s, claimed}; count -1 once the chord is done or failed (a failed
# chord still keeps the part, as Celery keeps every result of a failed chord).
PART_RETURN = """
local marker = redis.call('GET', KEYS[6])
if marker == 'done' then
  return {-1, false, false, 0}
end
local added = redis.call('SADD', KEYS[4], ARGV[1] .. ':' .. ARGV[4])
local count
if ARGV[3] == '1' then
  if added == 1 then redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2]) end
  count = redis.call('ZCARD', KEYS[1])
else
  if added == 1 then redis.call('RPUSH', KEYS[1], ARGV[2]) end
  count = redis.call('LLEN', KEYS[1])
end
local expires = tonumber(ARGV[5])
if expires > 0 then
  redis.call('EXPIRE', KEYS[1], expires)
  redis.call('EXPIRE', KEYS[2], expires)
  redis.call('EXPIRE', KEYS[3], expires)
  redis.call('EXPIRE', KEYS[4], expires)
  if tonumber(ARGV[6]) > 0 then redis.call('EXPIRE', KEYS[5], ARGV[6]) end
end
if marker == 'failed' then
  return {-1, false, false, 0}
end
local extra = redis.call('GET', KEYS[2])
local size = redis.call('GET', KEYS[3])
local claimed = 0
if size and count == tonumber(size) + tonumber(extra or 0) then
  if redis.call('SET', KEYS[6], ARGV[8], 'NX', 'EX', ARGV[7]) then claimed = 1 end
end
return {count, extra, size, claimed}
"""
# KEYS: .c ; ARGV: token, seconds. Take the claim early (a failed part), unless held or done.
CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
return 0
"""
# KEYS: .c .j .t .s .d ; ARGV: token, done seconds. Only the claim's holder cleans up.
FINISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SET', KEYS[1], 'done', 'EX', ARGV[2])
return 1
"""
# KEYS: .c .t .s ; ARGV: token, seconds. A failed chord: its size goes (Celery drops it too),
# its results stay (.j, .d, expiring with them), and "failed" stops a second failure.
FAIL = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SET', KEYS[1], 'failed', 'EX', ARGV[2])
return 1
"""


def _key(backend: RedisBackend, gid: str, suffix: str = "") -> str:
    return backend.chord_key(gid, suffix)


class RedisJoiner:
    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        client = backend.client
        self._part = client.register_script(PART_RETURN)
        self._claim = client.register_script(CLAIM)
        self._finish = client.register_script(FINISH)
        self._fail = client.register_script(FAIL)
        self.ordered = bool(
            (backend.app.conf.result_backend_transport_options or {}).get(
                "result_chord_ordered", True
            )
        )

    def begin(self, gid: str, size: int) -> None:
        """A re-applied chord (same id) starts afresh (5.7's order)."""
        backend = self.backend
        with translated(backend.target, "to store the chord size"):
            pipe = backend.client.pipeline(transaction=False)
            pipe.delete(_key(backend, gid, ".c"))
            ttl = int(backend.expires) if backend.expires else None
            pipe.set(_key(backend, gid, ".s"), size, ex=ttl)
            pipe.execute()

    def grow(self, gid: str) -> None:
        backend = self.backend
        with translated(backend.target, "to grow a chord"):
            backend.client.incr(_key(backend, gid, ".t"))

    def add(self, gid: str, task_id: str, index: int | None, state: str, result: Any) -> Join:
        backend = self.backend
        payload = backend.encode([1, task_id, state, result]).payload
        expires = int(backend.expires or 0)
        token = new_token()
        keys = [_key(backend, gid, s) for s in (".j", ".t", ".s", ".d", "", ".c")]
        score = "+inf" if index is None else str(index)
        with translated(backend.target, "to join a chord"):
            count, extra, size, claimed = self._part(
                keys, [task_id, payload, "1" if self.ordered else "0", score, expires, expires,
                       CLAIM_SECONDS, token],
            )  # fmt: skip
        if int(count) < 0:
            return Join(-1, None, False, done=True)
        total = None if not size else int(size) + int(extra or 0)
        return Join(int(count), total, bool(claimed), token=token)

    def claim(self, gid: str, join: Join) -> bool:
        join.token = join.token or new_token()
        with translated(self.backend.target, "to claim a chord"):
            join.claimed = bool(
                self._claim([_key(self.backend, gid, ".c")], [join.token, CLAIM_SECONDS])
            )
        return join.claimed

    def results(self, gid: str) -> list[tuple[str, str, Any]]:
        backend = self.backend
        key = _key(backend, gid, ".j")
        with translated(backend.target, "to read a chord's results"):
            raw = backend.client.zrange(key, 0, -1) if self.ordered else backend.client.lrange(
                key, 0, -1)  # fmt: skip
        parts = []
        for item in raw:
            _, task_id, state, result = backend.decode(backend.stored(_bytes(item)))
            parts.append((task_id, state, result))
        return parts

    def finish(self, gid: str, join: Join, failed: bool = False) -> None:
        backend = self.backend
        if failed:
            keys = [_key(backend, gid, s) for s in (".c", ".t", ".s")]
            with translated(backend.target, "to finish a failed chord"):
                self._fail(keys, [join.token, DONE_SECONDS])
            return
        keys = [_key(backend, gid, s) for s in (".c", ".j", ".t", ".s", ".d")]
        with translated(backend.target, "to finish a chord"):
            self._finish(keys, [join.token, DONE_SECONDS])


def _bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
