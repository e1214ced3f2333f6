"""Execution pools: where jobs run. ``solo`` runs in the consumer thread, ``threads`` in N,
``asyncio`` on one event loop, ``gevent`` and ``eventlet`` on N greenlets, ``prefork`` in N
child processes."""

from __future__ import annotations

from caraway.exceptions import ImproperlyConfigured
from caraway.utils.text import did_you_mean
from caraway.worker.pools.aio import AsyncioPool
from caraway.worker.pools.base import Pool, PoolOptions
from caraway.worker.pools.greenlets import EventletPool, GeventPool
from caraway.worker.pools.prefork import PreforkPool
from caraway.worker.pools.solo import SoloPool
from caraway.worker.pools.threads import ThreadPool

POOLS: dict[str, type[Pool]] = {
    "solo": SoloPool,
    "threads": ThreadPool,
    "asyncio": AsyncioPool,
    "prefork": PreforkPool,
    "gevent": GeventPool,
    "eventlet": EventletPool,
}
#: Celery's other name for prefork.
ALIASES = {"processes": "prefork"}


def create_pool(name: str, concurrency: int, options: PoolOptions | None = None) -> Pool:
    try:
        cls = POOLS[ALIASES.get(name, name)]
    except KeyError:
        raise ImproperlyConfigured(
            f"unknown pool {name!r}.{did_you_mean(name, POOLS)} Available: {', '.join(POOLS)}"
        ) from None
    return cls(concurrency, options)
