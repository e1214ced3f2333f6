"""caraway against Celery on the same Redis, same run, same machine: one command, one table.

    python bench/run.py [--n 10000] [--quick] [--redis redis://127.0.0.1:6379] [--db 14]
    python bench/run.py --realistic [--n 10000]    # bench/realistic.py: one round trip a task

Cases (the database ``--db`` is flushed with FLUSHDB before each one; no other db is touched):

* enqueue: one producer, N ``delay()`` of a no-op task, each confirmed by Redis (an LPUSH
  round trip) before it returns; the same from 16 threads of one process (a web server's
  shape: each call still confirmed before it returns); and caraway's bulk form,
  ``send_batch(app, signatures)``.
* drain: N queued no-op tasks (results off), then workers started; each case is timed from
  the moment the messages appear in the queue the workers poll (an atomic RENAME, after
  the workers reported ready) until every task has run. One worker process, then two.
* round trip: sequential ``delay().get()`` with the Redis result backend: p50 and p99.
* RSS: the peak resident set (VmHWM) of the one-process drain worker.

Workers are subprocesses; the client side measures. Celery runs in its best single-process
form for each case (``-P solo``, no gossip/mingle/heartbeat, tuned prefetch, ignored results
where results are off); caraway in its own best form. Each no-op task bumps an in-process
counter that a background thread adds to a Redis key every few ms, the same on both sides.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUEUE = "bench"
HOLD = "bench.hold"
DONE_KEY = "bench:done"
READY_KEY = "bench:ready"
#: Lines printed under the table: figures that explain a row (CPU per call, say).
NOTES: list[str] = []
#: Producer threads in one process for the many-producers case (a web server's workers).
PRODUCER_THREADS = 16
BIN = Path(sys.executable).parent

TASKS_SOURCE = '''
"""No-op and echo tasks for the benchmark, for {lib}; configured from BENCH_* variables."""
import os
import threading
import time

from {lib} import Celery, signals

BROKER = os.environ["BENCH_BROKER"]
BACKEND = os.environ.get("BENCH_BACKEND") or None

app = Celery("bench", broker=BROKER, backend=BACKEND)
app.conf.update(
    task_default_queue="{queue}",
    task_ignore_result=BACKEND is None,
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH", "4")),
    broker_connection_retry_on_startup=True,
)

_lock = threading.Lock()
_count = [0]
_flusher = [None]


def _bump():
    """Count one task in this process; a thread adds the counts to Redis every few ms."""
    with _lock:
        _count[0] += 1
        if _flusher[0] is None:  # the first task in this process (a pool child, say)
            _flusher[0] = threading.Thread(target=_flush_counts, args=(_client(),), daemon=True)
            _flusher[0].start()


def _after_fork():
    global _lock
    _lock = threading.Lock()
    _count[0] = 0
    _flusher[0] = None


os.register_at_fork(after_in_child=_after_fork)


@app.task(name="bench.noop", shared=False)
def noop():
    _bump()

{io_task}


@app.task(name="bench.echo", shared=False)
def echo(value):
    return value


@app.task(name="bench.total", shared=False)
def total(values):
    return len(values)


def _flush_counts(client):
    sent = 0
    while True:
        time.sleep(0.005)
        now = _count[0]
        if now != sent:
            client.incrby("{done}", now - sent)
            sent = now


def _client():
    import redis

    return redis.Redis.from_url(BROKER)


def _ready(**_):
    _client().incr("{ready}")


if os.environ.get("BENCH_WORKER"):
    signals.worker_ready.connect(_ready, weak=False)
'''


# --- the project and the workers --------------------------------------------------------------


#: The I/O-bound task of each side: 10 ms of waiting, as each library waits best.
IO_TASKS = {
    "caraway": """
import asyncio


@app.task(name="bench.io", shared=False)
async def io():
    await asyncio.sleep(0.01)
    _bump()
""",
    "celery": """
@app.task(name="bench.io", shared=False)
def io():
    time.sleep(0.01)  # cooperative under -P gevent (monkey-patched)
    _bump()
