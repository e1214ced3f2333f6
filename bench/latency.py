"""Round trip under load: ``echo.delay(i).get()`` p50/p99 while the same worker runs a steady
background of no-op tasks. caraway and Celery, Redis broker and Redis results.

    python bench/latency.py [--trips 500] [--rate 1000] [--passes 3] [--db 15]

A baseline row first: bare redis-py, one process answering LPUSHed requests (BRPOP, then LPUSH
of the reply) while popping the same background, the floor that scheduling on this machine
leaves to any library. Then, for each worker form (``-P prefork -c 2``, the default pool; ``-P
solo``; ``-P threads -c 2``) one worker is started; a producer process then sends
``noop.delay()`` (results ignored) at ``--rate`` per second on a fixed schedule (it catches up
if it falls behind), and after a second of that a client process makes ``--trips`` sequential
``echo.delay(i).get()`` calls, each timed from the call to the result. The producer's achieved
rate is printed with the figures, as a load that was not reached would flatter them, and so is
the backlog (messages still queued when the last round trip ended): a worker slower than the
load falls ever further behind, and its round trips wait for the whole queue. Passes are
interleaved; the table shows the median of each pass's p50 and p99. Only database ``--db`` is
used and flushed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import run
from peers import (
    ONLY_HELP,
    QUEUE,
    READY_KEY,
    Config,
    Setup,
    die_with_parent,
    markdown,
    selected,
    spawn,
    start_workers,
    stop_workers,
    wait_for,
    write_project,
)

#: Seconds the round trips of one run may take in all (500 at 10 ms each take 5 s).
GIVE_UP = 30.0
QUIET = ("--without-gossip", "--without-mingle", "--without-heartbeat")
#: The floor: bare redis-py, one process answering LPUSHed requests with BRPOP and LPUSH
#: while it pops the same background load (bare LPUSHes): no task library at all.
BASELINE = Config("baseline: bare redis-py BRPOP/LPUSH echo", "redis", ())
REQUESTS, REPLIES = f"{QUEUE}:requests", f"{QUEUE}:replies"
CONFIGS = [
    BASELINE,
    Config("caraway -P prefork -c 2 (default)", "caraway", ("-P", "prefork", "-c", "2")),
    Config("caraway -P solo", "caraway", ("-P", "solo")),
    Config("caraway -P threads -c 2", "caraway", ("-P", "threads", "-c", "2")),
    Config("Celery -P prefork -c 2 (default)", "celery", ("-P", "prefork", "-c", "2", *QUIET)),
    Config("Celery -P solo", "celery", ("-P", "solo", *QUIET)),
    Config("Celery -P threads -c 2", "celery", ("-P", "threads", "-c", "2", *QUIET)),
]


def child(setup: Setup, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", *args], env=setup.env(BENCH_BACKEND=setup.broker),
        cwd=setup.project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=die_with_parent,
    )  # fmt: skip


def result(proc: subprocess.Popen[str], timeout: float) -> dict[str, float]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{out}\n{err}")
    parsed: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return parsed


def measure(setup: Setup, client: Any, config: Config, trips: int, rate: int) -> dict[str, float]:
    client.flushdb()
    if config is BASELINE:
        log = setup.project / "redis.log"
        argv = [sys.executable, __file__, "--child", "serve", "redis", "0"]
        workers = [spawn(argv, setup.project, setup.env(), log)]
    else:
        workers = start_workers(setup, config, BENCH_BACKEND=setup.broker)
    try:
        wait_for(lambda: int(client.get(READY_KEY) or 0) >= 1, 60, "ready", workers)
        load = child(setup, "load", config.lib, str(rate))
        time.sleep(1.0)  # the background reaches its steady state
        trip = result(child(setup, "trips", config.lib, str(trips)), timeout=600)
        backlog = client.llen(QUEUE)
        load.send_signal(signal.SIGTERM)
        sent = result(load, timeout=30)
    finally:
        stop_workers(workers)
    return {**trip, "load": sent["rate"], "backlog": backlog}


# --- client processes -----------------------------------------------------------------------------


def bare_client() -> Any:
    import redis

    return redis.Redis.from_url(os.environ["BENCH_BROKER"])


def child_serve(_lib: str, _n: int) -> None:
    """The baseline's worker: pop requests and background alike, answer the requests."""
    client = bare_client()
    client.incr(READY_KEY)
    while True:
        key, value = client.brpop([REQUESTS, QUEUE])
        if key.decode() == REQUESTS:
            client.lpush(REPLIES, value)


