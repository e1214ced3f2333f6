"""Redis Cluster engines for the contract suites: one private cluster for the run (see
``tests/redis_cluster.py``), each test under its own key prefix, deleted after."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from redis_cluster import shared_cluster


@contextmanager
def redis_cluster_engine(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    cluster = shared_cluster()
    prefix = f"contract-{uuid.uuid4().hex[:12]}:"
    try:
        # One start node: the suite's unreachable-server case swaps its port.
        yield cluster.url_of(1), {"global_keyprefix": prefix, "visibility_timeout": 2}
    finally:
        cluster.delete_prefixed(prefix)


BROKERS = {"redis-cluster": redis_cluster_engine}
BACKENDS = {"redis-cluster": redis_cluster_engine}
