"""Stores of beat state; :func:`store_for_app` picks the one for the app's result backend."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from caraway.engines.base.beat_store import BeatStore, EntryState
from caraway.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from caraway.app import Caraway

__all__ = ["BeatStore", "EntryState", "store_for_app"]


def store_for_app(app: Caraway) -> BeatStore:
    """The database scheduler's store: the result backend's own SQLite file, Redis or SQL."""
    from caraway.engines.sqlite.backend import SQLiteBackend

    backend = app.backend
    if isinstance(backend, SQLiteBackend):
        from caraway.engines.sqlite.beat_store import SQLiteStore

        return SQLiteStore(backend.db)
    # Modules of the other engines are loaded only when such a backend exists.
    redis_module = sys.modules.get("caraway.engines.redis.backend")
    if redis_module is not None and isinstance(backend, redis_module.RedisBackend):
        from caraway.engines.redis.beat_store import RedisStore

        return RedisStore(backend.client, backend.target, backend.prefix)
    sql_module = sys.modules.get("caraway.engines.sql.backend")
    if sql_module is not None and isinstance(backend, sql_module.SQLBackend):
        from caraway.engines.sql.beat_store import SQLStore

        return SQLStore(backend)
    raise ImproperlyConfigured(
        f"the database scheduler keeps schedules in the result backend, and "
        f"{backend.describe()} cannot hold them. Set result_backend to sqlite:///..., "
        "redis://... or db+postgresql://... (or use the default PersistentScheduler)."
    )
