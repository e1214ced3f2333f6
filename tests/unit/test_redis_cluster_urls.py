"""Redis Cluster URLs, key names and slot placement, without a server."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from caraway import Caraway
from caraway.engines.redis.cluster.backend import RedisClusterBackend
from caraway.engines.redis.cluster.broker import RedisClusterBroker
from caraway.engines.redis.cluster.client import parse_cluster_url
from caraway.engines.registry import create_broker
from caraway.exceptions import ImproperlyConfigured


def test_every_node_of_the_url_is_a_start_node() -> None:
    target = parse_cluster_url("redis+cluster://alice:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002/")
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert (target.host, target.port, target.db) == ("10.0.0.1", 7000, 0)
    assert (target.username, target.password, target.ssl) == ("alice", "p@ss", False)
    assert parse_cluster_url("rediss+cluster://:pw@h:7000?ssl_cert_reqs=none").ssl


def test_passwords_are_masked_and_a_database_other_than_0_is_refused() -> None:
    broker = create_broker("redis+cluster://:s3cret@h1:7000,h2:7001/0")
    assert isinstance(broker, RedisClusterBroker)
    assert "s3cret" not in broker.describe()
    assert "s3cret" not in repr(broker.target)
    with pytest.raises(ImproperlyConfigured, match="only database 0"):
        create_broker("redis+cluster://h1:7000/3")
    with pytest.raises(ImproperlyConfigured, match="names no node"):
        parse_cluster_url("redis+cluster:///")


def test_making_the_engines_connects_to_nothing() -> None:
    """Nothing listens on these ports: construction must not need the cluster."""
    broker = create_broker("redis+cluster://127.0.0.1:1,127.0.0.1:2/")
    app = Caraway("u", broker="memory://u", backend="rediss+cluster://127.0.0.1:1/",
                  set_as_current=False)  # fmt: skip
    try:
        assert isinstance(app.backend, RedisClusterBackend)
        assert broker.uses_tls() is False
        assert create_broker("rediss+cluster://127.0.0.1:1/").uses_tls() is True
    finally:
        broker.close()
        app.close()


def test_every_key_of_a_queue_shares_one_slot_and_queues_spread() -> None:
    broker = create_broker("redis+cluster://h:7000/", {"global_keyprefix": "app:"})
    keys = [
        *(broker.prefix + broker.list_name("emails", p) for p in (0, 3, 6, 9)),
        *(broker.queue_key("emails", n) for n in ("unacked", "unacked_index", "unacked_mutex")),
    ]
    assert keys[0] == "app:{emails}"
    assert {key_slot(k.encode()) for k in keys} == {key_slot(b"emails")}
    slots = {key_slot((broker.prefix + broker.list_name(f"q{n}")).encode()) for n in range(20)}
    assert len(slots) > 10


def test_a_chord_shares_its_group_slot_and_results_spread() -> None:
    app = Caraway("u", broker="memory://u2", backend="redis+cluster://h:7000/",
                  set_as_current=False)  # fmt: skip
    try:
        backend = app.backend
        assert isinstance(backend, RedisClusterBackend)
        group = [backend.chord_key("g1", s) for s in ("", ".j", ".t", ".s", ".d", ".c")]
        group.append(backend.key("celery-taskset-meta-g1"))
        assert len({key_slot(k.encode()) for k in group}) == 1
        results = {key_slot(backend.key(f"celery-task-meta-{n}").encode()) for n in range(20)}
        assert len(results) > 10
    finally:
        app.close()
