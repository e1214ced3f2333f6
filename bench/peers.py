"""caraway, Celery, Huey and Dramatiq on realistic tasks: same Redis, same run, one table.

    python bench/peers.py [--n 10000] [--passes 3] [--redis redis://127.0.0.1:6379] [--db 15]

Each library gets a project module with the same two tasks: ``noop`` (does nothing) and
``work`` (one Redis ``INCR`` of a counter key: the smallest realistic task). For each worker
configuration, a fresh interpreter enqueues N ``work`` messages one at a time, each confirmed
by Redis before the next (timed: the enqueue row), with no worker running; the queue is then
moved aside (RENAME), the workers are started and report ready, and the drain is timed from
the RENAME back until the counter in Redis reaches N. The passes are interleaved (every
configuration once, then again), and the table shows medians.

Worker forms are each library's defaults plus the process/thread counts of the issue's
table: caraway ``-P solo``, two ``-P solo`` processes, ``-P prefork -c 2``; Celery ``-P solo``
and ``-P prefork -c 2`` (without gossip, mingle and heartbeat); ``huey_consumer -k thread -w
1`` and ``-k process -w 2``; ``dramatiq -p 1 -t 8`` and ``-p 2``. Huey and Dramatiq come with
the bench extra (``pip install -e ".[bench]"``); without them their rows are skipped.

Only database ``--db`` is used, and FLUSHDB runs on it before each case and at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import run

QUEUE = "bench"
HOLD = "bench.hold"
COUNTER = "bench:counter"
READY_KEY = "bench:ready"
BIN = Path(sys.executable).parent

#: Shared by every project module: a per-process client (made after a pool's fork) and the
#: realistic task's body.
COMMON = '''
import os

import redis

BROKER = os.environ["BENCH_BROKER"]
_client = [None, 0]


def client():
    """This process's Redis client (a forked pool child makes its own)."""
    if _client[1] != os.getpid():
        _client[:] = [redis.Redis.from_url(BROKER), os.getpid()]
    return _client[0]


def count():
    client().incr("{counter}")


def ready(*_args, **_kwargs):
    client().incr("{ready}")
