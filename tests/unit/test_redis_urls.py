"""Redis URLs, connection options, key names and the envelope, without a server."""

from __future__ import annotations

import base64
import json
import sys
import uuid
from typing import Any

import pytest

from caraway import Caraway
from caraway.engines.redis.broker import RedisBroker
from caraway.engines.redis.client import connect, parse_url
from caraway.engines.registry import create_backend, create_broker
from caraway.exceptions import ImproperlyConfigured, MissingExtra, OperationalError
from caraway.protocol import build_task_message

SEP = "\x06\x16"


def test_a_plain_url_defaults_to_localhost_port_6379_db_0() -> None:
    target = parse_url("redis://")
    assert (target.host, target.port, target.db, target.password) == ("localhost", 6379, 0, None)


def test_password_only_and_user_password_urls() -> None:
    target = parse_url("redis://:s3cret@cache.local:6380/2")
    assert (target.host, target.port, target.db) == ("cache.local", 6380, 2)
    assert (target.username, target.password) == (None, "s3cret")

    target = parse_url("redis://alice:p%40ss@cache.local/5")
    assert (target.username, target.password, target.db) == ("alice", "p@ss", 5)


def test_passwords_never_show_in_reprs_or_descriptions() -> None:
    url = "redis://alice:s3cret@cache.local/5"
    assert "s3cret" not in repr(parse_url(url))
    assert RedisBroker(url).describe() == "redis://alice:**@cache.local/5"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("CERT_NONE", "none"),
        ("CERT_OPTIONAL", "optional"),
        ("CERT_REQUIRED", "required"),
        ("none", "none"),
        ("optional", "optional"),
        ("required", "required"),
    ],
)
def test_rediss_reads_celerys_cert_reqs(value: str, expected: str) -> None:
    target = parse_url(f"rediss://:pw@secure.local:6380/0?ssl_cert_reqs={value}")
    assert target.ssl
    assert target.options["ssl_cert_reqs"] == expected
    client = connect(target)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == expected
    client.close()


def test_an_unknown_cert_reqs_value_names_the_choices() -> None:
    with pytest.raises(ImproperlyConfigured, match="CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED"):
        parse_url("rediss://secure.local?ssl_cert_reqs=maybe")


def test_unix_socket_urls_take_the_db_from_virtual_host() -> None:
    target = parse_url("unix:///var/run/redis/redis.sock?virtual_host=3")
    assert (target.unix_path, target.db) == ("/var/run/redis/redis.sock", 3)
    assert parse_url("redis+socket:///tmp/r.sock").unix_path == "/tmp/r.sock"
    client = connect(target)
    assert client.connection_pool.connection_kwargs["path"] == "/var/run/redis/redis.sock"
    client.close()


def test_sentinel_urls_list_every_sentinel_and_need_a_master_name() -> None:
    url = "sentinel://:pw@s1.local:26379/1;sentinel://s2.local:26380;sentinel://s3.local"
    target = parse_url(url)
    assert target.sentinels == (("s1.local", 26379), ("s2.local", 26380), ("s3.local", 26379))
    assert (target.db, target.password) == (1, "pw")

    with pytest.raises(ImproperlyConfigured, match="master_name"):
        connect(target)
    client = connect(target, {"master_name": "mymaster", "sentinel_kwargs": {"password": "x"}})
    assert client.connection_pool.service_name == "mymaster"  # type: ignore[attr-defined]
    client.close()


def test_query_and_transport_options_reach_the_connection() -> None:
    target = parse_url("redis://h/0?socket_timeout=2.5&health_check_interval=7")
    client = connect(target, {"socket_connect_timeout": 3, "client_name": "w1"})
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 2.5
    assert kwargs["health_check_interval"] == 7
    assert (kwargs["socket_connect_timeout"], kwargs["client_name"]) == (3, "w1")
    client.close()


def test_every_redis_scheme_picks_the_redis_engines() -> None:
    app = Caraway("urls", broker="memory://urls", set_as_current=False)
    options = {"master_name": "mymaster"}  # sentinel:// needs it; the others ignore it
    for url in ("redis://h", "rediss://h", "sentinel://h", "unix:///tmp/r.sock"):
        assert type(create_broker(url, options)).__name__ == "RedisBroker"
        assert type(create_backend(app, url, options)).__name__ == "RedisBackend"
    app.close()


def test_a_missing_redis_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "redis" or n.startswith("redis.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("caraway.engines.redis.broker", "caraway.engines.redis.client"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingExtra, match=r'pip install "caraway\[redis\]"'):
        create_broker("redis://localhost")


def test_connection_errors_are_ours_with_the_password_masked() -> None:
    broker = RedisBroker("redis://:s3cret@127.0.0.1:1/0", {"socket_connect_timeout": 0.5})
    with pytest.raises(OperationalError) as info:
        broker.size("celery")
    assert "s3cret" not in str(info.value)
    assert "redis://:**@127.0.0.1:1/0" in str(info.value)
    assert info.value.__cause__ is not None
    broker.close()


# --- key names and the envelope (docs/celery-wire.md §3.2-3.4) ------------------------------------


@pytest.mark.parametrize(
    ("priority", "name"),
    [(None, "celery"), (0, "celery"), (2, "celery"), (3, f"celery{SEP}3"), (5, f"celery{SEP}3"),
     (6, f"celery{SEP}6"), (8, f"celery{SEP}6"), (9, f"celery{SEP}9"), (42, f"celery{SEP}9")],
)  # fmt: skip
def test_priorities_map_to_kombus_lists(priority: int | None, name: str) -> None:
    assert RedisBroker("redis://").list_name("celery", priority) == name


def test_custom_priority_steps_and_prefix_name_every_list() -> None:
    broker = RedisBroker("redis://", {"priority_steps": [0, 5], "global_keyprefix": "p:"})
    assert broker.list_name("q", 7) == f"q{SEP}5"
    assert broker._lists("q") == ["p:q", f"p:q{SEP}5"]
    assert (broker.unacked, broker.unacked_index) == ("p:unacked", "p:unacked_index")


def test_the_envelope_has_kombus_keys_in_kombus_order() -> None:
    task_id = str(uuid.uuid4())
    message = build_task_message("proj.add", task_id, (2, 3), {}, reply_to="oid", priority=5)
    message.properties["delivery_info"] = {"exchange": "", "routing_key": "celery"}

    envelope: dict[str, Any] = RedisBroker("redis://").envelope(message, "celery", 5)

    assert list(envelope) == ["body", "content-encoding", "content-type", "headers", "properties"]
    assert list(envelope["properties"]) == [
        "correlation_id", "reply_to", "delivery_mode", "delivery_info", "priority",
        "body_encoding", "delivery_tag",
    ]  # fmt: skip
    assert envelope["properties"]["priority"] == 5
    assert envelope["properties"]["delivery_info"] == {"exchange": "", "routing_key": "celery"}
    assert uuid.UUID(envelope["properties"]["delivery_tag"]).version == 4
    assert json.loads(base64.b64decode(envelope["body"]))[0] == [2, 3]
    assert envelope["headers"] is message.headers
