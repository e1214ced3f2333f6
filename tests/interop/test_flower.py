"""Flower (pinned in the test extra), pointed at a caraway worker over Redis: it lists the
worker as online and shows a task that ran on it, read through Flower's HTTP API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from interop_support import BIN, WAIT, Wire, Workers, redis_wire, wait_until
from services import free_port

pytest.importorskip("flower", reason="Flower is a test dependency: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def redis_only(project: Path) -> Iterator[tuple[Path, Wire]]:
    with redis_wire() as wire:
        yield project, wire


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_flower_sees_a_caraway_worker_and_its_task(redis_only: tuple[Path, Wire]) -> None:
    project, wire = redis_only
    markers = project / "flower-markers"
    markers.mkdir(exist_ok=True)
    workers = Workers(project, wire, markers)
    port = free_port()
    env = {**os.environ, **wire.env(markers), "PYTHONPATH": str(project),
           "FLOWER_UNAUTHENTICATED_API": "1"}  # fmt: skip
    flower = subprocess.Popen(
        [str(BIN / "celery"), "-A", "celery_side", "flower", f"--port={port}",
         "--address=127.0.0.1"],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    import importlib

    client = importlib.import_module("caraway_side").build(
        wire.broker, wire.backend, wire.transport, wire.result_transport
    )
    try:
        worker = workers.start("caraway", "flower")
        node = f"{worker.name}@{socket.gethostname()}"
        base = f"http://127.0.0.1:{port}"

        def online() -> bool:
            try:
                return bool(get(f"{base}/api/workers?status=true").get(node))
            except OSError:
                return False

        wait_until(online, WAIT, "Flower to list the worker as online")
        client.control.enable_events(destination=[node], reply=True, timeout=5)
        result = client.tasks["interop.add"].apply_async((20, 22), queue="flower")
        assert result.get(timeout=WAIT) == 42

        def shown() -> Any:
            task = get(f"{base}/api/tasks").get(result.id)
            return task if task and task.get("state") == "SUCCESS" else None

        task = wait_until(shown, WAIT, "Flower to show the task")
        assert task["name"] == "interop.add"
        assert task["worker"] == node
        assert task["result"] == "42"
        assert task["args"] == "(20, 22)"

        # Flower's refresh asks each question (stats, active_queues, ...) with its own 1 s
        # inspect timeout: one answer can miss it, so ask again until both used here are in.
        def refreshed() -> Any:
            found = get(f"{base}/api/workers?refresh=1").get(node) or {}
            return found if "stats" in found and "active_queues" in found else None

        described = wait_until(refreshed, WAIT, "Flower's refresh")
        assert described["stats"]["pool"]["max-concurrency"] == 2
        assert [q["name"] for q in described["active_queues"]] == ["flower"]
    finally:
        flower.terminate()
        flower.wait(timeout=WAIT)
        workers.stop_all()
        client.close()
