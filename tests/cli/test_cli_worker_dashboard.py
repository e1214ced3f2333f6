"""``caraway worker --dashboard``: one process runs the tasks and serves the dashboard."""

from __future__ import annotations

import json
import signal
import socket
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
from cli_support import WAIT, Project
from click.testing import CliRunner
from services import free_port

from caraway.cli.main import cli

pytest.importorskip("uvicorn", reason="the dashboard's extra: pip install -e '.[test]'")


def ask(port: int, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return json.loads(answer.read())
    except (OSError, ValueError):
        return None  # not serving (yet)


def test_the_worker_serves_the_dashboard_and_its_tasks_show_there(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARAWAY_DASHBOARD_DB", str(project.root / "dash.sqlite3"))
    port = free_port()
    worker = project.spawn("worker", "-P", "threads", "-n", "box@%h", "--dashboard",
                           "--dashboard-port", str(port))  # fmt: skip
    node = f"box@{socket.gethostname()}"
    project.wait_until(lambda: (ask(port, "/api/workers?status=true") or {}).get(node),
                       "the dashboard to see its own worker online")  # fmt: skip

    result = project.client().send_task(f"{project.module}.add", (2, 5))  # no -E: implied
    assert result.get(timeout=WAIT) == 7
    task = project.wait_until(
        lambda: ((ask(port, "/api/tasks") or {}).get(result.id) or {}).get("state") == "SUCCESS"
        and ask(port, "/api/tasks")[result.id], "the task in the dashboard",
    )  # fmt: skip
    assert (task["worker"], task["result"]) == (node, "7")

    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=WAIT)
    assert worker.returncode == 0
    assert ask(port, "/api/workers") is None  # the dashboard went with the worker


def test_a_dashboard_on_a_public_address_needs_authentication() -> None:
    result = CliRunner().invoke(cli, ["-b", "memory://", "worker", "--dashboard",
                                      "--dashboard-address", "0.0.0.0"])  # fmt: skip

    assert result.exit_code == 2
    assert "will not listen on 0.0.0.0 without authentication" in result.output


def test_a_taken_port_fails_before_the_worker_starts() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(cli, ["-b", "memory://", "worker", "--dashboard",
                                          "--dashboard-port", port])  # fmt: skip

    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert "--dashboard-port" in result.output


def test_without_the_extra_the_error_names_the_install_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if caraway[dashboard] were absent
    monkeypatch.delitem(sys.modules, "caraway.dashboard.server", raising=False)

    result = CliRunner().invoke(cli, ["-b", "memory://", "worker", "--dashboard"])

    assert result.exit_code == 2
    assert 'pip install "caraway[dashboard]"' in result.output
    assert "uvicorn is missing" in result.output
