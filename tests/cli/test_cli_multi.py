"""``caraway multi``: several detached workers from one command line, each with the options
meant for it, found again through their pidfiles by stopwait, restart and kill."""

from __future__ import annotations

import os
from pathlib import Path

from cli_support import WAIT, Project, wait_until

from caraway.cli.multi import build_nodes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def _pid(root: Path, node: str) -> int:
    pidfile = root / f"{node}.pid"
    return int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), f"{pidfile}"))


def test_options_reach_the_nodes_they_select() -> None:
    nodes, _ = build_nodes(
        ["4", "-l", "INFO", "-c", "2", "-Q:1,2", "images", "-Q", "default", "-L:4", "DEBUG",
         "-c:3-4", "8", "--hostname=box", "-E"]
    )  # fmt: skip
    assert [node.args for node in nodes] == [
        ["-n", "celery1@box", "-l", "INFO", "-c", "2", "-Q", "images", "-E"],
        ["-n", "celery2@box", "-l", "INFO", "-c", "2", "-Q", "images", "-E"],
        ["-n", "celery3@box", "-l", "INFO", "-c", "8", "-Q", "default", "-E"],
        ["-n", "celery4@box", "-l", "DEBUG", "-c", "8", "-Q", "default", "-E"],
    ]
    named, _ = build_nodes(["image", "video@%h", "-c", "3", "-c:image", "10", "--hostname=h"])
    assert [(node.name, node.args[-1]) for node in named] == [("image@h", "10"), ("video@h", "3")]


def test_start_restart_and_stopwait_run_real_workers(project: Project) -> None:
    started = project.run("multi", "start", "2", "-P", "threads", "-c", "1", "-c:2", "3",
                          "--hostname=box")  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert started.stdout.splitlines() == ["> celery1@box: OK", "> celery2@box: OK"]
    first = {node: _pid(project.root, node) for node in ("celery1", "celery2")}
    try:
        client = project.client()
        stats = wait_until(
            lambda: (
                (found := client.control.inspect(timeout=2, limit=2).stats() or {})
                and len(found) == 2
                and found
            ),
            "both workers to answer",
        )
        assert {name: s["pool"]["max-concurrency"] for name, s in stats.items()} == {
            "celery1@box": 1,
            "celery2@box": 3,
        }
        assert client.send_task(f"{project.module}.add", (2, 5)).get(timeout=WAIT) == 7
        assert (project.root / "celery1.log").exists()

        restarted = project.run("multi", "restart", "celery1", "-P", "threads",
                                "--hostname=box")  # fmt: skip
        assert restarted.returncode == 0, restarted.stderr
        assert f"> celery1@box: SIGTERM -> {first['celery1']}" in restarted.stdout
        wait_until(lambda: _pid(project.root, "celery1") != first["celery1"], "a new celery1")
        assert not _alive(first["celery1"])
        assert _alive(first["celery2"])
    finally:
        stopped = project.run("multi", "stopwait", "2", "--hostname=box")
    assert stopped.returncode == 0, stopped.stderr
    assert "> celery1@box: OK" in stopped.stdout
    assert "> celery2@box: OK" in stopped.stdout
    assert not list(project.root.glob("*.pid"))
    assert not _alive(first["celery2"])


def test_kill_and_what_multi_refuses(project: Project) -> None:
    assert project.run("multi", "start", "w1", "-P", "solo", "--hostname=box").returncode == 0
    pid = _pid(project.root, "w1")
    killed = project.run("multi", "kill", "w1", "--hostname=box")
    assert f"> w1@box: SIGKILL -> {pid}" in killed.stdout
    wait_until(lambda: not _alive(pid), "w1 to die")
    assert "w1@box: DOWN" in project.run("multi", "stop", "w1", "--hostname=box").stdout

    wrong = project.run("multi", "start", "w1", "--no-such-option")
    assert wrong.returncode == 2
    assert "caraway worker has no option '--no-such-option'" in wrong.stderr
    assert "name the nodes" in project.run("multi", "start", "-c", "2").stderr
