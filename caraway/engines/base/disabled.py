"""The backend used when results are not configured: storing is a no-op, reading an error."""

from __future__ import annotations

from typing import Any, NoReturn

from caraway.engines.base.backend import Backend, BackendCapabilities, Stored
from caraway.exceptions import ImproperlyConfigured


class BackendNotConfigured(ImproperlyConfigured, NotImplementedError):
    """Raised on reading a result when no result backend is configured (as Celery does)."""


def _not_configured() -> NoReturn:
    raise BackendNotConfigured(
        "No result backend is configured: set result_backend (e.g. 'sqlite:///results.db',"
        " 'redis://localhost/1') or pass backend= to the app to read task results."
    )


class DisabledBackend(Backend):
    capabilities = BackendCapabilities(readable_by_workers=False, stores_results=False)

    def get_raw(self, key: str) -> Stored | None:
        _not_configured()

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        _not_configured()

    def set_raw(self, key: str, value: Stored, state: str | None, ttl: float | None) -> None:
        """Results are dropped on purpose: nobody asked to keep them."""

    def delete_raw(self, key: str) -> None:
        """Nothing is stored, so nothing to forget."""

    def store_result(self, task_id: str, result: Any, state: str, *a: Any, **k: Any) -> Any:
        return None
