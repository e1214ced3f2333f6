"""Draining realistic tasks: each does one Redis round trip (``INCR``), default pools.

    python bench/realistic.py [--n 10000] [--passes 3] [--libs caraway,celery] [--db 14]

The no-op drain of ``bench/run.py`` measures the worker alone; a task that talks to Redis
once is the smallest one users run, and there the worker's own cost per task shows against
the task's. Each library runs with its defaults (prefetch multiplier 4, results off) in three
forms: one ``-P solo`` process, two separate ``-P solo`` processes, and the default pool,
``-P prefork -c 2``. Passes are interleaved (every form once, then again) and the table
shows each form's median, with its ratio to one solo process of the same library: on a shared
machine only ratios within one run compare. ``uptime`` is printed before and after.

The clock is ``bench/run.py``'s: messages staged and moved aside, workers ready, then timed
from the ``RENAME`` back into their queue until the ``INCR`` counter reaches N. The same
database rules hold (``--db`` only, flushed before each case and at the end).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import run
from run import PROFILES, QUIET, Profile, Setup

#: The realistic task of both sides: one round trip on a per-process client.
REALISTIC_TASK = '''

_incr_client = [0, None]  # (pid, client): a pool child opens its own connection


@app.task(name="bench.incr", shared=False)
def incr():
    """One Redis round trip: the smallest realistic task."""
    if _incr_client[0] != os.getpid():
        _incr_client[:] = [os.getpid(), _client()]
    _incr_client[1].incr("{done}")
'''

#: Each library's defaults: prefetch multiplier 4 (the default of both), no tuning flags
#: but Celery's gossip/mingle/heartbeat off (they cost nothing during a drain).
DEFAULTS = {
    "default-solo": Profile(
        {"celery": ["-P", "solo", *QUIET], "caraway": ["-P", "solo"]},
        {"celery": "4", "caraway": "4"},
    ),
    "default-prefork": Profile(
        {"celery": ["-P", "prefork", "-c", "2", *QUIET], "caraway": ["-P", "prefork", "-c", "2"]},
        {"celery": "4", "caraway": "4"},
    ),
}
#: (label, profile, worker processes), in the order each pass runs them.
FORMS = [
    ("one solo process", "default-solo", 1),
    ("two solo processes", "default-solo", 2),
    ("prefork -c 2", "default-prefork", 1),
]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def write_project(folder: Path) -> Path:
    run.write_project(folder)
    for lib in ("celery", "caraway"):
        with open(folder / f"bench_{lib}.py", "a") as source:
            source.write(REALISTIC_TASK.format(done=run.DONE_KEY))
    return folder


def measure(
    setup: Setup, client: Any, n: int, passes: int, libs: Sequence[str], logs: Path
) -> dict[tuple[str, str], list[float]]:
    """Rates per (lib, form label), one per pass; passes interleave every form."""
    PROFILES.update(DEFAULTS)
    rates: dict[tuple[str, str], list[float]] = {}
    for number in range(1, passes + 1):
        for lib in libs:
            for label, profile, processes in FORMS:
                print(f"... pass {number}: {lib} {label}", file=sys.stderr, flush=True)
                rate, _ = run.case_drain(
                    setup, client, lib, n, processes, logs, profile=profile, task="incr"
                )
                rates.setdefault((lib, label), []).append(rate)
    return rates


def table(rates: dict[tuple[str, str], list[float]], libs: Sequence[str]) -> str:
    lines = ["| form | " + " | ".join(f"{lib} | x solo" for lib in libs) + " |"]
    lines.append("|---|" + "---|---|" * len(libs))
    for label, _, _ in FORMS:
        cells = []
        for lib in libs:
            median = statistics.median(rates[(lib, label)])
            solo = statistics.median(rates[(lib, FORMS[0][0])])
            cells.append(f"{median:,.0f}/s | {median / solo:.2f}x")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for (lib, label), values in rates.items():
        each = ", ".join(f"{value:,.0f}" for value in values)
        lines.append(f"passes: {lib} {label}: {each}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="tasks per drain (10000)")
    parser.add_argument("--passes", type=int, default=3, help="interleaved passes (3)")
    parser.add_argument("--libs", default="caraway,celery", help="caraway,celery")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server URL")
    parser.add_argument("--db", type=int, default=14, help="database to use and flush (14)")
    args = parser.parse_args(argv)
    libs = [lib for lib in args.libs.split(",") if lib]

    import redis

    broker = f"{args.redis.rstrip('/')}/{args.db}"
    client = redis.Redis.from_url(broker)
    folder = Path(tempfile.mkdtemp(prefix="caraway-bench-"))
    setup = Setup(write_project(folder), broker)
    print(f"# {run.versions(client)}; n={args.n}, passes={args.passes}", flush=True)
    print(f"# before: {uptime()}", flush=True)
    try:
        rates = measure(setup, client, args.n, args.passes, libs, folder)
    except Exception:
        print(f"worker logs kept in {folder}", file=sys.stderr)
        raise
    finally:
        client.flushdb()
        client.close()
    print(f"# after:  {uptime()}")
    print(table(rates, libs))
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
