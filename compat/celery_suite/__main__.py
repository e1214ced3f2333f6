"""``python -m compat.celery_suite --broker redis|rabbitmq [FILE ...]``: run and tally."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from compat.celery_suite.sdist import CACHE, VERSION, sdist_root

REPO = Path(__file__).resolve().parents[2]
REDIS = "redis://127.0.0.1:6379"
#: Files of ``t/integration`` run by default (the others need Celery internals or services
#: caraway does not talk to; see ``exclusions.py``).
DEFAULT_FILES = ("test_tasks.py", "test_canvas.py", "test_inspect.py", "test_group_chains.py",
                 "test_loader.py")  # fmt: skip
COLUMNS = ("collected", "passed", "failed", "excluded", "skipped")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    root = sdist_root()
    with _redis(args.redis_db) as (redis_url, port), _broker_url(args.broker, redis_url) as broker:
        env = {
            **os.environ,
            "TEST_BROKER": broker,
            "TEST_BACKEND": redis_url,
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(port),
            "PYTHONPATH": os.pathsep.join([str(REPO), str(root)]),
            "CELERY_SUITE_TEST_TIMEOUT": str(args.test_timeout),
        }
        _flush_redis_db(redis_url)
        tally = _run_pytest(root, args.files, args.pytest_args, env)
    summary = {"celery": VERSION, "broker": args.broker, "files": tally}
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(render(tally))
    print(f"summary written to {args.summary}")
    return 0 if tally else 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m compat.celery_suite", description=__doc__)
    parser.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    parser.add_argument(
        "files",
        nargs="*",
        default=list(DEFAULT_FILES),
        help="files of t/integration, may end in ::test (default: %(default)s)",
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        default=None,
        help="use this database of the Redis on 6379 instead of a private server",
    )
    parser.add_argument("--summary", type=Path, default=None, help="JSON summary path")
    parser.add_argument("--test-timeout", type=float, default=60.0, help="seconds per test")
    parser.add_argument("--pytest-args", default="", help="more pytest arguments: '-x -k chord'")
    args = parser.parse_args(argv)
    if args.summary is None:
        args.summary = CACHE / f"summary-{args.broker}.json"
    return args


@contextmanager
def _redis(db: int | None) -> Iterator[tuple[str, int]]:
    """A ``redis-server`` of the run's own (nothing shared: Celery's tests use fixed keys and
    count pub/sub channels), or with ``--redis-db`` that database of the machine's Redis."""
    if db is not None:
        yield f"{REDIS}/{db}", 6379
        return
    _team_helpers()
    # Lazy, tests/private_redis.py is the team's helper and lives outside any package.
    from private_redis import PrivateRedis  # type: ignore[import-not-found]

    server = PrivateRedis()
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0", server.port
    finally:
        server.kill()


def _team_helpers() -> None:
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))


@contextmanager
def _broker_url(broker: str, redis_url: str) -> Iterator[str]:
    if broker == "redis":
        yield redis_url
        return
    _team_helpers()
    # Lazy, tests/services.py is the team's vhost helper and lives outside any package.
    from services import rabbitmq_vhost  # type: ignore[import-not-found]

    with rabbitmq_vhost("celery-suite") as url:
        yield url


def _flush_redis_db(url: str) -> None:
    # Lazy, only the Redis-backed runs need the client.
    import redis

    redis.Redis.from_url(url).flushdb()


def _run_pytest(
    root: Path, files: list[str], extra: str, env: dict[str, str]
) -> dict[str, dict[str, int]]:
    with tempfile.TemporaryDirectory() as folder:
        tally_file = Path(folder) / "tally.json"
        command = [sys.executable, "-m", "pytest",
                   *(f"t/integration/{name}" for name in files),
                   "-p", "compat.celery_suite.plugin", "-p", "no:cacheprovider",
                   "-p", "no:randomly", "-q", "-rfE", "--no-header",
                   *shlex.split(extra)]  # fmt: skip
        subprocess.run(command, cwd=root, env={**env, "CELERY_SUITE_TALLY": str(tally_file)},
                       check=False)  # fmt: skip
        if not tally_file.is_file():
            return {}
        tally: dict[str, dict[str, int]] = json.loads(tally_file.read_text())
        return tally


def render(tally: dict[str, dict[str, int]]) -> str:
    """One row per file and a total: collected / passed / failed / excluded / skipped."""
    rows: list[tuple[str, ...]] = [("file", *COLUMNS)]
    totals = dict.fromkeys(COLUMNS, 0)
    for name in sorted(tally):
        rows.append((name, *(str(tally[name].get(c, 0)) for c in COLUMNS)))
        for column in COLUMNS:
            totals[column] += tally[name].get(column, 0)
    rows.append(("total", *(str(totals[c]) for c in COLUMNS)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                  for i, (cell, width) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
