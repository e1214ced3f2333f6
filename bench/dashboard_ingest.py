"""How fast the dashboard takes in events, and how fast its tasks page answers when full.

    .venv/bin/python bench/dashboard_ingest.py                  # 1,000,000 events
    .venv/bin/python bench/dashboard_ingest.py --events 200000  # a quicker run
    .venv/bin/python bench/dashboard_ingest.py --events 200000 --through redis://127.0.0.1:6379/14

Events are made as workers send them (received, started, succeeded per task; one in twenty
fails, with a traceback), encoded as JSON, then decoded and fed to the ingest thread's code
(``Ingestor.handle``, batched SQLite writes) in a fresh history file: the broker's transport is
left out, the rest of the path is measured. Then the tasks page (no filter, and with each
filter), the charts and the page of a 250-member chord's body (its workflow graph) are
rendered through the ASGI app, without a network in between: server time only.

With ``--through URL`` the events also travel the broker: they are published in batches of
100 (as workers buffer task events) on the events exchange of that broker, and the clock
stops when the ingest thread has stored them all (publisher and dashboard share this
process, and its two cores with the broker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from caraway import Caraway
from caraway.dashboard.config import DashboardConfig
from caraway.dashboard.server import build_app
from caraway.dashboard.service import Dashboard
from caraway.dashboard.store import Limits

NAMES = [f"proj.tasks.job_{i}" for i in range(20)]
WORKERS = [f"worker{i}@bench" for i in range(8)]


def make_events(count: int) -> list[bytes]:
    """``count`` task events as JSON, three per task (four-event tasks would flatter us)."""
    events: list[bytes] = []
    start = time.time() - 3000
    clock = 0
    for n in range(count // 3 + 1):
        task_id = str(uuid.uuid4())
        worker = WORKERS[n % len(WORKERS)]
        stamp = start + n * 0.003
        base = {"uuid": task_id, "hostname": worker, "pid": 100, "utcoffset": 0}
        failed = n % 20 == 0
        final: dict[str, Any] = (
            {"type": "task-failed", "exception": "ValueError('bad input')",
             "traceback": "Traceback (most recent call last):\n  ...\nValueError: bad input"}
            if failed else {"type": "task-succeeded", "result": f"{n}", "runtime": 0.002}
        )  # fmt: skip
        for event in (
            {"type": "task-received", "name": NAMES[n % len(NAMES)], "args": f"({n}, 'x')",
             "kwargs": f"{{'user': {n}}}", "retries": 0, "root_id": task_id, "parent_id": None,
             "eta": None, "expires": None},
            {"type": "task-started"},
            final,
        ):  # fmt: skip
            clock += 1
            events.append(json.dumps({**base, **event, "clock": clock,
                                      "timestamp": stamp}).encode())  # fmt: skip
            stamp += 0.001
    return events[:count]


#: Header members of the one chord the bench adds: more than the task page draws.
CHORD_SIZE = 250


def chord_events(body_id: str) -> list[bytes]:
    """A chord of ``CHORD_SIZE`` members sent on its own, as caraway's workers tell it: each
    member its own root, all in one group and naming the body, the body sent by the last."""
    group, stamp, events = str(uuid.uuid4()), time.time() - 3500, []  # older than the rest
    members = [str(uuid.uuid4()) for _ in range(CHORD_SIZE)]
    for member in members:
        events.append({"type": "task-received", "uuid": member, "name": NAMES[0],
                       "root_id": member, "parent_id": None, "group_id": group,
                       "chord_body": body_id, "timestamp": stamp})  # fmt: skip
        stamp += 0.001
    events.append({"type": "task-received", "uuid": body_id, "name": NAMES[1],
                   "root_id": members[-1], "parent_id": members[-1], "group_id": group,
                   "timestamp": stamp})  # fmt: skip
    return [json.dumps({**event, "hostname": WORKERS[0]}).encode() for event in events]


def ingest(dashboard: Dashboard, events: list[bytes]) -> float:
    """Seconds to decode and store every event through the ingest thread's code."""
    ingestor = dashboard.ingestor
    started = time.perf_counter()
    for raw in events:
        ingestor.handle(json.loads(raw))
    ingestor.flush()
    return time.perf_counter() - started


