"""The beat store contract on every engine: one lease holder, refused writes for anyone else,
takeover after release or expiry, and stored definitions with a version that moves.

Two stores on one engine stand for two beat processes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from services import require

from caraway import Celery
from caraway.beat.stores import store_for_app
from caraway.beat.stores.file import FileStore
from caraway.calling import collecting
from caraway.engines.base.beat_store import BeatStore, EntryState
from caraway.engines.base.broker import Outgoing
from caraway.engines.memory.beat_store import MemoryStore
from caraway.engines.redis.beat_store import RedisStore
from caraway.engines.sql.backend import sqlalchemy_url
from caraway.engines.sql.beat_store import SQLStore
from caraway.engines.sqlite.beat_store import SQLiteStore

ENGINES = ["memory", "file", "sqlite", "redis", "postgresql", "mariadb"]
#: Engines whose lease ends only by release or death (a lock), not by expiry.
LOCKS = {"file", "sqlite"}
SQL_SERVERS = {
    "postgresql": "db+postgresql://postgres@127.0.0.1:5432/test",
    "mariadb": "db+mysql://root@127.0.0.1:3306/test",
}


@pytest.fixture(params=ENGINES)
def pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, BeatStore, BeatStore]]:
    kind: str = request.param
    with ExitStack() as stack:
        yield kind, *_make(kind, tmp_path, stack)


def _make(kind: str, tmp_path: Path, stack: ExitStack) -> tuple[BeatStore, BeatStore]:
    if kind == "memory":
        shared = MemoryStore()
        return shared, shared
    if kind == "file":
        return FileStore(tmp_path / "state"), FileStore(tmp_path / "state")
    if kind == "sqlite":
        apps = [Celery(f"s{i}", broker=f"sqlite:///{tmp_path}/b.sqlite3", set_as_current=False)
                for i in range(2)]  # fmt: skip
        stores = [store_for_app(app) for app in apps]
        assert all(isinstance(store, SQLiteStore) for store in stores)
        return stores[0], stores[1]
    if kind == "redis":
        host, port = require("redis")
        prefix = f"bstore-{uuid.uuid4().hex[:10]}:"
        url = f"redis://{host}:{port}/0"
        apps = [Celery(f"r{i}", broker=url, backend=url, set_as_current=False,
                       result_backend_transport_options={"global_keyprefix": prefix})
                for i in range(2)]  # fmt: skip
        stack.callback(_delete_prefixed, host, port, prefix)
        for app in apps:
            stack.callback(app.close)
        stores = [store_for_app(app) for app in apps]
        assert all(isinstance(store, RedisStore) for store in stores)
        return stores[0], stores[1]
    require(kind)
    url = SQL_SERVERS[kind]
    prefix = f"beat_{uuid.uuid4().hex[:10]}"
    apps = [Celery(f"q{i}", broker="memory://", backend=url, set_as_current=False)
            for i in range(2)]  # fmt: skip
    assert all(isinstance(store_for_app(app), SQLStore) for app in apps)
    stores = [SQLStore(app.backend, table_prefix=prefix) for app in apps]  # type: ignore[arg-type]
    stack.callback(_drop_tables, url, prefix)
    for app in apps:
        stack.callback(app.close)
    return stores[0], stores[1]


def _delete_prefixed(host: str, port: int, prefix: str) -> None:
    client = redis.Redis(host=host, port=port, db=0)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _drop_tables(url: str, prefix: str) -> None:
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        for suffix in ("lease", "state", "entries", "version"):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {prefix}_{suffix}"))
    engine.dispose()


def test_one_holder_and_refused_writes_for_the_other(
    pair: tuple[str, BeatStore, BeatStore],
) -> None:
    _, a, b = pair

    assert a.acquire("beat-a", 30)
    assert not b.acquire("beat-b", 30)
    assert a.acquire("beat-a", 30)  # renewal
    assert a.save_states("beat-a", {"t": EntryState(100.0, 1)})
    assert not b.save_states("beat-b", {"t": EntryState(999.0, 9)})
    assert b.states()["t"] == EntryState(100.0, 1)


def test_release_hands_the_lease_over(pair: tuple[str, BeatStore, BeatStore]) -> None:
    _, a, b = pair
    assert a.acquire("beat-a", 30)

    a.release("beat-a")

    assert b.acquire("beat-b", 30)
    assert not a.save_states("beat-a", {"t": EntryState(1.0, 1)})
    assert b.save_states("beat-b", {"t": EntryState(2.0, 2)})
    assert a.states()["t"] == EntryState(2.0, 2)


def test_an_unrenewed_lease_expires(pair: tuple[str, BeatStore, BeatStore]) -> None:
    kind, a, b = pair
    if kind in LOCKS:
        pytest.skip("a lock lasts as long as its holder lives")
    assert a.acquire("beat-a", 0.3)
    assert not b.acquire("beat-b", 0.3)

    time.sleep(0.45)

    assert b.acquire("beat-b", 30)
    assert not a.save_states("beat-a", {"t": EntryState(1.0, 1)})
    assert not a.acquire("beat-a", 30)


def test_definitions_are_shared_and_versioned(pair: tuple[str, BeatStore, BeatStore]) -> None:
    _, a, b = pair
    if isinstance(a, FileStore):
        pytest.skip("the file store keeps no definitions (PersistentScheduler)")
    start = b.version()

    a.put_definition("job", {"task": "proj.job", "schedule": {"every": 5.0}})

    assert b.definitions() == {"job": {"task": "proj.job", "schedule": {"every": 5.0}}}
    assert b.version() != start
    moved = b.version()
    assert b.delete_definition("job")
    assert not b.delete_definition("job")
    assert a.definitions() == {}
    assert a.version() != moved


# --- a run's message and its record go together ----------------------------------------------


def _outgoing(app: Celery) -> list[Outgoing]:
    with collecting() as collected:
        app.send_task("proj.t", (1,))
    return [outgoing for outgoing, _ in collected]


def test_sqlite_writes_the_message_and_the_record_in_one_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Celery("s", broker=f"sqlite:///{tmp_path}/b.sqlite3", set_as_current=False)
    store = store_for_app(app)
    assert store.acquire("me", 30)
    assert store.send("me", "t", EntryState(1.0, 1), _outgoing(app), app.broker)
    assert app.broker.size("celery") == 1

    def crash(*args: object) -> bool:
        raise RuntimeError("killed between the message and the record")

    monkeypatch.setattr(store, "save_states", crash)
    with pytest.raises(RuntimeError):
        store.send("me", "t", EntryState(2.0, 2), _outgoing(app), app.broker)

    assert app.broker.size("celery") == 1  # the second message was rolled back with it
    assert store.states()["t"] == EntryState(1.0, 1)
    store.close()


def test_redis_pushes_nothing_for_a_beat_without_the_lease() -> None:
    host, port = require("redis")
    prefix = f"bstore-{uuid.uuid4().hex[:10]}:"
    url = f"redis://{host}:{port}/0"
    options = {"global_keyprefix": prefix}
    app = Celery("r", broker=url, backend=url, broker_transport_options=options,
                 result_backend_transport_options=options, set_as_current=False)  # fmt: skip
    try:
        store = store_for_app(app)
        assert store.acquire("holder", 30)

        refused = store.send("intruder", "t", EntryState(1.0, 1), _outgoing(app), app.broker)
        sent = store.send("holder", "t", EntryState(2.0, 1), _outgoing(app), app.broker)

        assert (refused, sent) == (False, True)
        assert app.broker.size("celery") == 1
        assert store.states() == {"t": EntryState(2.0, 1)}
    finally:
        app.close()
        _delete_prefixed(host, port, prefix)


def test_only_the_holder_sends_through_any_broker(
    pair: tuple[str, BeatStore, BeatStore],
) -> None:
    _, a, b = pair
    app = Celery("m", broker=f"memory://{uuid.uuid4().hex}", set_as_current=False)
    assert a.acquire("beat-a", 30)

    refused = b.send("beat-b", "t", EntryState(1.0, 1), _outgoing(app), app.broker)
    sent = a.send("beat-a", "t", EntryState(2.0, 1), _outgoing(app), app.broker)

    assert (refused, sent) == (False, True)
    assert app.broker.size("celery") == 1
    assert b.states()["t"] == EntryState(2.0, 1)
    app.close()
