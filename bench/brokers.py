"""caraway on Redis vs caraway on PostgreSQL: the same cases, the same machine, one run.

    .venv/bin/python bench/brokers.py            # n=5000, 300 round trips
    .venv/bin/python bench/brokers.py --quick    # n=300, 30 round trips

Redis: one database (``--db``, default 12), flushed before each case and at the end.
PostgreSQL: a schema of its own (``bench_<hex>``) in ``--postgresql``'s database, dropped at
the end. Results are in the broker's own store on each side (the Redis backend; Celery's
SQL tables in the same schema). Cases:

* enqueue ``delay()``: one client, N calls, each confirmed before it returns;
* enqueue ``send_batch``: N messages in chunks of 1,000;
* drain: N no-op tasks staged aside, then made visible at once to one ``-P solo`` worker
  process (prefetch multiplier 64) that is already waiting; until all N ran;
* round trip: ``echo.delay(i).get()`` one after another, p50 and p99.

PostgreSQL is also measured with ``synchronous_commit = off`` for sends (Redis' own default
durability: a server crash may lose the last second of sends; the default waits for the
disk), and its round trip also with results in Redis (the broker's share of the latency).

The no-op tasks count in memory and a thread adds the count to a Redis key every 5 ms, on
both sides, so the count costs the brokers nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import redis

from caraway import Celery
from caraway.calling import send_batch

QUEUE, HOLD = "bench", "bench.hold"
DONE_KEY = "brokers-bench:done"

PROJECT = (
    '''
import os, threading, time
import redis
from caraway import Celery, signals

app = Celery("brokersbench", broker=os.environ["BENCH_BROKER"],
             result_backend=os.environ["BENCH_BACKEND"],
             broker_transport_options={"schema": os.environ["BENCH_SCHEMA"]}
             if os.environ["BENCH_SCHEMA"] else {},
             database_table_schemas={"task": os.environ["BENCH_SCHEMA"],
                                     "group": os.environ["BENCH_SCHEMA"]}
             if os.environ["BENCH_SCHEMA"] else {})
COUNT = [0]


def _flush():
    client = redis.Redis.from_url(os.environ["BENCH_COUNTER"])
    sent = 0
    while True:
        time.sleep(0.005)
        now = COUNT[0]
        if now != sent:
            client.incrby("'''
    + DONE_KEY
    + """", now - sent)
            sent = now


@signals.worker_ready.connect
def _start_counting(**_):
    threading.Thread(target=_flush, daemon=True).start()


@app.task(name="bench.noop", ignore_result=True)
def noop():
    COUNT[0] += 1


@app.task(name="bench.echo")
def echo(value):
    return value
