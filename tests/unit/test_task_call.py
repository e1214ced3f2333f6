"""An overridden ``Task.__call__`` in eager mode, and resolving a task's ``Request`` class.

The worker pools are covered by ``tests/worker/test_task_call_pools.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from caraway import Caraway, Task
from caraway.exceptions import ImproperlyConfigured
from caraway.utils.einfo import ExceptionInfo
from caraway.worker.request import Request, request_class


def traced_app(app: Caraway, calls: list[Any]) -> None:
    """Make ``app``'s task class record ``self.request.id`` in ``calls`` from ``__call__``."""

    class Traced(app.Task):  # type: ignore[name-defined, misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            calls.append(self.request.id)
            return super().__call__(*args, **kwargs)

    app.Task = Traced


def test_apply_runs_an_overridden_call_once_with_the_request_set(app: Caraway) -> None:
    calls: list[Any] = []
    traced_app(app, calls)

    @app.task(bind=True)
    def add(self: Task[Any, Any], x: int, y: int) -> Any:
        return [x + y, self.request.id, self.request.is_eager]

    assert add.apply((2, 2), task_id="t-1").get() == [4, "t-1", True]
    assert calls == ["t-1"]


def test_always_eager_runs_an_overridden_call_once(app: Caraway) -> None:
    calls: list[Any] = []
    traced_app(app, calls)
    app.conf.task_always_eager = True

    @app.task(bind=True)
    def add(self: Task[Any, Any], x: int, y: int) -> Any:
        return [x + y, self.request.id]

    result = add.delay(1, 2)

    assert result.get() == [3, result.id]
    assert calls == [result.id]


def test_async_task_through_an_overridden_call_is_awaited(app: Caraway) -> None:
    calls: list[Any] = []
    traced_app(app, calls)

    @app.task(bind=True)
    async def add(self: Task[Any, Any], x: int, y: int) -> Any:
        return [x + y, self.request.id]

    assert add.apply((2, 3), task_id="t-2").get() == [5, "t-2"]
    assert calls == ["t-2"]


def test_calling_a_task_directly_runs_its_call_here(app: Caraway) -> None:
    calls: list[Any] = []
    traced_app(app, calls)

    @app.task(bind=True)
    def add(self: Task[Any, Any], x: int, y: int) -> Any:
        return [x + y, self.request.called_directly]

    assert add(2, 2) == [4, True]
    assert calls == [None]  # a direct call has no task id, as in Celery


def test_a_body_calling_its_own_task_makes_a_direct_call(app: Caraway) -> None:
    """``super().__call__`` keeps the worker's request once; a nested call gets its own."""
    calls: list[Any] = []
    traced_app(app, calls)

    @app.task(bind=True)
    def countdown(self: Task[Any, Any], n: int) -> Any:
        below = countdown(n - 1) if n else []
        return [*below, self.request.id]

    assert countdown.apply((2,), task_id="outer").get() == [None, None, "outer"]
    # A nested ``__call__`` runs before its ``super().__call__`` pushes the new request.
    assert calls == ["outer", "outer", None]


def test_a_call_that_skips_super_still_runs_once(app: Caraway) -> None:
    """The Flask docs' pattern: ``__call__`` returns ``self.run(...)`` inside a context."""
    entered: list[Any] = []

    class ContextTask(app.Task):  # type: ignore[name-defined, misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            entered.append(self.request.id)
            return self.run(*args, **kwargs)

    @app.task(base=ContextTask, bind=True)
    def add(self: Task[Any, Any], x: int, y: int) -> Any:
        return [x + y, self.request.id]

    assert add.apply((2, 2), task_id="t-3").get() == [4, "t-3"]
    assert entered == ["t-3"]


# --- Request ----------------------------------------------------------------------------------
# ``shared=False``: a shared task would join every app made later, and a bad Request stops
# the worker of any of them.


class Recording(Request):
    def on_retry(self, exc_info: ExceptionInfo) -> None:
        pass


class Engine(Request):
    def execute_using_pool(self, pool: Any, **kwargs: Any) -> None:
        pass

    def acknowledge(self) -> None:
        pass


def test_default_request_class_means_no_hooks(app: Caraway) -> None:
    @app.task
    def plain() -> None: ...

    assert request_class(plain) is None


def test_request_class_by_object_or_dotted_name(app: Caraway) -> None:
    @app.task(Request=Recording, shared=False)
    def one() -> None: ...

    @app.task(Request=f"{__name__}:Recording", shared=False)
    def two() -> None: ...

    class Hooked(app.Task):  # type: ignore[name-defined, misc]
        Request = f"{__name__}.Recording"

    @app.task(base=Hooked, shared=False)
    def three() -> None: ...

    assert request_class(one) is request_class(two) is request_class(three) is Recording


def test_request_class_that_is_not_ours_is_refused(app: Caraway) -> None:
    @app.task(Request="celery.worker.request:Request", shared=False)
    def celerys() -> None: ...

    @app.task(Request="no_such_module:Request", shared=False)
    def missing() -> None: ...

    with pytest.raises(ImproperlyConfigured, match=r"caraway\.worker\.request import Request"):
        request_class(celerys)
    with pytest.raises(ImproperlyConfigured, match="cannot import its Request"):
        request_class(missing)


def test_request_overriding_what_the_worker_never_calls_is_refused(app: Caraway) -> None:
    @app.task(Request=Engine, shared=False)
    def engine() -> None: ...

    with pytest.raises(ImproperlyConfigured, match="overrides acknowledge, execute_using_pool"):
        request_class(engine)
