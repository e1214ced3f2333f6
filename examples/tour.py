"""A tour of caraway's Celery-style API, run against a real worker.

No broker is configured, so the app uses the embedded SQLite file (see the README for where it
lives). In one terminal start a worker from this folder:

    caraway -A tour worker -l INFO -Q celery,reports

and in another run the client:

    python tour.py
"""

from __future__ import annotations

import sys
import time

from caraway import Celery, shared_task
from caraway.exceptions import TaskRevokedError

app = Celery("tour")
app.conf.update(task_routes={"tour.render_report": {"queue": "reports"}}, result_expires=3600)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@shared_task(rate_limit="100/s")
def multiply(x: int, y: int) -> int:
    return x * y


@app.task
def divide(x: float, y: float) -> float:
    return x / y


@app.task
def render_report(name: str) -> str:
    return f"report {name!r} rendered"


@app.task(bind=True, max_retries=3, default_retry_delay=0.2)
def flaky(self, fail_times: int) -> str:  # type: ignore[no-untyped-def]
    """Fails ``fail_times`` times, then succeeds: the worker retries it."""
    if self.request.retries < fail_times:
        raise self.retry(exc=ConnectionError("upstream not ready"))
    return f"succeeded after {self.request.retries} retries"


@app.task(bind=True, track_started=True)
def count_to(self, n: int) -> int:  # type: ignore[no-untyped-def]
    """Reports its progress with a custom state while it runs."""
    for i in range(1, n + 1):
        self.update_state(state="PROGRESS", meta={"current": i, "total": n})
        time.sleep(0.1)
    return n


def check(label: str, got: object, expected: object) -> bool:
    ok = got == expected
    print(f"{'ok ' if ok else 'BAD'} {label}: {got!r}")
    return ok


def main() -> int:
    results = []
    results.append(check("add.delay(2, 3)", add.delay(2, 3).get(timeout=10), 5))

    later = multiply.apply_async((6, 7), countdown=1)
    results.append(check("countdown=1: state right away", later.state, "PENDING"))
    results.append(check("countdown=1: result", later.get(timeout=10), 42))

    report = render_report.delay("weekly")
    results.append(check("routed to 'reports'", report.get(timeout=10), "report 'weekly' rendered"))

    urgent = add.apply_async((100, 1), priority=9, queue="celery")
    same = app.AsyncResult(urgent.id)
    results.append(check("AsyncResult by id", same.get(timeout=10), 101))

    expired = add.apply_async((1, 1), expires=0.0)
    try:
        expired.get(timeout=10)
        results.append(check("expires=0 raises", "no error", "TaskRevokedError"))
    except TaskRevokedError:
        results.append(check("expires=0 is revoked", expired.state, "REVOKED"))

    try:
        divide.delay(1, 0).get(timeout=10)
        results.append(check("divide by zero raises", "no error", "ZeroDivisionError"))
    except ZeroDivisionError as exc:
        results.append(check("divide by zero re-raised", type(exc).__name__, "ZeroDivisionError"))

    results.append(check("retry", flaky.delay(2).get(timeout=10), "succeeded after 2 retries"))

    progress = count_to.delay(5)
    seen = set()
    deadline = time.monotonic() + 10
    while not progress.ready() and time.monotonic() < deadline:
        if progress.state == "PROGRESS":
            seen.add(progress.info["current"])
        time.sleep(0.02)
    print(f"    progress states seen: {sorted(seen)}")
    results.append(check("update_state PROGRESS seen", bool(seen), True))
    results.append(check("count_to(5)", progress.get(timeout=10), 5))

    print(f"{sum(results)} of {len(results)} checks passed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
