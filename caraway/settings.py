# ruff: noqa: E501  (the table reads best as one row per line)
"""Every setting caraway knows: one table of name, types, default, old name and a one-line doc.

Names, defaults and old uppercase names follow Celery 5.x's "Configuration and defaults"
reference, so a Celery configuration module works unchanged. Loading (``caraway.config``),
validation errors, ``caraway report`` and the docs are all derived from :data:`SETTINGS`.

Deliberate differences from Celery:

* ``broker_url`` defaults to None, meaning the embedded SQLite file (Celery: ``amqp://``).
* Class paths that name Celery's own classes (``beat_scheduler``, ``worker_consumer``,
  ``worker_autoscaler``) name caraway's instead, as user imports do.
* caraway's own settings, not in Celery (their doc starts "caraway's own"):
  ``beat_lease_timeout``, ``worker_max_decompressed_size`` (a bound on zip bombs).
* ``result_chord_ordered`` is not a setting: Celery reads it from
  ``result_backend_transport_options`` and so will we.

Old names: Celery derives each setting's 3.x name from its group (``task_*`` ↔ ``CELERY_*``,
``worker_*`` ↔ ``CELERYD_*``, ``beat_*`` ↔ ``CELERYBEAT_*`` …, groups without a 3.x prefix
just upper-case the name). :func:`_old_name` applies that rule; a row lists extra spellings
where Celery 3 or Celery's docs used a different one (``task_acks_late`` ↔ ``CELERY_ACKS_LATE``
comes from the rule, ``result_expires`` ↔ ``CELERY_TASK_RESULT_EXPIRES`` is listed).
"""

from __future__ import annotations

import difflib
import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta, tzinfo
from types import MappingProxyType
from typing import Any, cast

from caraway.exceptions import ImproperlyConfigured
from caraway.utils.text import mask_url

__all__ = ["OLD_NAMES", "SETTINGS", "Setting", "Status", "coerce", "suggest"]

NoneType = type(None)
_CALLABLE = cast(type, Callable)

BOOL: tuple[type, ...] = (bool,)
OPT_BOOL = (bool, NoneType)
INT: tuple[type, ...] = (int,)
OPT_INT = (int, NoneType)
NUM = (int, float)
OPT_NUM = (int, float, NoneType)
STR: tuple[type, ...] = (str,)
OPT_STR = (str, NoneType)
DICT: tuple[type, ...] = (Mapping,)
OPT_DICT = (Mapping, NoneType)
SEQ = (list, tuple, set, frozenset)
OPT_SEQ = (*SEQ, NoneType)
URLS = (str, list, tuple, NoneType)  # one URL, or several for failover
ID = (int, str, NoneType)  # uid/gid/umask: a number or a name
ANY: tuple[type, ...] = ()  # anything goes: routers, annotations, queue objects

_TYPE_NAMES = {NoneType: "None", Mapping: "dict", _CALLABLE: "callable"}
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_NULL = frozenset({"", "none", "null"})

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
TASK_LOG_FORMAT = (
    "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: %(message)s"
)

# Celery 3 prefix of each group; groups not listed had none, so their old name is NAME.upper().
_OLD_PREFIXES = (
    ("task_", "CELERY_"),
    ("worker_", "CELERYD_"),
    ("beat_", "CELERYBEAT_"),
    ("result_", "CELERY_RESULT_"),
    ("event_", "CELERY_EVENT_"),
    ("redis_", "CELERY_REDIS_"),
    ("security_", "CELERY_SECURITY_"),
    ("cache_", "CELERY_CACHE_"),
    ("couchbase_", "CELERY_COUCHBASE_"),
    ("arangodb_", "CELERY_ARANGODB_"),
    ("mongodb_", "CELERY_MONGODB_"),
    ("elasticsearch_", "CELERY_ELASTICSEARCH_"),
)
_TOP_LEVEL = frozenset({"accept_content", "enable_utc", "imports", "include", "timezone"})


class Status(enum.Enum):
    """What caraway does with a setting: no row may be accepted and silently ignored."""

    WORKS = "works"  # read by the code
    REFUSED = "refused"  # a non-default value is an ImproperlyConfigured naming what to use
    IGNORED = "ignored"  # accepted on purpose; a non-default value warns once, with the reason


@dataclass(frozen=True)
class Setting:
    """One row of the table. ``types`` empty means any value; ``old[0]`` is the usual old name.

    ``fallback`` names the setting whose value is used while this one is None (Celery's
    ``task_default_exchange`` follows ``task_default_queue``, for example). ``status`` is None
    only while a row is being written: a unit test fails on such a row. ``reason`` says what
    to use instead (refused) or why ignoring is harmless (ignored); ``test`` names the test
    that shows a working setting, when there is one.
    """

    name: str
    types: tuple[type, ...]
    default: Any
    doc: str
    old: tuple[str, ...] = ()
    fallback: str | None = None
    status: Status | None = None
    reason: str = ""
    test: str = ""
    #: Ignored rows: values besides the default that describe what caraway does anyway.
    harmless: tuple[Any, ...] = ()

    def works(self, test: str = "") -> Setting:
        return replace(self, status=Status.WORKS, test=test)

    def refused(self, instead: str) -> Setting:
        return replace(self, status=Status.REFUSED, reason=instead)

    def ignored(self, reason: str, *harmless: Any) -> Setting:
        return replace(self, status=Status.IGNORED, reason=reason, harmless=harmless)

    def is_harmless(self, value: Any) -> bool:
        """True for the default (Celery configs often spell defaults out) and, for an ignored
        row, for a value that asks for what caraway does anyway."""
        return any(_same(value, accepted) for accepted in (self.default, *self.harmless))

    @property
    def type_names(self) -> str:
        """``'int or None'`` — what the setting accepts, for errors and docs."""
        if not self.types:
            return "any value"
        names = [_TYPE_NAMES.get(t, t.__name__) for t in self.types]
        return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _same(value: Any, accepted: Any) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(accepted, (list, tuple)):
        value, accepted = list(value), list(accepted)
    try:
        return isinstance(value, bool) is isinstance(accepted, bool) and bool(value == accepted)
    except Exception:  # a value whose == raises (an array, say) is not the default
        return False


def _old_name(name: str) -> str:
    if name in _TOP_LEVEL:
        return "CELERY_" + name.upper()
    for new, old in _OLD_PREFIXES:
        if name.startswith(new):
            return old + name[len(new) :].upper()
    return name.upper()


def _s(
    name: str, types: tuple[type, ...], default: Any, doc: str, *old: str, fallback: str = ""
) -> Setting:
    rule = _old_name(name)
    names = (*old, rule) if rule not in old else old
    return Setting(name, types, default, doc, names, fallback or None)


