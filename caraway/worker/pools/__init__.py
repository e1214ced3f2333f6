"""Execution pools: where jobs run. ``solo`` runs in the consumer thread, ``threads`` in N,
``asyncio`` on one event loop, ``gevent`` on N greenlets, ``prefork`` in N child processes."""

from __future__ import annotations

from caraway.exceptions import ImproperlyConfigured
from caraway.utils.text import did_you_mean
from caraway.worker.pools.aio import AsyncioPool
from caraway.worker.pools.base import Pool, PoolOptions
from caraway.worker.pools.greenlets import GeventPool
from caraway.worker.pools.prefork import PreforkPool
from caraway.worker.pools.solo import SoloPool
from caraway.worker.pools.threads import ThreadPool

POOLS: dict[str, type[Pool]] = {
    "solo": SoloPool,
    "threads": ThreadPool,
    "asyncio": AsyncioPool,
    "prefork": PreforkPool,
    "gevent": GeventPool,
}
#: Celery's other name for prefork.
ALIASES = {"processes": "prefork"}
#: Celery's pools that caraway refuses, and why.
REFUSED = {
    "eventlet": (
        "caraway has no eventlet pool: eventlet's maintainers deprecated it (bug fixes only;"
        " they advise against new use, and call its monkey patching, the way task queues use"
        ' it, unsustainable). Use -P gevent (pip install "caraway[gevent]"), the same'
        " model: green threads on a monkey-patched standard library."
    ),
}


def create_pool(name: str, concurrency: int, options: PoolOptions | None = None) -> Pool:
    if name in REFUSED:
        raise ImproperlyConfigured(REFUSED[name])
    try:
        cls = POOLS[ALIASES.get(name, name)]
    except KeyError:
        raise ImproperlyConfigured(
            f"unknown pool {name!r}.{did_you_mean(name, POOLS)} Available: {', '.join(POOLS)}"
        ) from None
    return cls(concurrency, options)
