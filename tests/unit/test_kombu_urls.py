"""The kombu bridge without a server: which URLs reach it, what kombu is given, and that
making the broker connects nothing."""

from __future__ import annotations

import pytest

from caraway.engines.kombu.broker import KombuBroker, kombu_url
from caraway.engines.registry import create_broker
from caraway.exceptions import MissingExtra


@pytest.mark.parametrize(
    ("url", "given_to_kombu"),
    [
        ("kombu+memory://", "memory://"),
        ("kombu+sqs://key:secret@", "sqs://key:secret@"),
        ("KOMBU+filesystem://", "filesystem://"),
        ("sqs://key:secret@", "sqs://key:secret@"),
        ("filesystem://", "filesystem://"),
        ("azurestoragequeues://:key@account", "azurestoragequeues://:key@account"),
        ("sqla+postgresql://u@h/db", "sqla+postgresql://u@h/db"),
    ],
)
def test_kombu_and_celerys_transport_urls_reach_the_bridge(url: str, given_to_kombu: str) -> None:
    broker = create_broker(url, {"region": "eu-west-1", "polling_interval": 0.5})
    try:
        assert isinstance(broker, KombuBroker)
        assert kombu_url(url) == given_to_kombu
        assert broker.poll_cap == 0.5
    finally:
        broker.close()


def test_our_own_engines_keep_their_schemes() -> None:
    assert type(create_broker("memory://bridge-unit")).__name__ == "MemoryBroker"


def test_the_secret_is_masked_in_what_the_broker_says() -> None:
    broker = create_broker("sqs://AKIAEXAMPLE:s3cr3t@")
    try:
        assert "s3cr3t" not in broker.describe()
    finally:
        broker.close()


def test_a_transport_without_its_client_library_names_kombus_extra() -> None:
    broker = create_broker("kombu+zookeeper://127.0.0.1:1/")  # kazoo is not installed
    try:
        with pytest.raises(MissingExtra, match=r'pip install "kombu\[zookeeper\]"'):
            broker.connect()
    finally:
        broker.close()
