"""Celery's worker flags, ``call`` options, ``result`` waiting, ``control terminate``,
``shell`` and the -A-after-the-command explanation, run as users run them."""

from __future__ import annotations

import grp
import os
import pwd
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import WAIT, Project, subprocess_env
from click.testing import CliRunner

import caraway
from caraway import states
from caraway.cli.main import cli

EXTRA_MODULE = """
import os

from caraway import current_app


@current_app.task(name="extra.whoami")
def whoami():
    return os.geteuid()
"""


@pytest.mark.parametrize("option", ["-A", "--app", "-b"])
def test_a_global_option_after_the_command_is_explained(option: str) -> None:
    result = CliRunner().invoke(cli, ["worker", option, "proj"])

    assert result.exit_code == 2
    assert f"{option} is an option of 'caraway' itself, so it goes before the command" in (
        result.output
    )
    assert f"celery {option} proj worker" in result.output


def test_worker_flags_as_celery_spells_them(project: Project) -> None:
    extra = project.add_module("extra", EXTRA_MODULE)
    client = project.client()
    stale = client.send_task(f"{project.module}.add", (1, 1))  # waiting before the worker
    worker = project.spawn(
        "worker", "-P", "threads", "-c", "2", "--purge", "-I", extra, "--soft-time-limit",
        "0.5", "--time-limit", "10", "--pool-restarts", "-O", "default", "--without-mingle",
        "--without-gossip",
    )  # fmt: skip

    project.wait_until(lambda: client.broker.size("celery") == 0, "--purge to empty the queue")
    # -I imported the extra module; --soft-time-limit stopped the slow task.
    assert client.send_task("extra.whoami").get(timeout=WAIT) == os.geteuid()
    slow = client.send_task(f"{project.module}.slow", (1.5,))  # a thread sees it after sleep
    slow.get(timeout=WAIT, propagate=False)
    assert slow.state == states.FAILURE
    assert type(slow.result).__name__ == "SoftTimeLimitExceeded"
    # --pool-restarts allows the pool_restart command (refused without it).
    restarted = project.run("control", "pool_restart", "-j")
    assert "error" not in restarted.stdout, restarted.stdout
    # --purge dropped the message that waited: it never ran.
    assert client.AsyncResult(stale.id).state == states.PENDING

    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=WAIT)
    assert worker.returncode == 0, err
    assert "Purged 1 message from 1 queue (celery)." in out
    assert "Warning: -O default: caraway always schedules fairly" in err


def test_a_soft_limit_above_the_hard_one_is_refused(project: Project) -> None:
    refused = project.run("worker", "--soft-time-limit", "10", "--time-limit", "5")

    assert refused.returncode == 2
    assert "the soft time limit (10.0 s) is above the hard one (5.0 s)" in refused.stderr


def test_call_options_and_result_waiting(project: Project) -> None:
    project.spawn("worker", "-P", "threads")
    sent = project.run(
        "call", f"{project.module}.add", "-a", "[2, 3]", "--priority", "5", "--serializer",
        "json", "--expires", "60",
    ).stdout.strip()  # fmt: skip
    expired = project.run(
        "call", f"{project.module}.add", "-a", "[1, 1]", "--expires", "2000-01-01T00:00:00"
    ).stdout.strip()

    assert project.run("result", sent, "--timeout", str(WAIT)).stdout == "5\n"
    assert project.run("result", expired, "--timeout", str(WAIT)).stdout.startswith("REVOKED")
    unknown = project.run("result", "no-such-id", "--timeout", "0.5")
    assert unknown.returncode == 1
    assert "task no-such-id did not finish within 0.5 s (state now: PENDING)" in unknown.stderr
    bad = project.run("call", f"{project.module}.add", "--serializer", "nope")
    assert bad.returncode == 1
    assert "nope" in bad.stderr


def test_call_exchange_and_routing_key_reach_the_bound_queue(project: Project) -> None:
    project.spawn("worker", "-P", "threads", "-Q", "extra")
    # The worker binds its queue to the exchange as it starts; a message sent before is unroutable.
    client = project.client()
    project.wait_until(lambda: bool(client.control.ping(timeout=0.5)), "the worker to answer")
    sent = project.run(
        "call", f"{project.module}.add", "-a", "[4, 4]", "--exchange", "extra",
        "--routing-key", "extra",
    ).stdout.strip()  # fmt: skip

    assert project.run("result", sent, "--timeout", str(WAIT)).stdout == "8\n"


