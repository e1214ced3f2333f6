"""Flower's HTTP API, asked of Flower and of caraway's dashboard on the same cluster: the
same calls answer with the same fields (and the same values where both saw the same task)."""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from interop_support import BIN, WAIT, Wire, Workers, die_with_parent, redis_wire, wait_until
from services import free_port

pytest.importorskip("flower", reason="Flower is a test dependency: pip install -e '.[test]'")
pytest.importorskip("starlette", reason="the dashboard's extra: pip install -e '.[test]'")

QUEUE = "dashapi"


def call(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"},
                                     method=method)  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _serve(args: list[str], project: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            args, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip


@pytest.fixture(scope="module")
def cluster(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One caraway worker on Redis, watched by Flower and by the dashboard."""
    with redis_wire() as wire:
        yield from _cluster(project, wire, tmp_path_factory.mktemp("dashapi"))


def _cluster(project: Path, wire: Wire, folder: Path) -> Iterator[dict[str, Any]]:
    workers = Workers(project, wire, folder)
    env = {**os.environ, **wire.env(folder), "PYTHONPATH": str(project),
           "FLOWER_UNAUTHENTICATED_API": "1"}  # fmt: skip
    env.pop("CARAWAY_HOME", None)
    flower_port, dash_port = free_port(), free_port()
    servers = [
        _serve([str(BIN / "celery"), "-A", "celery_side", "flower", f"--port={flower_port}",
                "--address=127.0.0.1"], project, env, folder / "flower.log"),
        _serve([str(BIN / "caraway"), "-A", "caraway_side", "dashboard", f"--port={dash_port}",
                f"--db={folder / 'dash.sqlite3'}"], project, env, folder / "dash.log"),
    ]  # fmt: skip
    client = importlib.import_module("caraway_side").build(
        wire.broker, wire.backend, wire.transport, wire.result_transport
    )
    try:
        worker = workers.start("caraway", QUEUE)
        node = f"{worker.name}@{socket.gethostname()}"
        bases = {"flower": f"http://127.0.0.1:{flower_port}",
                 "dashboard": f"http://127.0.0.1:{dash_port}"}  # fmt: skip
        for name, base in bases.items():

            def online(base: str = base) -> bool:
                try:
                    return bool(call(f"{base}/api/workers?status=true").get(node))
                except OSError:
                    return False

            wait_until(online, WAIT, f"{name} to list the worker as online")
        client.control.enable_events(destination=[node], reply=True, timeout=5)
        result = client.tasks["interop.add"].apply_async((20, 22), queue=QUEUE)
        assert result.get(timeout=WAIT) == 42
        for base in bases.values():

            def shown(base: str = base) -> Any:
                task = call(f"{base}/api/tasks").get(result.id)
                return task if task and task.get("state") == "SUCCESS" else None

            wait_until(shown, WAIT, f"{base} to show the task")
        yield {"bases": bases, "node": node, "task_id": result.id, "client": client}
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=WAIT)
        workers.stop_all()
        client.close()


def both(cluster: dict[str, Any], path: str, method: str = "GET", body: Any = None) -> Any:
    bases = cluster["bases"]
    return call(bases["flower"] + path, method, body), call(bases["dashboard"] + path, method,
                                                            body)  # fmt: skip


def test_workers_have_flowers_fields(cluster: dict[str, Any]) -> None:
    node = cluster["node"]
    flower, ours = both(cluster, "/api/workers?status=true")
    assert flower[node] is ours[node] is True
    # A refresh asks the workers with a 1 s inspect timeout: on a loaded machine one answer can
    # miss it, so ask again until both list this worker.
    flower, ours = wait_until(
        lambda: (pair := both(cluster, "/api/workers?refresh=1"))
        and node in pair[0] and node in pair[1] and pair,
        WAIT, "both to describe the worker",
    )  # fmt: skip
    assert set(ours[node]) == set(flower[node])
    assert set(ours[node]["stats"]) == set(flower[node]["stats"])
    assert ours[node]["stats"]["pool"]["max-concurrency"] == 2
    assert ours[node]["active_queues"] == flower[node]["active_queues"]


def test_tasks_have_flowers_fields_and_values(cluster: dict[str, Any]) -> None:
    task_id = cluster["task_id"]
    flower, ours = both(cluster, "/api/tasks")
    assert set(ours[task_id]) == set(flower[task_id])
    for field in ("name", "state", "worker", "result", "args", "kwargs", "runtime", "received"):
        assert ours[task_id][field] == flower[task_id][field], field
    flower, ours = both(cluster, f"/api/task/info/{task_id}")
    assert set(ours) == set(flower)
    assert ours["uuid"] == flower["uuid"] == task_id
    assert both(cluster, f"/api/task/result/{task_id}") == ({"task-id": task_id,
            "state": "SUCCESS", "result": 42},) * 2  # fmt: skip
    flower, ours = both(cluster, "/api/task/types")
    assert ours == flower == {"task-types": ["interop.add"]}


def test_queue_lengths_and_actions_answer_alike(cluster: dict[str, Any]) -> None:
    flower, ours = both(cluster, "/api/queues/length")
    assert set(ours) == set(flower) == {"active_queues"}
    assert {q["name"]: q["messages"] for q in ours["active_queues"]}[QUEUE] == 0
    assert all(set(q) == {"name", "messages"} for q in ours["active_queues"])
    body = {"args": [1, 2], "queue": QUEUE}
    flower, ours = both(cluster, "/api/task/async-apply/interop.add", "POST", body)
    assert set(ours) == set(flower) == {"task-id", "state"}
    client = cluster["client"]
    assert client.AsyncResult(ours["task-id"]).get(timeout=WAIT) == 3
    flower, ours = both(cluster, "/api/task/revoke/nonexistent-id?terminate=false", "POST", {})
    assert ours == flower == {"message": "Revoked 'nonexistent-id'"}


def answer(url: str, query: str = "", body: Any = None) -> tuple[int, Any]:
    """A POST's status and body (JSON when it is), errors included."""
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(url + query, data, {"Content-Type": "application/json"},
                                     method="POST")  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def test_worker_control_answers_alike(cluster: dict[str, Any]) -> None:
    node, bases = cluster["node"], cluster["bases"]

    def both_post(path: str, query: str = "", body: Any = None) -> tuple[Any, Any]:
        return (answer(bases["flower"] + path, query, body),
                answer(bases["dashboard"] + path, query, body))  # fmt: skip

    flower, ours = both_post("/api/task/rate-limit/interop.add",
                             f"?workername={node}&ratelimit=100/m")  # fmt: skip
    assert ours == flower
    assert ours[0] == 200
    flower, ours = both_post("/api/task/timeout/interop.add", f"?workername={node}&soft=30")
    assert ours == flower
    assert ours[0] == 200
    flower, ours = both_post(f"/api/worker/queue/add-consumer/{node}", "?queue=dashapi-extra")
    assert (ours[0], flower[0]) == (200, 200)
    assert set(ours[1]) == set(flower[1]) == {"message"}
    flower, ours = both_post(f"/api/worker/queue/cancel-consumer/{node}", "?queue=dashapi-extra")
    assert (ours[0], set(ours[1])) == (flower[0], set(flower[1]))
    flower, ours = both_post("/api/worker/pool/grow/nobody@nowhere")
    assert (ours[0], flower[0]) == (404, 404)

    flower, ours = both_post("/api/task/apply/interop.add", body={"args": [4, 5],
                             "queue": QUEUE, "timeout": WAIT})  # fmt: skip
    assert (ours[0], flower[0]) == (200, 200)
    assert set(ours[1]) == set(flower[1]) == {"task-id", "state", "result"}
    assert ours[1]["result"] == flower[1]["result"] == 9
    flower, ours = both_post("/api/task/send-task/interop.add", body={"args": [1, 1],
                             "queue": QUEUE})  # fmt: skip
    assert set(ours[1]) == set(flower[1])
    assert cluster["client"].AsyncResult(ours[1]["task-id"]).get(timeout=WAIT) == 2