class BareEcho:
    """The baseline's calls, shaped like a task's ``delay(i).get()`` and ``delay()``."""

    def __init__(self, queue: str) -> None:
        self.client, self.queue = bare_client(), queue

    def delay(self, value: int = 0) -> BareEcho:
        self.client.lpush(self.queue, value)
        return self

    def get(self, timeout: float) -> int:
        reply = self.client.brpop([REPLIES], timeout=timeout)
        if reply is None:
            raise TimeoutError("no reply")
        return int(reply[1])


def tasks(lib: str) -> tuple[Any, Any]:
    """(the background task, the round-trip task) of ``lib``."""
    if lib == "redis":
        return BareEcho(QUEUE), BareEcho(REQUESTS)
    module = __import__(f"bench_peer_{lib}")
    return module.noop, module.echo


def child_load(lib: str, rate: int) -> None:
    """``noop.delay()`` at ``rate`` per second until SIGTERM; prints the achieved rate."""
    noop = tasks(lib)[0]
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    started = time.perf_counter()
    sent = 0
    while not stop:
        noop.delay()
        sent += 1
        ahead = started + sent / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    print(json.dumps({"rate": sent / (time.perf_counter() - started)}))


def child_trips(lib: str, n: int) -> None:
    """Timed sequential round trips. A run longer than ``GIVE_UP`` seconds (a worker behind
    its background, each call waiting for the whole backlog) ends as ``"gave_up"``."""
    echo = tasks(lib)[1]
    samples = []
    deadline = time.monotonic() + GIVE_UP
    for i in range(-20, n):  # 20 warm-up calls first
        started = time.perf_counter()
        try:
            value = echo.delay(i).get(timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:  # each library's own TimeoutError
            if "Timeout" not in type(exc).__name__:
                raise
            value = None
        if value is None or time.monotonic() > deadline:
            print(json.dumps({"gave_up": float(max(0, i))}))
            return
        if value != i:
            raise RuntimeError("wrong result")
        if i >= 0:
            samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    print(json.dumps({
        "p50": statistics.median(samples),
        "p99": samples[min(n - 1, int(n * 0.99))],
        "max": samples[-1],
    }))  # fmt: skip


# --- the table ------------------------------------------------------------------------------------


def table(results: dict[Config, list[dict[str, float]]], rate: int) -> str:
    head = ("worker (Redis broker + results)", "p50", "p99", "max", f"load (target {rate}/s)",
            "backlog")  # fmt: skip
    body = []
    for config, all_runs in results.items():
        runs = [run for run in all_runs if "gave_up" not in run]
        label, failed = config.label, len(all_runs) - len(runs)
        if not runs:
            backlog = max(run["backlog"] for run in all_runs)
            given_up = f"gave up after {GIVE_UP:.0f} s, backlog {backlog:,.0f}"
            body.append((label, given_up, "-", "-", "-", "-"))
            continue
        if failed:
            label += f" ({failed} of {len(all_runs)} passes gave up)"

        def median(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(run[key] for run in runs)

        body.append((label, f"{median('p50'):.2f} ms", f"{median('p99'):.2f} ms",
                     f"{median('max'):.2f} ms", f"{median('load'):,.0f}/s",
                     f"{median('backlog'):,.0f}"))  # fmt: skip
    return markdown(head, body)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trips", type=int, default=500, help="sequential get()s (500)")
    parser.add_argument("--rate", type=int, default=1000, help="background tasks/s (1000)")
    parser.add_argument("--passes", type=int, default=3, help="interleaved passes (3)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server URL")
    parser.add_argument("--db", type=int, default=15, help="database to use and flush (15)")
    parser.add_argument("--only", default="", help=ONLY_HELP)
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        case, lib, number = args.child
        {"load": child_load, "trips": child_trips, "serve": child_serve}[case](lib, int(number))
        return 0

    broker = f"{args.redis.rstrip('/')}/{args.db}"
    client = run.open_redis(broker)
    if client is None:
        return 2
    configs = selected(CONFIGS, args.only)
    setup = Setup(write_project(Path(tempfile.mkdtemp(prefix="caraway-latency-"))), broker)
    results: dict[Config, list[dict[str, float]]] = {c: [] for c in configs}
    try:
        for number in range(args.passes):
            for config in configs:
                print(f"... pass {number + 1}: {config.label}", file=sys.stderr, flush=True)
                results[config].append(measure(setup, client, config, args.trips, args.rate))
    except Exception:
        print(f"worker logs kept in {setup.project}", file=sys.stderr)
        raise
    finally:
        client.flushdb()
        client.close()
    print(f"# {args.trips} round trips under {args.rate} tasks/s, {args.passes} passes, medians")
    print(table(results, args.rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
