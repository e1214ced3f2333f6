"""``app.conf``: layers, sources (dict, object, module, Django), old names, typos, laziness."""

from __future__ import annotations

import importlib
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from caraway.app import Caraway
from caraway.config import Configuration, load_from_envvar, load_source
from caraway.exceptions import ConfigurationWarning, ImproperlyConfigured
from caraway.settings import SETTINGS

WriteModule = Callable[[str, str], None]


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WriteModule]:
    """Write ``dotted.name`` as a module under tmp_path; forget every one of them afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, source: str) -> None:
        parts = name.split(".")
        folder = tmp_path.joinpath(*parts[:-1])
        folder.mkdir(parents=True, exist_ok=True)
        for depth in range(1, len(parts)):
            tmp_path.joinpath(*parts[:depth], "__init__.py").touch()
        (folder / f"{parts[-1]}.py").write_text(textwrap.dedent(source))
        written.append(parts[0])
        importlib.invalidate_caches()

    yield write
    for module in list(sys.modules):
        if module.split(".")[0] in written:
            del sys.modules[module]


# -- defaults and access ----------------------------------------------------------------------


def test_unset_settings_read_as_defaults() -> None:
    conf = Configuration()
    assert conf.task_serializer == "json"
    assert conf["worker_prefetch_multiplier"] == 4
    assert conf.broker_url is None
    assert conf.get("task_acks_late") is False


def test_item_and_attribute_access_are_the_same_thing() -> None:
    conf = Configuration()
    conf.broker_url = "memory://"
    conf["task_acks_late"] = True
    assert conf["broker_url"] == "memory://"
    assert conf.task_acks_late is True
    assert conf.table() == {"broker_url": "memory://", "task_acks_late": True}


def test_update_takes_a_mapping_and_keywords() -> None:
    conf = Configuration()
    conf.update({"task_serializer": "msgpack"}, result_serializer="msgpack")
    conf.update(task_track_started=True)
    assert (conf.task_serializer, conf.result_serializer) == ("msgpack", "msgpack")
    assert conf.task_track_started is True


def test_fallback_settings_follow_their_source() -> None:
    conf = Configuration(task_default_queue="jobs", broker_url="memory://")
    assert conf.task_default_exchange == "jobs"
    assert conf.task_default_routing_key == "jobs"
    assert conf.broker_read_url == conf.broker_write_url == "memory://"
    conf.task_default_exchange = "ex"
    assert conf.task_default_exchange == "ex"


def test_contains_keys_and_len_cover_every_setting() -> None:
    conf = Configuration()
    assert "broker_url" in conf
    assert "CELERY_ALWAYS_EAGER" in conf  # old names are understood
    assert "nope" not in conf
    assert set(conf.keys()) == set(SETTINGS)
    assert len(conf) == len(SETTINGS)
    assert dict(conf.items())["task_default_queue"] == "celery"


def test_unknown_attribute_is_an_attribute_error_with_a_hint() -> None:
    conf = Configuration()
    assert not hasattr(conf, "no_such_thing")
    with pytest.raises(AttributeError, match="did you mean 'broker_url'"):
        _ = conf.broker_ur


def test_defaults_are_private_copies() -> None:
    first, second = Configuration(), Configuration()
    first.task_publish_retry_policy["max_retries"] = 0
    assert second.task_publish_retry_policy["max_retries"] == 3
    assert SETTINGS["task_publish_retry_policy"].default["max_retries"] == 3


def test_setdefault_only_fills_what_nobody_configured() -> None:
    conf = Configuration(task_acks_late=False)
    conf.set_source({"broker_url": "memory://"})
    assert conf.setdefault("task_track_started", True) is True
    assert conf.setdefault("task_acks_late", True) is False
    assert conf.setdefault("broker_url", "redis://") == "memory://"
    assert conf.task_track_started is True


# -- layers -----------------------------------------------------------------------------------


def test_changes_beat_source_beat_defaults() -> None:
    conf = Configuration()
    conf.set_source({"task_serializer": "msgpack", "result_serializer": "yaml"})
    conf.result_serializer = "json"
    assert conf.task_serializer == "msgpack"  # source over default
    assert conf.result_serializer == "json"  # change over source
    assert conf.event_serializer == "json"  # default


def test_constructor_preconf_is_a_change_and_wins_over_the_source() -> None:
    conf = Configuration({"worker_concurrency": 2})
    conf.set_source({"worker_concurrency": 8})
    assert conf.worker_concurrency == 2


def test_deleting_peels_one_layer_at_a_time() -> None:
    conf = Configuration(task_serializer="yaml")
    conf.set_source({"task_serializer": "msgpack"})
    del conf.task_serializer
    assert conf.task_serializer == "msgpack"
    del conf["task_serializer"]
    assert conf.task_serializer == "json"
    with pytest.raises(KeyError):
        del conf["task_serializer"]


def test_a_new_source_replaces_the_old_one() -> None:
    conf = Configuration()
    conf.set_source({"task_serializer": "msgpack", "task_acks_late": True})
    assert conf.task_acks_late is True
    conf.set_source({"task_serializer": "yaml"})
    assert (conf.task_serializer, conf.task_acks_late) == ("yaml", False)


# -- sources ----------------------------------------------------------------------------------


def test_object_source_reads_class_and_instance_attributes() -> None:
    class Config:
        broker_url = "memory://"
        task_acks_late = True

        def helper(self) -> int:  # methods of a config class are not settings
            return 1

    for source in (Config, Config()):
        conf = Configuration()
        conf.set_source(source)
        assert (conf.broker_url, conf.task_acks_late) == ("memory://", True)
        assert "helper" not in conf


def test_module_object_source() -> None:
    module = types.ModuleType("inline_config")
    module.task_default_queue = "inline"  # type: ignore[attr-defined]
    conf = Configuration()
    conf.set_source(module)
    assert conf.task_default_queue == "inline"


def test_string_source_names_a_module(write_module: WriteModule) -> None:
    write_module(
        "proj.celeryconfig",
        """
        import os
        from datetime import timedelta

        broker_url = "memory://"
        result_expires = timedelta(hours=1)
        imports = ("proj.tasks",)
        _private = "not a setting"
        SOME_CONSTANT = 42

        def route(name, args, kwargs, options, task=None, **kw):
            return {"queue": "fast"}

        task_routes = route

        class Helper:
            pass
        """,
    )
    conf = Configuration()
    conf.set_source("proj.celeryconfig")
    assert conf.broker_url == "memory://"
    assert conf.result_expires.total_seconds() == 3600
    assert conf.imports == ("proj.tasks",)
    assert conf.task_routes("x", (), {}, {}) == {"queue": "fast"}  # a function is a valid value
    assert set(conf.table()) == {"broker_url", "result_expires", "imports", "task_routes"}


def test_module_colon_attribute_source(write_module: WriteModule) -> None:
    write_module(
        "settings_holder",
        """
        class Production:
            broker_url = "redis://prod"

        production = {"broker_url": "redis://dict"}
        """,
    )
    by_class, by_dict = Configuration(), Configuration()
    by_class.set_source("settings_holder:Production")
    by_dict.set_source("settings_holder:production")
    assert by_class.broker_url == "redis://prod"
    assert by_dict.broker_url == "redis://dict"


def test_dotted_name_falls_back_to_an_attribute(write_module: WriteModule) -> None:
    write_module("holder2", "class Config:\n    worker_concurrency = 3\n")
    conf = Configuration()
    conf.set_source("holder2.Config")
    assert conf.worker_concurrency == 3


def test_missing_module_is_named_in_the_error() -> None:
    conf = Configuration()
    conf.set_source("no_such_config_module")  # nothing happens until it is read
    for _ in range(2):  # and it keeps failing: a broken source never reads as empty
        with pytest.raises(ImproperlyConfigured, match="'no_such_config_module' was not found"):
            _ = conf.broker_url


def test_missing_module_is_silently_empty_when_asked() -> None:
    conf = Configuration()
    conf.set_source("no_such_config_module.sub", silent=True)
    assert conf.task_serializer == "json"
    assert conf.table() == {}


def test_an_import_error_inside_the_module_is_not_hidden(write_module: WriteModule) -> None:
    write_module("broken_config", "import not_installed_dependency\n")
    conf = Configuration()
    conf.set_source("broken_config", silent=True)
    with pytest.raises(ModuleNotFoundError, match="not_installed_dependency"):
        _ = conf.broker_url


def test_source_module_is_imported_only_on_first_access(write_module: WriteModule) -> None:
    write_module("lazy_config", "broker_url = 'memory://lazy'\n")
    conf = Configuration()
    conf.set_source("lazy_config")
    conf.task_acks_late = True  # writing does not need the source
    assert repr(conf) == "<Configuration: 1 changes, source not read yet>"
    assert "lazy_config" not in sys.modules
    assert conf.broker_url == "memory://lazy"
    assert "lazy_config" in sys.modules


def test_load_source_returns_checked_settings() -> None:
    loaded = load_source({"CELERY_WORKER_CONCURRENCY": "4", "OTHER": 1}, namespace="CELERY")
    assert loaded == {"worker_concurrency": 4}


# -- namespaces and Django --------------------------------------------------------------------


FAKE_DJANGO_SETTINGS = """
class _Settings:
    DEBUG = True
    SECRET_KEY = "django-secret"
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3"}}
    CELERY_BROKER_URL = "redis://localhost:6379/0"
    CELERY_RESULT_BACKEND = "redis://localhost:6379/1"
    CELERY_TASK_ACKS_LATE = True
    CELERY_WORKER_CONCURRENCY = "4"
    CELERY_BEAT_SCHEDULE = {"tick": {"task": "proj.tick", "schedule": 10.0}}


