"""Fixtures shared by the unit tests (no services needed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import services

from caraway import Caraway
from caraway.engines.base.broker import Outgoing


@pytest.fixture(scope="session")
def captures_dir() -> Path:
    """The golden captures of real Celery traffic, in the shared/ checkout beside the repo."""
    return services.captures_dir()


@pytest.fixture
def app() -> Iterator[Caraway]:
    """A fresh app on its own in-process broker, not set as current."""
    app = Caraway(
        "proj",
        broker=f"memory://unit-{uuid.uuid4().hex}",
        backend="cache+memory://",
        set_as_current=False,
    )
    yield app
    app.close()


@pytest.fixture
def published(app: Caraway, monkeypatch: pytest.MonkeyPatch) -> list[Outgoing]:
    """Every message the app publishes, including ones the broker holds until their ETA."""
    sent: list[Outgoing] = []
    publish = app.broker.publish

    def record(batch: Any) -> None:
        sent.extend(batch)
        publish(batch)

    monkeypatch.setattr(app.broker, "publish", record)
    return sent
