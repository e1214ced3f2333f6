"""``caraway demo``: a real worker, a real workload, a progress bar and a summary."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from caraway.cli.base import state_of
from caraway.utils.home import home_folder

if TYPE_CHECKING:
    from caraway.cli.demo_app import DemoRun, Summary

DEFAULT_TASKS = 2000
DEFAULT_CONCURRENCY = 4
DEMO_FILENAME = "caraway-demo.sqlite3"
#: No time left is shown before this share of the tasks and these seconds since the first
#: result: the first results wait for the worker to start, and are not the workload's pace.
ETA_MIN_SHARE = 0.05
ETA_MIN_SECONDS = 0.5


class Eta:
    """Time left, estimated from the pace observed since the first results came in."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.clock = clock
        self.done = 0
        self._first: tuple[float, int] | None = None  # when results began, and how many

    def update(self, n: int) -> str:
        """``n`` more results; the text to show ("" while there is no fair estimate)."""
        self.done += n
        now = self.clock()
        if self._first is None:
            self._first = (now, self.done)
            return ""
        began, done_then = self._first
        elapsed = now - began
        if self.done < self.total * ETA_MIN_SHARE or elapsed < ETA_MIN_SECONDS:
            return ""
        left = (self.total - self.done) * elapsed / (self.done - done_then)
        return f"about {left:.0f} s left" if left >= 1 else "almost done"


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
    help="SQLite file for messages and results, kept (default: one in a temporary folder,"
    " under $CARAWAY_HOME when it is set, removed at the end).",
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

    Starts `caraway -A caraway.cli.demo_app worker` as a subprocess, sends COUNT tasks (fast
    ones, sleepy ones, ones that fail once and retry, ones that report progress; some with a
    countdown or a priority), shows progress as results arrive, prints a summary and
    stops the worker with SIGTERM. Exits 1 if any task did not succeed as expected.
    """
    # Lazy: importing demo_app creates its app and shared tasks, unwanted by other commands.
    from caraway.cli import demo_app

    state = state_of(ctx)
    if state.app_given or state.broker or state.result_backend or state.config:
        click.echo("Note: demo uses its own app and SQLite file; -A/-b/--config are ignored.")
    folder: Path | None = None
    if path is None:
        folder = _temporary_folder()
        path = folder / DEMO_FILENAME
    run = demo_app.DemoRun(path, concurrency, pool)
    try:
        summary = _run(run, count, timeout)
        _print_summary(summary, run, kept=folder is None)
    finally:
        if folder is not None:  # also after Ctrl-C: the worker is stopped by then
            demo_app.app.close()
            shutil.rmtree(folder, ignore_errors=True)
    if not summary.ok:
        raise click.exceptions.Exit(1)


def _temporary_folder() -> Path:
    """A new folder under ``$CARAWAY_HOME`` when it is set (caraway's files go there), else
    under the system's temporary folder; removed when the demo ends."""
    parent = home_folder()
    if parent is not None:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="caraway-demo-", dir=parent))


def _run(run: DemoRun, count: int, timeout: float) -> Summary:
    # Lazy: importing demo_app creates its app and shared tasks, unwanted by other commands.
    from caraway.cli import demo_app

    summary = demo_app.Summary(total=count)
    calls = demo_app.workload(count)
    click.echo(f"Worker: {' '.join(['python', *run.worker_command()[1:]])}")
    eta = Eta(count)
    try:
        run.start_worker()
        began = time.monotonic()
        with click.progressbar(
            length=count, label=f"Running {count} tasks", show_pos=True, show_eta=False,
            item_show_func=lambda text: text,
        ) as bar:  # fmt: skip
            run.drive(calls, summary, began + timeout, lambda n: bar.update(n, eta.update(n)))
        summary.wall_seconds = time.monotonic() - began
    except demo_app.WorkerDied as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot run the demo in {run.path.parent}: {exc}") from exc
    finally:
        summary.worker_exit = run.stop_worker()
    return summary


def _print_summary(summary: Summary, run: DemoRun, kept: bool) -> None:
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
    ]
    if kept:
        lines += [f"SQLite file:   {run.path}", f"Worker log:    {run.log_path}"]
    else:
        lines.append(f"Files:         {run.path.parent} (removed; --path keeps them)")
    if not summary.ok and not kept:
        lines += ["Worker log (last lines):", run.log_tail()]
    if summary.wrong_values:
        lines.append(f"Wrong values:  {summary.wrong_values}")
    if summary.timed_out:
        lines.append("Timed out:     gave up waiting (see --timeout and the worker log)")
    if summary.worker_exit != 0:
        stopped = "killed after not stopping" if summary.worker_exit is None else "exited"
        lines.append(f"Worker:        {stopped} (code {summary.worker_exit})")
    lines.append("OK: every task succeeded." if summary.ok else "FAILED: see above.")
    click.echo("\n".join(lines))