_RETRY_POLICY = {"max_retries": 3, "interval_start": 0, "interval_max": 1, "interval_step": 0.2}

# fmt: off
_TABLE = (
    # General, time and date
    _s("accept_content", SEQ, ("json",), "Serializers (or MIME types) a worker accepts.").works("tests/worker/test_worker_dead_letters.py::test_undecodable_and_unknown_messages_become_dead_letters"),
    _s("result_accept_content", OPT_SEQ, None, "Serializers accepted for results; None: as accept_content.").works("tests/unit/test_serialization.py::test_captured_pickle_body_is_refused_with_json_only_accept"),
    _s("enable_utc", BOOL, True, "Convert dates and times in messages to UTC.").works(),
    _s("timezone", (str, tzinfo, NoneType), None, "Time zone for schedules; None: UTC, or local time when enable_utc is off.").works(),
    # Tasks
    _s("task_annotations", ANY, None, "Override task attributes by task name, '*' or annotation objects.").works(),
    _s("task_compression", OPT_STR, None, "Compression for task messages (gzip, bzip2, zstd…); None: none.", "CELERY_MESSAGE_COMPRESSION").works(),
    _s("task_protocol", INT, 2, "Task message protocol version sent (1 or 2).", "CELERY_TASK_PROTOCOL").works("tests/worker/test_protocol1.py::test_protocol1_runs_a_task_a_chain_a_chord_and_a_retry"),
    _s("task_serializer", STR, "json", "Default serializer for task messages.", "CELERY_TASK_SERIALIZER").works(),
    _s("task_args_repr_function", (str, _CALLABLE, NoneType), None, "Function (or its dotted path) that shortens args/kwargs for logs; None: built-in.").ignored("argsrepr/kwargsrepr in messages and logs are always Python's repr, shortened"),
    _s("task_publish_retry", BOOL, True, "Retry publishing a task when the connection fails.", "CELERY_TASK_PUBLISH_RETRY").works(),
    _s("task_publish_retry_policy", DICT, _RETRY_POLICY, "max_retries/interval_start/interval_step/interval_max for publish retries.", "CELERY_TASK_PUBLISH_RETRY_POLICY").works(),
    # Task execution
    _s("task_always_eager", BOOL, False, "Run tasks in the caller, blocking, instead of sending them.").works(),
    _s("task_eager_propagates", BOOL, False, "Eagerly run tasks re-raise their exceptions.", "CELERY_EAGER_PROPAGATES_EXCEPTIONS", "CELERY_EAGER_PROPAGATES").works("tests/unit/test_task.py::test_always_eager_failure_is_stored_in_the_result_unless_propagating"),
    _s("task_store_eager_result", BOOL, False, "Store results of eagerly run tasks in the result backend.").works("tests/unit/test_task.py::test_store_eager_result_stores_it"),
    _s("task_remote_tracebacks", BOOL, False, "Re-raised task errors carry the worker's traceback.").ignored("result.get() re-raises the task's exception type and message; the worker's traceback text is in result.traceback"),
    _s("task_ignore_result", BOOL, False, "Do not store task return values.").works(),
    _s("task_store_errors_even_if_ignored", BOOL, False, "Store failures even for tasks that ignore results.").works(),
    _s("task_track_started", BOOL, False, "Report the STARTED state when a worker begins a task.").works(),
    _s("task_time_limit", OPT_NUM, None, "Hard time limit in seconds; the task is stopped past it.", "CELERYD_TASK_TIME_LIMIT").works(),
    _s("task_soft_time_limit", OPT_NUM, None, "Soft time limit in seconds; raises SoftTimeLimitExceeded in the task.", "CELERYD_TASK_SOFT_TIME_LIMIT", "CELERYD_SOFT_TIME_LIMIT").works(),
    _s("task_allow_error_cb_on_chord_header", BOOL, False, "Link a chord's error callback to every header task too.").works("tests/unit/test_canvas_golden.py::test_chord_link_error_reaches_header_tasks_only_when_allowed"),
    _s("task_acks_late", BOOL, False, "Ack a task message after the task ran, not just before.").works("tests/worker/test_amqp_connection_loss.py::test_a_cut_connection_reruns_only_the_tasks_running_at_the_cut"),
    _s("task_acks_on_failure_or_timeout", BOOL, True, "With late acks, ack messages of tasks that failed or timed out.").works("tests/worker/test_worker_acks_on_failure.py::test_late_ack_failures_and_timeouts_are_acked_or_kept_as_configured"),
    _s("task_acks_on_failure", OPT_BOOL, None, "With late acks, ack failed tasks; None: as task_acks_on_failure_or_timeout.").works("tests/worker/test_worker_acks_on_failure.py::test_late_ack_failures_and_timeouts_are_acked_or_kept_as_configured"),
    _s("task_acks_on_timeout", OPT_BOOL, None, "With late acks, ack timed-out tasks; None: as task_acks_on_failure_or_timeout.").works("tests/worker/test_worker_acks_on_failure.py::test_late_ack_failures_and_timeouts_are_acked_or_kept_as_configured"),
    _s("task_reject_on_worker_lost", OPT_BOOL, None, "Requeue, not ack, a late-ack task whose worker died (beware loops).").works(),
    _s("task_default_rate_limit", (str, int, float, NoneType), None, "Rate limit for tasks without their own ('10/s', '100/m'); None: none.").works(),
    # Results
    _s("result_backend", OPT_STR, None, "URL of the result store; None: no backend configured.").works("tests/worker/test_contrib_pytest.py::test_celery_app_and_celery_worker_run_tasks"),
    _s("result_backend_always_retry", BOOL, True, "caraway: True (Celery: False). Retry a result write that finds the backend unreachable, with exponential backoff, instead of losing the result.").works("tests/unit/test_backend_retry.py::test_with_always_retry_off_a_store_fails_at_once"),
    _s("result_backend_max_sleep_between_retries_ms", INT, 10000, "Longest sleep between backend retries, in ms.").works("tests/unit/test_backend_retry.py::test_always_retry_tries_max_retries_more_times_then_raises"),
    _s("result_backend_base_sleep_between_retries_ms", INT, 10, "First sleep between backend retries, in ms.").works("tests/unit/test_backend_retry.py::test_always_retry_tries_max_retries_more_times_then_raises"),
    _s("result_backend_max_retries", NUM, float("inf"), "Most retries of a recoverable backend error.").works("tests/unit/test_backend_retry.py::test_always_retry_tries_max_retries_more_times_then_raises"),
    _s("result_backend_thread_safe", BOOL, False, "Share one backend object across threads.").ignored("caraway's backends are always safe to share across threads"),
    _s("result_backend_transport_options", DICT, {}, "Extra options for the result backend's transport.").works("tests/worker/test_fork_safety.py::test_a_child_opens_its_own_redis_connections"),
    _s("result_serializer", STR, "json", "Serializer for stored results.").works("tests/unit/test_sql_mapping.py::test_the_result_column_trusts_pickles_only_with_the_pickle_serializer"),
    _s("result_compression", OPT_STR, None, "Compression for stored results; None: none.").works("tests/worker/test_result_compression.py::test_a_result_is_stored_gzipped_and_read_by_caraway_and_celery"),
    _s("result_extended", BOOL, False, "Also store name, args, kwargs, worker, retries and queue with results.").works("tests/unit/test_sql_mapping.py::test_a_meta_maps_onto_celerys_columns"),
    _s("result_expires", (int, float, timedelta, NoneType), timedelta(days=1), "Delete stored results after this (seconds or timedelta); None or 0: never.", "CELERY_TASK_RESULT_EXPIRES").works("tests/worker/test_worker_results.py::test_result_expires_on_sqlite"),
    _s("result_cache_max", OPT_INT, -1, "Results cached by the client; -1 disables the cache, 0 or None: no limit.", "CELERY_MAX_CACHED_RESULTS").ignored("there is no client-side result cache: each AsyncResult keeps only its own final state"),
    _s("result_chord_join_timeout", NUM, 3.0, "Seconds to wait when joining a chord header's results.").ignored("the chord body is sent once every header result is stored, and those are then read without waiting, so there is no join to time out"),
    _s("result_chord_retry_interval", NUM, 1.0, "Seconds between retries of a chord's unlock.").works(),
    _s("result_exchange", STR, "celeryresults", "Exchange of the AMQP result backend.").ignored("used only by Celery's removed 'amqp' result backend; the rpc:// backend replies to the client's own queue"),
    _s("result_exchange_type", STR, "direct", "Exchange type of the AMQP result backend.").ignored("used only by Celery's removed 'amqp' result backend; the rpc:// backend replies to the client's own queue"),
    _s("result_persistent", OPT_BOOL, None, "RPC backend: persistent result messages (survive a broker restart).").works(),
    _s("override_backends", OPT_DICT, None, "Map a backend alias to a 'module:Class' that replaces it.").refused("name your backend class in result_backend ('proj.backends:MyBackend') or declare a 'caraway.backends' entry point"),
    # SQL database backend
    _s("database_create_tables_at_setup", BOOL, True, "Create the result tables at setup instead of on first use.").works(),
    _s("database_engine_options", DICT, {}, "Extra SQLAlchemy engine options.", "CELERY_RESULT_ENGINE_OPTIONS").works(),
    _s("database_short_lived_sessions", BOOL, False, "Open a database session per operation (helps with stale connections).", "CELERY_RESULT_DB_SHORT_LIVED_SESSIONS").works(),
    _s("database_table_schemas", DICT, {}, "Schema of the 'task' and 'group' result tables.").works(),
    _s("database_table_names", DICT, {}, "Names of the 'task' and 'group' result tables.", "CELERY_RESULT_DB_TABLENAMES", "CELERY_RESULT_DB_TABLE_NAMES").works(),
    _s("database_url", OPT_STR, None, "Database URL of the SQL backend; prefer result_backend='db+…'.", "CELERY_RESULT_DBURI").refused("put the database URL in result_backend='db+postgresql://…'"),
    # Cache backend
    _s("cache_backend", OPT_STR, None, "Cache backend name (kept for django-celery-results).").ignored("read only with Celery's result_backend='cache', which caraway refuses: name the servers in result_backend='cache+memcached://host:11211/'"),
    _s("cache_backend_options", DICT, {}, "Options for the memcached client.").works("tests/unit/test_memcached_urls.py::test_an_option_pymemcache_does_not_know_is_an_error"),
    # Redis backend
    _s("redis_backend_health_check_interval", OPT_INT, None, "Seconds between health checks of backend connections.").works(),
    _s("redis_backend_use_ssl", (Mapping, bool, NoneType), None, "SSL options for the Redis backend (same keys as broker_use_ssl).").works("tests/worker/test_redis_tls_sentinel.py::test_rediss_with_the_certificate_verified_through_broker_use_ssl"),
    _s("redis_max_connections", OPT_INT, None, "Size of the backend's connection pool; None: no limit.").works(),
    _s("redis_socket_connect_timeout", OPT_NUM, None, "Seconds to wait when connecting to Redis.").works(),
    _s("redis_socket_timeout", OPT_NUM, 120.0, "Seconds to wait for a Redis read or write.").works(),
    _s("redis_retry_on_timeout", BOOL, False, "Retry a Redis read or write that timed out.").works(),
    _s("redis_socket_keepalive", BOOL, False, "TCP keepalive on Redis connections.").works(),
    _s("redis_host", OPT_STR, None, "Redis host (old style; prefer a URL in result_backend).").refused("put the host in the URL: result_backend='redis://host:6379/0'"),
    _s("redis_port", OPT_INT, None, "Redis port (old style; prefer a URL in result_backend).").refused("put the port in the URL: result_backend='redis://host:6379/0'"),
    _s("redis_db", OPT_INT, None, "Redis database number (old style; prefer a URL).").refused("put the database number in the URL: result_backend='redis://host:6379/0'"),
    _s("redis_username", OPT_STR, None, "Redis user name (old style; prefer a URL).").refused("put the user in the URL: result_backend='redis://user:password@host:6379/0'"),
    _s("redis_password", OPT_STR, None, "Redis password (old style; prefer a URL).").refused("put the password in the URL: result_backend='redis://:password@host:6379/0'"),
    # Other result stores
    _s("mongodb_backend_settings", OPT_DICT, None, "MongoDB backend: database, taskmeta_collection, max_pool_size, options.").ignored("configures Celery's MongoDB result backend, which caraway does not ship (result_backend='mongodb://' is refused and lists the engines there are)"),
    _s("cassandra_servers", OPT_SEQ, [], "Cassandra hosts (exclusive with cassandra_secure_bundle_path).").ignored("configures Celery's Cassandra result backend, which caraway does not ship (result_backend='cassandra://' is refused and lists the engines there are)"),
    _s("cassandra_secure_bundle_path", OPT_STR, None, "Astra DB secure-connect bundle (exclusive with cassandra_servers).").ignored("configures Celery's Cassandra result backend, which caraway does not ship (result_backend='cassandra://' is refused and lists the engines there are)"),
    _s("cassandra_port", OPT_INT, 9042, "Cassandra port.").ignored("configures Celery's Cassandra result backend, which caraway does not ship (result_backend='cassandra://' is refused and lists the engines there are)"),
    _s("cassandra_keyspace", OPT_STR, None, "Cassandra keyspace holding results.").ignored("configures Celery's Cassandra result backend, which caraway does not ship (result_backend='cassandra://' is refused and lists the engines there are)"),
    _s("cassandra_table", OPT_STR, None, "Cassandra table holding results.", "CASSANDRA_COLUMN_FAMILY").ignored("configures Celery's Cassandra result backend, which caraway does not ship (result_backend='cassandra://' is refused and lists the engines there are)"),
    _s("cassandra_read_consistency", OPT_STR, None, "Cassandra read consistency (ONE, QUORUM, LOCAL_QUORUM…).").ignored("configures Celery's Cassandra result backend, which caraway does not ship (result_backend='cassandra://' is refused and lists the engines there are)"),
    _s("cassandra_write_consistency", OPT_STR, None, "Cassandra write consistency (ONE, QUORUM, LOCAL_QUORUM…).").ignored("configures Celery's Cassandra result backend, which caraway does not ship (result_backend='cassandra://' is refused and lists the engines there are)"),
    _s("cassandra_entry_ttl", OPT_NUM, None, "Seconds Cassandra keeps a result; None: forever.").ignored("configures Celery's Cassandra result backend, which caraway does not ship (result_backend='cassandra://' is refused and lists the engines there are)"),
    _s("cassandra_auth_provider", OPT_STR, None, "cassandra.auth provider class name.").ignored("configures Celery's Cassandra result backend, which caraway does not ship (result_backend='cassandra://' is refused and lists the engines there are)"),
    _s("cassandra_auth_kwargs", DICT, {}, "Arguments for the Cassandra auth provider.").ignored("configures Celery's Cassandra result backend, which caraway does not ship (result_backend='cassandra://' is refused and lists the engines there are)"),
    _s("cassandra_options", DICT, {}, "Arguments for cassandra.cluster.Cluster.").ignored("configures Celery's Cassandra result backend, which caraway does not ship (result_backend='cassandra://' is refused and lists the engines there are)"),
    _s("s3_access_key_id", OPT_STR, None, "S3 access key id.").ignored("configures Celery's S3 result backend, which caraway does not ship (result_backend='s3://' is refused and lists the engines there are)"),
    _s("s3_secret_access_key", OPT_STR, None, "S3 secret access key.").ignored("configures Celery's S3 result backend, which caraway does not ship (result_backend='s3://' is refused and lists the engines there are)"),
    _s("s3_bucket", OPT_STR, None, "S3 bucket holding results.").ignored("configures Celery's S3 result backend, which caraway does not ship (result_backend='s3://' is refused and lists the engines there are)"),
    _s("s3_base_path", OPT_STR, None, "Key prefix for results in the S3 bucket.").ignored("configures Celery's S3 result backend, which caraway does not ship (result_backend='s3://' is refused and lists the engines there are)"),
    _s("s3_endpoint_url", OPT_STR, None, "Endpoint of an S3-compatible store.").ignored("configures Celery's S3 result backend, which caraway does not ship (result_backend='s3://' is refused and lists the engines there are)"),
    _s("s3_region", OPT_STR, None, "S3 region.").ignored("configures Celery's S3 result backend, which caraway does not ship (result_backend='s3://' is refused and lists the engines there are)"),
    _s("azureblockblob_container_name", STR, "celery", "Azure container holding results.").ignored("configures Celery's Azure Block Blob result backend, which caraway does not ship (result_backend='azureblockblob://' is refused and lists the engines there are)"),
    _s("azureblockblob_base_path", OPT_STR, None, "Key prefix for results in the Azure container.").ignored("configures Celery's Azure Block Blob result backend, which caraway does not ship (result_backend='azureblockblob://' is refused and lists the engines there are)"),
    _s("azureblockblob_retry_initial_backoff_sec", INT, 2, "First Azure retry backoff, in seconds.").ignored("configures Celery's Azure Block Blob result backend, which caraway does not ship (result_backend='azureblockblob://' is refused and lists the engines there are)"),
    _s("azureblockblob_retry_increment_base", INT, 2, "Base of the exponential Azure retry backoff.").ignored("configures Celery's Azure Block Blob result backend, which caraway does not ship (result_backend='azureblockblob://' is refused and lists the engines there are)"),
    _s("azureblockblob_retry_max_attempts", INT, 3, "Most Azure retry attempts.").ignored("configures Celery's Azure Block Blob result backend, which caraway does not ship (result_backend='azureblockblob://' is refused and lists the engines there are)"),
    _s("azureblockblob_connection_timeout", INT, 20, "Seconds to connect to Azure.").ignored("configures Celery's Azure Block Blob result backend, which caraway does not ship (result_backend='azureblockblob://' is refused and lists the engines there are)"),
    _s("azureblockblob_read_timeout", INT, 120, "Seconds to read an Azure blob.").ignored("configures Celery's Azure Block Blob result backend, which caraway does not ship (result_backend='azureblockblob://' is refused and lists the engines there are)"),
    _s("gcs_bucket", OPT_STR, None, "Google Cloud Storage bucket holding results.").ignored("configures Celery's Google Cloud Storage result backend, which caraway does not ship (result_backend='gs://' is refused and lists the engines there are)"),
    _s("gcs_project", OPT_STR, None, "Google Cloud project.").ignored("configures Celery's Google Cloud Storage result backend, which caraway does not ship (result_backend='gs://' is refused and lists the engines there are)"),
    _s("gcs_base_path", OPT_STR, None, "Key prefix for results in the GCS bucket.").ignored("configures Celery's Google Cloud Storage result backend, which caraway does not ship (result_backend='gs://' is refused and lists the engines there are)"),
    _s("gcs_ttl", NUM, 0, "Seconds GCS keeps result blobs (needs a lifecycle rule); 0: forever.").ignored("configures Celery's Google Cloud Storage result backend, which caraway does not ship (result_backend='gs://' is refused and lists the engines there are)"),
    _s("gcs_threadpool_maxsize", INT, 10, "Threads (and connections) for GCS operations.").ignored("configures Celery's Google Cloud Storage result backend, which caraway does not ship (result_backend='gs://' is refused and lists the engines there are)"),
    _s("firestore_project", OPT_STR, None, "Firestore project for chord counting; None: gcs_project.", fallback="gcs_project").ignored("configures Celery's Firestore result backend, which caraway does not ship (result_backend='gcs://' is refused and lists the engines there are)"),
    _s("elasticsearch_retry_on_timeout", BOOL, False, "Retry on another Elasticsearch node after a timeout.").ignored("configures Celery's Elasticsearch result backend, which caraway does not ship (result_backend='elasticsearch://' is refused and lists the engines there are)"),
    _s("elasticsearch_max_retries", INT, 3, "Most Elasticsearch retries before the error propagates.").ignored("configures Celery's Elasticsearch result backend, which caraway does not ship (result_backend='elasticsearch://' is refused and lists the engines there are)"),
    _s("elasticsearch_timeout", NUM, 10.0, "Elasticsearch request timeout, in seconds.").ignored("configures Celery's Elasticsearch result backend, which caraway does not ship (result_backend='elasticsearch://' is refused and lists the engines there are)"),
    _s("elasticsearch_save_meta_as_text", BOOL, True, "Store result metadata as text rather than JSON.").ignored("configures Celery's Elasticsearch result backend, which caraway does not ship (result_backend='elasticsearch://' is refused and lists the engines there are)"),
    _s("dynamodb_endpoint_url", OPT_STR, None, "Endpoint of a DynamoDB-compatible service.").ignored("configures Celery's DynamoDB result backend, which caraway does not ship (result_backend='dynamodb://' is refused and lists the engines there are)"),
    _s("couchbase_backend_settings", DICT, {}, "Couchbase backend: host, port, bucket, username, password.").ignored("configures Celery's Couchbase result backend, which caraway does not ship (result_backend='couchbase://' is refused and lists the engines there are)"),
    _s("arangodb_backend_settings", DICT, {}, "ArangoDB backend: host, port, database, collection, credentials…").ignored("configures Celery's ArangoDB result backend, which caraway does not ship (result_backend='arangodb://' is refused and lists the engines there are)"),
    _s("cosmosdbsql_database_name", STR, "celerydb", "CosmosDB database holding results.").ignored("configures Celery's CosmosDB result backend, which caraway does not ship (result_backend='cosmosdbsql://' is refused and lists the engines there are)"),
    _s("cosmosdbsql_collection_name", STR, "celerycol", "CosmosDB collection holding results.").ignored("configures Celery's CosmosDB result backend, which caraway does not ship (result_backend='cosmosdbsql://' is refused and lists the engines there are)"),
    _s("cosmosdbsql_consistency_level", STR, "Session", "CosmosDB consistency level.").ignored("configures Celery's CosmosDB result backend, which caraway does not ship (result_backend='cosmosdbsql://' is refused and lists the engines there are)"),
    _s("cosmosdbsql_max_retry_attempts", INT, 9, "Most CosmosDB retries of a request.").ignored("configures Celery's CosmosDB result backend, which caraway does not ship (result_backend='cosmosdbsql://' is refused and lists the engines there are)"),
    _s("cosmosdbsql_max_retry_wait_time", INT, 30, "Seconds CosmosDB retries may take in all.").ignored("configures Celery's CosmosDB result backend, which caraway does not ship (result_backend='cosmosdbsql://' is refused and lists the engines there are)"),
    # Routing
    _s("task_queues", (list, tuple, Mapping, NoneType), None, "Queues workers consume from; None: just task_default_queue.", "CELERY_QUEUES").works("tests/worker/test_remote_embedded.py::test_list_bindings"),
    _s("task_routes", (Mapping, list, tuple, str, _CALLABLE, NoneType), None, "Routers: a dict of name/glob → queue, a function, a dotted path, or a list of those.", "CELERY_ROUTES").works("tests/worker/test_worker_routing.py::test_a_worker_on_q1_runs_only_what_is_routed_to_q1"),
    _s("task_queue_max_priority", OPT_INT, None, "x-max-priority of queues (RabbitMQ).").works("tests/worker/test_amqp_worker.py::test_the_whole_priority_range_runs_highest_first"),
    _s("task_default_priority", OPT_INT, None, "Priority of tasks that set none.").works(),
    _s("task_inherit_parent_priority", BOOL, False, "Child tasks inherit their parent's priority.").works("tests/worker/test_inherit_parent_priority.py::test_a_child_sent_from_a_task_gets_its_parents_priority_only_with_the_setting"),
    _s("worker_direct", BOOL, False, "Give every worker its own queue '<node>.dq2' (bound to the C.dq2 exchange).", "CELERY_WORKER_DIRECT").works("tests/worker/test_worker_exchanges.py::test_worker_direct_reaches_only_the_named_worker"),
    _s("task_create_missing_queues", BOOL, True, "Create queues named in routes but missing from task_queues.").works("tests/unit/test_routing.py::test_missing_queue_is_an_error_when_it_may_not_be_created"),
    _s("task_create_missing_queue_type", STR, "classic", "Type of automatically created queues: classic or quorum.").works("tests/unit/test_amqp_urls.py::test_queue_arguments_follow_celerys_settings"),
    _s("task_create_missing_queue_exchange_type", OPT_STR, None, "Exchange type for automatically created queues; None: unchanged.").works(),
    _s("task_default_queue", STR, "celery", "Queue of tasks that are not routed elsewhere.").works("tests/worker/test_amqp_worker.py::test_the_whole_priority_range_runs_highest_first"),
    _s("task_default_queue_type", STR, "classic", "Type of the default queue: classic or quorum.").works(),
    _s("task_default_exchange", OPT_STR, None, "Default exchange; None: named like task_default_queue.", fallback="task_default_queue").works("tests/unit/test_exchanges.py::test_queues_without_exchange_or_key_take_celerys_defaults"),
    _s("task_default_exchange_type", STR, "direct", "Type of the default exchange.").works("tests/unit/test_exchanges.py::test_queues_without_exchange_or_key_take_celerys_defaults"),
    _s("task_default_routing_key", OPT_STR, None, "Default routing key; None: task_default_queue.", fallback="task_default_queue").works("tests/unit/test_exchanges.py::test_queues_without_exchange_or_key_take_celerys_defaults"),
    _s("task_default_delivery_mode", (str, int), "persistent", "'persistent' (2) or 'transient' (1) messages.").works("tests/worker/test_amqp_queue_settings.py::test_task_default_delivery_mode_and_the_call_option_reach_rabbitmq"),
    # Broker
    _s("broker_url", URLS, None, "Broker URL (a list: failover); None: the embedded SQLite file.").works(),
    _s("broker_read_url", URLS, None, "Broker URL for consuming; None: broker_url.", fallback="broker_url").refused("one broker_url serves publishing and consuming; set broker_url"),
    _s("broker_write_url", URLS, None, "Broker URL for publishing; None: broker_url.", fallback="broker_url").refused("one broker_url serves publishing and consuming; set broker_url"),
    _s("broker_transport", OPT_STR, None, "Broker transport name when broker_url gives none.").refused("name the transport in broker_url's scheme ('redis://', 'amqp://', 'sqlite:///…')"),
    _s("broker_transport_options", DICT, {}, "Extra options for the broker transport (visibility_timeout…).").works("tests/worker/test_redis_tls_sentinel.py::test_sentinel_url_finds_the_master_by_name"),
    _s("broker_failover_strategy", (str, _CALLABLE, NoneType), "round-robin", "How to pick the next broker URL on failover.").works("tests/unit/test_amqp_urls.py::test_a_callable_strategy_orders_the_attempts"),
    _s("broker_heartbeat", OPT_NUM, 120.0, "AMQP heartbeat in seconds (worker side); None or 0: off.").works("tests/unit/test_amqp_urls.py::test_heartbeat_and_timeout_come_from_the_settings_transport_options_win"),
    _s("broker_heartbeat_checkrate", NUM, 2.0, "Heartbeat checks per heartbeat interval.").works(),
    _s("broker_use_ssl", (bool, Mapping), False, "Use TLS to the broker: True, or a dict of SSL options.").works("tests/worker/test_redis_tls_sentinel.py::test_rediss_with_the_certificate_verified_through_broker_use_ssl"),
    _s("broker_pool_limit", OPT_INT, 10, "Most broker connections in the pool; None or 0: no pool.").ignored("caraway's engines keep their own connections (one client per process and role, reused); there is no kombu connection pool to size"),
    _s("broker_pool_acquire_timeout", OPT_NUM, None, "Seconds a send waits for a free connection of the producer pool; None: for ever.").ignored("caraway has no producer pool to wait on: a send uses the process's own broker client at once"),
    _s("broker_connection_timeout", NUM, 4.0, "Seconds a worker waits for one attempt to connect to the broker.").works("tests/worker/test_amqp_worker.py::test_a_failover_list_reaches_the_broker_that_answers"),
    _s("broker_connection_retry", BOOL, True, "A worker reconnects to a lost broker (else it exits with an error).").works(),
    _s("broker_connection_retry_on_startup", OPT_BOOL, True, "A worker retries a broker it cannot reach at start; None: as broker_connection_retry.").works("tests/worker/test_broker_connection.py::test_broker_connection_retry_on_startup_off_fails_at_once_naming_the_masked_url"),
    _s("broker_connection_max_retries", OPT_INT, 100, "Retries before a worker gives up on an unreachable broker and exits; None: forever, 0: none.").works("tests/worker/test_broker_connection.py::test_an_unreachable_rabbitmq_is_retried_then_given_up"),
    _s("broker_channel_error_retry", BOOL, False, "Reconnect after an invalid response from the broker.").ignored("a channel error from the broker (a refused declare, say) is raised as OperationalError with the broker's reason and not retried, which is Celery's default"),
    _s("broker_login_method", OPT_STR, "AMQPLAIN", "AMQP login method.").works(),
    _s("broker_native_delayed_delivery_queue_type", STR, "quorum", "Queue type for RabbitMQ native delayed delivery.").ignored("ETA and countdown tasks wait in the worker, not in RabbitMQ's native delayed delivery queues"),
    # Worker
    _s("imports", SEQ, (), "Modules a worker imports at start (tasks, signal handlers).").works(),
    _s("include", SEQ, (), "More modules to import at start, after imports.").works(),
    _s("worker_deduplicate_successful_tasks", BOOL, False, "Skip redelivered late-ack tasks already stored as SUCCESS.").works("tests/worker/test_worker_deduplicate.py::test_a_redelivered_task_already_successful_runs_again_only_without_the_setting"),
    _s("worker_concurrency", OPT_INT, None, "Tasks run at once per worker; None: the number of CPUs.").works(),
    _s("worker_prefetch_multiplier", INT, 4, "Messages reserved per concurrency slot; 0: no limit.").works(),
    _s("worker_eta_task_limit", OPT_INT, None, "Most ETA/countdown tasks held in memory; None: no limit.").works("tests/worker/test_worker_eta_limit.py::test_past_the_limit_eta_tasks_fill_the_window_and_the_rest_waits"),
    _s("worker_max_decompressed_size", OPT_INT, 100 << 20, "caraway's own: most bytes a compressed task body may expand to; larger ones are dead letters. None: no limit.").works("tests/worker/test_worker_dead_letters.py::test_the_decompressed_size_limit_is_generous_by_default"),
    _s("worker_disable_prefetch", BOOL, False, "Fetch a message only when a slot is free.").works(),
    _s("worker_enable_prefetch_count_reduction", BOOL, True, "Lower prefetch after a reconnect, then restore it as tasks finish.").ignored("after a reconnect the worker prefetches its full count at once"),
    _s("worker_lost_wait", NUM, 10.0, "Seconds to wait for a lost worker's result before WorkerLostError.", "CELERYD_WORKER_LOST_WAIT").ignored("a dead pool child is noticed at once and its task fails with WorkerLostError without waiting"),
    _s("worker_max_tasks_per_child", OPT_INT, None, "Replace a pool child after this many tasks; None: never.").works(),
    _s("worker_max_memory_per_child", OPT_INT, None, "Replace a pool child past this resident memory, in KiB.").works(),
    _s("worker_disable_rate_limits", BOOL, False, "Ignore every rate limit.", "CELERY_DISABLE_RATE_LIMITS").works(),
    _s("worker_state_db", OPT_STR, None, "File keeping worker state (revoked ids) across restarts.").works(),
    _s("worker_timer_precision", NUM, 1.0, "Longest sleep of the ETA scheduler, in seconds.").ignored("the worker's timer sleeps until the next ETA task is due, never more than 1 s"),
    _s("worker_enable_remote_control", BOOL, True, "Accept remote control commands.", "CELERY_ENABLE_REMOTE_CONTROL").works("tests/worker/test_remote_control_off.py::test_a_worker_with_remote_control_off_neither_answers_nor_obeys"),
    _s("worker_proc_alive_timeout", NUM, 4.0, "Seconds to wait for a new pool child to start.").ignored("pool children are replaced without a start-up deadline"),
    _s("worker_cancel_long_running_tasks_on_connection_loss", BOOL, False, "Cancel running late-ack tasks when the broker connection is lost.").ignored("running tasks finish after a lost connection; late-ack messages are redelivered by the broker"),
    _s("worker_detect_quorum_queues", BOOL, True, "Turn off global QoS when a quorum queue is consumed.").ignored("quorum queues are always detected: the worker turns global QoS off when it consumes one"),
    _s("worker_soft_shutdown_timeout", NUM, 0.0, "Seconds running tasks get before a cold shutdown; 0: off.").works(),
    _s("worker_enable_soft_shutdown_on_idle", BOOL, False, "Soft shutdown waits even with no task running.").works(),
    # Events
    _s("worker_send_task_events", BOOL, False, "Send task events for monitors (like -E).", "CELERY_SEND_EVENTS", "CELERYD_SEND_EVENTS").works("tests/worker/test_remote_embedded.py::test_task_events_reach_a_receiver"),
    _s("task_send_sent_event", BOOL, False, "Send a task-sent event when a task is published.", "CELERY_SEND_TASK_SENT_EVENT").works("tests/worker/test_remote_embedded.py::test_task_sent_events_come_from_the_producer"),
    _s("event_queue_ttl", OPT_NUM, 5.0, "Seconds an event waits in a monitor's queue (x-message-ttl).").works("tests/worker/test_amqp_queue_settings.py::test_control_and_event_queues_carry_the_configured_lifetimes"),
    _s("event_queue_expires", OPT_NUM, 60.0, "Seconds before an unused monitor queue is deleted (x-expires).").works("tests/worker/test_amqp_queue_settings.py::test_control_and_event_queues_carry_the_configured_lifetimes"),
    _s("event_queue_durable", BOOL, False, "Event receiver queues survive a broker restart.").ignored("monitor queues are never durable: events are live data"),
    _s("event_queue_exclusive", BOOL, False, "Event receiver queues belong to one connection.").ignored("monitor queues are always exclusive to their connection, so they go when the monitor does (Celery: not exclusive by default)", True),
    _s("event_queue_prefix", STR, "celeryev", "Prefix of event receiver queue names.").works("tests/worker/test_amqp_queue_settings.py::test_control_and_event_queues_carry_the_configured_lifetimes"),
    _s("event_exchange", STR, "celeryev", "Name of the event exchange.").refused("events always travel on the 'celeryev' exchange that monitors such as Flower listen to"),
    _s("event_serializer", STR, "json", "Serializer for event messages.").ignored("events are always sent as JSON, which every Celery monitor reads (Celery's examples/security sets 'auth': its task messages are still signed)"),
    _s("events_logfile", OPT_STR, None, "Log file of 'caraway events' (default stdout).").ignored("'caraway events' does not detach; redirect its output"),
    _s("events_pidfile", OPT_STR, None, "PID file of 'caraway events'.").ignored("'caraway events' does not detach or write a pid file"),
    _s("events_uid", ID, None, "User 'caraway events' switches to when detached.").refused("run 'caraway events' as the user you want; caraway does not switch users"),
    _s("events_gid", ID, None, "Group 'caraway events' switches to when detached.").refused("run 'caraway events' with the group you want; caraway does not switch groups"),
    _s("events_umask", ID, None, "umask of 'caraway events' when detached.").ignored("'caraway events' does not detach"),
    _s("events_executable", OPT_STR, None, "Python executable of detached 'caraway events'.").ignored("'caraway events' does not detach"),
    # Metrics and traces (docs/metrics.md)
    _s("worker_metrics", BOOL, False, "caraway's own: serve Prometheus /metrics on the --health-port (like --metrics); needs caraway[prometheus].").works(),
    _s("opentelemetry_tracing", BOOL, False, "caraway's own: a span per send and per run, linked by a traceparent header; needs caraway[otel] and a tracer provider.").works(),
    # Remote control
    _s("control_queue_ttl", NUM, 300.0, "Seconds a control command waits for a worker before expiring.").works("tests/worker/test_amqp_queue_settings.py::test_control_and_event_queues_carry_the_configured_lifetimes"),
    _s("control_queue_expires", NUM, 10.0, "Seconds before an unused control or reply queue is deleted.").works("tests/worker/test_amqp_queue_settings.py::test_control_and_event_queues_carry_the_configured_lifetimes"),
    _s("control_exchange", STR, "celery", "Name of the control command exchange.").refused("remote control always uses the 'celery.pidbox' exchange; run apps that must not see each other on separate brokers or virtual hosts"),
    _s("control_queue_durable", BOOL, False, "Control exchange and queue survive a broker restart.").ignored("control queues are never durable: commands are live data"),
    _s("control_queue_exclusive", BOOL, False, "Control queue belongs to one connection.").ignored("pidbox and reply queues are always exclusive to their connection, so they go with their worker or client (Celery: not exclusive by default)", True),
    # Logging
    _s("worker_hijack_root_logger", BOOL, True, "Remove the root logger's handlers and install caraway's.").works("tests/worker/test_worker_logging_settings.py::test_without_redirect_or_hijack_print_stays_on_stdout_and_handlers_stay"),
    _s("worker_log_color", OPT_BOOL, None, "Colored log output; None: when logging to a terminal.").ignored("log lines are never colored", False),
    _s("worker_log_format", STR, LOG_FORMAT, "Format of worker log lines.").works(),
    _s("worker_task_log_format", STR, TASK_LOG_FORMAT, "Format of log lines from inside tasks.").works(),
    _s("worker_redirect_stdouts", BOOL, True, "Send print output of tasks to the log.", "CELERY_REDIRECT_STDOUTS", "CELERYD_REDIRECT_STDOUTS").works("tests/worker/test_worker_logging_settings.py::test_by_default_print_goes_to_the_worker_log_at_warning_and_root_is_hijacked"),
    _s("worker_redirect_stdouts_level", (str, int), "WARNING", "Level of redirected stdout/stderr lines.", "CELERY_REDIRECT_STDOUTS_LEVEL", "CELERYD_REDIRECT_STDOUTS_LEVEL").works("tests/worker/test_worker_logging_settings.py::test_redirect_level_is_the_level_of_the_records"),
    # Security (message signing)
    _s("security_key", OPT_STR, None, "Path of the private key that signs messages.").works("tests/security/test_auth_serializer.py::test_setup_registers_auth_and_turns_off_unsigned_content"),
    _s("security_key_password", (str, bytes, NoneType), None, "Password of the signing key.").works(),
    _s("security_certificate", OPT_STR, None, "Path of the X.509 certificate that signs messages.").works("tests/security/test_auth_serializer.py::test_setup_registers_auth_and_turns_off_unsigned_content"),
    _s("security_cert_store", OPT_STR, None, "Directory or glob of trusted X.509 certificates.").works("tests/security/test_auth_serializer.py::test_setup_registers_auth_and_turns_off_unsigned_content"),
    _s("security_digest", STR, "sha256", "Digest used to sign messages.").works("tests/security/test_auth_serializer.py::test_setup_refuses_what_would_not_be_safe_or_cannot_work"),
    # Components
    _s("worker_pool", STR, "prefork", "Pool: prefork, threads, gevent, eventlet, asyncio or solo.").works(),
    _s("worker_pool_restarts", BOOL, False, "Allow the pool_restart control command.").works(),
    _s("worker_pool_putlocks", BOOL, True, "Block when the pool is full instead of queueing locally.").ignored("the worker never queues more tasks than its pool and prefetch allow"),
    _s("worker_autoscaler", STR, "caraway.worker.autoscale:Autoscaler", "Autoscaler class.").works(),
    _s("worker_consumer", STR, "caraway.worker.consumer:Consumer", "Consumer class of the worker.").refused("the worker's consumer cannot be replaced; hook in with signals (worker_init, task_prerun, …)"),
    _s("worker_timer", OPT_STR, None, "ETA scheduler class; None: chosen by the pool.").refused("the worker's ETA scheduler cannot be replaced; hook in with signals (worker_init, task_prerun, …)"),
    _s("worker_agent", OPT_STR, None, "Agent class started with the worker.").refused("worker agents are not supported; start your agent from a worker_init signal handler"),
    _s("worker_logfile", OPT_STR, None, "Log file of the worker (default stderr).").works("tests/cli/test_cli_worker_production.py::test_worker_logfile_and_pidfile_settings_are_the_defaults_of_the_options"),
    _s("worker_pidfile", OPT_STR, None, "PID file of the worker.").works("tests/cli/test_cli_worker_production.py::test_worker_logfile_and_pidfile_settings_are_the_defaults_of_the_options"),
    _s("worker_health_address", STR, "", "caraway: address of the --health-port probes; '': every interface.").works("tests/worker/test_health_probes.py::test_the_probes_bind_the_address_given_and_say_nothing_more"),
    _s("worker_prefork_children_fetch", BOOL, False, "caraway: on Redis, prefork children fetch, run and ack for themselves (faster; consumer signals then run in the children).").works("tests/worker/test_worker_prefork.py::test_children_run_sync_and_async_tasks"),
    _s("worker_uid", ID, None, "User the worker switches to when detached.").works(),
    _s("worker_gid", ID, None, "Group the worker switches to when detached.").works("tests/cli/test_cli_celery_flags.py::test_the_worker_gid_setting_is_the_default_of_gid"),
    _s("worker_umask", ID, None, "umask of the worker when detached.").refused("pass --umask to 'caraway worker --detach'"),
    _s("worker_executable", OPT_STR, None, "Python executable of the detached worker.").ignored("a detached worker runs the same Python as 'caraway worker'"),
    # Beat
    _s("beat_schedule", DICT, {}, "Periodic tasks: name → {task, schedule, args, kwargs, options}.").works("tests/unit/test_beat_scheduler.py::test_options_reach_the_message"),
    _s("beat_scheduler", STR, "caraway.beat:PersistentScheduler", "Scheduler class of beat.").works(),
    _s("beat_schedule_filename", STR, "celerybeat-schedule", "File where beat keeps last run times.").works(),
    _s("beat_sync_every", INT, 0, "Sync the schedule file after this many sends; 0: by time.").works("tests/unit/test_beat_scheduler.py::test_beat_sync_every_batches_writes_of_the_state_file"),
    _s("beat_max_loop_interval", NUM, 0, "Longest sleep of beat, in seconds; 0: the scheduler's own (300).").works(),
    _s("beat_lease_timeout", NUM, 5.0, "caraway's own: seconds the sender lease of beat lasts unrenewed; a standby beat takes over after it.").works(),
    _s("beat_cron_starting_deadline", OPT_NUM, None, "Seconds a missed crontab may be run late; None: always.").works("tests/unit/test_schedules.py::test_cron_starting_deadline_drops_runs_missed_for_too_long"),
    _s("beat_logfile", OPT_STR, None, "Log file of beat (default stderr).").works(),
    _s("beat_pidfile", OPT_STR, None, "PID file of beat.").works(),
    _s("beat_uid", ID, None, "User beat switches to when detached.").refused("run beat as the user you want (systemd User=, su, docker --user); caraway does not switch users"),
    _s("beat_gid", ID, None, "Group beat switches to when detached.").refused("run beat with the group you want (systemd Group=, docker --user); caraway does not switch groups"),
    _s("beat_umask", ID, None, "umask of beat when detached.").refused("set the umask of the process that starts beat"),
    _s("beat_executable", OPT_STR, None, "Python executable of detached beat.").ignored("beat runs the same Python as 'caraway beat'"),
)
# fmt: on