""",
}


def write_project(folder: Path) -> Path:
    for lib in ("celery", "caraway"):
        source = TASKS_SOURCE.format(
            lib=lib, queue=QUEUE, done=DONE_KEY, ready=READY_KEY, io_task=IO_TASKS[lib]
        )
        (folder / f"bench_{lib}.py").write_text(source)
    return folder


@dataclass
class Setup:
    project: Path
    broker: str

    def env(self, backend: bool = False, **extra: str) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(self.project), "BENCH_BROKER": self.broker}
        env["BENCH_BACKEND"] = self.broker if backend else ""
        env.update(extra)
        return env


QUIET = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
#: Celery's best pool for waiting: gevent (``pip install -e ".[bench]"``), else threads.
CELERY_IO_POOL = "gevent" if importlib.util.find_spec("gevent") else "threads"


@dataclass
class Profile:
    """A worker command line for each side, and how many messages it reserves per slot."""

    args: dict[str, list[str]]
    prefetch: dict[str, str]


PROFILES = {
    # Each side's best single-process worker (chosen by trying the options: caraway's solo
    # pool beat threads -c 1/2/4 here; Celery's threads pool was slower than solo). Celery's
    # solo pool gains little past prefetch 16; caraway fetches a window in one Lua call.
    "solo": Profile(
        {"celery": ["-P", "solo", *QUIET], "caraway": ["-P", "solo"]},
        {"celery": "16", "caraway": "64"},
    ),
    # Two child processes under one supervisor, on both sides.
    "prefork": Profile(
        {"celery": ["-P", "prefork", "-c", "2", *QUIET], "caraway": ["-P", "prefork", "-c", "2"]},
        {"celery": "16", "caraway": "64"},
    ),
    # I/O-bound tasks, 500 at once: caraway's event loop against Celery's gevent (or threads).
    "io": Profile(
        {
            "celery": ["-P", CELERY_IO_POOL, "-c", "500", *QUIET],
            "caraway": ["-P", "asyncio", "-c", "500"],
        },
        {"celery": "4", "caraway": "4"},
    ),
}


def die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL when the harness dies, so none outlives it."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_worker(
    setup: Setup, lib: str, backend: bool, log: Path, profile: str = "solo"
) -> subprocess.Popen[bytes]:
    form = PROFILES[profile]
    args = [str(BIN / lib), "-A", f"bench_{lib}", "worker", *form.args[lib], "-Q", QUEUE]
    args += ["-l", "WARNING", "-n", f"{lib}-{os.urandom(3).hex()}@%h"]
    env = setup.env(backend, BENCH_WORKER="1", BENCH_PREFETCH=form.prefetch[lib])
    with open(log, "ab") as out:
        return subprocess.Popen(
            args, cwd=setup.project, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL: measurements are taken by then, and a warm shutdown of an idle Celery worker
    takes seconds that would only lengthen the run."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a live process, in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, procs: Sequence[Any]
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a worker exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)  # coarse: on 2 cores a busy poll would slow the workers it times


# --- cases ----------------------------------------------------------------------------------------


def run_child(setup: Setup, *args: str, backend: bool = False) -> dict[str, Any]:
    """A client case in a fresh interpreter, so neither library warms the other's caches."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], env=setup.env(backend),
        cwd=setup.project, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def case_enqueue(setup: Setup, client: Any, lib: str, mode: str, n: int) -> float:
    client.flushdb()
    out = run_child(setup, "enqueue", lib, mode, str(n))
    queued = client.llen(QUEUE)
    if queued != out["sent"]:
        raise RuntimeError(f"{lib} {mode}: {queued} queued, {out['sent']} sent")
    if "cpu_seconds" in out:
        NOTES.append(
            f"{lib}: {out['cpu_seconds'] / out['done'] * 1e6:.0f} µs of producer-process CPU"
            f" per confirmed delay() ({mode})"
        )
    return float(out.get("done", n)) / float(out["seconds"])


def case_bare_lpush(client: Any, n: int) -> float:
    """The ceiling for confirmed one-at-a-time sends here: redis-py LPUSHes of a task-sized
    value, with no queue library around them."""
    client.flushdb()
    payload = b"x" * 900
    started = time.perf_counter()
    for _ in range(n):
        client.lpush(QUEUE, payload)
    return n / (time.perf_counter() - started)


