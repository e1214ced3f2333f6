"""The app: configuration feeding behaviour, task naming and registration, shared tasks."""

from __future__ import annotations

import gc
import types
import uuid
import weakref
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest

import caraway.app
import caraway.current
from caraway import Caraway, Celery, Task, shared_task
from caraway.engines.memory.broker import MemoryBroker
from caraway.exceptions import ImproperlyConfigured, NotRegistered
from caraway.task import TASK_OPTIONS


def _broker_url() -> str:
    return f"memory://app-{uuid.uuid4().hex}"


@pytest.fixture
def app() -> Iterator[Caraway]:
    app = Caraway("proj", broker=_broker_url(), backend="cache+memory://", set_as_current=False)
    yield app
    app.close()


@pytest.fixture
def isolated_shared_tasks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Shared tasks declared and apps made current by a test do not leak into other tests."""
    monkeypatch.setattr(caraway.app, "_shared_tasks", [])
    monkeypatch.setattr(caraway.current, "_default_app", [])
    token = caraway.current._current_app.set(None)
    yield
    caraway.current._current_app.reset(token)


# --- configuration ------------------------------------------------------------------------


def test_celery_is_the_same_class() -> None:
    assert Celery is Caraway


def test_constructor_arguments_become_settings() -> None:
    app = Caraway(
        "proj", broker="memory://x", backend="cache+memory://", include=["proj.tasks"],
        task_default_queue="jobs", set_as_current=False,
    )  # fmt: skip

    assert app.main == "proj"
    assert app.conf.broker_url == "memory://x"
    assert app.conf.result_backend == "cache+memory://"
    assert tuple(app.conf.include) == ("proj.tasks",)
    assert app.conf.task_default_queue == "jobs"


def test_creating_an_app_connects_to_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no engine may be created before first use")

    monkeypatch.setattr("caraway.engines.registry.create_broker", refuse)
    monkeypatch.setattr("caraway.engines.registry.create_backend", refuse)
    app = Caraway("proj", broker="redis://nowhere:1/0", set_as_current=False)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert app.conf.broker_url == "redis://nowhere:1/0"  # reading config does not connect
    assert app.tasks[f"{__name__}.add"] is add


def test_config_from_object_feeds_engines_and_calls() -> None:
    url = _broker_url()

    class Config:
        broker_url = url
        result_backend = "cache+memory://"
        task_default_queue = "work"

    app = Caraway("proj", set_as_current=False)
    app.config_from_object(Config)

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(1, 2)
    assert isinstance(app.broker, MemoryBroker)
    assert app.broker.url == url
    assert [d.queue for d in app.broker.fetch(["work", "celery"], 10, 0.1)] == ["work"]


def test_config_from_object_with_a_dict_and_a_namespace() -> None:
    app = Caraway("proj", set_as_current=False)

    app.config_from_object(
        {"CELERY_TASK_ALWAYS_EAGER": True, "CELERY_TASK_DEFAULT_QUEUE": "q", "DEBUG": True},
        namespace="CELERY",
    )

    assert app.conf.task_always_eager is True
    assert app.conf.task_default_queue == "q"


def test_constructor_settings_win_over_config_from_object() -> None:
    app = Caraway("proj", broker="memory://ctor", set_as_current=False)

    app.config_from_object({"broker_url": "memory://source", "task_default_queue": "q"})

    assert app.conf.broker_url == "memory://ctor"
    assert app.conf.task_default_queue == "q"


def test_config_from_object_changes_take_effect_for_the_next_call() -> None:
    app = Caraway("proj", broker=_broker_url(), backend="cache+memory://", set_as_current=False)

    @app.task
    def double(x: int) -> int:
        return 2 * x

    app.config_from_object({"task_always_eager": True})

    assert double.delay(21).get() == 42
    assert app.broker.size("celery") == 0


def test_config_from_object_resets_routes(app: Caraway) -> None:
    app.config_from_object({"task_routes": {"proj.*": "first"}})
    assert app.routers[0]("proj.x", (), {}, {}) == "first"

    app.config_from_object({"task_routes": {"proj.*": "second"}})

    assert app.routers[0]("proj.x", (), {}, {}) == "second"


def test_unknown_setting_typo_names_the_fix() -> None:
    with pytest.raises(ImproperlyConfigured, match="task_always_eager"):
        Caraway("proj", task_always_eagr=True, set_as_current=False)


# --- task naming and registration ---------------------------------------------------------


def test_task_is_named_module_dot_function(app: Caraway) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert add.name == f"{__name__}.add"
    assert app.tasks[add.name] is add
    assert isinstance(add, Task)


def test_tasks_in_main_take_the_apps_main_name(app: Caraway) -> None:
    def report() -> str:
        return "ok"

    report.__module__ = "__main__"
    task = app.task(report)

    assert task.name == "proj.report"
    assert app.gen_task_name("report", "__main__") == "proj.report"
    assert app.gen_task_name("report", "pkg.mod") == "pkg.mod.report"


def test_main_module_without_app_name_keeps_main() -> None:
    app = Caraway(set_as_current=False)

    assert app.gen_task_name("report", "__main__") == "__main__.report"


def test_explicit_name_wins(app: Caraway) -> None:
    @app.task(name="custom.name")
    def add(x: int, y: int) -> int:
        return x + y

    assert add.name == "custom.name"
    assert "custom.name" in app.tasks


def test_decorating_the_same_function_twice_gives_the_same_task(app: Caraway) -> None:
    def add(x: int, y: int) -> int:
        return x + y

    assert app.task(add) is app.task(add)


def test_builtin_tasks_are_registered(app: Caraway) -> None:
    assert "celery.ping" in app.tasks
    assert "celery.backend_cleanup" in app.tasks
    assert "celery.ping" not in app.tasks.regular()


def test_missing_task_is_not_registered_with_a_suggestion(app: Caraway) -> None:
    @app.task(name="proj.tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(NotRegistered) as raised:
        app.tasks["proj.tasks.ad"]

    assert raised.value.args == ("proj.tasks.ad",)  # the wire form stays the bare name
    assert "Did you mean 'proj.tasks.add'?" in str(raised.value)
    assert isinstance(raised.value, KeyError)
    assert app.tasks.get("proj.tasks.ad") is None


def test_unknown_task_hint_names_the_closest_task(app: Caraway) -> None:
    @app.task(name="proj.tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    hint = app.tasks.unknown_task_hint("proj.tasks.adx")

    assert "'proj.tasks.adx'" in hint
    assert "Did you mean 'proj.tasks.add'?" in hint


# --- task options -------------------------------------------------------------------------

OPTION_VALUES: dict[str, Any] = {
    "max_retries": 7, "default_retry_delay": 12, "autoretry_for": (KeyError,),
    "dont_autoretry_for": (ValueError,), "retry_kwargs": {"countdown": 1}, "retry_backoff": 3,
    "retry_backoff_max": 60, "retry_jitter": False, "ignore_result": True,
    "store_errors_even_if_ignored": True, "serializer": "pickle", "compression": "zlib",
    "queue": "q", "routing_key": "rk", "exchange": "ex", "priority": 4, "rate_limit": "10/m",
    "time_limit": 30, "soft_time_limit": 20, "acks_late": True,
    "acks_on_failure_or_timeout": False, "reject_on_worker_lost": True, "track_started": True,
    "expires": 60, "typing": False, "trail": False, "send_events": False,
    "store_eager_result": True, "resultrepr_maxsize": 512,
    "Request": "caraway.worker.request:Request",  # resolved when a worker starts
    "Strategy": "proj.Strategy", "abstract": False,
}  # fmt: skip
NOT_STORED = {
    "name", "bind", "base", "shared", "lazy", "filter", "pydantic", "pydantic_strict",
    "pydantic_context", "pydantic_dump_kwargs",
}  # fmt: skip


def test_option_table_covers_every_accepted_option() -> None:
    assert set(OPTION_VALUES) | NOT_STORED == TASK_OPTIONS


@pytest.mark.parametrize("option", sorted(OPTION_VALUES))
def test_every_task_option_is_accepted_and_stored(option: str, app: Caraway) -> None:
    value = OPTION_VALUES[option]

    task = app.task(name=f"proj.opt_{option}", **{option: value})(lambda: None)

    assert getattr(task, option) == value
    assert getattr(type(task), option) == value


def test_options_that_shape_the_task_are_not_stored_as_attributes(app: Caraway) -> None:
    class Base(app.Task):  # type: ignore[name-defined, misc]
        pass

    task = app.task(name="proj.shaped", bind=True, base=Base, lazy=False, filter=None)(
        lambda self: self
    )

    assert isinstance(task, Base)
    assert task.name == "proj.shaped"
    for option in ("bind", "base", "lazy", "filter"):
        assert option not in vars(type(task))


def test_unknown_task_option_is_an_error_with_a_suggestion(app: Caraway) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"max_retires.*Did you mean 'max_retries'"):

        @app.task(max_retires=3)
        def add(x: int, y: int) -> int:
            return x + y


def test_attributes_of_a_custom_base_are_valid_options(app: Caraway) -> None:
    class WithTimeout(app.Task):  # type: ignore[name-defined, misc]
        custom_timeout = 5

    @app.task(base=WithTimeout, custom_timeout=9)
    def fetch() -> None:
        return None

    assert fetch.custom_timeout == 9  # type: ignore[attr-defined]


def test_private_names_are_never_options(app: Caraway) -> None:
    with pytest.raises(ImproperlyConfigured, match="_request_var"):
        app.task(_request_var=None)(lambda: None)


def test_base_must_be_a_task_class(app: Caraway) -> None:
    with pytest.raises(TypeError, match="Task subclass"):
        app.task(base=object)(lambda: None)


def test_app_task_class_is_bound_to_the_app(app: Caraway) -> None:
    assert app.Task.app is app
    assert issubclass(app.Task, Task)


# --- shared_task --------------------------------------------------------------------------


def test_shared_task_is_registered_in_every_app_including_later_ones(
    isolated_shared_tasks: None,
) -> None:
    before = Caraway("before", broker=_broker_url(), set_as_current=False)

    @shared_task
    def shared_mul(x: int, y: int) -> int:
        return x * y

    after = Caraway("after", broker=_broker_url(), set_as_current=False)

    name = f"{__name__}.shared_mul"
    assert name in before.tasks
    assert name in after.tasks
    assert before.tasks[name] is not after.tasks[name]
    assert before.tasks[name].app is before
    assert after.tasks[name].app is after
    assert after.tasks[name](6, 7) == 42


def test_shared_task_proxy_follows_the_current_app(isolated_shared_tasks: None) -> None:
    @shared_task(name="proj.shared_echo")
    def shared_echo(value: Any) -> Any:
        return value

    first = Caraway("first", broker=_broker_url(), backend="cache+memory://")
    assert shared_echo.app is first
    shared_echo.delay(1)
    second = Caraway("second", broker=_broker_url(), backend="cache+memory://")
    assert shared_echo.app is second
    shared_echo.delay(2)

    assert first.broker.size("celery") == 1
    assert second.broker.size("celery") == 1
    assert shared_echo.name == "proj.shared_echo"


def test_app_task_is_shared_by_default_with_apps_finalized_later(
    isolated_shared_tasks: None,
) -> None:
    app = Caraway("proj", set_as_current=False)

    @app.task(name="proj.triple")
    def triple(x: int) -> int:
        return 3 * x

    later = Caraway("later", set_as_current=False)

    assert triple.app is app  # the decorator's own task, not a proxy
    assert later.tasks["proj.triple"].app is later
    assert later.tasks["proj.triple"](2) == 6


def test_an_app_nobody_references_is_collected_and_shared_tasks_skip_it(
    isolated_shared_tasks: None,
) -> None:
    kept = Caraway("kept", set_as_current=False)
    dropped = Caraway("dropped", set_as_current=False)
    dropped.task(name="proj.own")(lambda: "own")
    dropped.finalize()
    gone = weakref.ref(dropped)
    assert dropped in caraway.current._all_apps

    del dropped
    gc.collect()

    assert gone() is None
    assert kept in caraway.current._all_apps

    @shared_task(name="proj.late")
    def late() -> str:
        return "late"

    kept.finalize()
    assert kept.tasks["proj.late"]() == "late"


def test_an_apps_own_task_wins_over_another_apps_shared_one(isolated_shared_tasks: None) -> None:
    first = Caraway("first", set_as_current=False)
    first.task(name="proj.who")(lambda: "first")
    second = Caraway("second", set_as_current=False)
    second.task(name="proj.who")(lambda: "second")  # before second is finalized
    third = Caraway("third", set_as_current=False)
    assert third.tasks["proj.who"]() == "first"  # finalized: adopts first's
    third.task(name="proj.who")(lambda: "third")  # after it: its own replaces that

    assert second.tasks["proj.who"]() == "second"
    assert third.tasks["proj.who"]() == "third"
    assert first.tasks["proj.who"]() == "first"


def test_shared_false_keeps_a_task_to_its_app(isolated_shared_tasks: None) -> None:
    app = Caraway("proj", set_as_current=False)
    app.task(shared=False, name="proj.private")(lambda: None)
    later = Caraway("later", set_as_current=False)

    assert "proj.private" in app.tasks
    assert "proj.private" not in later.tasks


def test_autodiscover_imports_task_modules_lazily(
    app: Caraway, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType("fakepkg_autodiscover.tasks")
    imported: list[str] = []

    def fake_import(name: str) -> types.ModuleType:
        imported.append(name)
        if name == "missingpkg.tasks":
            raise ModuleNotFoundError(name=name)
        return module

    monkeypatch.setattr(caraway.app.importlib, "import_module", fake_import)

    app.autodiscover_tasks(["fakepkg_autodiscover", "missingpkg"])
    assert imported == []
    names = app.import_task_modules()

    assert imported == ["fakepkg_autodiscover.tasks", "missingpkg.tasks"]
    assert names == ["fakepkg_autodiscover.tasks"]


def test_now_is_aware_and_in_the_apps_zone() -> None:
    utc_app = Caraway("utc", set_as_current=False)
    tokyo = Caraway("tokyo", set_as_current=False, timezone="Asia/Tokyo")

    assert utc_app.now().utcoffset() == timedelta(0)
    assert tokyo.now().utcoffset() == timedelta(hours=9)
    assert abs(tokyo.now() - datetime.now(timezone.utc)) < timedelta(seconds=5)


def test_register_task_binds_the_instance_it_is_given(app: Caraway) -> None:
    class Double(Task[Any, Any]):
        name = "proj.double"

        def run(self, x: int) -> int:
            return 2 * x

    instance = Double()
    registered = app.register_task(instance)

    assert registered is instance
    assert instance.app is app
    assert app.tasks["proj.double"] is instance
    assert isinstance(instance, Double)
    assert instance.apply((4,)).get() == 8


def test_a_registered_class_based_task_retries_for_its_autoretry_for(app: Caraway) -> None:
    class Flaky(Task[Any, Any]):
        name = "proj.flaky_class"
        autoretry_for = (ValueError,)
        retry_kwargs: ClassVar[dict[str, Any]] = {"max_retries": 1}

        def run(self) -> int:
            if self.request.retries:
                return int(self.request.retries)
            raise ValueError("first try")

    task = app.register_task(Flaky())
    app.register_task(task)  # again: still one wrapper

    assert task.apply().get() == 1
