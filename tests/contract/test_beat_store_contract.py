"""The beat store contract (``caraway.engines.base.beat_store``) on every engine: one lease
holder, refused writes for anyone else, takeover after release or expiry, state that outlives
the store instance, and stored definitions with a version that moves.

Several stores on one engine stand for several beat processes; ``memory`` is one shared
instance (its storage is the instance), the others open a new store on the same storage.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import factories_django
import pytest
import redis
import sqlalchemy as sa
from redis_cluster import shared_cluster
from services import require

from caraway import Celery
from caraway.beat.stores import store_for_app
from caraway.beat.stores.file import FileStore
from caraway.calling import collecting
from caraway.engines.base.beat_store import BeatStore, EntryState
from caraway.engines.base.broker import Outgoing
from caraway.engines.memory.beat_store import MemoryStore
from caraway.engines.redis.beat_store import RedisStore
from caraway.engines.redis.cluster.beat_store import RedisClusterStore
from caraway.engines.registry import BACKENDS
from caraway.engines.sql.backend import sqlalchemy_url
from caraway.engines.sql.beat_store import SQLStore
from caraway.engines.sqlite.beat_store import SQLiteStore
from caraway.utils.imports import symbol_by_name

ENGINES = [
    "memory", "file", "sqlite", "redis", "redis-cluster", "postgresql", "mariadb",
    "sqlalchemy-sqlite",
]  # fmt: skip
if factories_django.set_up():  # only in the process test_django_contract.py starts
    ENGINES.append("django")
SQL_SERVERS = {
    "postgresql": "db+postgresql://postgres@127.0.0.1:5432/test",
    "mariadb": "db+mysql://root@127.0.0.1:3306/test",
}
#: ``make()``: a new store on the engine's storage under test, as another beat would open it.
StoreFactory = Callable[[], BeatStore]


@pytest.fixture(params=ENGINES)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    with ExitStack() as stack:
        make = _factory(request.param, tmp_path, stack)

        def opened() -> BeatStore:
            store = make()
            stack.callback(store.close)
            return store

        yield opened


@pytest.fixture
def pair(make_store: StoreFactory) -> tuple[BeatStore, BeatStore]:
    return make_store(), make_store()


def _factory(kind: str, tmp_path: Path, stack: ExitStack) -> StoreFactory:
    if kind == "django":
        return factories_django.beat_store_factory(stack)
    if kind == "memory":
        shared = MemoryStore()
        return lambda: shared
    if kind == "file":
        return lambda: FileStore(tmp_path / "state")
    if kind == "sqlite":
        return lambda: _from_app(stack, SQLiteStore, broker=f"sqlite:///{tmp_path}/b.sqlite3")
    if kind == "redis":
        host, port = require("redis")
        prefix = f"bstore-{uuid.uuid4().hex[:10]}:"
        url = f"redis://{host}:{port}/0"
        stack.callback(_delete_prefixed, host, port, prefix)
        options = {"global_keyprefix": prefix}
        return lambda: _from_app(
            stack, RedisStore, broker=url, backend=url, result_backend_transport_options=options
        )
    if kind == "redis-cluster":
        cluster = shared_cluster()
        prefix = f"bstore-{uuid.uuid4().hex[:10]}:"
        stack.callback(cluster.delete_prefixed, prefix)
        options = {"global_keyprefix": prefix}
        return lambda: _from_app(
            stack, RedisClusterStore, broker=cluster.url, backend=cluster.url,
            result_backend_transport_options=options,
        )  # fmt: skip
    if kind == "sqlalchemy-sqlite":
        url = f"db+sqlite:///{tmp_path}/beat.sqlite3"
    else:
        require(kind)
        url = SQL_SERVERS[kind]
    prefix = f"beat_{uuid.uuid4().hex[:10]}"
    stack.callback(_drop_tables, url, prefix)

    def make_sql() -> BeatStore:
        picked = _from_app(stack, SQLStore, broker="memory://", backend=url)
        assert isinstance(picked, SQLStore)
        return SQLStore(picked.backend, table_prefix=prefix)

    return make_sql


#: The store classes the suite opens: every engine whose backend keeps beat schedules
#: (``beat_schedules``) must have its store here.
SUITE_STORES = (MemoryStore, FileStore, SQLiteStore, RedisStore, RedisClusterStore, SQLStore)


#: Engines whose suite runs in a process of its own (Django settings are per process), so
#: their classes are not even imported here: test_django_contract.py runs this suite on them.
OWN_PROCESS = ("caraway.contrib.django.",)


def test_every_engine_that_keeps_schedules_is_in_the_suite() -> None:
    keeping = {
        _engine_package(cls)
        for path, _extra in BACKENDS.values()
        if not path.startswith(OWN_PROCESS)
        and (cls := symbol_by_name(path)).capabilities.beat_schedules
    }

    assert keeping
    assert keeping <= {_engine_package(store) for store in SUITE_STORES}


def _engine_package(cls: type) -> str:
    """The package a class is in: ``caraway.engines.redis.cluster`` apart from its parent."""
    return cls.__module__.rpartition(".")[0]


def _from_app(stack: ExitStack, expected: type[BeatStore], **conf: object) -> BeatStore:
    """The store the database scheduler picks for an app with this configuration."""
    app = Celery(f"beat-{uuid.uuid4().hex[:6]}", set_as_current=False, **conf)
    stack.callback(app.close)
    store = store_for_app(app)
    assert isinstance(store, expected)
    return store


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
    pair: tuple[BeatStore, BeatStore],
) -> None:
    a, b = pair

    assert a.acquire("beat-a", 30)
    assert not b.acquire("beat-b", 30)
    assert a.acquire("beat-a", 30)  # renewal
    assert a.save_states("beat-a", {"t": EntryState(100.0, 1)})
    assert not b.save_states("beat-b", {"t": EntryState(999.0, 9)})
    assert b.states()["t"] == EntryState(100.0, 1)


def test_release_hands_the_lease_over(pair: tuple[BeatStore, BeatStore]) -> None:
    a, b = pair
    assert a.acquire("beat-a", 30)

    a.release("beat-a")

    assert b.acquire("beat-b", 30)
    assert not a.save_states("beat-a", {"t": EntryState(1.0, 1)})
    assert b.save_states("beat-b", {"t": EntryState(2.0, 2)})
    assert a.states()["t"] == EntryState(2.0, 2)


def test_an_unrenewed_lease_expires(pair: tuple[BeatStore, BeatStore]) -> None:
    a, b = pair
    if a.holds_while_alive:
        pytest.skip("holds_while_alive: the lease is a lock held as long as its holder lives")
    a.states(), b.states()  # connected first: a cluster client's discovery can outlast the lease
    assert a.acquire("beat-a", 0.5)
    assert not b.acquire("beat-b", 0.5)

    time.sleep(0.7)

    assert b.acquire("beat-b", 30)
    assert not a.save_states("beat-a", {"t": EntryState(1.0, 1)})
    assert not a.acquire("beat-a", 30)


def test_definitions_are_shared_and_versioned(pair: tuple[BeatStore, BeatStore]) -> None:
    a, b = pair
    if not a.stores_definitions:
        with pytest.raises(NotImplementedError):
            a.put_definition("job", {"task": "proj.job"})
        assert b.definitions() == {}
        return
    start = b.version()

    a.put_definition("job", {"task": "proj.job", "schedule": {"every": 5.0}})

    assert b.definitions() == {"job": {"task": "proj.job", "schedule": {"every": 5.0}}}
    assert b.version() != start
    moved = b.version()
    assert b.delete_definition("job")
    assert not b.delete_definition("job")
    assert a.definitions() == {}
    assert a.version() != moved


def test_still_held_follows_the_lease(pair: tuple[BeatStore, BeatStore]) -> None:
    a, b = pair
    assert a.acquire("beat-a", 30)
    assert a.still_held("beat-a")
    assert not b.still_held("beat-b")

    a.release("beat-a")

    assert not a.still_held("beat-a")


def test_a_release_by_a_non_holder_changes_nothing(pair: tuple[BeatStore, BeatStore]) -> None:
    a, b = pair
    assert a.acquire("beat-a", 30)

    b.release("beat-b")

    assert a.still_held("beat-a")
    assert not b.acquire("beat-b", 30)
    assert a.save_states("beat-a", {"t": EntryState(1.0, 1)})


def test_states_merge_and_a_removed_entry_is_forgotten(
    pair: tuple[BeatStore, BeatStore],
) -> None:
    a, b = pair
    assert a.acquire("beat-a", 30)
    assert a.save_states("beat-a", {"one": EntryState(1.0, 1), "two": EntryState(2.0, 2)})
    assert a.save_states("beat-a", {"two": EntryState(3.0, 3), "three": EntryState(4.0, 1)})

    a.forget_state("one")

    assert b.states() == {"two": EntryState(3.0, 3), "three": EntryState(4.0, 1)}


def test_what_was_recorded_outlives_the_store(make_store: StoreFactory) -> None:
    """A beat that restarts (a new store on the same storage) resumes from its last record."""
    first = make_store()
    assert first.acquire("beat-1", 30)
    assert first.save_states("beat-1", {"t": EntryState(1700000000.5, 7)})
    if first.stores_definitions:
        first.put_definition("job", {"task": "proj.job"})
    first.release("beat-1")
    first.close()

    second = make_store()

    assert second.acquire("beat-2", 30)
    assert second.states() == {"t": EntryState(1700000000.5, 7)}
    if second.stores_definitions:
        assert second.definitions() == {"job": {"task": "proj.job"}}


def test_racing_beats_elect_exactly_one_and_only_its_writes_land(
    make_store: StoreFactory,
) -> None:
    stores = [make_store() for _ in range(4)]
    start = threading.Barrier(len(stores))
    outcome: dict[int, tuple[bool, bool]] = {}

    def beat(number: int, store: BeatStore) -> None:
        owner = f"beat-{number}"
        start.wait(timeout=10)
        won = store.acquire(owner, 30)
        outcome[number] = (won, store.save_states(owner, {"t": EntryState(float(number), 1)}))

    threads = [threading.Thread(target=beat, args=item) for item in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    winners = [number for number, (won, _) in outcome.items() if won]
    assert len(outcome) == len(stores)
    assert len(winners) == 1
    assert all(wrote == won for won, wrote in outcome.values())
    assert stores[0].states() == {"t": EntryState(float(winners[0]), 1)}


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


@pytest.mark.parametrize("engine", ["redis", "redis-cluster"])
def test_a_redis_beat_pushes_nothing_without_the_lease(engine: str) -> None:
    """On a cluster a run's message goes to its queue's slot, the record to the store's: two
    steps, still only for the holder."""
    prefix = f"bstore-{uuid.uuid4().hex[:10]}:"
    if engine == "redis":
        host, port = require("redis")
        url = f"redis://{host}:{port}/0"
        cleanup: Callable[[], None] = partial(_delete_prefixed, host, port, prefix)
    else:
        cluster = shared_cluster()
        url = cluster.url
        cleanup = partial(cluster.delete_prefixed, prefix)
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
        cleanup()


def test_only_the_holder_sends_through_any_broker(
    pair: tuple[BeatStore, BeatStore],
) -> None:
    a, b = pair
    app = Celery("m", broker=f"memory://{uuid.uuid4().hex}", set_as_current=False)
    assert a.acquire("beat-a", 30)

    refused = b.send("beat-b", "t", EntryState(1.0, 1), _outgoing(app), app.broker)
    sent = a.send("beat-a", "t", EntryState(2.0, 1), _outgoing(app), app.broker)

    assert (refused, sent) == (False, True)
    assert app.broker.size("celery") == 1
    assert b.states()["t"] == EntryState(2.0, 1)
    app.close()
