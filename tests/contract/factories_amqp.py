"""RabbitMQ for the broker contract suite: one vhost for the session, deleted at exit.

Each test already uses its own queue names; the vhost keeps them off the shared server's
``/`` and goes away with everything in it (a vhost per test would cost ~2 s of rabbitmqctl).
"""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _load_require() -> Callable[[str], tuple[str, int]]:
    """``tests/services.py``'s ``require`` (this file is loaded by path, not as a package)."""
    path = Path(__file__).resolve().parent.parent / "services.py"
    spec = importlib.util.spec_from_file_location("caraway_test_services_amqp", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.require  # type: ignore[no-any-return]


require = _load_require()
_session_vhost: list[str] = []


def rabbitmqctl(*args: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return result.stdout


def _vhost() -> str:
    if not _session_vhost:
        if shutil.which("rabbitmqctl") is None:
            import pytest

            pytest.skip("rabbitmqctl is not installed: cannot create a test vhost")
        name = f"caraway-test-contract-{uuid.uuid4().hex[:8]}"
        rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        atexit.register(rabbitmqctl, "delete_vhost", name)
        _session_vhost.append(name)
    return _session_vhost[0]


@contextmanager
def amqp_broker(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    host, port = require("rabbitmq")
    # Every queue priority-enabled, so the priority contract holds on fresh queue names.
    yield f"amqp://guest:guest@{host}:{port}/{_vhost()}", {"queue_max_priority": 10}


BROKERS = {"amqp": amqp_broker}