def ingest_through(dashboard: Dashboard, events: list[bytes]) -> float:
    """Seconds from the first publish until the ingest thread took the last event it got.

    The events queue drops what waits over 5 s (Celery's ``event_queue_ttl``): a publisher
    faster than the dashboard loses events by design, and the count received says so.
    """
    from caraway.engines.registry import fanout_of
    from caraway.events.event import EXCHANGE, event_message

    fanout = fanout_of(dashboard.app)
    ingestor = dashboard.ingestor
    dashboard.start()
    time.sleep(1.0)  # the receiver's queue is bound
    decoded = [json.loads(raw) for raw in events]
    started = time.perf_counter()
    for i in range(0, len(decoded), 100):
        fanout.publish(EXCHANGE, "task.multi", event_message(decoded[i : i + 100], "bench"))
    seen, last_change = -1, time.perf_counter()
    while ingestor.events_seen < len(events) and time.perf_counter() - last_change < 3.0:
        if ingestor.events_seen != seen:
            seen, last_change = ingestor.events_seen, time.perf_counter()
        time.sleep(0.02)
    dashboard.stop()
    print(f"received {ingestor.events_seen:,} of {len(events):,} events")
    return last_change - started


async def _get(app: Any, path: str) -> tuple[int, float]:
    """One GET through the ASGI app: status and server time in seconds."""
    target, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": target, "raw_path": target.encode(), "root_path": "",
             "query_string": query.encode(), "headers": [(b"host", b"bench")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 5555)}  # fmt: skip
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    started = time.perf_counter()
    await app(scope, receive, send)
    return status, time.perf_counter() - started


def page_times(app: Any, paths: list[str], rounds: int) -> dict[str, tuple[float, float]]:
    """Median and worst server time (ms) of each page over ``rounds`` requests."""

    async def run() -> dict[str, tuple[float, float]]:
        times: dict[str, tuple[float, float]] = {}
        for path in paths:
            samples = []
            for _ in range(rounds):
                status, seconds = await _get(app, path)
                assert status == 200, (path, status)
                samples.append(seconds * 1000)
            times[path] = (statistics.median(samples), max(samples))
        return times

    return asyncio.run(run())


def _forget(url: str, prefix: str) -> None:
    """Delete what the run left on a Redis broker (its own key prefix only)."""
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20, help="requests per page")
    parser.add_argument("--through", metavar="URL", help="publish the events on this broker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dashboard.sqlite3"
        config = DashboardConfig(store_path=path, limits=Limits(max_tasks=10_000_000,
                                                                max_age=10 * 86400))  # fmt: skip
        broker = args.through or "memory://dashboard-bench"
        app = Caraway("bench", broker=broker)
        prefix = f"dashbench-{uuid.uuid4()}:"
        app.conf.broker_transport_options = {"global_keyprefix": prefix}
        dashboard = Dashboard(app, config)
        print(f"making {args.events:,} events ...", flush=True)
        body_id = str(uuid.uuid4())
        events = make_events(args.events - CHORD_SIZE - 1) + chord_events(body_id)
        seconds = ingest_through(dashboard, events) if args.through else ingest(dashboard, events)
        if args.through:
            print(f"(through {app.broker.describe()})")
            _forget(broker, prefix)
        taken = dashboard.ingestor.events_seen if args.through else args.events
        print(f"ingest: {taken:,} events in {seconds:.1f} s = "
              f"{taken / seconds:,.0f} events/s ({dashboard.store.count():,} tasks kept;"
              f" file {path.stat().st_size / 1e6:,.0f} MB)")  # fmt: skip
        app = build_app(dashboard, ingest=False)
        some_id = dashboard.store.tasks()[0]["uuid"]
        paths = [
            "/tasks", "/tasks/rows", "/tasks?state=FAILURE", f"/tasks?name={NAMES[3]}",
            f"/tasks?worker={WORKERS[2]}", "/tasks?window=300", f"/tasks?search={some_id}",
            "/tasks?search=user%27%3A+4242", "/api/tasks?limit=100", f"/task/{some_id}",
            "/charts?window=3600", f"/charts?window=3600&name={NAMES[3]}", f"/task/{body_id}",
        ]  # fmt: skip
        print(f"pages ({args.rounds} requests each, server time, ms):")
        for page, (median, worst) in page_times(app, paths, args.rounds).items():
            print(f"  {page[:60]:<60} median {median:7.1f}   max {worst:7.1f}")


if __name__ == "__main__":
    main()
