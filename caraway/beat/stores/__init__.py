"""Stores of beat state; :func:`store_for_app` asks the app's result backend for its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from caraway.engines.base.beat_store import BeatStore, EntryState

if TYPE_CHECKING:
    from caraway.app import Caraway

__all__ = ["BeatStore", "EntryState", "store_for_app"]


def store_for_app(app: Caraway) -> BeatStore:
    """The database scheduler's store: kept by the result backend, beside the results."""
    return app.backend.beat_store()