def case_bare_lpush_threads(client: Any, n: int, threads: int = PRODUCER_THREADS) -> float:
    """The bare loop from ``threads`` threads sharing one redis-py client (its pool gives
    each thread a connection): what plain redis-py does in the many-producers shape."""
    client.flushdb()
    payload = b"x" * 900
    per_thread = max(1, n // threads)
    start = threading.Barrier(threads + 1)

    def produce() -> None:
        start.wait()
        for _ in range(per_thread):
            client.lpush(QUEUE, payload)

    workers = [threading.Thread(target=produce) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return per_thread * threads / (time.perf_counter() - started)


def stage(setup: Setup, client: Any, n: int, task: str = "noop") -> None:
    """N messages of ``task``, published by caraway's bulk form and moved aside until timed."""
    client.flushdb()
    out = run_child(setup, "enqueue", "caraway", "bulk", str(n), "--no-warmup", f"--task={task}")
    if client.llen(QUEUE) != n or out["sent"] != n:
        raise RuntimeError("staging failed")
    client.rename(QUEUE, HOLD)


def case_drain(
    setup: Setup, client: Any, lib: str, n: int, processes: int, logs: Path,
    profile: str = "solo", task: str = "noop",
) -> tuple[float, float]:  # fmt: skip
    """(tasks per second, peak RSS MiB of the first worker)."""
    stage(setup, client, n, task)
    log = logs / f"drain-{profile}-{lib}.log"
    procs = [start_worker(setup, lib, False, log, profile) for _ in range(processes)]
    try:
        wait_for(lambda: int(client.get(READY_KEY) or 0) >= processes, 60, "ready", procs)
        time.sleep(0.3)  # from "ready" to the first poll
        started = time.perf_counter()
        client.rename(HOLD, QUEUE)
        wait_for(lambda: int(client.get(DONE_KEY) or 0) >= n, 900, "the drain", procs)
        seconds = time.perf_counter() - started
        rss = peak_rss_mb(procs[0].pid)
    finally:
        for proc in procs:
            stop_worker(proc)
    if client.llen(QUEUE):
        raise RuntimeError(f"{lib}: messages left in the queue")
    return n / seconds, rss


def case_roundtrip(setup: Setup, client: Any, lib: str, n: int, logs: Path) -> dict[str, float]:
    client.flushdb()
    proc = start_worker(setup, lib, True, logs / f"roundtrip-{lib}.log")
    try:
        wait_for(lambda: int(client.get(READY_KEY) or 0) >= 1, 60, "ready", [proc])
        return run_child(setup, "roundtrip", lib, "get", str(n), backend=True)
    finally:
        stop_worker(proc)


def case_group(setup: Setup, client: Any, lib: str, n: int) -> float:
    """Seconds to dispatch ``group(noop.s() for _ in range(n))``; all n must be queued."""
    client.flushdb()
    out = run_child(setup, "group", lib, "dispatch", str(n))
    if client.llen(QUEUE) != n:
        raise RuntimeError(f"{lib} group: {client.llen(QUEUE)} queued, {n} sent")
    return float(out["seconds"])


def case_chord(setup: Setup, client: Any, lib: str, n: int, logs: Path) -> float:
    """Seconds from dispatching an n-task chord (results on) until its body's result is in."""
    client.flushdb()
    proc = start_worker(setup, lib, True, logs / f"chord-{lib}.log")
    try:
        wait_for(lambda: int(client.get(READY_KEY) or 0) >= 1, 60, "ready", [proc])
        return float(run_child(setup, "chord", lib, "wall", str(n), backend=True)["seconds"])
    finally:
        stop_worker(proc)


# --- the client side, in a child process ----------------------------------------------------------


def child(argv: Sequence[str]) -> None:
    case, lib, mode, n_text, *rest = argv
    n = int(n_text)
    module = __import__(f"bench_{lib}")
    app = module.app
    if case == "enqueue":
        task = next((a.split("=", 1)[1] for a in rest if a.startswith("--task=")), "noop")
        warmup = "--no-warmup" not in rest
        print(json.dumps(child_enqueue(app, module, lib, mode, n, warmup, task)))
    elif case == "roundtrip":
        print(json.dumps(child_roundtrip(module, n)))
    elif case in {"group", "chord"}:
        print(json.dumps(child_canvas(module, lib, case, n)))
    app.close()


def child_enqueue(
    app: Any, module: Any, lib: str, mode: str, n: int, warmup: bool, task: str = "noop"
) -> Any:
    noop = getattr(module, task)
    sent = 0
    if warmup:  # connections and first-use caches, outside the clock
        for _ in range(50):
            noop.delay()
        sent += 50
    if mode == "threads":
        return child_enqueue_threads(noop, n, sent)
    started = time.perf_counter()
    if mode == "bulk":
        from caraway.calling import send_batch

        send_batch(app, [noop.s() for _ in range(n)])
    else:
        for _ in range(n):
            noop.delay()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "sent": sent + n}


def child_enqueue_threads(noop: Any, n: int, sent: int) -> dict[str, float]:
    """``PRODUCER_THREADS`` threads, each making its share of the ``n`` confirmed
    ``delay()`` calls; the clock runs from their common start until the last returned."""
    per_thread = max(1, n // PRODUCER_THREADS)
    start = threading.Barrier(PRODUCER_THREADS + 1)
    failures: list[BaseException] = []

    def produce() -> None:
        noop.delay()  # this thread's first call (a connection, for Celery) off the clock
        start.wait()
        try:
            for _ in range(per_thread):
                noop.delay()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=produce) for _ in range(PRODUCER_THREADS)]
    for thread in threads:
        thread.start()
    start.wait()
    started, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.join()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if failures:
        raise failures[0]
    done = per_thread * PRODUCER_THREADS
    return {"seconds": seconds, "sent": sent + PRODUCER_THREADS + done, "done": done,
            "cpu_seconds": cpu}  # fmt: skip


