"""The settings table: Celery's names, defaults and old names, and value checking."""

from __future__ import annotations

from datetime import timedelta

import pytest

from caraway import Celery
from caraway.exceptions import ImproperlyConfigured
from caraway.settings import OLD_NAMES, SETTINGS, Setting, coerce, suggest

# Names the brief and Celery's reference both list; each must be in the table.
CELERY_NAMES = [
    "broker_url",
    "result_backend",
    "task_serializer",
    "accept_content",
    "result_accept_content",
    "result_serializer",
    "result_expires",
    "result_extended",
    "task_acks_late",
    "task_reject_on_worker_lost",
    "task_track_started",
    "task_always_eager",
    "task_eager_propagates",
    "task_ignore_result",
    "task_store_errors_even_if_ignored",
    "task_default_queue",
    "task_default_exchange",
    "task_default_routing_key",
    "task_default_priority",
    "task_queues",
    "task_routes",
    "task_create_missing_queues",
    "task_time_limit",
    "task_soft_time_limit",
    "task_default_rate_limit",
    "task_annotations",
    "task_compression",
    "task_protocol",
    "task_publish_retry",
    "task_publish_retry_policy",
    "task_send_sent_event",
    "task_queue_max_priority",
    "task_inherit_parent_priority",
    "worker_concurrency",
    "worker_prefetch_multiplier",
    "worker_max_tasks_per_child",
    "worker_max_memory_per_child",
    "worker_hijack_root_logger",
    "worker_log_format",
    "worker_task_log_format",
    "worker_redirect_stdouts",
    "worker_redirect_stdouts_level",
    "worker_send_task_events",
    "worker_disable_rate_limits",
    "worker_pool",
    "worker_lost_wait",
    "broker_transport_options",
    "broker_connection_retry",
    "broker_connection_retry_on_startup",
    "broker_connection_max_retries",
    "broker_connection_timeout",
    "broker_heartbeat",
    "broker_pool_limit",
    "result_backend_transport_options",
    "timezone",
    "enable_utc",
    "imports",
    "include",
    "beat_schedule",
    "beat_scheduler",
    "beat_max_loop_interval",
    "beat_schedule_filename",
    "database_engine_options",
    "database_table_names",
    "database_table_schemas",
    "redis_max_connections",
    "redis_socket_timeout",
    "event_queue_ttl",
    "event_serializer",
    "control_queue_ttl",
    "control_exchange",
    "security_key",
    "security_certificate",
    "security_digest",
    "result_compression",
    "result_persistent",
]


@pytest.mark.parametrize("name", CELERY_NAMES)
def test_celery_setting_is_in_the_table(name: str) -> None:
    assert name in SETTINGS


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("task_serializer", "json"),
        ("result_serializer", "json"),
        ("accept_content", ("json",)),
        ("task_default_queue", "celery"),
        ("task_acks_late", False),
        ("task_create_missing_queues", True),
        ("task_protocol", 2),
        ("enable_utc", True),
        ("result_expires", timedelta(days=1)),
        ("worker_prefetch_multiplier", 4),
        ("worker_lost_wait", 10.0),
        ("worker_concurrency", None),
        ("worker_hijack_root_logger", True),
        ("worker_redirect_stdouts_level", "WARNING"),
        ("broker_pool_limit", 10),
        ("broker_connection_timeout", 4.0),
        ("broker_connection_max_retries", 100),
        ("broker_heartbeat", 120.0),
        ("event_queue_ttl", 5.0),
        ("event_queue_expires", 60.0),
        ("control_queue_ttl", 300.0),
        ("redis_socket_timeout", 120.0),
        ("result_chord_join_timeout", 3.0),
        ("beat_schedule_filename", "celerybeat-schedule"),
        ("security_digest", "sha256"),
        ("worker_log_format", "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"),
        (
            "worker_task_log_format",
            "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s",
        ),
        (
            "task_publish_retry_policy",
            {"max_retries": 3, "interval_start": 0, "interval_max": 1, "interval_step": 0.2},
        ),
    ],
)
def test_default_matches_celery(name: str, default: object) -> None:
    assert SETTINGS[name].default == default


def test_deliberate_differences_from_celery() -> None:
    assert SETTINGS["broker_url"].default is None  # the embedded SQLite file
    # A result write that finds the backend away waits for it (Celery's default: it fails).
    assert SETTINGS["result_backend_always_retry"].default is True


def test_the_default_pool_is_prefork_as_in_celery() -> None:
    assert SETTINGS["worker_pool"].default == "prefork"
    app = Celery("pools", broker="memory://", set_as_current=False)
    assert app.Worker().pool_name == "prefork"
    app.close()


