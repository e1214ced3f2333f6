"""AMQP URLs as kombu reads them, the engines they pick, and errors that never show a password."""

from __future__ import annotations

import pytest

from caraway import Caraway
from caraway.engines.amqp.broker import AMQPBroker
from caraway.engines.amqp.client import connect, parse_url
from caraway.engines.registry import BACKENDS, BROKERS
from caraway.exceptions import ImproperlyConfigured, OperationalError


@pytest.mark.parametrize(
    ("url", "host", "port", "user", "password", "vhost"),
    [
        ("amqp://", "localhost", 5672, "guest", "guest", "/"),
        ("amqp://localhost//", "localhost", 5672, "guest", "guest", "/"),
        ("amqp://u:p@rabbit:5673/prod", "rabbit", 5673, "u", "p", "prod"),
        ("pyamqp://u@rabbit/", "rabbit", 5672, "u", "guest", "/"),
        ("amqp://u:p%40ss@h/%2Fvh", "h", 5672, "u", "p@ss", "/vh"),
        ("amqps://h/v", "h", 5671, "guest", "guest", "v"),
    ],
)
def test_urls_parse_like_kombu(
    url: str, host: str, port: int, user: str, password: str, vhost: str
) -> None:
    params = parse_url(url)
    assert (params.host, params.port, params.userid, params.password, params.virtual_host) == (
        host, port, user, password, vhost,
    )  # fmt: skip


def test_ssl_comes_from_the_scheme_or_broker_use_ssl() -> None:
    assert parse_url("amqps://h").ssl is True
    assert parse_url("amqp://h").ssl is False
    options = {"broker_use_ssl": {"ca_certs": "/ca.pem"}}
    assert parse_url("amqp://h", options).ssl == {"ca_certs": "/ca.pem"}


def test_heartbeat_and_timeout_come_from_the_settings_transport_options_win() -> None:
    conf = {"broker_heartbeat": 120.0, "broker_connection_timeout": 4.0}
    params = parse_url("amqp://h", conf)
    assert (params.heartbeat, params.connect_timeout) == (120.0, 4.0)
    assert parse_url("amqp://h", {**conf, "heartbeat": 10}).heartbeat == 10.0


def test_schemes_pick_the_amqp_engines() -> None:
    for scheme in ("amqp", "amqps", "pyamqp"):
        assert BROKERS[scheme] == ("caraway.engines.amqp.broker:AMQPBroker", "amqp")
    assert BACKENDS["rpc"] == ("caraway.engines.amqp.rpc_backend:RPCBackend", "amqp")
    app = Caraway("u", broker="pyamqp://u:secret@h//", set_as_current=False)
    assert isinstance(app.broker, AMQPBroker)
    assert "secret" not in app.broker.describe()


def test_a_bad_url_is_a_configuration_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="not an AMQP URL"):
        parse_url("redis://h")


def test_a_refused_connection_is_an_operational_error_with_the_password_masked() -> None:
    params = parse_url("amqp://u:hunter2@127.0.0.1:1//", {"broker_connection_timeout": 1})
    with pytest.raises(OperationalError) as caught:
        connect(params)
    assert "hunter2" not in str(caught.value)
    assert "amqp://u:**@127.0.0.1:1//" in str(caught.value)
    assert caught.value.__cause__ is not None


def test_queue_arguments_follow_celerys_settings() -> None:
    broker = AMQPBroker(
        "amqp://h",
        {
            "task_default_queue": "celery",
            "task_queue_max_priority": 10,
            "task_queues": ["celery", {"name": "q", "queue_arguments": {"x-queue-type": "quorum"}}],
            "task_create_missing_queue_type": "classic",
        },
    )
    assert broker.queue_arguments("celery") == {"x-max-priority": 10}
    assert broker.queue_arguments("q") == {"x-queue-type": "quorum"}  # no priority on quorum
    assert broker.queue_arguments("other") == {}  # created on demand: plain, as in Celery
    assert AMQPBroker("amqp://h").queue_arguments("celery") == {}


def test_the_rpc_backend_needs_an_amqp_broker() -> None:
    app = Caraway("u", broker="memory://x", backend="rpc://", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="amqp://"):
        app.backend  # noqa: B018


def test_rpc_cannot_count_and_says_which_backends_can() -> None:
    app = Caraway("u", broker="amqp://h//", backend="rpc://", set_as_current=False)
    with pytest.raises(NotImplementedError, match="redis://"):
        app.backend.incr("k")


def test_failover_urls_parse_into_alternates_from_a_string_or_a_list() -> None:
    params = parse_url("amqp://u:p@a:5672/v; amqp://u:p@b:5673/v")
    assert (params.host, [(a.host, a.port) for a in params.alternates]) == ("a", [("b", 5673)])
    app = Caraway("u", broker=["amqp://u:secret@a//", "amqp://u:secret@b//"], set_as_current=False)
    assert isinstance(app.broker, AMQPBroker)
    assert app.broker.describe() == "amqp://u:**@a//;amqp://u:**@b//"
    assert params.describe() == "amqp://u:**@a:5672/v (one of 2 failover URLs)"


def test_failover_lists_of_redis_urls_or_mixed_schemes_are_refused_with_the_fix() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"redis:// .*sentinel://h1:26379"):
        Caraway("u", broker="redis://a;redis://b", set_as_current=False).broker  # noqa: B018
    with pytest.raises(ImproperlyConfigured, match="share one scheme, got amqp, redis"):
        Caraway("u", broker=["amqp://a", "redis://b"], set_as_current=False).broker  # noqa: B018
    with pytest.raises(ImproperlyConfigured, match="round-robin, shuffle or a callable"):
        parse_url("amqp://a;amqp://b", {"broker_failover_strategy": "random"})


def test_every_failover_url_is_tried_and_the_error_names_them_all() -> None:
    params = parse_url(
        "amqp://u:hunter2@127.0.0.1:1//;amqp://u:hunter2@127.0.0.1:2//",
        {"broker_connection_timeout": 1},
    )
    with pytest.raises(OperationalError, match="no failover URL answered") as caught:
        connect(params)
    assert "127.0.0.1:1//" in str(caught.value)
    assert "127.0.0.1:2//" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_callable_strategy_orders_the_attempts() -> None:
    tried: list[int] = []

    def last_first(urls: list[object]) -> object:
        tried.append(len(urls))
        return iter(reversed(urls))

    params = parse_url(
        "amqp://127.0.0.1:1//;amqp://127.0.0.1:2//",
        {"broker_connection_timeout": 1, "broker_failover_strategy": last_first},
    )
    with pytest.raises(OperationalError, match=r"127.0.0.1:2//.*127.0.0.1:1//"):
        connect(params)
    assert tried == [2]