def test_control_terminate_stops_a_running_task(project: Project) -> None:
    project.spawn("worker", "-P", "prefork", "-c", "1")
    client = project.client()
    slow = client.send_task(f"{project.module}.slow", (30,))
    project.wait_until(lambda: slow.state == states.STARTED, "the slow task to start")

    replied = project.run("control", "terminate", "SIGKILL", slow.id)

    assert replied.returncode == 0, replied.stderr
    assert f"terminate: {slow.id}" in replied.stdout
    project.wait_until(lambda: slow.state in states.READY_STATES, "the task to be stopped")
    assert slow.state == states.REVOKED
    unknown_signal = project.run("control", "terminate", "SIGNOPE", slow.id)
    assert "unknown signal 'SIGNOPE'" in unknown_signal.stdout


def test_shell_has_the_app_and_its_tasks(project: Project) -> None:
    project.spawn("worker", "-P", "threads")

    ran = project.run(
        "shell", "--python", input="print('answer', add.delay(2, 3).get(timeout=15), app.main)\n"
    )

    assert ran.returncode == 0, ran.stderr
    assert f"answer 5 {project.module}" in ran.stdout


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder another user can write (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="caraway-uid-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


WHOAMI_MODULE = """
import os

from caraway import current_app


@current_app.task(name="extra.ids")
def ids():
    return [os.geteuid(), os.getegid(), os.getgroups()]
"""


def _readable_by_everyone(path: Path) -> bool:
    return all(p.stat().st_mode & 0o005 == 0o005 for p in [path, *path.parents])


def _switched_worker(project: Project, folder: Path, *switch: str) -> list[object]:
    """What ``extra.ids`` answers from a worker started as root with ``switch`` options."""
    project.write("extra_ids", WHOAMI_MODULE)
    url = f"sqlite:///{folder / 'b.sqlite3'}"
    worker = subprocess.Popen(
        [*project.argv()[:3], "-A", project.module, "-b", url, "worker", "-P", "solo", "-I",
         "extra_ids", *switch],
        cwd=project.root, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    project.processes.append(worker)
    # The worker, already switched, makes the file: root (the client) can write it after.
    project.wait_until(lambda: (folder / "b.sqlite3").exists(), "the worker's file")
    client = caraway.Celery("uid-client", broker=url, set_as_current=False)
    try:
        answer: list[object] = client.send_task("extra.ids").get(timeout=WAIT)
    finally:
        client.close()
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=WAIT)
    assert worker.returncode == 0, err
    return answer


@pytest.mark.skipif(os.geteuid() != 0, reason="switching groups needs root")
def test_gid_switches_the_worker_group(project: Project, shared_folder: Path) -> None:
    nogroup = grp.getgrgid(pwd.getpwnam("nobody").pw_gid)

    assert _switched_worker(project, shared_folder, "--gid", nogroup.gr_name) == [
        0, nogroup.gr_gid, [nogroup.gr_gid],
    ]  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="switching groups needs root")
def test_the_worker_gid_setting_is_the_default_of_gid(
    project: Project, shared_folder: Path
) -> None:
    nogroup = grp.getgrgid(pwd.getpwnam("nobody").pw_gid)
    configured = Project(project.root, project.add_module("gidconf", f"""
        from {project.module} import app

        app.conf.worker_gid = {nogroup.gr_name!r}
    """))  # fmt: skip

    assert _switched_worker(configured, shared_folder) == [
        0, nogroup.gr_gid, [nogroup.gr_gid],
    ]  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_uid_switches_the_worker_to_another_user(project: Project, shared_folder: Path) -> None:
    if not _readable_by_everyone(Path(sys.base_prefix)):
        pytest.skip(f"Python ({sys.base_prefix}) is private to root: nobody cannot import it")
    nobody = pwd.getpwnam("nobody")

    euid, egid, _ = _switched_worker(project, shared_folder, "--uid", "nobody")

    assert (euid, egid) == (nobody.pw_uid, nobody.pw_gid)
    assert (shared_folder / "b.sqlite3").stat().st_uid == nobody.pw_uid


@pytest.mark.skipif(os.geteuid() == 0, reason="root may switch users")
def test_uid_is_refused_without_root(project: Project) -> None:
    refused = project.run("worker", "--uid", "root")

    assert refused.returncode == 2
    assert "--uid/--gid need a worker started as root" in refused.stderr
