"""Tasks every app has, under Celery's names."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caraway.app import Caraway


def register_builtins(app: Caraway) -> None:
    @app.task(name="celery.backend_cleanup", shared=False, ignore_result=True)
    def backend_cleanup() -> int:
        """Delete expired results (run daily by beat when ``result_expires`` is set)."""
        return app.backend.cleanup()

    @app.task(name="celery.ping", shared=False)
    def ping() -> str:
        return "pong"
