"""``-P solo``: one job at a time, in the consumer's own thread (Celery's solo pool)."""

from __future__ import annotations

from caraway.worker.pools.base import Pool, Work


class SoloPool(Pool):
    def __init__(self, limit: int = 1) -> None:
        super().__init__(1)

    def submit(self, work: Work) -> None:
        work()
