"""``cache+memcached://host:port/``: results in memcached, under Celery's key names.

* Several servers (``cache+memcached://a:11211;b:11211/``) share the keys by rendezvous
  hashing, pymemcache's own (``HashClient``'s default), with a client per server. We do not
  use ``HashClient`` itself: while a server is failing it answers reads with None and writes
  with False instead of raising, which would turn an outage into PENDING results.
* A stored SUCCESS is never replaced: the write reads the key with its CAS token and swaps
  only if nothing changed in between (``add`` when the key is new).
* memcached has no set to add chord members to atomically and may evict any key under
  memory pressure, so chords are not counted here: the backend declares no ``chord_join``
  and chords are joined by ``celery.chord_unlock`` polling the header results.
* Expiry is memcached's own, in whole seconds; longer than 30 days is sent as a Unix time,
  as the protocol requires.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pymemcache.client.base import PooledClient
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.exceptions import MemcacheError, MemcacheUnexpectedCloseError

from caraway import serialization, states
from caraway.engines.base.backend import TASK_KEY_PREFIX, Backend, BackendCapabilities, Stored
from caraway.exceptions import (
    ConfigurationWarning,
    ImproperlyConfigured,
    OperationalError,
    Unreachable,
)
from caraway.utils.pid import after_fork_in_child
from caraway.utils.text import mask_url

if TYPE_CHECKING:
    from caraway.engines.base.app import EngineApp

DEFAULT_PORT = 11211
#: memcached reads an expiry above this many seconds as a Unix time.
RELATIVE_EXPIRY_MAX = 30 * 24 * 3600
#: pylibmc's options in Celery's documented ``cache_backend_options``; pymemcache has none.
PYLIBMC_ONLY = frozenset({"binary", "behaviors", "username", "password"})
#: Client defaults, so a dead server fails a call instead of hanging it.
CLIENT_DEFAULTS: dict[str, Any] = {"connect_timeout": 5.0, "timeout": 30.0, "no_delay": True}
#: Tries of a guarded write that lost a race with another writer before giving up.
CAS_ATTEMPTS = 100


def parse_servers(url: str) -> list[tuple[str, int]]:
    """``cache+memcached://a:11211;b/`` -> ``[("a", 11211), ("b", 11211)]``."""
    location = url.partition("://")[2].split("/", 1)[0]
    servers = []
    for part in filter(None, (piece.strip() for piece in location.split(";"))):
        host, sep, port = part.rpartition(":")
        if not sep:
            host, port = part, ""
        if not port.isdigit() and port:
            raise ImproperlyConfigured(f"bad memcached port {port!r} in {mask_url(url)!r}")
        servers.append((host.strip("[]") or "127.0.0.1", int(port or DEFAULT_PORT)))
    return servers or [("127.0.0.1", DEFAULT_PORT)]


def memcached_expiry(ttl: float | None) -> int:
    """``ttl`` seconds as memcached's expiry field: 0 is never."""
    if not ttl:
        return 0
    seconds = max(1, math.ceil(ttl))
    return seconds if seconds <= RELATIVE_EXPIRY_MAX else int(time.time()) + seconds


def client_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """pymemcache's keyword arguments from ``cache_backend_options``; pylibmc's keys from
    Celery's docs are dropped with a warning, anything else pymemcache refuses is an error."""
    dropped = sorted(PYLIBMC_ONLY & set(options))
    if dropped:
        warnings.warn(
            f"cache_backend_options {dropped} are pylibmc's and ignored: caraway's memcached"
            " backend uses pymemcache (options: connect_timeout, timeout, no_delay,"
            " max_pool_size, pool_idle_timeout, socket_keepalive, tls_context)",
            ConfigurationWarning,
            stacklevel=3,
        )
    return {
        **CLIENT_DEFAULTS,
        **{key: value for key, value in options.items() if key not in PYLIBMC_ONLY},
    }