def child_canvas(module: Any, lib: str, case: str, n: int) -> dict[str, float]:
    canvas = __import__(lib)
    started = time.perf_counter()
    if case == "group":
        canvas.group(module.noop.s() for _ in range(n)).apply_async()
    else:
        result = canvas.chord(module.echo.s(i) for i in range(n))(module.total.s())
        if result.get(timeout=900) != n:
            raise RuntimeError("the chord body saw the wrong number of results")
    return {"seconds": time.perf_counter() - started}


def child_roundtrip(module: Any, n: int) -> dict[str, float]:
    echo = module.echo
    for i in range(20):
        echo.delay(i).get(timeout=10)
    samples = []
    for i in range(n):
        started = time.perf_counter()
        if echo.delay(i).get(timeout=10) != i:
            raise RuntimeError("wrong result")
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50": statistics.median(samples),
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
    }


# --- the table --------------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    caraway: float
    celery: float | None
    unit: str
    higher_is_better: bool

    def ratio(self) -> float | None:
        if self.celery is None or not self.caraway or not self.celery:
            return None
        return self.caraway / self.celery if self.higher_is_better else self.celery / self.caraway


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value:.2f} {unit}"


def table(rows: Sequence[Row]) -> str:
    head = ("case", "caraway", "celery", "caraway advantage")
    body = []
    for row in rows:
        ratio = row.ratio()
        body.append(
            (row.label, fmt(row.caraway, row.unit), fmt(row.celery, row.unit),
             "-" if ratio is None else f"{ratio:.1f}x")
        )  # fmt: skip
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(head, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def targets(results: dict[str, Row]) -> list[tuple[str, bool]]:
    """The issue's targets, each with whether this run met it."""

    def ratio(key: str) -> float:
        return results[key].ratio() or 0.0

    return [
        ("drain per process >= 20x Celery's", ratio("drain1") >= 20),
        ("sequential delay() >= 5x Celery's", ratio("delay") >= 5),
        (
            "one-thread delay() >= 90% of the bare LPUSH loop",
            results["delay"].caraway >= 0.9 * results["bare"].caraway,
        ),
        (
            f"delay() from {PRODUCER_THREADS} threads >= 30,000/s",
            results["threads"].caraway >= 30_000,
        ),
        (f"delay() from {PRODUCER_THREADS} threads >= 5x Celery's", ratio("threads") >= 5),
        ("bulk publish >= 50,000/s", results["bulk"].caraway >= 50_000),
        ("round trip p50 < 1 ms", results["p50"].caraway < 1.0),
        ("round trip p99 < 3 ms", results["p99"].caraway < 3.0),
        ("worker RSS <= Celery's", results["rss"].caraway <= (results["rss"].celery or 0)),
        ("group dispatch >= 10x faster than Celery's", ratio("group") >= 10),
        ("chord until body >= 10x faster than Celery's", ratio("chord") >= 10),
    ]


def versions(client: Any) -> str:
    import celery

    import caraway

    redis_version = client.info("server")["redis_version"]
    return (
        f"caraway {caraway.__version__}, celery {celery.__version__}, Python "
        f"{sys.version.split()[0]}, Redis {redis_version}, {os.cpu_count()} CPUs"
    )


def open_redis(url: str) -> Any | None:
    """A client of the benchmark's database, or ``None`` (said on stderr) when Redis is away."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        print(f"Redis is not reachable at {url}: {exc}", file=sys.stderr)
        client.close()
        return None
    return client


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="messages per case (10000)")
    parser.add_argument("--roundtrips", type=int, default=500, help="sequential get()s (500)")
    parser.add_argument("--quick", action="store_true", help="a small run (n=500, 50 trips)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server URL")
    parser.add_argument("--db", type=int, default=14, help="database to use and flush (14)")
    parser.add_argument(
        "--realistic", action="store_true",
        help="only the realistic-task drain of bench/realistic.py (solo, 2 x solo, prefork)",
    )  # fmt: skip
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    if args.realistic:
        import realistic

        quick = ["--n", str(min(args.n, 500)), "--passes", "1"] if args.quick else []
        where = ["--redis", args.redis, "--db", str(args.db)]
        return realistic.main(["--n", str(args.n), *quick, *where])
    if args.quick:
        args.n, args.roundtrips = min(args.n, 500), min(args.roundtrips, 50)

    broker = f"{args.redis.rstrip('/')}/{args.db}"
    client = open_redis(broker)
    if client is None:
        return 2
    folder = Path(tempfile.mkdtemp(prefix="caraway-bench-"))
    setup = Setup(write_project(folder), broker)
    n = args.n
    print(f"# {versions(client)}; n={n}, round trips={args.roundtrips}", flush=True)
    try:
        rows = measure(setup, client, n, args.roundtrips, folder)
    except Exception:
        print(f"worker logs kept in {folder}", file=sys.stderr)
        raise
    finally:
        client.flushdb()
        client.close()
    print(table(list(rows.values())))
    print()
    for note in NOTES:
        print(f"note: {note}")
    for label, met in targets(rows):
        print(f"{'met    ' if met else 'NOT met'}  {label}")
    shutil.rmtree(folder, ignore_errors=True)
    return 0


def measure(setup: Setup, client: Any, n: int, trips: int, logs: Path) -> dict[str, Row]:
    def both(fun: Callable[[str], Any]) -> tuple[Any, Any]:
        return fun("caraway"), fun("celery")

    def step(label: str) -> None:
        print(f"... {label}", file=sys.stderr, flush=True)

    step("enqueue")
    bare = case_bare_lpush(client, n)
    delay = both(lambda lib: case_enqueue(setup, client, lib, "delay", n))
    step(f"enqueue from {PRODUCER_THREADS} threads")
    bare_threads = case_bare_lpush_threads(client, n)
    threads = both(lambda lib: case_enqueue(setup, client, lib, "threads", n))
    bulk = case_enqueue(setup, client, "caraway", "bulk", n)
    step("drain, one process")
    drain1 = both(lambda lib: case_drain(setup, client, lib, n, 1, logs))
    step("drain, two processes")
    drain2 = both(lambda lib: case_drain(setup, client, lib, n, 2, logs))
    step("drain, prefork -c 2")
    prefork = both(lambda lib: case_drain(setup, client, lib, n, 1, logs, "prefork"))
    step(f"drain, I/O-bound (asyncio vs Celery's {CELERY_IO_POOL})")
    io = both(lambda lib: case_drain(setup, client, lib, n, 1, logs, "io", "io"))
    step("round trip")
    trip = both(lambda lib: case_roundtrip(setup, client, lib, trips, logs))
    step("canvas")
    grouped = both(lambda lib: case_group(setup, client, lib, n))
    chorded = both(lambda lib: case_chord(setup, client, lib, n, logs))
    return {
        "bare": Row("baseline: bare redis-py LPUSH round trips", bare, None, "/s", True),
        "delay": Row("enqueue: delay()", delay[0], delay[1], "/s", True),
        "bare_threads": Row(
            f"baseline: bare redis-py LPUSH from {PRODUCER_THREADS} threads",
            bare_threads,
            None,
            "/s",
            True,
        ),
        "threads": Row(
            f"enqueue: delay() from {PRODUCER_THREADS} threads, each confirmed",
            threads[0],
            threads[1],
            "/s",
            True,
        ),
        "bulk": Row("enqueue: caraway send_batch vs Celery delay()", bulk, delay[1], "/s", True),
        "drain1": Row("drain: 1 worker process", drain1[0][0], drain1[1][0], "/s", True),
        "drain2": Row("drain: 2 worker processes", drain2[0][0], drain2[1][0], "/s", True),
        "prefork": Row(
            "drain: prefork -c 2 (one supervisor)", prefork[0][0], prefork[1][0], "/s", True
        ),
        "io": Row(
            f"drain: 10 ms I/O tasks, asyncio -c 500 vs {CELERY_IO_POOL} -c 500",
            io[0][0],
            io[1][0],
            "/s",
            True,
        ),
        "p50": Row("round trip delay().get() p50", trip[0]["p50"], trip[1]["p50"], "ms", False),
        "p99": Row("round trip delay().get() p99", trip[0]["p99"], trip[1]["p99"], "ms", False),
        "rss": Row("worker peak RSS (1-process drain)", drain1[0][1], drain1[1][1], "MiB", False),
        "group": Row(f"group of {n:,}: dispatch time", grouped[0], grouped[1], "s", False),
        "chord": Row(f"chord of {n:,}: until the body ran", chorded[0], chorded[1], "s", False),
    }


if __name__ == "__main__":
    sys.exit(main())
