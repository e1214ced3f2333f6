"""Remote control across implementations: Celery's own ``celery inspect``/``control`` commands
answered by a caraway worker, and ``caraway inspect`` answered by a real Celery worker."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from interop_support import BIN, WAIT, Wire, WorkerProcess, Workers, read_markers, wait_until

from caraway.cli.base import CLIState
from caraway.cli.main import cli


@pytest.fixture(scope="module")
def nodes(workers: Workers) -> dict[str, WorkerProcess]:
    caraway = workers.start("caraway", "ctl-caraway", ready=False)
    celery = workers.start("celery", "ctl-celery", ready=False)
    for worker in (caraway, celery):
        worker.wait_ready()
    return {"caraway": caraway, "celery": celery}


def node_name(worker: WorkerProcess) -> str:
    import socket

    return f"{worker.name}@{socket.gethostname()}"


def celery_cli(project: Path, wire: Wire, markers: Path, *args: str) -> Any:
    """Run ``celery -A celery_side ... --json`` and return the JSON it printed."""
    env = {**os.environ, **wire.env(markers), "PYTHONPATH": str(project)}
    done = subprocess.run(
        [str(BIN / "celery"), "-A", "celery_side", *args, "--json"], cwd=project, env=env,
        capture_output=True, text=True, timeout=WAIT * 2,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_celery_inspect_ping_active_registered_answered_by_caraway(
    nodes: dict[str, WorkerProcess], project: Path, wire: Wire, marker_dir: Path,
    caraway_client: Any,
) -> None:  # fmt: skip
    node = node_name(nodes["caraway"])
    tag = uuid.uuid4().hex
    running = caraway_client.tasks["interop.slow"].apply_async((1, 3.0, tag), queue="ctl-caraway")
    wait_until(lambda: read_markers(marker_dir, "start", tag), what="the slow task to start")

    pinged = celery_cli(project, wire, marker_dir, "inspect", "ping", "-d", node, "-t", "5")
    active = celery_cli(project, wire, marker_dir, "inspect", "active", "-d", node, "-t", "5")
    registered = celery_cli(project, wire, marker_dir, "inspect", "registered", "-d", node,
                            "-t", "5")  # fmt: skip

    assert pinged == {node: {"ok": "pong"}}
    [entry] = active[node]
    assert entry["id"] == running.id
    assert entry["name"] == "interop.slow"
    assert entry["hostname"] == node
    assert entry["args"] == [1, 3.0, tag]
    assert entry["worker_pid"] == nodes["caraway"].proc.pid
    assert {"interop.add", "interop.slow", "interop.echo"} <= set(registered[node])


def test_celery_control_rate_limit_changes_a_caraway_worker(
    nodes: dict[str, WorkerProcess], project: Path, wire: Wire, marker_dir: Path,
    caraway_client: Any,
) -> None:  # fmt: skip
    node = node_name(nodes["caraway"])

    replied = celery_cli(project, wire, marker_dir, "control", "rate_limit", "interop.add",
                         "10/m", "-d", node, "-t", "5")  # fmt: skip

    assert replied == [{node: {"ok": "new rate limit set successfully"}}]  # control: a list
    inspect = caraway_client.control.inspect(destination=[node], timeout=5)
    assert "interop.add [rate_limit=10/m]" in inspect.registered()[node]
    caraway_client.control.rate_limit("interop.add", 0, destination=[node], reply=True, timeout=5)


def test_caraway_inspect_answered_by_a_celery_worker(
    nodes: dict[str, WorkerProcess], marker_dir: Path, caraway_client: Any
) -> None:
    node = node_name(nodes["celery"])
    # A solo Celery worker answers between tasks only: a countdown task is held, not run.
    later = caraway_client.tasks["interop.add"].apply_async((1, 2), queue="ctl-celery",
                                                           countdown=60)  # fmt: skip
    inspect = caraway_client.control.inspect(destination=[node], timeout=5)

    assert inspect.ping() == {node: {"ok": "pong"}}
    scheduled = wait_until(lambda: inspect.scheduled()[node], what="the task in scheduled")
    assert [entry["request"]["id"] for entry in scheduled] == [later.id]
    assert scheduled[0]["request"]["hostname"] == node
    assert inspect.active() == {node: []}
    assert "interop.add" in inspect.registered()[node]
    assert inspect.stats()[node]["pool"]["max-concurrency"] == 1
    runner = CliRunner()
    result = runner.invoke(cli, ["inspect", "ping", "-d", node, "-t", "5", "--json"],
                           obj=CLIState(caraway_client))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {node: {"ok": "pong"}}
    caraway_client.control.revoke(later.id, destination=[node], reply=True, timeout=5)
    assert later.id in inspect.revoked()[node]
