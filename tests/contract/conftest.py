"""One contract suite over every engine: each engine registers a factory here.

A broker factory yields a URL (and transport options) isolated for one test: its own file,
Redis key prefix or database, or RabbitMQ vhost/queue names; it cleans up afterwards.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from caraway import Caraway
from caraway.engines.base.backend import Backend
from caraway.engines.base.broker import Broker

EngineFactory = Callable[[Path], Any]  # a context manager yielding (url, options[, conf])


@contextmanager
def _memory_broker(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    yield f"memory://contract-{uuid.uuid4().hex}", {}


@contextmanager
def _sqlite(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    yield f"sqlite:///{tmp_path}/contract.sqlite3", {"visibility_timeout": 1}


@contextmanager
def _memory_backend(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "cache+memory://", {}


BROKERS: dict[str, EngineFactory] = {"memory": _memory_broker, "sqlite": _sqlite}
BACKENDS: dict[str, EngineFactory] = {"memory": _memory_backend, "sqlite": _sqlite}


def _load_engine_factories() -> None:
    """Each ``factories_<engine>.py`` beside this file adds its ``BROKERS``/``BACKENDS``."""
    for path in sorted(Path(__file__).parent.glob("factories_*.py")):
        spec = importlib.util.spec_from_file_location(f"contract_{path.stem}", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        BROKERS.update(getattr(module, "BROKERS", {}))
        BACKENDS.update(getattr(module, "BACKENDS", {}))


_load_engine_factories()


@pytest.fixture
def broker_factories() -> dict[str, EngineFactory]:
    """Every broker factory the suites run on, by key (a built-in engine's package name)."""
    return dict(BROKERS)


@pytest.fixture(params=sorted(BROKERS))
def broker_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Caraway]:
    """An app whose broker is the engine under test (results in memory)."""
    with BROKERS[request.param](tmp_path) as (url, options):
        app = Caraway(
            "contract", broker=url, backend="cache+memory://", set_as_current=False,
            broker_transport_options=options,
        )  # fmt: skip
        try:
            yield app
        finally:
            app.close()


@pytest.fixture
def broker(broker_app: Caraway) -> Broker:
    return broker_app.broker


@pytest.fixture(params=sorted(BACKENDS))
def backend_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Caraway]:
    """An app whose result backend is the engine under test.

    A factory may yield a third item: settings for the app (e.g. per-test table names).
    """
    with BACKENDS[request.param](tmp_path) as (url, options, *extra):
        conf: dict[str, Any] = extra[0] if extra else {}
        app = Caraway(
            "contract", broker=f"memory://contract-{uuid.uuid4().hex}", backend=url,
            set_as_current=False, result_backend_transport_options=options, **conf,
        )  # fmt: skip
        try:
            yield app
        finally:
            app.close()


@pytest.fixture
def backend(backend_app: Caraway) -> Backend:
    return backend_app.backend