'''

CELERY_LIKE = """
from {lib} import Celery, signals

BACKEND = os.environ.get("BENCH_BACKEND") or None
app = Celery("bench", broker=BROKER, backend=BACKEND)
app.conf.update(
    task_default_queue="{queue}",
    task_ignore_result=BACKEND is None,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop", shared=False, ignore_result=True)
def noop():
    return None  # nothing: what is measured is the library's own cost per task


@app.task(name="bench.work", shared=False)
def work():
    count()


@app.task(name="bench.echo", shared=False)
def echo(value):
    return value


if os.environ.get("BENCH_WORKER"):
    signals.worker_ready.connect(ready, weak=False)
"""

HUEY = """
from huey import RedisHuey

# Results off: the tasks return nothing, and Huey would not store None anyway.
huey = RedisHuey("{queue}", url=BROKER, results=False)


@huey.task()
def noop():
    return None  # nothing: what is measured is the library's own cost per task


@huey.task()
def work():
    count()


if os.environ.get("BENCH_WORKER"):
    huey.on_startup()(ready)  # once per worker thread or process
"""

DRAMATIQ = """
import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware

broker = RedisBroker(url=BROKER)


class Ready(Middleware):
    def after_worker_boot(self, broker, worker):
        ready()  # once per worker process


if os.environ.get("BENCH_WORKER"):
    broker.add_middleware(Ready())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="{queue}")
def noop():
    return None  # nothing: what is measured is the library's own cost per task


@dramatiq.actor(queue_name="{queue}")
def work():
    count()
"""

#: Each library's module source, and the Redis list its workers consume from.
SOURCES = {
    "caraway": CELERY_LIKE.replace("{lib}", "caraway"),
    "celery": CELERY_LIKE.replace("{lib}", "celery"),
    "huey": HUEY,
    "dramatiq": DRAMATIQ,
}
QUEUE_KEYS = {
    "caraway": QUEUE,
    "celery": QUEUE,
    "huey": f"huey.redis.{QUEUE}",
    "dramatiq": f"dramatiq:{QUEUE}",
}


def installed(lib: str) -> bool:
    return importlib.util.find_spec(lib) is not None


ONLY_HELP = "comma-separated label prefixes, e.g. 'caraway,Huey -k thread' (all)"


def selected(configs: Sequence[Config], only: str) -> list[Config]:
    """The configurations whose label starts with one of ``only``'s items (any case)."""
    prefixes = tuple(p.strip().lower() for p in only.split(",") if p.strip())
    return [c for c in configs if not prefixes or c.label.lower().startswith(prefixes)]


def write_project(folder: Path) -> Path:
    """One ``bench_peer_<lib>.py`` per library in ``folder``."""
    common = COMMON.format(counter=COUNTER, ready=READY_KEY)
    for lib, source in SOURCES.items():
        body = source.replace("{queue}", QUEUE)
        (folder / f"bench_peer_{lib}.py").write_text(
            f'"""Bench tasks for {lib}."""\n{common}{body}'
        )
    return folder


# --- worker configurations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One row: a library and the worker processes it runs as."""

    label: str
    lib: str
    argv: tuple[str, ...]
    processes: int = 1
    #: "ready" reports per worker process (Huey's process workers report one each).
    readies: int = 1

    def command(self) -> list[str]:
        module = f"bench_peer_{self.lib}"
        if self.lib == "huey":
            return [str(BIN / "huey_consumer"), f"{module}.huey", *self.argv]
        if self.lib == "dramatiq":
            return [str(BIN / "dramatiq"), module, "-Q", QUEUE, *self.argv]
        tail = ["-Q", QUEUE, "-l", "WARNING", "-n", f"{self.lib}-{os.urandom(3).hex()}@%h"]
        return [str(BIN / self.lib), "-A", module, "worker", *self.argv, *tail]


QUIET = ("--without-gossip", "--without-mingle", "--without-heartbeat")
CONFIGS = [
    Config("caraway -P solo", "caraway", ("-P", "solo")),
    Config("caraway 2 x -P solo", "caraway", ("-P", "solo"), processes=2),
    Config("caraway -P prefork -c 2 (default pool)", "caraway", ("-P", "prefork", "-c", "2")),
    Config("Celery -P solo", "celery", ("-P", "solo", *QUIET)),
    Config("Celery -P prefork -c 2 (default pool)", "celery", ("-P", "prefork", "-c", "2", *QUIET)),
    Config("Huey -k thread -w 1", "huey", ("-k", "thread", "-w", "1")),
    Config("Huey -k process -w 2", "huey", ("-k", "process", "-w", "2"), readies=2),
    Config("Dramatiq -p 1 -t 8", "dramatiq", ("-p", "1", "-t", "8")),
    Config("Dramatiq -p 2", "dramatiq", ("-p", "2"), readies=2),
]


@dataclass
class Setup:
    """The project folder (worker logs go there too) and the broker URL with its db."""

    project: Path
    broker: str

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(self.project), "BENCH_BROKER": self.broker}
        env.update(extra)
        return env


def die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL when the harness dies, so none outlives it."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_workers(setup: Setup, config: Config, **env: str) -> list[subprocess.Popen[bytes]]:
    log = setup.project / f"{config.lib}.log"
    worker_env = setup.env(BENCH_WORKER="1", **env)
    return [
        spawn(config.command(), setup.project, worker_env, log) for _ in range(config.processes)
    ]


def spawn(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip


def stop_workers(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGKILL to the whole group: the figures are taken by then, and warm shutdowns of idle
    workers only lengthen the run."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=10)


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, procs: Sequence[Any]
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if any(proc.poll() is not None for proc in procs):
            raise RuntimeError(f"a worker exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)  # coarse: on 2 cores a busy poll would slow the workers it times


# --- cases ----------------------------------------------------------------------------------------


def stage(setup: Setup, client: Any, lib: str, n: int) -> float:
    """N ``work`` messages enqueued one at a time by ``lib`` in a fresh interpreter, then
    moved aside until the drain is timed. Returns the confirmed enqueue rate."""
    client.flushdb()
    done = subprocess.run(
        [sys.executable, __file__, "--child", "enqueue", lib, str(n)], env=setup.env(),
        cwd=setup.project, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{lib} enqueue failed:\n{done.stdout}\n{done.stderr}")
    seconds = float(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
    key = QUEUE_KEYS[lib]
    if client.llen(key) != n:
        raise RuntimeError(f"{lib}: {client.llen(key)} queued, {n} sent")
    client.rename(key, HOLD)
    return n / seconds


def drain(setup: Setup, client: Any, config: Config, n: int) -> tuple[float, float]:
    """(confirmed enqueue rate, drain rate) of N realistic tasks for one configuration."""
    enqueued = stage(setup, client, config.lib, n)
    procs = start_workers(setup, config)
    try:
        readies = config.processes * config.readies
        wait_for(lambda: int(client.get(READY_KEY) or 0) >= readies, 60, "ready", procs)
        time.sleep(0.3)  # from "ready" to the first poll
        started = time.perf_counter()
        client.rename(HOLD, QUEUE_KEYS[config.lib])
        wait_for(lambda: int(client.get(COUNTER) or 0) >= n, 600, "the drain", procs)
        seconds = time.perf_counter() - started
    finally:
        stop_workers(procs)
    if client.llen(QUEUE_KEYS[config.lib]):
        raise RuntimeError(f"{config.label}: messages left in the queue")
    return enqueued, n / seconds


def child_enqueue(lib: str, n: int) -> dict[str, float]:
    """N confirmed one-at-a-time enqueues of ``work`` (20 warm-up ``noop``s off the clock,
    taken off the queue again)."""
    module = __import__(f"bench_peer_{lib}")
    for _ in range(20):
        enqueue(lib, module.noop)
    module.client().delete(QUEUE_KEYS[lib], f"{QUEUE_KEYS[lib]}.msgs")
    started = time.perf_counter()
    for _ in range(n):
        enqueue(lib, module.work)
    return {"seconds": time.perf_counter() - started}


def enqueue(lib: str, task: Any) -> None:
    """One confirmed enqueue, each library's usual way (a Huey task enqueues when called)."""
    if lib == "dramatiq":
        task.send()
    elif lib == "huey":
        task()
    else:
        task.delay()


# --- the table ------------------------------------------------------------------------------------


def table(results: dict[Config, list[tuple[float, float]]], solo: float | None) -> str:
    head = ("configuration (realistic task: one INCR)", "drain", "x caraway solo", "enqueue")
    body = []
    for config, runs in results.items():
        rate = statistics.median(r[1] for r in runs)
        enqueue = statistics.median(r[0] for r in runs)
        ratio = f"{rate / solo:.2f}x" if solo else "-"
        body.append((config.label, f"{rate:,.0f}/s", ratio, f"{enqueue:,.0f}/s"))
    return markdown(head, body)


def markdown(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A markdown table, its columns padded to their widest cell."""
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in body:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="tasks per drain (10000)")
    parser.add_argument("--passes", type=int, default=3, help="interleaved passes (3)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server URL")
    parser.add_argument("--db", type=int, default=15, help="database to use and flush (15)")
    parser.add_argument("--only", default="", help=ONLY_HELP)
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _, lib, n = args.child
        print(json.dumps(child_enqueue(lib, int(n))))
        return 0

    broker = f"{args.redis.rstrip('/')}/{args.db}"
    client = run.open_redis(broker)
    if client is None:
        return 2
    wanted = selected(CONFIGS, args.only)
    configs = [c for c in wanted if installed(c.lib)]
    skipped = sorted({c.lib for c in wanted if not installed(c.lib)})
    setup = Setup(write_project(Path(tempfile.mkdtemp(prefix="caraway-peers-"))), broker)
    results: dict[Config, list[tuple[float, float]]] = {c: [] for c in configs}
    try:
        for number in range(args.passes):
            for config in configs:
                print(f"... pass {number + 1}: {config.label}", file=sys.stderr, flush=True)
                results[config].append(drain(setup, client, config, args.n))
    except Exception:
        print(f"worker logs kept in {setup.project}", file=sys.stderr)
        raise
    finally:
        client.flushdb()
        client.close()
    solo = next((statistics.median(r[1] for r in results[c]) for c in configs
                 if c.label == "caraway -P solo"), None)  # fmt: skip
    print(f"# n={args.n}, passes={args.passes}, medians; {versions()}")
    print(table(results, solo))
    if skipped:
        print(f"\nskipped (not installed; pip install -e '.[bench]'): {', '.join(skipped)}")
    return 0


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for lib in SOURCES:
        try:
            found.append(f"{lib} {version(lib)}")
        except PackageNotFoundError:
            continue
    return ", ".join(found) + f", Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"


if __name__ == "__main__":
    sys.exit(main())
