"""Real services the tests talk to: probe them, skip on a laptop without them, fail in CI."""

from __future__ import annotations

import os
import socket

import pytest

SERVICES = {
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
    "postgresql": ("127.0.0.1", 5432),
    "mariadb": ("127.0.0.1", 3306),
}


def require(name: str) -> tuple[str, int]:
    """The service's address; missing is a failure under ``CI=true``, else a skip."""
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return host, port
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc}); start it (see README)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