"""
)


class Side:
    """One broker under test, with its results store and how to stage messages there."""

    def __init__(
        self, name: str, broker: str, backend: str, schema: str = "", commit: str = "on"
    ) -> None:
        self.name, self.broker, self.backend, self.schema = name, broker, backend, schema
        self.commit = commit

    def app(self) -> Celery:
        conf: dict[str, Any] = {}
        if self.schema:
            conf = {
                "broker_transport_options": {
                    "schema": self.schema,
                    "synchronous_commit": self.commit,
                },
                "database_table_schemas": {"task": self.schema, "group": self.schema},
            }
        return Celery("brokersbench", broker=self.broker, result_backend=self.backend, **conf)

    def env(self, counter: str) -> dict[str, str]:
        return {"BENCH_BROKER": self.broker, "BENCH_BACKEND": self.backend,
                "BENCH_SCHEMA": self.schema, "BENCH_COUNTER": counter}  # fmt: skip

    def like(self, name: str, **changes: str) -> Side:
        """The same broker (and schema), with another results store or commit level."""
        fields = {"backend": self.backend, "commit": self.commit, **changes}
        return Side(name, self.broker, fields["backend"], self.schema, fields["commit"])

    def queued(self, app: Celery, queue: str) -> int:
        return app.broker.size(queue)

    def release(self, app: Celery) -> None:
        """Make the staged messages visible to the waiting worker, at once."""
        if self.schema:
            with psycopg.connect(self.broker, autocommit=True) as conn, conn.transaction():
                conn.execute(
                    f'UPDATE "{self.schema}".caraway_messages SET queue = %s WHERE queue = %s',
                    (QUEUE, HOLD),
                )
                conn.execute("SELECT pg_notify(%s, %s)", (f"caraway_{self.schema}", "q:bench"))
        else:
            redis.Redis.from_url(self.broker).rename(HOLD, QUEUE)

    def clear(self) -> None:
        if self.schema:
            with psycopg.connect(self.broker, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        else:
            redis.Redis.from_url(self.broker).flushdb()


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def case_enqueue(side: Side, n: int) -> tuple[float, float]:
    side.clear()
    app = side.app()
    noop = app.signature("bench.noop")
    for _ in range(50):  # warm-up: connections, schema
        noop.apply_async(queue=HOLD)
    one = n / timed(lambda: [noop.apply_async(queue=HOLD) for _ in range(n)])
    bulk = n / timed(lambda: send_batch(app, [noop.clone().set(queue=HOLD) for _ in range(n)]))
    if side.queued(app, HOLD) != 2 * n + 50:
        raise RuntimeError(f"{side.name}: {side.queued(app, HOLD)} queued, {2 * n + 50} sent")
    app.close()
    return one, bulk


def start_worker(side: Side, folder: Path, counter: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **side.env(counter), "PYTHONPATH": str(folder)}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "caraway", "-A", "brokersbench", "worker", "-P", "solo",
             "-Q", QUEUE, "-l", "WARNING", "--prefetch-multiplier", "64"],
            cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.002)


def case_drain_and_roundtrip(
    side: Side, n: int, trips: int, folder: Path, counter: redis.Redis
) -> tuple[float, float, float]:
    side.clear()
    app = side.app()
    send_batch(app, [app.signature("bench.noop").set(queue=HOLD) for _ in range(n)])
    counter.delete(DONE_KEY)
    url = counter.connection_pool.connection_kwargs
    counter_url = f"redis://{url['host']}:{url['port']}/{url['db']}"
    proc = start_worker(side, folder, counter_url, folder / f"worker-{side.name}.log")
    try:
        echo = app.signature("bench.echo")
        assert echo.apply_async((0,), queue=QUEUE).get(timeout=60) == 0  # the worker serves
        time.sleep(0.3)  # back to waiting on the queue
        started = time.perf_counter()
        side.release(app)
        wait_for(lambda: int(counter.get(DONE_KEY) or 0) >= n, 600, f"{side.name} drain")
        drain = n / (time.perf_counter() - started)
        times = []
        for i in range(trips):
            started = time.perf_counter()
            assert echo.apply_async((i,), queue=QUEUE).get(timeout=30) == i
            times.append(time.perf_counter() - started)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        app.close()
    quantiles = statistics.quantiles(times, n=100)
    return drain, quantiles[49] * 1000, quantiles[98] * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--roundtrips", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="n=300, 30 round trips")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--db", type=int, default=12)
    parser.add_argument("--postgresql", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args(argv)
    n, trips = (300, 30) if args.quick else (args.n, args.roundtrips)
    redis_url = f"{args.redis}/{args.db}"
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    sides = [
        Side("redis", redis_url, redis_url),
        Side("postgresql", args.postgresql, f"db+{args.postgresql}", schema),
    ]
    counter = redis.Redis.from_url(redis_url)
    rows: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "brokersbench.py").write_text(PROJECT)
        try:
            for side in sides:
                one, bulk = case_enqueue(side, n)
                drain, p50, p99 = case_drain_and_roundtrip(side, n, trips, folder, counter)
                rows.setdefault("enqueue: delay()", []).append(f"{one:,.0f}/s")
                rows.setdefault("enqueue: send_batch", []).append(f"{bulk:,.0f}/s")
                rows.setdefault("drain: 1 solo worker", []).append(f"{drain:,.0f}/s")
                rows.setdefault("round trip delay().get() p50", []).append(f"{p50:.2f} ms")
                rows.setdefault("round trip delay().get() p99", []).append(f"{p99:.2f} ms")
            relaxed = sides[1].like("postgresql, synchronous_commit=off", commit="off")
            one, bulk = case_enqueue(relaxed, n)
            rows["enqueue: delay(), sends with synchronous_commit=off"] = ["-", f"{one:,.0f}/s"]
            rows["enqueue: send_batch, sends with synchronous_commit=off"] = ["-", f"{bulk:,.0f}/s"]
            in_redis = sides[1].like("postgresql, results in redis", backend=redis_url)
            _, p50, p99 = case_drain_and_roundtrip(in_redis, 100, trips, folder, counter)
            rows["round trip p50, PostgreSQL broker with Redis results"] = ["-", f"{p50:.2f} ms"]
            rows["round trip p99, PostgreSQL broker with Redis results"] = ["-", f"{p99:.2f} ms"]
        finally:
            for side in sides:
                side.clear()
            counter.close()
    print(f"n = {n}, {trips} round trips")
    print("| case | redis | postgresql |")
    print("|---|---|---|")
    for case, values in rows.items():
        print(f"| {case} | {' | '.join(values)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