settings = _Settings()
"""


def test_django_settings_with_celery_namespace(
    write_module: WriteModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real Django may be loaded already (kombu's JSON module imports it when installed, so
    # any in-process Celery client does): set it aside for the fake, restored after the test.
    for name in [name for name in sys.modules if name == "django" or name.startswith("django.")]:
        monkeypatch.delitem(sys.modules, name)
    write_module("django.conf", FAKE_DJANGO_SETTINGS)
    conf = Configuration()
    conf.set_source("django.conf:settings", namespace="CELERY")
    assert "django" not in sys.modules  # Django may be set up after this call
    assert conf.broker_url == "redis://localhost:6379/0"
    assert conf.result_backend == "redis://localhost:6379/1"
    assert conf.task_acks_late is True
    assert conf.worker_concurrency == 4
    assert conf.beat_schedule["tick"]["task"] == "proj.tick"
    assert set(conf.table()) == {
        "broker_url",
        "result_backend",
        "task_acks_late",
        "worker_concurrency",
        "beat_schedule",
    }
    assert "secret_key" not in conf
    assert "SECRET_KEY" not in conf


def test_namespaced_old_name_is_mapped_with_the_name_to_use() -> None:
    conf = Configuration()
    conf.set_source({"CELERY_ALWAYS_EAGER": True, "CELERY_BROKER_URL": "memory://"}, "CELERY")
    with pytest.warns(
        ConfigurationWarning, match="CELERY_ALWAYS_EAGER -> CELERY_TASK_ALWAYS_EAGER"
    ):
        assert conf.task_always_eager is True
    assert conf.broker_url == "memory://"


def test_namespaced_typo_suggests_the_namespaced_name() -> None:
    conf = Configuration()
    conf.set_source({"CELERY_BROKER_UR": "memory://"}, namespace="CELERY")
    with pytest.raises(ImproperlyConfigured) as info:
        _ = conf.broker_url
    assert (
        str(info.value) == "Unknown setting 'CELERY_BROKER_UR': did you mean 'CELERY_BROKER_URL'?"
    )


def test_namespaced_type_error_names_the_key_as_written() -> None:
    conf = Configuration()
    conf.set_source({"CELERY_WORKER_CONCURRENCY": "many"}, namespace="CELERY")
    with pytest.raises(ImproperlyConfigured, match=r"'worker_concurrency'.*'CELERY_WORKER_"):
        _ = conf.worker_concurrency


# -- old names --------------------------------------------------------------------------------


def test_old_names_are_mapped_with_one_warning(write_module: WriteModule) -> None:
    write_module(
        "oldconfig",
        """
        BROKER_URL = "memory://"
        CELERY_ALWAYS_EAGER = True
        CELERYD_CONCURRENCY = 2
        CELERY_TASK_RESULT_EXPIRES = 60
        """,
    )
    conf = Configuration()
    conf.set_source("oldconfig")
    with pytest.warns(ConfigurationWarning) as record:
        assert conf.broker_url == "memory://"
    assert len(record) == 1
    message = str(record[0].message)
    assert "CELERY_ALWAYS_EAGER -> task_always_eager" in message
    assert "CELERYD_CONCURRENCY -> worker_concurrency" in message
    assert (conf.task_always_eager, conf.worker_concurrency, conf.result_expires) == (True, 2, 60)
    assert conf["CELERY_ALWAYS_EAGER"] is True  # reading by the old name still works
    assert conf.deprecated_settings == {
        "BROKER_URL", "CELERY_ALWAYS_EAGER", "CELERYD_CONCURRENCY", "CELERY_TASK_RESULT_EXPIRES",
    }  # fmt: skip


def test_deprecated_settings_names_the_old_names_a_namespaced_source_used() -> None:
    conf = Configuration()
    assert conf.deprecated_settings == set()
    conf.set_source({"CELERY_ALWAYS_EAGER": True, "CELERY_BROKER_URL": "memory://"}, "CELERY")
    with pytest.warns(ConfigurationWarning):
        assert conf.deprecated_settings == {"CELERY_ALWAYS_EAGER"}


def test_mixing_old_and_new_names_is_an_error() -> None:
    conf = Configuration()
    conf.set_source({"broker_url": "memory://", "CELERY_ALWAYS_EAGER": True})
    with pytest.raises(ImproperlyConfigured, match="CELERY_ALWAYS_EAGER -> task_always_eager"):
        _ = conf.broker_url


def test_old_name_beside_its_new_name_is_allowed_and_ignored() -> None:
    conf = Configuration()
    conf.set_source({"task_always_eager": True, "CELERY_ALWAYS_EAGER": False})
    assert conf.task_always_eager is True


def test_namespaced_names_without_a_namespace_get_a_hint() -> None:
    conf = Configuration()
    conf.set_source({"CELERY_TASK_ACKS_LATE": True})
    with pytest.warns(ConfigurationWarning, match="namespace='CELERY'"):
        assert conf.task_acks_late is True


def test_setting_an_old_name_warns_and_sets_the_new_one() -> None:
    conf = Configuration()
    with pytest.warns(ConfigurationWarning, match="use 'task_acks_late'"):
        conf.update(CELERY_ACKS_LATE=True)
    assert conf.table() == {"task_acks_late": True}


# -- unknown names and types ------------------------------------------------------------------


def test_typo_in_a_source_is_an_error_with_the_fix() -> None:
    conf = Configuration()
    conf.set_source({"broker_ur": "memory://"})
    with pytest.raises(ImproperlyConfigured) as info:
        _ = conf.task_serializer
    assert str(info.value) == "Unknown setting 'broker_ur': did you mean 'broker_url'?"


def test_typo_when_setting_is_an_error_with_the_fix() -> None:
    conf = Configuration()
    with pytest.raises(ImproperlyConfigured, match="did you mean 'task_acks_late'"):
        conf.task_ack_late = True


def test_unknown_user_setting_is_kept_and_warned_about_once() -> None:
    conf = Configuration()
    conf.set_source({"my_app_flag": 1})
    with pytest.warns(ConfigurationWarning, match="'my_app_flag'"):
        assert conf.my_app_flag == 1
    conf.my_app_flag = 2  # no second warning (warnings are errors in this suite)
    assert conf["my_app_flag"] == 2
    assert "my_app_flag" in conf
    assert "my_app_flag" in list(conf)


def test_type_errors_are_raised_when_set_and_when_loaded() -> None:
    conf = Configuration()
    with pytest.raises(ImproperlyConfigured, match="'worker_prefetch_multiplier' expects int"):
        conf.worker_prefetch_multiplier = "four"
    conf.set_source({"task_time_limit": [1]})
    with pytest.raises(ImproperlyConfigured, match="'task_time_limit' expects int, float or None"):
        _ = conf.task_time_limit


def test_strings_from_files_are_coerced() -> None:
    conf = Configuration()
    conf.set_source({"task_acks_late": "yes", "worker_prefetch_multiplier": "1"})
    conf.broker_connection_timeout = "2.5"
    assert conf.task_acks_late is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_connection_timeout == 2.5


# -- environment variable ---------------------------------------------------------------------


def test_envvar_names_the_module(
    write_module: WriteModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_module("envconfig", "task_default_queue = 'from-env'\n")
    monkeypatch.setenv("CARAWAY_CONFIG_MODULE", "envconfig")
    conf = Configuration()
    assert load_from_envvar(conf, "CARAWAY_CONFIG_MODULE") is True
    assert conf.task_default_queue == "from-env"


def test_envvar_unset_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARAWAY_CONFIG_MODULE", raising=False)
    conf = Configuration()
    with pytest.raises(ImproperlyConfigured, match="'CARAWAY_CONFIG_MODULE' is not set"):
        load_from_envvar(conf, "CARAWAY_CONFIG_MODULE")
    assert load_from_envvar(conf, "CARAWAY_CONFIG_MODULE", silent=True) is False


# -- reports ----------------------------------------------------------------------------------


def test_table_with_defaults_lists_every_setting() -> None:
    conf = Configuration(task_acks_late=True)
    table = conf.table(with_defaults=True)
    assert set(table) == set(SETTINGS)
    assert table["task_acks_late"] is True
    assert table["task_serializer"] == "json"


def test_humanize_sorts_and_masks_secrets() -> None:
    conf = Configuration(
        broker_url="amqp://guest:hunter2@rabbit//",
        database_engine_options={"connect_args": {"password": "s3cret"}},
        result_backend_transport_options={"sentinel_kwargs": {"password": "pw"}},
        worker_concurrency=2,
    )
    report = conf.humanize()
    assert report.splitlines()[0].startswith("broker_url: ")
    assert "worker_concurrency: 2" in report
    assert "amqp://guest:********@rabbit//" in report
    for secret in ("hunter2", "s3cret", "'pw'"):
        assert secret not in report
    assert "task_serializer" not in report
    assert "task_serializer: 'json'" in conf.humanize(with_defaults=True)


def test_bugreport_masks_whole_passwords_of_every_url_and_connects_to_nothing() -> None:
    app = Caraway("report", broker="redis://:hunter2@127.0.0.1:1/0", set_as_current=False)
    app.conf.result_backend = "sentinel://:secret1@h1:26379;sentinel://:secret2@h2:26379/0"

    report = app.bugreport()
    assert report.startswith("software -> caraway:")
    assert "sentinel://:********@h1:26379;sentinel://:********@h2:26379/0" in report
    for secret in ("hunter2", "secret1", "secret2"):
        assert secret not in report

    app.conf.result_backend = "redis://user:p,a@ss@localhost:6379/0"
    report = app.bugreport()
    assert "p,a@ss" not in report
    assert "ss@localhost" not in report
    assert "redis://user:********@localhost:6379/0" in report
