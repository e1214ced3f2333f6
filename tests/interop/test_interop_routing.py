"""Exchanges between real Celery and caraway, on RabbitMQ and on Redis.

Both sides configure the same ``task_queues``: Celery with kombu's ``Exchange``/``Queue``/
``Broadcast``, caraway with ``caraway.queues``. A task sent through the topic exchange by one
side runs on the other side's worker consuming a queue bound there; a task caraway sends to a
``Broadcast`` queue runs on a Celery worker and a caraway worker alike. Tasks leave a marker
file with the ``delivery_info`` they saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from interop_support import (
    BIN,
    Wire,
    die_with_parent,
    rabbitmq_wire,
    redis_wire,
    wait_until,
)

ROUTES_SOURCE = """
import json
import os
import uuid
from pathlib import Path

from {lib} import Celery
{imports}

LIB = "{lib}"
NEWS = Exchange("news", type="topic")
app = Celery("routes", broker=os.environ["ROUTES_BROKER"])
app.conf.broker_transport_options = json.loads(os.environ["ROUTES_TRANSPORT"])
app.conf.task_queues = [
    Queue("sport", NEWS, routing_key="news.sport.*"),
    Queue("everything", NEWS, routing_key="#"),
    Broadcast("announcements"),
]


@app.task(name="routes.record", bind=True)
def record(self, tag):
    info = self.request.delivery_info
    seen = {{"exchange": info.get("exchange"), "routing_key": info.get("routing_key")}}
    markers = Path(os.environ["ROUTES_MARKERS"])
    (markers / f"{{tag}}.{{LIB}}.{{uuid.uuid4().hex}}").write_text(json.dumps(seen))
"""
IMPORTS = {
    "celery": "from kombu import Exchange, Queue\nfrom kombu.common import Broadcast",
    "caraway": "from caraway.queues import Broadcast, Exchange, Queue",
}


class Side:
    """The routes project of one library: a client app in this process, workers outside."""

    def __init__(self, lib: str, folder: Path, wire: Wire) -> None:
        self.lib, self.folder, self.wire = lib, folder, wire
        self.markers = folder / "markers"
        self.env = {
            **os.environ, "PYTHONPATH": str(folder), "ROUTES_BROKER": wire.broker,
            "ROUTES_TRANSPORT": json.dumps(wire.transport), "ROUTES_MARKERS": str(self.markers),
        }  # fmt: skip
        self.env.pop("CARAWAY_HOME", None)
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def worker(self, queues: str) -> None:
        name = f"{self.lib}-{uuid.uuid4().hex[:6]}"
        log = self.folder / f"{name}.log"
        args = [str(BIN / self.lib), "-A", f"routes_{self.lib}", "worker", "-P", "solo",
                "-Q", queues, "-n", f"{name}@%h", "-l", "INFO"]  # fmt: skip
        if self.lib == "celery":
            args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                args, cwd=self.folder, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
            )  # fmt: skip
        self.procs.append((proc, log))

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited early:\n{log.read_text()}")
            return " ready." in log.read_text(errors="replace")

        wait_until(ready, 30.0, f"{name} to be ready")

    def send(self, tag: str, **options: Any) -> None:
        """Send from a short-lived client process of this library."""
        code = (
            f"from routes_{self.lib} import app\n"
            f"app.send_task('routes.record', args=[{tag!r}], **{options!r})\n"
        )
        subprocess.run(
            [sys.executable, "-c", code], cwd=self.folder, env=self.env, check=True, timeout=30
        )

    def logs(self) -> str:
        return "\n".join(f"===== {log.name} =====\n{log.read_text()}" for _, log in self.procs)

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def sides(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    dict[str, Side]
]:  # fmt: skip
    """A Celery worker on ``sport`` and the broadcast queue, a caraway worker on
    ``everything`` and the broadcast queue, both on one wire."""
    folder = tmp_path_factory.mktemp(f"routes-{request.param}")
    (folder / "markers").mkdir()
    for lib, imports in IMPORTS.items():
        (folder / f"routes_{lib}.py").write_text(ROUTES_SOURCE.format(lib=lib, imports=imports))
    wire_of = redis_wire if request.param == "redis" else rabbitmq_wire
    with wire_of() as wire:
        made = {lib: Side(lib, folder, wire) for lib in IMPORTS}
        try:
            made["celery"].worker("sport,announcements")
            made["caraway"].worker("everything,announcements")
            yield made
        except BaseException:
            print(made["celery"].logs(), made["caraway"].logs())
            raise
        finally:
            for side in made.values():
                side.stop()


def seen(side: Side, tag: str, count: int) -> list[tuple[str, str, str]]:
    def found() -> list[tuple[str, str, str]] | None:
        marks = []
        for path in side.markers.glob(f"{tag}.*"):
            info = json.loads(path.read_text())
            marks.append((path.name.split(".")[1], info["exchange"], info["routing_key"]))
        return sorted(marks) if len(marks) >= count else None

    try:
        return wait_until(found, 30.0, f"{count} run(s) of {tag}")
    except BaseException:
        print(side.logs())
        raise


def test_caraway_sends_through_a_topic_exchange_to_both_workers(sides: dict[str, Side]) -> None:
    sides["caraway"].send("from-caraway", exchange="news", routing_key="news.sport.golf")
    assert seen(sides["caraway"], "from-caraway", 2) == [
        ("caraway", "news", "news.sport.golf"),
        ("celery", "news", "news.sport.golf"),
    ]


def test_celery_sends_through_a_topic_exchange_to_both_workers(sides: dict[str, Side]) -> None:
    # Routed by a queue of the exchange, so kombu declares the exchange as a topic one first:
    # a kombu client on Redis that never declared it reads its bindings as direct ones.
    sides["celery"].send("from-celery", queue="sport", routing_key="news.sport.chess")
    assert seen(sides["celery"], "from-celery", 2) == [
        ("caraway", "news", "news.sport.chess"),
        ("celery", "news", "news.sport.chess"),
    ]


def test_a_topic_key_only_one_binding_matches_reaches_one_worker(sides: dict[str, Side]) -> None:
    sides["celery"].send("weather", queue="sport", routing_key="news.weather")
    assert seen(sides["celery"], "weather", 1) == [("caraway", "news", "news.weather")]


def test_a_broadcast_from_caraway_runs_on_the_celery_and_caraway_workers(
    sides: dict[str, Side],
) -> None:
    sides["caraway"].send("everyone", queue="announcements")
    assert seen(sides["caraway"], "everyone", 2) == [
        ("caraway", "announcements", "celery"),
        ("celery", "announcements", "celery"),
    ]
