"""The command line as users run it: real subprocesses on a SQLite file in ``tmp_path``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_support import WAIT, Project, subprocess_env, wait_until

from caraway import states


def test_worker_runs_tasks_and_stops_warmly_on_sigterm(project: Project) -> None:
    pidfile = project.root / "worker.pid"
    worker = project.spawn(
        "worker", "-P", "threads", "-c", "2", "-n", "w1@%h", "--pidfile", str(pidfile),
        "-Q", "celery,extra", "-X", "extra",
    )  # fmt: skip
    client = project.client()
    assert client.send_task(f"{project.module}.add", (2, 3)).get(timeout=WAIT) == 5
    assert pidfile.read_text().strip() == str(worker.pid)

    slow = client.send_task(f"{project.module}.slow", (0.5,))
    project.wait_until(lambda: slow.state == states.STARTED, "the slow task to start")
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=WAIT)

    assert worker.returncode == 0, err
    assert slow.get(timeout=1) == "slept"  # a warm shutdown lets running tasks finish
    assert not pidfile.exists()
    assert f"w1@{socket.gethostname()}" in out  # the banner, with %h expanded
    assert ".> celery           exchange=celery(direct) key=celery\n" in out
    assert ".> extra" not in out
    assert "warm shutdown" in err


def test_worker_exits_1_after_a_cold_shutdown_as_celery(project: Project) -> None:
    worker = project.spawn("worker", "-P", "threads", "-l", "INFO")
    assert project.client().send_task(f"{project.module}.add", (1, 1)).get(timeout=WAIT) == 2

    worker.send_signal(signal.SIGQUIT)
    _, err = worker.communicate(timeout=WAIT)

    assert worker.returncode == 1, err
    assert "stopped (cold shutdown)" in err


def test_call_result_and_dead_letters_against_a_worker(project: Project) -> None:
    project.spawn("worker", "-P", "solo")
    client = project.client()

    sent = project.run("call", f"{project.module}.add", "-a", "[2, 3]", "-k", "{}")
    task_id = sent.stdout.strip()
    assert client.AsyncResult(task_id).get(timeout=WAIT) == 5
    assert project.run("result", task_id).stdout == "5\n"

    lost = project.run("call", "cli.no.such.task", "-k", '{"x": 1}').stdout.strip()
    client.AsyncResult(lost).get(timeout=WAIT, propagate=False)  # the worker marks it failed
    assert project.run("result", lost).stdout.startswith("FAILURE: NotRegistered")

    letters = project.run("dead-letters").stdout
    assert f"queue=celery  cli.no.such.task[{lost}]" in letters
    assert "reason: Received unregistered task of type 'cli.no.such.task'" in letters
    assert f"1 dead letter in {project.url}." in letters


def test_purge_deletes_waiting_messages_even_delayed_ones(project: Project) -> None:
    first = project.run("call", f"{project.module}.add", "-a", "[1, 1]").stdout.strip()
    project.run("call", f"{project.module}.add", "-a", "[2, 2]", "--countdown", "60")
    project.run("call", f"{project.module}.add", "--eta", "2030-01-01T00:00:00", "-a", "[3, 3]")
    client = project.client()
    assert client.broker.size("celery") == 3

    purged = project.run("purge", "-f")

    assert purged.returncode == 0, purged.stderr
    assert purged.stdout == "Purged 3 messages from queue celery.\n"
    assert client.broker.size("celery") == 0
    assert project.run("result", "--no-wait", first).stdout.startswith("PENDING: no result stored")


def test_demo_runs_a_workload_through_a_real_worker(tmp_path: Path) -> None:
    path = tmp_path / "demo.sqlite3"
    argv = [sys.executable, "-m", "caraway", "demo", "--tasks", "200", "--path", str(path)]
    done = subprocess.run(
        argv,
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Tasks done:    200 of 200" in done.stdout
    assert "States:        SUCCESS 200" in done.stdout
    assert "Retries:       20 " in done.stdout  # 2 flaky tasks in every 20, one retry each
    assert f"SQLite file:   {path}" in done.stdout
    assert done.stdout.rstrip().endswith("OK: every task succeeded.")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``demo(*args)``: ``caraway demo`` with its temporary folder under ``tmp_path/home``
    (``CARAWAY_HOME``) and the system's one in ``tmp_path/tmp``, both watched by the test.
    Killed at teardown, with its worker, if the test left them running."""
    started: list[subprocess.Popen[str]] = []
    (tmp_path / "tmp").mkdir()
    env = {**subprocess_env(), "CARAWAY_HOME": str(tmp_path / "home")}
    env["TMPDIR"] = str(tmp_path / "tmp")

    def start(*args: str) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "caraway", "demo", *args]
        started.append(
            subprocess.Popen(
                argv,
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)
    for pid, _ in _processes_using(tmp_path):
        os.kill(pid, signal.SIGKILL)


def _processes_using(folder: Path) -> list[tuple[int, str]]:
    """Processes (pid, command line) whose command line names ``folder``: the demo's worker."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in text:
            found.append((int(cmdline.parent.name), text))
    return found


def test_demo_works_in_caraway_home_and_removes_its_folder(
    tmp_path: Path, demo: Callable[..., subprocess.Popen[str]]
) -> None:
    run = demo("--tasks", "40")
    out, err = run.communicate(timeout=40)

    assert run.returncode == 0, out + err
    assert f"Files:         {tmp_path / 'home'}/caraway-demo-" in out
    assert "(removed; --path keeps them)" in out
    assert list((tmp_path / "home").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_demo_interrupted_stops_its_worker_and_removes_its_folder(
    tmp_path: Path, demo: Callable[..., subprocess.Popen[str]]
) -> None:
    run = demo("--tasks", "1000000")
    home = tmp_path / "home"
    [log] = wait_until(lambda: list(home.glob("caraway-demo-*/*-worker.log")), "the worker")
    # its worker runs (the log file can appear before the process is seen using the folder)
    wait_until(lambda: _processes_using(log.parent), "the worker in its folder")

    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=WAIT)

    assert run.returncode != 0
    assert "Aborted!" in err
    assert list(home.iterdir()) == []
    assert _processes_using(log.parent) == []
