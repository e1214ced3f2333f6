"""``caraway demo``: a real worker, a real workload, a progress bar and a summary."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from caraway.cli.base import state_of

if TYPE_CHECKING:
    from caraway.demo import DemoRun, Summary

DEFAULT_TASKS = 2000
DEFAULT_CONCURRENCY = 4
DEMO_FILENAME = "caraway-demo.sqlite3"


@click.command()
@click.option(
    "--tasks",
    "count",
    type=click.IntRange(min=1),
    default=DEFAULT_TASKS,
    show_default=True,
    help="How many tasks to send.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="The worker's concurrency.",
)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["threads", "solo"]),
    default="threads",
    show_default=True,
    help="The worker's pool.",
)
@click.option(
    "--path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file for messages and results (default: a new one in a temporary folder).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Give up waiting for results after this many seconds.",
)
@click.pass_context
def demo(
    ctx: click.Context, count: int, concurrency: int, pool: str, path: Path | None, timeout: float
) -> None:
    """Run a worker on the embedded SQLite broker and push a workload through it.

    Starts `caraway -A caraway.demo worker` as a subprocess, sends COUNT tasks (fast ones,
    sleepy ones, ones that fail once and retry, ones that report progress; some with a
    countdown or a priority), shows progress as results arrive, prints a summary and
    stops the worker with SIGTERM. Exits 1 if any task did not succeed as expected.
    """
    # Imported here: the demo module creates its app, which must not become current for
    # every other command.
    from caraway import demo as demo_app

    state = state_of(ctx)
    if state.app_given or state.broker or state.result_backend or state.config:
        click.echo("Note: demo uses its own app and SQLite file; -A/-b/--config are ignored.")
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="caraway-demo-")) / DEMO_FILENAME
    run = demo_app.DemoRun(path, concurrency, pool)
    summary = demo_app.Summary(total=count)
    calls = demo_app.workload(count)
    click.echo(f"Worker: {' '.join(['python', *run.worker_command()[1:]])}")
    try:
        run.start_worker()
        began = time.monotonic()
        with click.progressbar(length=count, label=f"Running {count} tasks", show_pos=True) as bar:
            run.drive(calls, summary, began + timeout, bar.update)
        summary.wall_seconds = time.monotonic() - began
    except demo_app.WorkerDied as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot run the demo in {path.parent}: {exc}") from exc
    finally:
        summary.worker_exit = run.stop_worker()
    _print_summary(summary, run)
    if not summary.ok:
        raise click.exceptions.Exit(1)


def _print_summary(summary: Summary, run: DemoRun) -> None:
    finished = sum(summary.finished.values())
    rate = finished / summary.wall_seconds if summary.wall_seconds else 0.0
    states = ", ".join(f"{name} {n}" for name, n in summary.finished.most_common()) or "none"
    on_the_way = ", ".join(f"{name} {n}" for name, n in summary.seen_on_the_way.most_common())
    lines = [
        "",
        f"Tasks done:    {finished} of {summary.total}",
        f"States:        {states}",
        f"Caught midway: {on_the_way or 'none'} (states seen while polling)",
        f"Retries:       {summary.retries} (the flaky task fails its first attempt on purpose)",
        f"Wall time:     {summary.wall_seconds:.2f} s, {rate:.0f} tasks/s"
        f" (of which sending: {summary.publish_seconds:.2f} s)",
        f"SQLite file:   {run.path}",
        f"Worker log:    {run.log_path}",
    ]
    if summary.wrong_values:
        lines.append(f"Wrong values:  {summary.wrong_values}")
    if summary.timed_out:
        lines.append("Timed out:     gave up waiting (see --timeout and the worker log)")
    if summary.worker_exit != 0:
        stopped = "killed after not stopping" if summary.worker_exit is None else "exited"
        lines.append(f"Worker:        {stopped} (code {summary.worker_exit})")
    lines.append("OK: every task succeeded." if summary.ok else "FAILED: see above.")
    click.echo("\n".join(lines))
