"""Engines declare what they can do (``capabilities``) and make their own helpers, so a
user's subclass of an engine keeps every ability of its parent."""

from __future__ import annotations

from pathlib import Path

import pytest

from caraway.engines.base.broker import Broker, BrokerCapabilities
from caraway.engines.base.fanout import Binding, Exchange, Fanout
from caraway.engines.memory.broker import MemoryBroker
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
