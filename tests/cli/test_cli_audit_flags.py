"""Celery's flags that had no test of their own as caraway's command line takes them (each row
of caraway.cli.audit marked *works* names the test that runs it; these are the ones here)."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import WAIT, Project, subprocess_env
from click.testing import CliRunner, Result

from caraway.cli.main import cli

PID_MODULE = """
import os

from caraway import current_app


@current_app.task(name="extra.pid")
def pid():
    return os.getpid()


@current_app.task(name="extra.fail")
def fail():
    raise ValueError("as asked")
"""


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" not in status.read_text()


def _stop_daemon(project: Project, pidfile: Path) -> None:
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGTERM)
    project.wait_until(lambda: not _alive(pid), "the daemon to exit")


def test_workdir_changes_directory_before_finding_the_app(
    project: Project, tmp_path_factory: pytest.TempPathFactory
) -> None:
    os.chdir(tmp_path_factory.mktemp("elsewhere"))  # the fixture chdir'ed; it restores it

    result = invoke("--workdir", str(project.root), "-A", project.module, "report")

    assert result.exit_code == 0, result.output
    assert f"app -> {project.module}\n" in result.output
    assert Path.cwd() == project.root


def test_quiet_silences_the_worker_banner(project: Project) -> None:
    loud = project.spawn("worker", "-P", "solo", "-n", "loud@%h")
    quiet = project.spawn("-q", "worker", "-P", "solo", "-n", "quiet@%h")
    client = project.client()
    project.wait_until(lambda: len(client.control.ping(timeout=0.5)) == 2, "both workers")

    outputs = []
    for proc in (loud, quiet):
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, err
        outputs.append(out)

    assert "[queues]" in outputs[0]
    assert outputs[1] == ""


def test_beat_detaches_with_its_pidfile_logfile_and_umask(project: Project) -> None:
    pidfile, logfile = project.root / "beat.pid", project.root / "beat.log"
    started = project.run(
        "beat", "--detach", "--pidfile", str(pidfile), "--logfile", str(logfile),
        "--umask", "0o077", "--max-interval", "0.5", "-l", "INFO",
    )  # fmt: skip

    assert started.returncode == 0, started.stderr  # returns at once, beat runs on
    project.wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), "beat's pid")
    try:
        project.wait_until(lambda: "is the sender" in logfile.read_text(), "beat to send")
        assert logfile.stat().st_mode & 0o077 == 0
        assert "checks at least every 0.5 s" in logfile.read_text()  # --max-interval
    finally:
        _stop_daemon(project, pidfile)


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder another user can write (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="caraway-beat-uid-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_beat_switches_user_and_group(project: Project, shared_folder: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    pidfile = shared_folder / "beat.pid"
    beat = subprocess.Popen(
        [*project.argv()[:5], "-b", "memory://", "beat", "--uid", "nobody", "--gid",
         str(nobody.pw_gid), "--pidfile", str(pidfile), "-s", str(shared_folder / "sched")],
        cwd=project.root, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    project.processes.append(beat)
    try:
        project.wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), "pidfile")
        status = Path(f"/proc/{beat.pid}/status").read_text().splitlines()
        ids = {line.split(":")[0]: line.split()[1:] for line in status if ":" in line}
        assert ids["Uid"][0] == str(nobody.pw_uid)
        assert ids["Gid"][0] == str(nobody.pw_gid)
        assert pidfile.stat().st_uid == nobody.pw_uid
    finally:
        beat.send_signal(signal.SIGTERM)
        _, err = beat.communicate(timeout=WAIT)
    assert beat.returncode == 0, err


def test_call_queue_and_result_traceback(project: Project) -> None:
    extra = project.add_module("extra", PID_MODULE)
    project.spawn("worker", "-P", "threads", "-Q", "other", "-I", extra)
    sent = project.run("call", f"{project.module}.add", "-a", "[2, 2]", "--queue", "other")
    failed = project.run("call", "extra.fail", "--queue", "other").stdout.strip()

    assert project.run("result", sent.stdout.strip(), "--timeout", str(WAIT)).stdout == "4\n"
    # -t names the task: its result is read and shown through that task's backend.
    named = project.run("result", "-t", f"{project.module}.add", sent.stdout.strip())
    assert named.stdout == "4\n"
    shown = project.run("result", failed, "--timeout", str(WAIT), "--traceback")
    assert "Traceback (most recent call last)" in shown.stdout
    assert 'raise ValueError("as asked")' in shown.stdout


def test_inspect_and_control_list_their_methods() -> None:
    inspect_methods = invoke("inspect", "--list")
    control_methods = invoke("control", "--list")

    assert inspect_methods.exit_code == control_methods.exit_code == 0
    assert "  active " in inspect_methods.output
    assert "  stats " in inspect_methods.output
    assert "  rate_limit " in control_methods.output
    assert "  rate_limit " not in inspect_methods.output


def test_migrate_takes_queues_and_a_timeout(
    project: Project, tmp_path_factory: pytest.TempPathFactory
) -> None:
    client = project.client()
    for n in range(2):
        client.send_task(f"{project.module}.add", (n, n), queue="moving")
    client.send_task(f"{project.module}.add", (9, 9), queue="staying")
    copy = f"sqlite:///{tmp_path_factory.mktemp('copy') / 'copy.sqlite3'}"

    moved = project.run("migrate", project.url, copy, "-Q", "moving", "--ack-messages",
                        "--timeout", "0.5")  # fmt: skip

    assert moved.returncode == 0, moved.stderr
    assert "Migrated 2 message(s)" in moved.stdout
    assert (client.broker.size("moving"), client.broker.size("staying")) == (0, 1)


def test_multi_show_names_get_expand_and_help() -> None:
    nodes = ["2", "-c", "3", "--hostname=box"]

    assert invoke("multi", "names", *nodes).output == "celery1@box\ncelery2@box\n"
    shown = invoke("multi", "show", *nodes).output.splitlines()
    assert [line.split(" worker ")[1] for line in shown] == [
        "-n celery1@box -c 3", "-n celery2@box -c 3",
    ]  # fmt: skip
    assert invoke("multi", "get", "celery2", *nodes).output.endswith("-n celery2@box -c 3\n")
    assert invoke("multi", "expand", "/run/%n.pid", *nodes).output == (
        "/run/celery1.pid\n/run/celery2.pid\n"
    )
    assert "Start, stop, restart or kill several" in invoke("multi", "help").output
    # stop_verify (Celery's old name of stopwait): nothing runs, so each node is DOWN.
    assert invoke("multi", "stop_verify", *nodes).output == (
        "> celery1@box: DOWN\n> celery2@box: DOWN\n"
    )
    assert invoke("multi", "stop_verify", *nodes, "-q").output == ""
    assert invoke("multi", "stop_verify", *nodes, "--quiet").output == ""
    # --verbose prints each command it runs (here one that fails at once).
    verbose = invoke("multi", "start", "1", "--cmd", "false", "--hostname=box", "--verbose")
    assert verbose.exit_code == 1
    assert verbose.output.splitlines() == [
        "> celery1@box: false worker -n celery1@box --detach --pidfile %n.pid --logfile %n%I.log",
        "> celery1@box: FAILED (exit 1)",
    ]


def test_purge_exclude_queues_keeps_them(project: Project) -> None:
    client = project.client()
    for queue in ("one", "two", "two"):
        client.send_task(f"{project.module}.add", (1, 1), queue=queue)

    result = invoke("-A", project.module, "-b", project.url, "purge", "-f", "-Q", "one,two",
                    "--exclude-queues", "two")  # fmt: skip

    assert result.exit_code == 0, result.output
    assert (client.broker.size("one"), client.broker.size("two")) == (0, 2)


def test_shell_flavours_and_without_tasks(project: Project) -> None:
    probe = "print('add' in dir(), 'app' in dir())\n"

    with_tasks = project.run("shell", "--python", input=probe)
    without = project.run("shell", "--python", "--without-tasks", input=probe)
    ipython = project.run("shell", "--ipython", input="print('ipy', 1 + 1)\n")

    assert "True True" in with_tasks.stdout
    assert "False True" in without.stdout
    if ipython.returncode == 2:  # IPython is not among the test extra's packages
        assert "IPython is not installed: pip install ipython, or use --python" in ipython.stderr
    else:
        assert "ipy 2" in ipython.stdout


def test_upgrade_compat_keeps_the_old_names(tmp_path: Path) -> None:
    config = tmp_path / "celeryconfig.py"
    config.write_text('BROKER_URL = "memory://x"\nCELERY_ALWAYS_EAGER = True\n')

    result = invoke("upgrade", "settings", str(config), "--compat", "--no-backup")

    assert result.exit_code == 0, result.output
    assert config.read_text() == (
        'CELERY_BROKER_URL = "memory://x"\nCELERY_TASK_ALWAYS_EAGER = True\n'
    )


def _listen(project: Project, seconds: float) -> tuple[subprocess.Popen[str], list[str]]:
    """``caraway events --dump`` for ``seconds``; its lines as they come."""
    dump = subprocess.Popen(
        project.argv("events", "--dump", "--timeout", str(seconds)), cwd=project.root,
        env={**subprocess_env(), "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    project.processes.append(dump)
    lines: list[str] = []

    def read() -> None:
        assert dump.stdout is not None
        for line in dump.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return dump, lines


def test_worker_flags_seen_by_monitors(project: Project) -> None:
    extra = project.add_module("extra", PID_MODULE)
    statedb = project.root / "worker.state"
    worker = project.spawn(
        "worker", "-P", "threads", "-I", extra, "--events", "--without-heartbeat",
        "--autoscale", "3,1", "--disable-prefetch", "--statedb", str(statedb),
    )  # fmt: skip
    client = project.client()
    project.wait_until(lambda: client.control.ping(timeout=0.5), "the worker")
    dump, lines = _listen(project, 6)
    # The dump's wake-up call (the heartbeat method, as Celery's receiver sends it) is
    # answered by one heartbeat event: from then on, the dump hears everything.
    project.wait_until(lambda: any("worker-heartbeat" in line for line in lines), "the dump")

    assert client.send_task("extra.pid").get(timeout=WAIT) == worker.pid
    [stats] = client.control.inspect(timeout=5, limit=1).stats().values()
    client.control.revoke("doomed-id")
    project.run("control", "heartbeat", "-t", "0.5")  # asks for one heartbeat event now
    dump.wait(timeout=WAIT)
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=WAIT)
    out = "".join(lines)

    assert "task-succeeded" in out  # --events: task events are sent
    # --without-heartbeat: only the two asked for; without it, one every 2 s more.
    assert out.count("worker-heartbeat") == 2
    assert stats["pool"]["max-concurrency"] == 1  # --autoscale 3,1 starts at the minimum
    assert stats["prefetch_count"] == 1  # --disable-prefetch: one slot, one message held
    assert json.loads(statedb.read_text())["revoked"] == ["doomed-id"]  # --statedb


def test_heartbeat_interval_sets_the_pace_and_the_freq(project: Project) -> None:
    project.spawn("worker", "-P", "solo", "--heartbeat-interval", "0.5")
    client = project.client()
    project.wait_until(lambda: client.control.ping(timeout=0.5), "the worker")
    dump, lines = _listen(project, 3)
    dump.wait(timeout=WAIT)

    beats = [line for line in lines if "worker-heartbeat" in line]
    # One every 0.5 s for the ~3 s the dump listened (the default would give one or two).
    assert len(beats) >= 4, beats
    assert all("freq=0.5," in line for line in beats)  # monitors expire the worker by it


def test_worker_takes_the_child_limits(project: Project) -> None:
    extra = project.add_module("extra", PID_MODULE)
    project.spawn("worker", "-P", "prefork", "-c", "1", "-I", extra,
                  "--max-memory-per-child", "1", "-B", "--scheduler", "persistent",
                  "-s", str(project.root / "schedule"))  # fmt: skip
    client = project.client()

    pids = [client.send_task("extra.pid").get(timeout=WAIT) for _ in range(2)]

    # 1 KiB: every child is over the limit after its task, so each task gets a new child.
    assert pids[0] != pids[1]
    # -B with --scheduler persistent and -s: the run-time file is where -s says.
    project.wait_until(lambda: list(project.root.glob("schedule*")), "beat's schedule file")


def test_remote_methods_from_the_command_line(project: Project) -> None:
    project.spawn("worker", "-P", "threads", "-n", "methods@%h")
    client = project.client()
    project.wait_until(lambda: client.control.ping(timeout=0.5), "the worker")
    [pong] = client.control.ping(timeout=0.5)
    (node,) = pong  # asked by name, each command returns at its answer, not after -t
    client.control.revoke("doomed-id")

    def answer(*words: str) -> object:
        ran = project.run(*words, "-j", "-t", "5", "-d", node)
        assert ran.returncode == 0, ran.stderr
        (reply,) = json.loads(ran.stdout).values()
        return reply

    assert str(answer("inspect", "memsample")).startswith("rss ")
    assert "live Python objects" in str(answer("inspect", "memdump"))
    report = answer("inspect", "report")
    assert isinstance(report, dict)
    assert report["ok"].startswith("software -> caraway:")
    assert f"app -> {project.module}" in report["ok"]
    hello = answer("inspect", "hello", "other@host")
    assert isinstance(hello, dict)
    assert "doomed-id" in hello["revoked"]  # what a starting worker learns (mingle)
