"""Where a worker's CPU goes per realistic task: per process, per supervisor thread, by stage.

    python bench/prefork_profile.py [--pool prefork|solo] [--n 12000] [--spy] [--db 14]

One caraway worker (each library default, as ``bench/realistic.py`` runs it) drains N tasks
that each make one Redis round trip. Printed: the rate, the CPU each process spent per task
(supervisor, fork server, children), the supervisor's CPU per task by thread, and with
``--spy`` (``py-spy``, in the bench extra; needs ptrace rights) the supervisor's CPU per task
by stage: samples taken while a thread holds the GIL, grouped by the stage their stack is
in, scaled to the supervisor's measured CPU per task.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import realistic
import run

#: (label, functions any of which puts a stack in the stage), first match wins.
STAGES = [
    ("fetch (Lua script, BRPOP)", ["RedisBroker.fetch"]),
    ("submit to the pool", ["Consumer._schedule"]),
    ("decode, Job, received bookkeeping", ["Consumer.on_delivery"]),
    ("begin: revoke check, early ack", ["Consumer._begin"]),
    ("hand-off: pickle + pipe write", ["Channel.send", "_ConnectionBase.send"]),
    ("hand-off: wait, read, unpickle the reply", ["PreforkPool._wait_for_reply"]),
    ("finish: events, state, late ack, slot", ["Consumer._finish", "Consumer._done"]),
    ("consumer loop, pool-thread loop, wakeups", ["Consumer.run", "ThreadPool._loop"]),
]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat_path: str) -> float:
    """utime + stime of a process or thread, from its /proc stat file."""
    with open(stat_path) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def family(pid: int) -> list[int]:
    """``pid`` and its descendants (the fork server and the children under it)."""
    found = [pid]
    for parent in found:
        out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
        found += [int(child) for child in out.stdout.split()]
    return found


def threads(pid: int) -> dict[str, float]:
    task = f"/proc/{pid}/task"
    return {tid: cpu_seconds(f"{task}/{tid}/stat") for tid in os.listdir(task)}


def stages(raw: Path, cpu_per_task: float) -> list[tuple[str, float]]:
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        names = [frame.split(" (")[0] for frame in stack.split(";")]
        label = next((lb for lb, keys in STAGES if any(k in names for k in keys)), "other")
        counts[label] += int(number)
    total = sum(counts.values()) or 1
    labels = [label for label, _ in STAGES] + ["other"]
    return [(label, counts[label] / total * cpu_per_task) for label in labels]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", choices=["prefork", "solo"], default="prefork")
    parser.add_argument("--n", type=int, default=12_000, help="tasks (12000)")
    parser.add_argument("--spy", action="store_true", help="py-spy the supervisor by stage")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server URL")
    parser.add_argument("--db", type=int, default=14, help="database to use and flush (14)")
    args = parser.parse_args(argv)

    import redis

    broker = f"{args.redis.rstrip('/')}/{args.db}"
    client = redis.Redis.from_url(broker)
    folder = Path(tempfile.mkdtemp(prefix="caraway-profile-"))
    setup = run.Setup(realistic.write_project(folder), broker)
    run.PROFILES.update(realistic.DEFAULTS)
    raw = folder / "supervisor.txt"
    run.stage(setup, client, args.n, "incr")
    proc = run.start_worker(setup, "caraway", False, folder / "worker.log", f"default-{args.pool}")
    try:
        run.wait_for(lambda: int(client.get(run.READY_KEY) or 0) >= 1, 60, "ready", [proc])
        time.sleep(0.5)
        pids = family(proc.pid)
        before = {pid: cpu_seconds(f"/proc/{pid}/stat") for pid in pids}
        before_threads = threads(proc.pid)
        started = time.perf_counter()
        client.rename(run.HOLD, run.QUEUE)
        spy = None
        if args.spy:
            spy = subprocess.Popen(
                [str(run.BIN / "py-spy"), "record", "-p", str(proc.pid), "-r", "500", "-d", "4",
                 "-f", "raw", "-o", str(raw), "--threads", "--gil", "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        run.wait_for(lambda: int(client.get(run.DONE_KEY) or 0) >= args.n, 600, "drain", [proc])
        seconds = time.perf_counter() - started
        per_task = {pid: (cpu_seconds(f"/proc/{pid}/stat") - before[pid]) / args.n for pid in pids}
        after_threads = threads(proc.pid)
        if spy is not None:
            spy.wait(30)
    finally:
        run.stop_worker(proc)
        client.flushdb()
        client.close()
    print(f"{args.pool}: {args.n / seconds:,.0f} tasks/s")
    for pid, cpu in per_task.items():
        role = "supervisor" if pid == proc.pid else "child or fork server"
        print(f"  process {pid} ({role}): {cpu * 1e6:.0f} µs CPU per task")
    for tid, cpu in after_threads.items():
        spent = (cpu - before_threads.get(tid, 0.0)) / args.n * 1e6
        if spent >= 1:
            print(f"  supervisor thread {tid}: {spent:.0f} µs CPU per task")
    if args.spy and raw.exists():
        for label, micros in stages(raw, per_task[proc.pid] * 1e6):
            print(f"| {label} | {micros:.0f} µs |")
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