def _index(rows: tuple[Setting, ...]) -> tuple[dict[str, Setting], dict[str, str]]:
    by_name: dict[str, Setting] = {}
    old_to_new: dict[str, str] = {}
    for row in rows:
        if row.name in by_name:
            raise RuntimeError(f"setting {row.name!r} is listed twice")
        by_name[row.name] = row
        for old in row.old:
            if old_to_new.setdefault(old, row.name) != row.name:
                raise RuntimeError(f"old name {old!r} maps to two settings")
    return by_name, old_to_new


_BY_NAME, _OLD_TO_NEW = _index(_TABLE)
#: Every setting by its (lowercase) name, in the order of the reference.
SETTINGS: Mapping[str, Setting] = MappingProxyType(_BY_NAME)
#: Celery 3 uppercase name → new name (``"CELERY_ACKS_LATE"`` → ``"task_acks_late"``).
OLD_NAMES: Mapping[str, str] = MappingProxyType(_OLD_TO_NEW)


def suggest(name: str, cutoff: float = 0.6) -> str | None:
    """The valid setting name closest to ``name`` (compared in lowercase), or None."""
    close = difflib.get_close_matches(name.lower(), list(SETTINGS), n=1, cutoff=cutoff)
    return close[0] if close else None


def coerce(setting: Setting, value: Any) -> Any:
    """``value`` checked against ``setting.types``; strings from files or the environment
    are converted for bool (true/false, 1/0, yes/no, on/off), int, float, None, lists
    (comma-separated) and dicts (JSON). Raises ImproperlyConfigured naming what was expected.
    """
    types = setting.types
    if not types or _is_instance(value, types):
        return value
    if isinstance(value, str):
        converted = _from_string(types, value)
        if converted is not _NO_MATCH:
            return converted
    shown = mask_url(repr(value)) if isinstance(value, str) else repr(value)
    hint = " (write true/false, 1/0, yes/no or on/off)" if bool in types else ""
    raise ImproperlyConfigured(
        f"Setting {setting.name!r} expects {setting.type_names}; "
        f"got {type(value).__name__} {shown}{hint}"
    )


def _is_instance(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int to Python, but worker_concurrency=True is a mistake, not 1.
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


_NO_MATCH: Any = object()


def _from_string(types: tuple[type, ...], text: str) -> Any:
    word = text.strip().lower()
    if NoneType in types and word in _NULL:
        return None
    if bool in types and word in _TRUE | _FALSE:
        return word in _TRUE
    for number in (int, float):
        if number in types:
            try:
                return number(text.strip())
            except ValueError:
                pass
    if Mapping in types and word.startswith("{"):
        try:
            loaded = json.loads(text)
        except ValueError:
            return _NO_MATCH
        return loaded if isinstance(loaded, dict) else _NO_MATCH
    for sequence in (list, tuple):
        if sequence in types:
            return sequence(part.strip() for part in text.split(",") if part.strip())
    return _NO_MATCH
