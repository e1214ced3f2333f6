"""Redis Cluster URLs and clients, on redis-py's ``RedisCluster``.

URL forms: ``redis+cluster://[[user]:password@]host:port,host:port[/0][?option=value]`` and
``rediss+cluster://...`` (TLS). The nodes listed are where the client starts: it reads the
cluster's map of hash slots from the first that answers, and follows MOVED/ASK redirects
and failovers by itself. Cluster mode has no databases: the path may only be empty or 0.

Commands run through :class:`ClusterLane`, which keeps the single-node ``Lane``'s calls but
routes each command by its key; a batch becomes a non-transactional cluster pipeline, as a
MULTI/EXEC cannot span slots.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from caraway.engines.redis.client import (
    CONNECTION_ERRORS,
    DEFAULT_PORT,
    Lane,
    RedisTarget,
    _client_kwargs,
    _int,
    _query_options,
)
from caraway.exceptions import ImproperlyConfigured
from caraway.utils.text import mask_url

CLUSTER_SCHEMES = frozenset({"redis+cluster", "rediss+cluster"})
#: Retries of a command that met a connection error or a slot without a master, after
#: 50 ms doubling up to 0.5 s (about 3 s in all): enough to ride out a failover with a
#: short cluster-node-timeout; beyond it the caller sees ``Unreachable``.
CLUSTER_RETRIES, CLUSTER_RETRY_BASE, CLUSTER_RETRY_CAP = 8, 0.05, 0.5
#: What makes ``ClusterLane.send`` go through the cluster client: a redirect or an error
#: reply, or a node that cannot be reached.
_SENT_AGAIN: tuple[type[BaseException], ...] = (redis.ResponseError, *CONNECTION_ERRORS)


@dataclass(frozen=True)
class ClusterTarget(RedisTarget):
    """A cluster's start nodes (``host``/``port`` are the first), read from a URL."""

    nodes: tuple[tuple[str, int], ...] = ()


def parse_cluster_url(url: str) -> ClusterTarget:
    """Read ``redis+cluster://`` / ``rediss+cluster://``; query options come back in ``options``."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() not in CLUSTER_SCHEMES or not sep:
        raise ImproperlyConfigured(
            f"{mask_url(url)!r} is not a Redis Cluster URL: expected"
            " redis+cluster://host:port,host:port/"
        )
    rest, _, query_text = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon and secret else None
    nodes = tuple(_node(url, part) for part in hosts.split(",") if part.strip())
    if not nodes:
        raise ImproperlyConfigured(f"{mask_url(url)!r} names no node: expected host:port,...")
    query = dict(parse_qsl(query_text))
    db = _int(url, "database number", path.strip("/") or query.get("db") or "0")
    if db != 0:
        raise ImproperlyConfigured(
            f"{mask_url(url)!r} names database {db}: Redis Cluster has only database 0; use"
            " global_keyprefix in the transport options to keep apps apart"
        )
    return ClusterTarget(
        url, host=nodes[0][0], port=nodes[0][1], username=username, password=password,
        ssl=scheme.lower() == "rediss+cluster", options=_query_options(url, query), nodes=nodes,
    )  # fmt: skip


def _node(url: str, text: str) -> tuple[str, int]:
    host, colon, port = text.strip().rpartition(":")
    if not colon:
        return text.strip(), DEFAULT_PORT
    return host.strip("[]") or "localhost", _int(url, "port", port)


def connect_cluster(
    target: ClusterTarget,
    transport_options: Mapping[str, Any] | None = None,
    ssl_options: Mapping[str, Any] | None = None,
    **defaults: Any,
) -> redis.Redis:
    """A cluster client; nothing connects until the first command.

    Typed as ``redis.Redis``: ``RedisCluster`` serves the same command API (routing each
    command by its key), so the single-node engine's code runs on it unchanged. Options
    take the single-node precedence (``defaults`` < transport options < URL query).
    """
    transport_options = transport_options or {}
    kwargs = _client_kwargs(target, transport_options, ssl_options, defaults)
    del kwargs["db"]  # RedisCluster refuses it: a cluster has database 0 only
    retries = int(transport_options.get("cluster_retries", CLUSTER_RETRIES))
    nodes = list(target.nodes)

    def make() -> RedisCluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],  # type: ignore[no-untyped-call]
            retry=Retry(
                ExponentialBackoff(cap=CLUSTER_RETRY_CAP, base=CLUSTER_RETRY_BASE), retries
            ),
            **kwargs,
        )

    return cast("redis.Redis", LazyCluster(make))


class LazyCluster:
    """A ``RedisCluster`` made on first use.

    Its constructor reads the slot map from the nodes at once; made here, an engine
    connects on its first command as the single-node one does, and a cluster that no node
    of answers is a ``ConnectionError`` (``Unreachable`` once translated), not a
    construction error. Scripts are registered without a client to hash them.
    """

    def __init__(self, make: Callable[[], RedisCluster]) -> None:
        self._make = make
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()

    def _get(self) -> RedisCluster:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._make()
                    except RedisClusterException as exc:
                        raise redis.ConnectionError(f"no cluster node answered: {exc}") from exc
                client = self._client
        return client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def register_script(self, script: str) -> Script:
        # Bytes: the script's digest needs no encoder, so nothing connects yet.
        return Script(cast("redis.Redis", self), script.encode())

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class ClusterLane(Lane):
    """The ``Lane`` calls on a cluster client: each command goes to its key's node.

    There is no kept connection to write on, so ``send`` waits for its replies like
    ``call``; a lost reply surfaces as the command's error (redis-py retries it first).
    """

    def __init__(self, client: redis.Redis) -> None:
        # Lane's kept connections are not made: every method of it is replaced here.
        self._client = client
        self.drops = 0

    def call(self, *commands: Sequence[Any]) -> list[Any]:
        plain = [command for command in commands if command[0] not in ("MULTI", "EXEC")]
        if len(plain) == 1:
            return [self._client.execute_command(*plain[0])]  # type: ignore[no-untyped-call]
        pipe = self._client.pipeline(transaction=False)
        for command in plain:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        return list(pipe.execute())

    def send(self, *commands: Sequence[Any]) -> None:
        """Idempotent writes (acks): when they share one slot, a plain pipeline on that
        slot's node, at a tenth of the cluster client's cost per call; redirected (MOVED,
        ASK) or failed, they are sent again through the cluster client, which follows."""
        client = cast("RedisCluster", self._client)
        plain = [command for command in commands if command[0] not in ("MULTI", "EXEC")]
        slots = {client.keyslot(command[1]) for command in plain}  # type: ignore[no-untyped-call]
        if len(slots) == 1:
            try:
                node = client.get_node_from_key(plain[0][1])  # type: ignore[no-untyped-call]
                pipe = client.get_redis_connection(node).pipeline(transaction=False)
                for command in plain:
                    pipe.execute_command(*command)  # type: ignore[no-untyped-call]
                pipe.execute()
                return
            except _SENT_AGAIN:
                pass
        self.call(*plain)

    def owed(self) -> list[Sequence[Any]]:
        return []

    def script(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        return script(keys=list(keys), args=list(args))

    def close(self) -> None:
        """The client is its owner's to close."""
