"""``toy:///path``: an engine shipped outside caraway, found through its entry points.

It keeps messages and results in a SQLite file, as caraway's own ``sqlite://`` engine does (a
worker process and a client share the file), and keeps the ``toy://`` URL it was given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from caraway.engines.base.app import EngineApp
from caraway.engines.sqlite.backend import SQLiteBackend
from caraway.engines.sqlite.broker import SQLiteBroker


def sqlite_url(url: str) -> str:
    """``toy:///path`` (or ``caraway_toy:ToyBroker:///path``, its class path as the scheme) as
    the ``sqlite:///path`` the engine underneath reads."""
    return f"sqlite://{url.partition('://')[2]}"


class ToyBroker(SQLiteBroker):
    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(sqlite_url(url), options)
        self.url = url


class ToyBackend(SQLiteBackend):
    def __init__(self, app: EngineApp, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(app, sqlite_url(url), options)
        self.url = url