@pytest.mark.parametrize("setting", list(SETTINGS.values()), ids=list(SETTINGS))
def test_row_is_well_formed(setting: Setting) -> None:
    assert setting.name.islower()
    assert setting.doc
    assert "\n" not in setting.doc
    assert setting.old
    assert all(old.isupper() for old in setting.old)
    assert coerce(setting, setting.default) is setting.default  # the default is a valid value
    assert setting.fallback is None or setting.fallback in SETTINGS


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("BROKER_URL", "broker_url"),
        ("CELERY_ACKS_LATE", "task_acks_late"),
        ("CELERY_RESULT_BACKEND", "result_backend"),
        ("CELERYD_CONCURRENCY", "worker_concurrency"),
        ("CELERY_ALWAYS_EAGER", "task_always_eager"),
        ("CELERY_EAGER_PROPAGATES_EXCEPTIONS", "task_eager_propagates"),
        ("CELERYBEAT_SCHEDULE", "beat_schedule"),
        ("CELERY_MAX_CACHED_RESULTS", "result_cache_max"),
        ("CELERY_TASK_RESULT_EXPIRES", "result_expires"),
        ("CELERYD_TASK_TIME_LIMIT", "task_time_limit"),
        ("CELERY_SEND_EVENTS", "worker_send_task_events"),
        ("CELERY_ROUTES", "task_routes"),
        ("CELERY_QUEUES", "task_queues"),
        ("CELERY_MESSAGE_COMPRESSION", "task_compression"),
        ("CELERY_RESULT_DBURI", "database_url"),
        ("CASSANDRA_COLUMN_FAMILY", "cassandra_table"),
        ("CELERY_IMPORTS", "imports"),
        ("CELERY_TIMEZONE", "timezone"),
        ("CELERY_ENABLE_UTC", "enable_utc"),
        ("CELERY_EVENT_QUEUE_TTL", "event_queue_ttl"),
        ("CELERY_SECURITY_KEY", "security_key"),
    ],
)
def test_old_name_maps_to_new(old: str, new: str) -> None:
    assert OLD_NAMES[old] == new
    assert old in SETTINGS[new].old


def test_usual_old_name_comes_first() -> None:
    assert SETTINGS["task_acks_late"].old[0] == "CELERY_ACKS_LATE"
    assert SETTINGS["worker_concurrency"].old[0] == "CELERYD_CONCURRENCY"
    assert SETTINGS["result_expires"].old[0] == "CELERY_TASK_RESULT_EXPIRES"


def test_old_names_agree_with_the_namespaced_form() -> None:
    # CELERY_RESULT_BACKEND is both an old name and CELERY_ + a new name: they must agree.
    for old, new in OLD_NAMES.items():
        stripped = old.removeprefix("CELERY_").lower()
        if old.startswith("CELERY_") and stripped in SETTINGS:
            assert new == stripped, old


@pytest.mark.parametrize(
    ("typo", "expected"),
    [("broker_ur", "broker_url"), ("BROKER_UR", "broker_url"), ("task_ack_late", "task_acks_late")],
)
def test_suggest_finds_the_closest_name(typo: str, expected: str) -> None:
    assert suggest(typo) == expected


def test_suggest_gives_none_when_nothing_is_close() -> None:
    assert suggest("xyzzy") is None
    assert suggest("worker_name", cutoff=0.8) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[("true", True), ("1", True), ("YES", True), ("on", True)],
        *[("false", False), ("0", False), ("no", False), (" Off ", False)],
    ],
)
def test_coerce_reads_booleans_from_strings(text: str, expected: bool) -> None:
    assert coerce(SETTINGS["task_acks_late"], text) is expected


def test_coerce_reads_numbers_none_lists_and_dicts_from_strings() -> None:
    assert coerce(SETTINGS["worker_concurrency"], "8") == 8
    assert coerce(SETTINGS["worker_concurrency"], "none") is None
    assert coerce(SETTINGS["task_time_limit"], "2.5") == 2.5
    assert coerce(SETTINGS["task_time_limit"], "30") == 30
    assert coerce(SETTINGS["accept_content"], "json, msgpack") == ["json", "msgpack"]
    assert coerce(SETTINGS["broker_transport_options"], '{"visibility_timeout": 60}') == {
        "visibility_timeout": 60
    }


def test_coerce_keeps_valid_values_as_they_are() -> None:
    routes = {"tasks.add": "math"}
    assert coerce(SETTINGS["task_routes"], routes) is routes
    assert coerce(SETTINGS["task_routes"], lambda *a, **k: None) is not None
    assert coerce(SETTINGS["result_expires"], 3600) == 3600
    assert coerce(SETTINGS["task_default_rate_limit"], "10/s") == "10/s"


def test_coerce_error_names_setting_expected_type_and_value() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        coerce(SETTINGS["worker_concurrency"], "lots")
    assert str(info.value) == "Setting 'worker_concurrency' expects int or None; got str 'lots'"


def test_coerce_rejects_bool_where_a_number_is_expected() -> None:
    with pytest.raises(ImproperlyConfigured, match="expects int or None; got bool True"):
        coerce(SETTINGS["worker_concurrency"], True)


def test_coerce_error_for_bool_says_which_words_work() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"task_acks_late.*bool.*yes/no"):
        coerce(SETTINGS["task_acks_late"], "maybe")


def test_coerce_rejects_wrong_container() -> None:
    with pytest.raises(ImproperlyConfigured, match="'beat_schedule' expects dict; got list"):
        coerce(SETTINGS["beat_schedule"], [])


def test_coerce_masks_passwords_in_the_error() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        coerce(SETTINGS["broker_use_ssl"], "amqp://user:hunter2@host//")
    assert "hunter2" not in str(info.value)
