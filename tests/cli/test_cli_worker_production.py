"""``caraway worker`` as run in production: prefork children, per-child logs, probes, SIGHUP."""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

from cli_support import WAIT, Project
from prometheus_client.parser import text_string_to_metric_families
from services import free_port


def probe(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0  # not listening (yet)


def succeeded(port: int, task: str) -> float:
    """What ``/metrics`` counts as SUCCESS for ``task``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
        text = answer.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "caraway_tasks_total"
        and sample.labels.get("task") == task
        and sample.labels.get("state") == "SUCCESS"
    )


def test_prefork_worker_with_child_logfiles_pidfile_and_health_probes(project: Project) -> None:
    port = free_port()
    worker = project.spawn(
        "worker", "-P", "prefork", "-c", "2", "-n", "w1@%h", "-l", "INFO",
        "--max-tasks-per-child", "1", "--logfile", str(project.root / "%n%I.log"),
        "--pidfile", str(project.root / "%n.pid"), "--health-port", str(port), "--metrics",
    )  # fmt: skip
    project.wait_until(lambda: probe(port, "/readyz") == 200, "the worker to be ready")
    client = project.client()

    sums = [client.send_task(f"{project.module}.add", (n, n)) for n in range(4)]

    assert [r.get(timeout=WAIT) for r in sums] == [0, 2, 4, 6]
    assert probe(port, "/livez") == 200
    assert probe(port, "/nope") == 404
    # --metrics: the supervisor counts each run just after its child stored the result.
    project.wait_until(lambda: succeeded(port, f"{project.module}.add") == 4, "four runs counted")
    assert (project.root / "w1.pid").read_text().strip() == str(worker.pid)
    supervisor_log = (project.root / "w1.log").read_text()
    assert "Pool child" in supervisor_log
    child_logs = [(project.root / f"w1-{n}.log") for n in (1, 2)]
    child_text = "".join(p.read_text() for p in child_logs if p.exists())
    assert child_text.count("succeeded in") == 4  # children log what they ran, each to its file
    assert "ForkPoolWorker-" in child_text
    assert "succeeded in" not in supervisor_log

    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=WAIT)
    assert worker.returncode == 0
    assert not (project.root / "w1.pid").exists()


def test_sighup_restarts_the_worker_in_the_same_process(project: Project) -> None:
    log = project.root / "w.log"
    worker = project.spawn("worker", "-P", "threads", "-l", "INFO", "--logfile", str(log))
    client = project.client()
    assert client.send_task(f"{project.module}.add", (1, 1)).get(timeout=WAIT) == 2

    worker.send_signal(signal.SIGHUP)
    project.wait_until(lambda: log.read_text().count(" ready.") == 2, "the second start")

    assert worker.poll() is None  # the same process (exec keeps the pid)
    assert "SIGHUP received: restarting" in log.read_text()
    assert client.send_task(f"{project.module}.add", (2, 2)).get(timeout=WAIT) == 4
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=WAIT)
    assert worker.returncode == 0


def test_detach_runs_the_worker_in_the_background_with_its_pidfile(project: Project) -> None:
    pidfile = project.root / "bg.pid"
    started = project.run(
        "worker", "--detach", "-n", "bg@%h", "-P", "threads", "-l", "INFO",
        "--pidfile", str(pidfile), "--logfile", str(project.root / "%n.log"), "--umask", "0o077",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr  # the command returns at once
    pid = project.wait_until(
        lambda: pidfile.exists() and pidfile.read_text().strip(), "the daemon's pidfile"
    )
    daemon = int(pid)
    try:
        client = project.client()
        assert client.send_task(f"{project.module}.add", (3, 4)).get(timeout=WAIT) == 7
        assert "bg@" in (project.root / "bg.log").read_text()
        assert (project.root / "bg.log").stat().st_mode & 0o077 == 0  # --umask
    finally:
        os.kill(daemon, signal.SIGTERM)
    project.wait_until(lambda: not pidfile.exists(), "the daemon to stop and remove its pidfile")
    project.wait_until(lambda: not alive(daemon), "the daemon to exit")


def alive(pid: int) -> bool:
    """Running: not gone, and not a zombie waiting for the init process to reap it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # no /proc: trust kill(pid, 0)
    return "State:\tZ" not in status


def test_worker_logfile_and_pidfile_settings_are_the_defaults_of_the_options(
    project: Project,
) -> None:
    configured = Project(project.root, project.add_module("files", f"""
        from {project.module} import app

        app.conf.update(
            worker_logfile={str(project.root / "%n.log")!r},
            worker_pidfile={str(project.root / "%n.pid")!r},
        )
    """))  # fmt: skip
    try:
        worker = configured.spawn("worker", "-P", "threads", "-n", "files@%h", "-l", "INFO")
        pidfile = project.root / "files.pid"
        project.wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), "a pidfile")
        assert pidfile.read_text().strip() == str(worker.pid)
        added = project.client().send_task(f"{project.module}.add", (2, 3))
        assert added.get(timeout=WAIT) == 5

        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=WAIT)
        assert "succeeded in" in (project.root / "files.log").read_text()
        assert not pidfile.exists()
    finally:
        configured.kill_all()
