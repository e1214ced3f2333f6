"""Fixtures for real Celery on caraway's wire: one project folder per session, each wire
(Redis + Redis results, RabbitMQ + rpc:// results) set up once, client apps of both kinds.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from interop_support import (
    Wire,
    Workers,
    close_celery_app,
    rabbitmq_wire,
    redis_wire,
    write_project,
)

pytest.importorskip("celery", reason="the interop tests need Celery: pip install -e '.[test]'")

#: Every ``Workers`` registry alive, so a failing test prints the logs of all of them.
_REGISTRIES: list[Workers] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_FAILED] = report.failed


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def _print_worker_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if request.node.stash.get(_FAILED, False):
        for registry in _REGISTRIES:
            print(registry.logs())


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The task modules, importable by the workers and by this process."""
    folder = write_project(tmp_path_factory.mktemp("interop"))
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        for name in ("celery_side", "caraway_side", "interop_errors"):
            sys.modules.pop(name, None)


@pytest.fixture(scope="session", params=["redis", "rabbitmq"])
def wire(request: pytest.FixtureRequest) -> Iterator[Wire]:
    factory = redis_wire if request.param == "redis" else rabbitmq_wire
    with factory() as made:
        yield made


@pytest.fixture(scope="session")
def marker_dir(project: Path) -> Path:
    folder = project / "markers"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def celery_client(project: Path, wire: Wire, marker_dir: Path) -> Iterator[Any]:
    """A real Celery app (the client side) on the wire."""
    module = importlib.import_module("celery_side")
    app = module.build(wire.broker, wire.backend, wire.transport, wire.result_transport)
    try:
        yield app
    finally:
        close_celery_app(app)


@pytest.fixture(scope="session")
def caraway_client(project: Path, wire: Wire, marker_dir: Path) -> Iterator[Any]:
    """A caraway app (the client side) on the wire."""
    module = importlib.import_module("caraway_side")
    app = module.build(wire.broker, wire.backend, wire.transport, wire.result_transport)
    try:
        yield app
    finally:
        app.close()


@pytest.fixture(scope="module")
def workers(project: Path, wire: Wire, marker_dir: Path) -> Iterator[Workers]:
    """Starts workers for a module's tests; stops (or kills) every one at the end."""
    registry = Workers(project, wire, marker_dir)
    _REGISTRIES.append(registry)
    try:
        yield registry
    finally:
        registry.stop_all()
        _REGISTRIES.remove(registry)