class MemcachedBackend(Backend):
    capabilities = BackendCapabilities(compressed_results=True)

    def __init__(self, app: EngineApp, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, url, options)
        self.servers = parse_servers(url)
        self._client_options = client_options(app.conf.cache_backend_options or {})
        self._ring = RendezvousHash(nodes=[_name(server) for server in self.servers])
        self._clients = self._connect()
        self.content_type, self.content_encoding, _ = serialization.dumps(None, self.serializer)
        after_fork_in_child(self._forget_parent_clients)

    def _connect(self) -> dict[str, PooledClient]:
        """One pooled (thread-safe) client per server; nothing connects until used."""
        try:
            return {
                _name(server): PooledClient(server, default_noreply=False, **self._client_options)
                for server in self.servers
            }
        except TypeError as exc:
            raise ImproperlyConfigured(f"bad cache_backend_options for pymemcache: {exc}") from exc

    def _forget_parent_clients(self) -> None:
        """In a forked child: new pools; the parent's sockets are left to the parent."""
        self._clients = self._connect()

    def _client(self, key: str) -> PooledClient:
        return self._clients[self._ring.get_node(key)]

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """pymemcache's and the socket's errors as ours, naming the servers."""
        try:
            yield
        except (OSError, MemcacheUnexpectedCloseError) as exc:
            raise Unreachable(f"memcached at {self.describe()} failed {doing}: {exc!r}") from exc
        except MemcacheError as exc:
            raise OperationalError(f"memcached at {self.describe()} failed {doing}: {exc}") from exc

    def describe(self) -> str:
        return mask_url(self.url)

    # --- engine primitives ---------------------------------------------------------------

    def get_raw(self, key: str) -> Stored | None:
        with self._translated("to read a result"):
            payload = self._client(key).get(key)
        return None if payload is None else self._stored(payload)

    def get_many_task_meta(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        """One ``get_many`` per server holding some of the keys."""
        keys = [TASK_KEY_PREFIX + task_id for task_id in task_ids]
        by_server: dict[str, list[str]] = {}
        for key in keys:
            by_server.setdefault(self._ring.get_node(key), []).append(key)
        found: dict[str, bytes] = {}
        with self._translated("to read results"):
            for server, batch in by_server.items():
                found.update(self._clients[server].get_many(batch))
        return [
            self.meta_of(task_id, None if key not in found else self._stored(found[key]))
            for task_id, key in zip(task_ids, keys, strict=True)
        ]

    def _stored(self, payload: bytes) -> Stored:
        return Stored(payload, self.content_type, self.content_encoding)

    def set_raw(self, key: str, value: Stored, state: str | None, ttl: float | None) -> None:
        client, expire = self._client(key), memcached_expiry(ttl)
        with self._translated("to store a result"):
            if state is None:
                if not client.set(key, value.payload, expire):
                    raise OperationalError(f"memcached at {self.describe()} refused {key!r}")
                return
            for _ in range(CAS_ATTEMPTS):
                current, token = client.gets(key)
                if current is None:
                    if client.add(key, value.payload, expire):
                        return
                elif self._is_success(current) or client.cas(key, value.payload, token, expire):
                    return
        raise OperationalError(f"memcached: {key!r} kept changing while storing a result")

    def _is_success(self, payload: bytes) -> bool:
        try:
            meta = self.decode(self._stored(payload))
        except Exception:  # someone else's payload: replaceable
            return False
        return isinstance(meta, dict) and meta.get("status") == states.SUCCESS

    def delete_raw(self, key: str) -> None:
        with self._translated("to delete a result"):
            self._client(key).delete(key)

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        client, expire = self._client(key), memcached_expiry(ttl)
        with self._translated("to count"):
            while True:
                value = client.incr(key, amount)
                if value is None and client.add(key, str(amount).encode(), expire):
                    return amount
                if value is not None:
                    if expire:
                        client.touch(key, expire)
                    return int(value)

    def read_counter(self, key: str) -> int | None:
        with self._translated("to read a counter"):
            value = self._client(key).get(key)
        return None if value is None else int(value)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def _name(server: tuple[str, int]) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
