"""``apply_async(connection=...)``: the application's database connection goes to a broker
that can write in its transaction; any other broker refuses it rather than send at once."""

from __future__ import annotations

import uuid

import pytest

from caraway import Caraway
from caraway.engines.postgresql.broker import PostgreSQLBroker
from caraway.engines.postgresql.database import Names
from caraway.engines.registry import create_broker
from caraway.exceptions import ImproperlyConfigured


def _app() -> Caraway:
    return Caraway(
        "tx", broker=f"memory://tx-{uuid.uuid4().hex}", backend="cache+memory://",
        set_as_current=False,
    )  # fmt: skip


def test_a_broker_without_transactions_refuses_a_database_connection() -> None:
    app = _app()
    add = app.task(name="tx.add")(lambda x, y: x + y)

    with pytest.raises(ImproperlyConfigured, match="inside your database transaction"):
        add.apply_async((1, 2), connection=object())

    assert app.broker.size("celery") == 0
    app.close()


def test_the_apps_own_connection_handle_sends_as_usual() -> None:
    """Celery code passes ``connection=app.connection()``: that names the broker, no more."""
    app = _app()
    add = app.task(name="tx.add")(lambda x, y: x + y)

    with app.connection() as conn:
        add.apply_async((1, 2), connection=conn)

    assert app.broker.size("celery") == 1
    app.close()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "PostgreSQL"])
def test_both_spellings_make_the_postgresql_broker_without_connecting(scheme: str) -> None:
    broker = create_broker(f"{scheme}://nobody@127.0.0.1:1/none", {"schema": "mine"})

    assert isinstance(broker, PostgreSQLBroker)
    assert broker.capabilities.transactional
    assert broker.names.messages == '"mine"."caraway_messages"'
    broker.close()


def test_a_schema_must_be_a_plain_identifier() -> None:
    with pytest.raises(ImproperlyConfigured, match="plain identifier"):
        Names('x"; DROP TABLE y; --')
