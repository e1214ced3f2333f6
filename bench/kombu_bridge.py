"""The kombu bridge beside caraway's own engines, on the broker contract alone.

One process publishes N task messages (batches of 100), then fetches them (up to 100 at a
time) and acks them, on each engine in turn; it prints messages per second each way. No
worker: this measures what the engine adds, not task execution.

    .venv/bin/python bench/kombu_bridge.py            # n=5000
    .venv/bin/python bench/kombu_bridge.py --n 20000 --redis redis://127.0.0.1:6379/0

Redis runs both engines under a key prefix of their own (``bench-kombu-<random>:``) and
deletes what is under it at the end; the file engines work in a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from caraway.engines.base.broker import Outgoing
from caraway.engines.registry import create_broker
from caraway.protocol import build_task_message

BATCH = 100


def measure(url: str, options: dict[str, Any], n: int) -> tuple[float, float]:
    """(published per second, fetched and acked per second) for ``n`` messages."""
    broker = create_broker(url, options)
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    messages = [build_task_message("bench.noop", str(uuid.uuid4()), (), {}) for _ in range(n)]
    try:
        broker.declare(queue)
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            broker.publish([Outgoing(m, queue) for m in messages[start : start + BATCH]])
        published = time.perf_counter() - started
        started, taken = time.perf_counter(), 0
        while taken < n:
            deliveries = broker.fetch([queue], BATCH, 1.0)
            broker.ack([d.tag for d in deliveries])
            taken += len(deliveries)
        consumed = time.perf_counter() - started
        broker.purge(queue)
    finally:
        broker.close()
    return n / published, n / consumed


@contextmanager
def redis_prefix(url: str) -> Iterator[str]:
    import redis  # the bench extra installs it

    prefix = f"bench-kombu-{uuid.uuid4().hex[:8]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--redis", default="", help="also compare on this Redis")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        files = Path(folder)
        (files / "messages").mkdir()
        (files / "control").mkdir()
        kombu_files = {"data_folder_in": str(files / "messages"),
                       "data_folder_out": str(files / "messages"),
                       "control_folder": str(files / "control")}  # fmt: skip
        cases: list[tuple[str, str, dict[str, Any]]] = [
            ("caraway memory://", f"memory://bench-{uuid.uuid4().hex}", {}),
            ("bridge kombu+memory://", "kombu+memory://", {}),
            ("caraway sqlite:// (file)", f"sqlite:///{files / 'bench.sqlite3'}", {}),
            ("bridge filesystem://", "filesystem://", kombu_files),
        ]
        rows = [(name, *measure(url, options, args.n)) for name, url, options in cases]
        if args.redis:
            with redis_prefix(args.redis) as prefix:
                options = {"global_keyprefix": prefix}
                bridged = "kombu+" + args.redis
                rows.append(("caraway redis://", *measure(args.redis, options, args.n)))
                rows.append(("bridge kombu+redis://", *measure(bridged, options, args.n)))
    print(f"n={args.n}, batches of {BATCH}")
    print(f"{'engine':28} {'publish/s':>10} {'fetch+ack/s':>12}")
    for name, sent, taken in rows:
        print(f"{name:28} {sent:10.0f} {taken:12.0f}")


if __name__ == "__main__":
    main()
