"""Signed messages cross between Celery and caraway both ways (Celery's ``auth`` serializer,
as ``examples/security`` configures it), and a worker that signs refuses unsigned tasks.

Workers and clients are subprocesses: ``setup_security()`` changes process-wide serializer
registries (kombu's and caraway's), which must not leak into other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from interop.interop_support import Wire, WorkerProcess, redis_wire, wait_until
from signing_support import write_identity

SIDE = '''
"""The signed app, for {lib}: Celery's examples/security configuration."""
import json
import os

from {lib} import Celery

app = Celery("signed", broker=os.environ["INTEROP_BROKER"], backend=os.environ["INTEROP_BACKEND"])
app.conf.update(
    broker_transport_options=json.loads(os.environ["INTEROP_TRANSPORT"]),
    result_backend_transport_options=json.loads(os.environ["INTEROP_RESULT_TRANSPORT"]),
    broker_connection_retry_on_startup=True,
    security_key=os.environ["SIGNED_SSL"] + "/worker.key",
    security_certificate=os.environ["SIGNED_SSL"] + "/worker.pem",
    security_cert_store=os.environ["SIGNED_SSL"] + "/*.pem",
    task_serializer="auth",
    accept_content=["auth"],
    result_accept_content=["json"],
)
if os.environ.get("SIGNED_OFF") != "1":
    app.setup_security()
else:  # a sender that does not sign: plain JSON
    app.conf.update(task_serializer="json", accept_content=["json"])


@app.task(name="signed.whoami", shared=False)
def whoami(x):
    return ["{lib}", x]
'''

SEND = """
import json, sys
from {lib}_side import app
result = app.send_task("signed.whoami", (sys.argv[1],), queue=sys.argv[2])
print(json.dumps(result.get(timeout=float(sys.argv[3]))))
"""


@pytest.fixture(scope="module")
def signed_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("signed")
    write_identity(folder / "ssl", "worker", serial=4242)
    for lib in ("celery", "caraway"):
        (folder / f"{lib}_side.py").write_text(SIDE.format(lib=lib))
    return folder


@pytest.fixture(scope="module")
def wire() -> Iterator[Wire]:
    with redis_wire() as made:
        yield made


@pytest.fixture(scope="module")
def signed_workers(signed_project: Path, wire: Wire) -> Iterator[dict[str, WorkerProcess]]:
    """One signing worker of each kind, on a queue named after it."""
    os.environ["SIGNED_SSL"] = str(signed_project / "ssl")
    markers = signed_project / "markers"
    markers.mkdir(exist_ok=True)
    started = {kind: WorkerProcess(kind, signed_project, wire, markers, kind) for kind in
               ("celery", "caraway")}  # fmt: skip
    try:
        for worker in started.values():
            worker.wait_ready()
        yield started
    finally:
        for worker in started.values():
            worker.stop()
        del os.environ["SIGNED_SSL"]


def _send(
    project: Path, wire: Wire, sender: str, queue: str, value: str, wait: float = 15, **env: str
) -> object:
    """Send ``signed.whoami(value)`` from a ``sender`` process; its JSON-decoded result."""
    environment = {**os.environ, **wire.env(project / "markers"), "PYTHONPATH": str(project),
                   "SIGNED_SSL": str(project / "ssl"), **env}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", SEND.format(lib=sender), value, queue, str(wait)],
        cwd=project, env=environment, capture_output=True, text=True, timeout=40,
    )  # fmt: skip
    if done.returncode != 0:
        return f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.stdout}"
    return json.loads(done.stdout)


@pytest.mark.parametrize(("sender", "worker"), [("caraway", "celery"), ("celery", "caraway")])
def test_a_signed_task_runs_on_the_other_implementation(
    signed_project: Path, wire: Wire, signed_workers: dict[str, WorkerProcess], sender: str,
    worker: str,
) -> None:  # fmt: skip
    assert _send(signed_project, wire, sender, worker, f"from-{sender}") == [
        worker,
        f"from-{sender}",
    ]


def test_a_signing_worker_refuses_an_unsigned_task(
    signed_project: Path, wire: Wire, signed_workers: dict[str, WorkerProcess]
) -> None:
    outcome = _send(signed_project, wire, "caraway", "caraway", "unsigned", wait=2, SIGNED_OFF="1")
    assert isinstance(outcome, str)
    assert "failed" in outcome
    assert "TimeoutError" in outcome or "timed out" in outcome.lower()
    log = wait_until(
        lambda: (
            "application/json" in signed_workers["caraway"].output()
            and signed_workers["caraway"].output()
        ),
        what="the caraway worker to log the refused content type",
    )
    assert "Refusing to decode content of type 'application/json'" in log
