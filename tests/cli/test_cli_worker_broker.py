"""``caraway worker`` against a broker nobody answers: a clear error and a failing exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_support import WAIT, Project, subprocess_env
from services import free_port


@pytest.mark.parametrize(
    ("scheme", "setting", "why"),
    [
        ("redis://:s3cret@", "broker_connection_retry_on_startup = False",
         "broker_connection_retry_on_startup is off"),
        ("amqp://guest:s3cret@", "broker_connection_max_retries = 1",
         "gave up after 1 retries"),
    ],
)  # fmt: skip
def test_a_worker_that_cannot_reach_its_broker_exits_non_zero_saying_why(
    project: Project, scheme: str, setting: str, why: str
) -> None:
    port = free_port()
    suffix = "/0" if scheme.startswith("redis") else "//"
    url = f"{scheme}127.0.0.1:{port}{suffix}"
    name = project.add_module("down", f"""
        from caraway import Celery

        app = Celery("down", broker={url!r})
        app.conf.{setting}
    """)  # fmt: skip

    done = subprocess.run(
        [sys.executable, "-m", "caraway", "-A", name, "worker", "-P", "solo", "-l", "INFO"],
        cwd=project.root, env=subprocess_env(), capture_output=True, text=True, timeout=WAIT,
        check=False,
    )  # fmt: skip

    masked = url.replace("s3cret", "**")
    assert done.returncode == 1
    assert f"Error: Cannot connect to the broker at {masked} (" in done.stderr
    assert why in done.stderr
    assert "s3cret" not in done.stderr + done.stdout
    assert " ready." not in done.stderr
    assert "Traceback" not in done.stderr
