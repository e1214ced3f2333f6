"""Engines from outside caraway: an installed distribution's entry points, and class paths.

``caraway-toy-engine`` (beside this file) is installed with pip into a temporary folder, as a
third-party engine would be; a worker subprocess then runs tasks sent through ``toy://``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from services import missing

from caraway import Celery
from caraway.engines.memory.backend import MemoryBackend
from caraway.engines.memory.broker import MemoryBroker
from caraway.engines.registry import create_backend, create_broker
from caraway.exceptions import ImproperlyConfigured

HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "caraway-toy-engine"
CONSTRAINTS = HERE.parent.parent / "constraints.txt"
WAIT = 15.0

TASKS = """
from caraway import Celery

app = Celery("toyproj", broker={broker!r}, backend={backend!r})


@app.task(name="toy.add")
def add(x, y):
    return x + y
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy engine installed into its own folder (not on ``sys.path`` until a test says)."""
    target = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PIP_CONSTRAINT": str(CONSTRAINTS)}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), str(PLUGIN)],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    if done.returncode != 0:  # a skip on a laptop offline, a failure in CI
        missing(f"pip could not install the toy engine:\n{done.stderr}")
    return target


@pytest.fixture
def on_path(installed: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The toy engine importable, and its entry points visible, in this process."""
    monkeypatch.syspath_prepend(str(installed))
    return installed


@contextmanager
def _worker(root: Path, site: Path, broker: str, backend: str) -> Iterator[subprocess.Popen[bytes]]:
    """A worker subprocess for the app of ``TASKS``, stopped at the end."""
    (root / "toyproj.py").write_text(TASKS.format(broker=broker, backend=backend))
    code = "import toyproj; toyproj.app.Worker(pool='threads', concurrency=1).start()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(site)])}
    with open(root / "worker.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT)


def _round_trip(root: Path, site: Path, broker: str, backend: str) -> None:
    """A task sent here through ``broker`` runs in the worker, and its result comes back
    through ``backend``."""
    client = Celery("toyclient", broker=broker, backend=backend)
    try:
        with _worker(root, site, broker, backend) as proc:
            result = client.send_task("toy.add", args=(2, 3))
            try:
                assert result.get(timeout=WAIT) == 5
            finally:
                assert proc.poll() is None, (root / "worker.log").read_text()
            assert type(client.broker).__module__ == "caraway_toy"
            assert type(client.backend).__module__ == "caraway_toy"
    finally:
        client.close()


def test_a_worker_runs_tasks_on_an_engine_found_by_entry_point(
    on_path: Path, tmp_path: Path
) -> None:
    url = f"toy:///{tmp_path}/toy.sqlite3"
    _round_trip(tmp_path, on_path, url, url)


def test_a_worker_runs_tasks_on_an_engine_named_by_class_path(
    on_path: Path, tmp_path: Path
) -> None:
    path = f"{tmp_path}/toy.sqlite3"
    broker, backend = f"caraway_toy:ToyBroker:///{path}", f"caraway_toy.ToyBackend:///{path}"
    _round_trip(tmp_path, on_path, broker, backend)


def test_an_entry_point_that_cannot_load_names_its_distribution(on_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        create_broker("broken://x")
    message = str(info.value)
    assert "'caraway-toy-engine'" in message
    assert "broken = 'caraway_toy.missing:Broker'" in message
    assert "'caraway.brokers'" in message
    assert isinstance(info.value.__cause__, ImportError)


def test_an_entry_point_to_something_else_than_an_engine_is_refused(on_path: Path) -> None:
    with pytest.raises(
        ImproperlyConfigured, match=r"'caraway-toy-engine'.* is not a broker engine"
    ):
        create_broker("notabroker://x")


def test_an_unknown_scheme_suggests_plugin_schemes_too(on_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"Did you mean 'toy'\?") as info:
        create_broker("tox://x")
    assert "from plug-ins: broken, notabroker, toy" in str(info.value)
    with pytest.raises(ImproperlyConfigured, match=r"Did you mean 'redis'\?"):
        create_broker("rediz://x")


def test_a_plugin_cannot_take_over_a_builtin_scheme(on_path: Path) -> None:
    broker = create_broker("memory://plugins-builtin")
    assert type(broker) is MemoryBroker


def test_plugins_are_found_only_once_installed(installed: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="unknown broker scheme 'toy'") as info:
        create_broker("toy:///x")
    assert "plug-ins" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "caraway.engines.memory.broker:MemoryBroker://plugins-a",
        "caraway.engines.memory.broker.MemoryBroker://plugins-b",
        "caraway.engines.memory.broker:MemoryBroker",
    ],
)
def test_a_broker_named_by_class_path_gets_the_url_unchanged(url: str) -> None:
    broker = create_broker(url)
    assert isinstance(broker, MemoryBroker)
    assert broker.url == url


def test_a_backend_named_by_class_path() -> None:
    app = Celery("classpath")
    url = "caraway.engines.memory.backend.MemoryBackend"
    backend = create_backend(app, url)
    assert isinstance(backend, MemoryBackend)
    assert backend.url == url


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("caraway.nowhere:Broker://x", "cannot import the broker engine class 'caraway.nowhere"),
        ("caraway.engines.memory.broker:Nothing", "cannot import the broker engine class"),
        ("caraway.engines.memory.backend:MemoryBackend://x", "is not a broker engine"),
        ("localhost:6379", "is not a URL"),
    ],
)
def test_a_bad_class_path_says_why(url: str, error: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=error):
        create_broker(url)
