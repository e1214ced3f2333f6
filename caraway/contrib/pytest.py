"""The pytest plugin: Celery's fixtures (``celery_app``, ``celery_worker``, ...) for caraway.

Registered through the ``pytest11`` entry point, so installing caraway enables it; disable
it with ``-p no:caraway``. Loading it imports nothing beyond pytest and connects nowhere:
apps and workers are made only when a test asks for the fixtures.

Configure the test app by overriding the session fixtures (``celery_config``,
``celery_parameters``, ``celery_includes``, ...) in a ``conftest.py``, or per test with
``@pytest.mark.celery(**settings)``.

Every test app uses the process-wide ``memory://`` store, as in Celery, so a session worker
also takes the messages of a test's own ``celery_app``; give those tests a store of their
own (``@pytest.mark.celery(broker_url="memory://per-test")``) when mixing the two.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from caraway.contrib.testing.app import TestApp, setup_default_app
from caraway.contrib.testing.worker import start_worker

if TYPE_CHECKING:
    from caraway.app import Caraway
    from caraway.worker.worker import Worker

__all__ = [
    "celery_app",
    "celery_class_tasks",
    "celery_config",
    "celery_enable_logging",
    "celery_includes",
    "celery_parameters",
    "celery_session_app",
    "celery_session_worker",
    "celery_worker",
    "celery_worker_parameters",
    "celery_worker_pool",
    "depends_on_current_app",
    "pytest_configure",
    "use_celery_app_trap",
]


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``celery`` marker, so ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers", "celery(**overrides): override caraway settings of celery_app for a test"
    )


@contextmanager
def _create_app(
    enable_logging: bool,
    use_trap: bool,
    parameters: Mapping[str, Any],
    includes: Sequence[str],
    config: Mapping[str, Any],
) -> Iterator[Caraway]:
    app = TestApp(set_as_current=False, enable_logging=enable_logging, config=config, **parameters)
    with setup_default_app(app, use_trap=use_trap):
        for module in includes:
            importlib.import_module(module)
        yield app


# --- settings: override these in a conftest.py ------------------------------------------------


@pytest.fixture(scope="session")
def use_celery_app_trap() -> bool:
    """Return True to make any use of ``current_app`` in a test fail (the app must be passed).

    The ``depends_on_current_app`` fixture lifts the trap for one test.
    """
    return False


@pytest.fixture(scope="session")
def celery_config() -> Mapping[str, Any]:
    """Settings of the test apps, over the test defaults (memory broker and results)."""
    return {}


@pytest.fixture(scope="session")
def celery_parameters() -> Mapping[str, Any]:
    """Keyword arguments for creating the test apps (``Caraway(**parameters)``)."""
    return {}


@pytest.fixture(scope="session")
def celery_worker_parameters() -> Mapping[str, Any]:
    """Keyword arguments for the test workers (``start_worker(app, **parameters)``)."""
    return {}


@pytest.fixture(scope="session")
def celery_includes() -> Sequence[str]:
    """Modules to import for the test apps: task modules, modules connecting signals."""
    return ()


@pytest.fixture(scope="session")
def celery_enable_logging() -> bool:
    """Return True to let test workers set up logging as a real worker does."""
    return False


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    """The pool of the test workers (``solo``: tasks run in the worker's own thread)."""
    return "solo"


@pytest.fixture(scope="session")
def celery_class_tasks() -> Sequence[Any]:
    """Class-based tasks (classes or instances) to register with the apps of test workers."""
    return []


# --- apps and workers --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def celery_session_app(
    celery_config: Mapping[str, Any],
    celery_parameters: Mapping[str, Any],
    celery_enable_logging: bool,
    use_celery_app_trap: bool,
    celery_includes: Sequence[str],
) -> Iterator[Caraway]:
    """One test app for the whole session, current (unless trapped) while it lives."""
    with _create_app(
        celery_enable_logging, use_celery_app_trap, celery_parameters, celery_includes,
        celery_config,
    ) as app:  # fmt: skip
        yield app


@pytest.fixture(scope="session")
def celery_session_worker(
    celery_session_app: Caraway,
    celery_class_tasks: Sequence[Any],
    celery_worker_pool: str,
    celery_worker_parameters: Mapping[str, Any],
) -> Iterator[Worker]:
    """A worker for ``celery_session_app``, running in a thread for the whole session."""
    with _start(
        celery_session_app, celery_class_tasks, celery_worker_pool, celery_worker_parameters
    ) as worker:
        yield worker


@pytest.fixture
def celery_app(
    request: pytest.FixtureRequest,
    celery_config: Mapping[str, Any],
    celery_parameters: Mapping[str, Any],
    celery_enable_logging: bool,
    use_celery_app_trap: bool,
    celery_includes: Sequence[str],
) -> Iterator[Caraway]:
    """A fresh test app for one test, current (unless trapped) during it, closed after.

    Its settings are the test defaults, updated by ``celery_config``, then by the test's
    ``@pytest.mark.celery(...)`` marker.
    """
    marker = request.node.get_closest_marker("celery")
    config = {**celery_config, **(marker.kwargs if marker else {})}
    with _create_app(
        celery_enable_logging, use_celery_app_trap, celery_parameters, celery_includes, config
    ) as app:
        yield app


@pytest.fixture
def celery_worker(
    celery_app: Caraway,
    celery_class_tasks: Sequence[Any],
    celery_worker_pool: str,
    celery_worker_parameters: Mapping[str, Any],
) -> Iterator[Worker]:
    """A worker for ``celery_app``, running in a thread during one test, stopped after."""
    with _start(celery_app, celery_class_tasks, celery_worker_pool, celery_worker_parameters) as w:
        yield w


@pytest.fixture
def depends_on_current_app(celery_app: Caraway) -> None:
    """Make ``celery_app`` the current app, even when ``use_celery_app_trap`` is on."""
    celery_app.set_current()


@contextmanager
def _start(
    app: Caraway, class_tasks: Sequence[Any], pool: str, parameters: Mapping[str, Any]
) -> Iterator[Worker]:
    for task in class_tasks:
        app.register_task(task)
    with start_worker(app, **{"pool": pool, **parameters}) as worker:
        yield worker
