"""The public surface: complete ``__all__`` lists, Celery's import paths, one-way imports."""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import caraway

PUBLIC_MODULES = [
    "caraway", "caraway.exceptions", "caraway.states", "caraway.signals", "caraway.schedules",
    "caraway.beat", "caraway.queues",
]  # fmt: skip


def _public_names(module: types.ModuleType) -> set[str]:
    """Names a user may import: not private, not modules, not imported from elsewhere."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        origin = getattr(value, "__module__", None)
        if isinstance(value, str) or origin is None:
            names.add(name)  # a constant defined here
        elif origin == module.__name__ or (
            module.__name__ == "caraway" and origin.startswith("caraway.")
        ):
            names.add(name)  # the package re-exports its submodules' API
    return names


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_lists_every_public_name(name: str) -> None:
    module = importlib.import_module(name)

    assert sorted(_public_names(module) - set(module.__all__)) == []


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_name_in_all_exists_once(name: str) -> None:
    module = importlib.import_module(name)

    assert [n for n in module.__all__ if not hasattr(module, n)] == []
    assert len(module.__all__) == len(set(module.__all__))


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}

    exec("from caraway import *", namespace)

    assert set(namespace) - {"__builtins__"} == set(caraway.__all__)


def test_celery_style_imports_work() -> None:
    from caraway import Celery, Task, chain, shared_task, signature
    from caraway.exceptions import MaxRetriesExceededError, Retry
    from caraway.result import AsyncResult
    from caraway.utils.log import get_task_logger

    assert Celery is caraway.Caraway
    assert callable(shared_task)
    assert isinstance(Task, type)
    assert callable(signature)
    assert callable(chain)
    assert AsyncResult is caraway.AsyncResult
    assert issubclass(Retry, Exception)
    assert issubclass(MaxRetriesExceededError, Exception)
    assert callable(get_task_logger)


def test_version_is_exposed() -> None:
    assert caraway.__version__ == ".".join(map(str, caraway.VERSION))


def test_exceptions_have_one_root_and_celerys_names() -> None:
    from caraway import exceptions

    for name in exceptions.__all__:
        value = getattr(exceptions, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(
                value, exceptions.CarawayError | exceptions.CarawayWarning | SystemExit
            ), name
    assert exceptions.CeleryError is exceptions.CarawayError
    assert exceptions.RetryTaskError is exceptions.Retry


def test_get_task_logger_feeds_the_task_logger(caplog: pytest.LogCaptureFixture) -> None:
    from caraway.utils.log import get_task_logger

    logger = get_task_logger("proj.tasks")

    assert logger.parent is logging.getLogger("caraway.task")
    with caplog.at_level(logging.INFO):
        logger.info("hello from a task")
    assert "hello from a task" in caplog.text
    with pytest.raises(RuntimeError, match="reserved"):
        get_task_logger("celery.task")


# --- import layering ----------------------------------------------------------------------

LOWER_TOP_LEVEL = [
    "exceptions", "states", "signals", "settings", "config", "serialization", "protocol",
    "schedules", "version",
    "control.mailbox",
]  # fmt: skip
LOWER_PACKAGES = ["utils", "engines"]
FORBIDDEN = (
    "caraway.app", "caraway.task", "caraway.result", "caraway.canvas", "caraway.calling",
    "caraway.execution", "caraway.worker", "caraway.beat", "caraway.events", "caraway.cli",
    "caraway.contrib",
)  # fmt: skip

# Imports each module with the ``caraway`` package stubbed (its __init__ imports the app) and
# reports which forbidden modules got imported.
_PROBE = """
import importlib, json, sys, types
package_dir, names, forbidden = sys.argv[1], json.loads(sys.argv[2]), tuple(sys.argv[3:])
report = {}
for name in names:
    for loaded in [m for m in sys.modules if m == "caraway" or m.startswith("caraway.")]:
        del sys.modules[loaded]
    stub = types.ModuleType("caraway")
    stub.__path__ = [package_dir]
    sys.modules["caraway"] = stub
    importlib.import_module(name)
    report[name] = sorted(
        m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden)
    )
print(json.dumps(report))
"""


def _lower_modules() -> list[str]:
    names = [f"caraway.{name}" for name in LOWER_TOP_LEVEL]
    for package in LOWER_PACKAGES:
        module = importlib.import_module(f"caraway.{package}")
        names.append(module.__name__)
        names.extend(
            info.name for info in pkgutil.walk_packages(module.__path__, f"{module.__name__}.")
        )
    return names


def test_lower_layers_never_import_app_worker_or_cli() -> None:
    names = _lower_modules()
    assert "caraway.engines.memory.broker" in names
    assert "caraway.engines.base.backend" in names
    assert "caraway.utils.text" in names
    package_dir = str(Path(caraway.__file__).parent)

    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, package_dir, json.dumps(names), *FORBIDDEN],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert set(report) == set(names)
    assert {name: found for name, found in report.items() if found} == {}


def test_the_probe_sees_forbidden_imports() -> None:
    """The layering check is not vacuous: a worker module is reported."""
    package_dir = str(Path(caraway.__file__).parent)

    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, package_dir, json.dumps(["caraway.worker.job"]),
         *FORBIDDEN],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    assert "caraway.worker.job" in json.loads(completed.stdout)["caraway.worker.job"]
