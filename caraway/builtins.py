"""Tasks every app has, under Celery's names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

    _register_canvas_builtins(app)


def _register_canvas_builtins(app: Caraway) -> None:
    # Lazy, an allow-listed upward import: the built-in tasks run canvas primitives.
    from caraway.canvas import maybe_signature

    @app.task(name="celery.map", shared=False)
    def xmap(task: Any, it: list[Any]) -> list[Any]:
        """``xmap``: call the task's function on every item, in this worker."""
        sig = maybe_signature(task, app)
        return [sig(item) for item in it]

    @app.task(name="celery.starmap", shared=False)
    def xstarmap(task: Any, it: list[Any]) -> list[Any]:
        """``xstarmap``/``chunks``: call the task's function with every item's arguments."""
        sig = maybe_signature(task, app)
        return [sig(*item) for item in it]

    @app.task(name="celery.chunks", shared=False)
    def chunks(task: Any, it: list[Any], n: int) -> Any:
        """A ``chunks`` signature sent as a task: send its group from the worker."""
        # Lazy, an allow-listed upward import: the built-in tasks run canvas primitives.
        from caraway.canvas import chunks as chunks_sig

        return chunks_sig(task, it, n, app=app).apply_async()

    @app.task(name="celery.accumulate", shared=False)
    def accumulate(*args: Any, index: int | None = None, **kwargs: Any) -> Any:
        """The body that gives a replaced-by-a-group task its result (Celery's name)."""
        return args[index] if index is not None else args

    @app.task(
        name="celery.chord_unlock", shared=False, bind=True, max_retries=None,
        ignore_result=True, default_retry_delay=app.conf.result_chord_retry_interval,
    )  # fmt: skip
    def chord_unlock(
        self: Any,
        /,
        group_id: str,
        callback: Any,
        interval: float | None = None,
        max_retries: int | None = None,
        result: list[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Poll a chord's header results where the backend cannot count them (Celery's
        task and arguments, so Celery clients' chords on SQL backends run here too)."""
        # Lazy, an allow-listed upward import: the built-in tasks run canvas primitives.
        from caraway.canvas.chords import unlock_chord

        unlock_chord(self, group_id, callback, interval, max_retries, result or [])
