"""Apps for tests: in-memory engines by default, and the current app restored afterwards."""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn, cast

import caraway.app
from caraway.app import Caraway
from caraway.current import _all_apps, _current_app, _default_app, set_current_app

__all__ = ["DEFAULT_TEST_CONFIG", "TestApp", "Trap", "set_trap", "setup_default_app"]

#: Settings every test app starts from (Celery's test defaults): nothing leaves the process.
DEFAULT_TEST_CONFIG: Mapping[str, Any] = {
    "worker_hijack_root_logger": False,
    "worker_log_color": False,
    "accept_content": {"json"},
    "enable_utc": True,
    "timezone": "UTC",
    "broker_url": "memory://",
    "result_backend": "cache+memory://",
    "broker_heartbeat": 0,
}

#: Test apps whose embedded workers configure logging (``TestApp(enable_logging=True)``).
_logging_enabled: weakref.WeakSet[Caraway] = weakref.WeakSet()


def TestApp(
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    enable_logging: bool = False,
    set_as_current: bool = False,
    backend: str | None = None,
    broker: str | None = None,
    **kwargs: Any,
) -> Caraway:
    """A new app configured with :data:`DEFAULT_TEST_CONFIG` updated by ``config``.

    ``broker``/``backend`` win over the URLs in the config; ``kwargs`` go to ``Caraway``.
    With ``enable_logging``, workers started by ``start_worker`` set up logging as a real
    worker does; without it the test run's logging (pytest's capture) is left alone.
    """
    settings = {**copy.deepcopy(dict(DEFAULT_TEST_CONFIG)), **(config or {})}
    if broker is not None:
        settings.pop("broker_url", None)
    if backend is not None:
        settings.pop("result_backend", None)
    app = Caraway(
        name or "caraway.tests",
        broker=broker,
        backend=backend,
        set_as_current=set_as_current,
        **kwargs,
    )
    app.add_defaults(settings)
    if enable_logging:
        _logging_enabled.add(app)
    return app


# pytest would try to collect ``TestApp`` from any test module that imports it.
TestApp.__test__ = False  # type: ignore[attr-defined]


def logging_enabled(app: Caraway) -> bool:
    """Whether ``app`` was made by ``TestApp(enable_logging=True)``."""
    return app in _logging_enabled


class Trap:
    """Stands in for the current app and fails on any use.

    Installed by ``setup_default_app(app, use_trap=True)``, it catches code that reaches for
    ``current_app`` instead of using the app it was given.
    """

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__") or name == "_is_coroutine":
            # Introspection (hasattr, inspect, unittest.mock) must see a plain missing name.
            raise AttributeError(name)
        raise RuntimeError(
            f"Test depends on current_app (tried to read {name!r}): pass the app explicitly, "
            "or use the depends_on_current_app fixture"
        )


@contextmanager
def _restoring_current() -> Iterator[None]:
    # The current/default app are process state: save them whole, put them back whole.
    current = _current_app.get()
    default = list(_default_app)
    try:
        yield
    finally:
        _current_app.set(current)
        _default_app[:] = default


@contextmanager
def set_trap(app: Caraway) -> Iterator[None]:
    """Within the block the current and default app are a :class:`Trap`, then restored."""
    with _restoring_current():
        set_current_app(cast(Caraway, Trap()))
        yield


@contextmanager
def setup_default_app(app: Caraway, use_trap: bool = False) -> Iterator[Caraway]:
    """Make ``app`` the current and default app (or install the trap) for the block.

    Afterwards the previous current and default app are back, ``app`` is closed and
    forgotten (``shared_task`` no longer adds tasks to it) unless it was current before,
    and tasks the block declared for every app (``@app.task`` is shared by default) are
    forgotten too, so the next test's app does not inherit them.
    """
    previous = _current_app.get()
    shared = list(caraway.app._shared_tasks)
    with _restoring_current():
        if use_trap:
            set_current_app(cast(Caraway, Trap()))
        else:
            set_current_app(app)
        try:
            yield app
        finally:
            caraway.app._shared_tasks[:] = shared
            if app is not previous:
                app.close()
                _all_apps.discard(app)
