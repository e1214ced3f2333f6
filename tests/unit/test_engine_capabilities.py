"""Engines declare what they can do (``capabilities``) and make their own helpers, so a
user's subclass of an engine keeps every ability of its parent."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from caraway import Celery
from caraway.beat.stores import store_for_app
from caraway.canvas.chords import join_mode
from caraway.engines.base.beat_store import BeatStore
from caraway.engines.base.broker import Broker, BrokerCapabilities
from caraway.engines.base.fanout import Binding, Exchange, Fanout
from caraway.engines.memory.backend import MemoryBackend
from caraway.engines.memory.beat_store import MemoryStore
from caraway.engines.memory.broker import MemoryBroker
from caraway.engines.registry import (
    backend_capabilities,
    create_backend,
    default_backend_url,
    embedded_url,
)
from caraway.engines.sqlite.broker import SQLiteBroker
from caraway.exceptions import ImproperlyConfigured
from caraway.protocol import Message


class MySQLiteBroker(SQLiteBroker):
    """A user's own broker, living in a module of theirs."""


def test_a_users_subclass_of_an_engine_broadcasts(tmp_path: Path) -> None:
    broker = MySQLiteBroker(f"sqlite:///{tmp_path / 'b.sqlite3'}")
    fanout = broker.fanout()
    exchange = Exchange("my.exchange", "fanout")
    subscription = fanout.subscribe(exchange, Binding("my.queue"))
    try:
        fanout.publish(exchange, "", Message(headers={}, properties={}, body=b'"hello"'))
        assert [m.body for m in subscription.get(2.0)] == [b'"hello"']
    finally:
        subscription.close()
        fanout.close()
        broker.close()


def test_a_broker_that_declares_no_broadcast_says_so() -> None:
    class Silent(MemoryBroker):
        capabilities = BrokerCapabilities(native_delay=True)

        def fanout(self) -> Fanout:  # the contract's own answer, not the memory engine's
            return Broker.fanout(self)

    with pytest.raises(ImproperlyConfigured, match="cannot broadcast"):
        Silent("memory://").fanout()


def test_the_lease_length_declared_follows_the_visibility_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.sqlite3'}"
    default, short = SQLiteBroker(url), SQLiteBroker(url, {"visibility_timeout": 2.5})
    try:
        assert default.capabilities.leases
        assert default.capabilities.reclaims_orphans
        assert default.capabilities.lease_seconds == 60.0
        assert short.capabilities.lease_seconds == 2.5
        assert SQLiteBroker.capabilities.lease_seconds == 60.0, "the class record is untouched"
    finally:
        default.close()
        short.close()


def test_a_broker_without_orphans_reclaims_none() -> None:
    broker = MemoryBroker("memory://")
    assert not broker.capabilities.reclaims_orphans
    assert broker.reclaim_orphans() == 0


class ScheduledMemoryBackend(MemoryBackend):
    """A user's backend that keeps beat schedules (in memory) and says so."""

    capabilities = replace(MemoryBackend.capabilities, beat_schedules=True)

    def beat_store(self) -> BeatStore:
        return MemoryStore()


def test_the_database_scheduler_asks_the_backend_for_its_store() -> None:
    app = Celery("caps-beat", broker="memory://", backend="cache+memory://", set_as_current=False)
    app._backend = ScheduledMemoryBackend(app, "cache+memory://")
    assert isinstance(store_for_app(app), MemoryStore)


def test_a_backend_that_cannot_hold_schedules_says_what_can() -> None:
    app = Celery("caps-nobeat", broker="memory://", backend="cache+memory://", set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match=r"cannot hold them\. Set result_backend"):
        store_for_app(app)


def test_the_disabled_backend_refuses_chords_by_its_capabilities() -> None:
    app = Celery("caps-chord", broker="memory://", set_as_current=False)
    backend = create_backend(app, "disabled://")
    assert not backend.capabilities.stores_results
    with pytest.raises(ImproperlyConfigured, match="chords need a result backend"):
        join_mode(backend)


def test_a_backend_that_needs_a_reply_queue_is_known_before_it_is_made() -> None:
    assert backend_capabilities("rpc://").needs_reply_queue
    assert not backend_capabilities("rpc://").readable_by_workers
    assert not backend_capabilities("redis://localhost/1").needs_reply_queue


@pytest.mark.parametrize(
    ("broker_url", "expected"),
    [
        (None, "sqlite://"),
        ("sqlite:///tmp/x.sqlite3", "sqlite:///tmp/x.sqlite3"),
        ("memory://", "disabled://"),
        ("redis://localhost/0", "disabled://"),
        ("nosuch://here", "disabled://"),
    ],
)
def test_with_no_result_backend_results_stay_where_the_broker_keeps_them(
    broker_url: str | None, expected: str
) -> None:
    assert default_backend_url(broker_url) == expected


def test_the_embedded_url_names_the_file(tmp_path: Path) -> None:
    broker = SQLiteBroker(embedded_url(tmp_path / "e.sqlite3"))
    try:
        assert broker.capabilities.keeps_results
        assert broker.describe() == embedded_url(tmp_path / "e.sqlite3")
    finally:
        broker.close()
