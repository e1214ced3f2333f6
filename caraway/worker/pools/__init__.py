"""Execution pools: where jobs run. ``solo`` runs in the consumer thread, ``threads`` in N."""

from __future__ import annotations

from caraway.exceptions import ImproperlyConfigured
from caraway.utils.text import did_you_mean
from caraway.worker.pools.base import Pool
from caraway.worker.pools.solo import SoloPool
from caraway.worker.pools.threads import ThreadPool

POOLS: dict[str, type[Pool]] = {"solo": SoloPool, "threads": ThreadPool}


def create_pool(name: str, concurrency: int) -> Pool:
    try:
        cls = POOLS[name]
    except KeyError:
        raise ImproperlyConfigured(
            f"unknown pool {name!r}.{did_you_mean(name, POOLS)} Available: {', '.join(POOLS)}"
        ) from None
    return cls(concurrency)
