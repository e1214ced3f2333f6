"""``-P solo``: one job at a time, in the consumer's own thread (Celery's solo pool)."""

from __future__ import annotations

from caraway.worker.pools.base import Pool, PoolOptions, Work


class SoloPool(Pool):
    def __init__(self, limit: int = 1, options: PoolOptions | None = None) -> None:
        super().__init__(1, options)

    def submit(self, work: Work) -> None:
        work()
