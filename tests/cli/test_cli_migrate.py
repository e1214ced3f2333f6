"""``caraway migrate``: waiting tasks move to another broker whole (headers, body, priority),
only the ones asked for, and leave the source only when ``--ack-messages`` says so."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cli_support import WAIT, Project
from services import require

import caraway
from caraway.contrib.testing.worker import start_worker
from caraway.protocol import parse_task_message

#: Redis database this module alone uses; emptied before and after.
REDIS_DB = 12


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    host, port = require("redis")
    client = redis.Redis(host=host, port=port, db=REDIS_DB)
    client.flushdb()
    try:
        yield f"redis://{host}:{port}/{REDIS_DB}"
    finally:
        client.flushdb()
        client.close()


def test_tasks_move_to_redis_and_run_there(project: Project, redis_url: str) -> None:
    client = project.client()
    adds = [client.send_task(f"{project.module}.add", (i, i), priority=i) for i in range(3)]
    slow = client.send_task(f"{project.module}.slow", (0,))

    moved = project.run("migrate", project.url, redis_url, "-T", f"{project.module}.add", "-a")

    assert moved.returncode == 0, moved.stderr
    assert "Migrated 3 message(s)" in moved.stdout
    assert "(removed from the source)" in moved.stdout
    assert client.broker.size("celery") == 1  # the slow task stays where it was
    [left] = client.broker.fetch(["celery"], 10, 0.1)
    assert left.message.task_id == slow.id
    target = caraway.Celery("migrated", broker=redis_url, backend=redis_url, set_as_current=False)
    [first] = target.broker.fetch(["celery"], 1, WAIT)  # highest priority first on Redis
    call = parse_task_message(first.message, frozenset({"application/json"}))
    assert (call.id, call.args, first.message.priority) == (adds[2].id, [2, 2], 2)
    target.broker.release([first.tag])

    @target.task(name=f"{project.module}.add")
    def add(x: int, y: int) -> int:
        return x + y

    with start_worker(target, pool="solo", perform_ping_check=False):
        assert [target.AsyncResult(r.id).get(timeout=WAIT) for r in adds] == [0, 2, 4]
    target.close()


def test_without_ack_the_source_keeps_every_message(project: Project, tmp_path_factory:
                                                    pytest.TempPathFactory) -> None:  # fmt: skip
    client = project.client()
    sent = [client.send_task(f"{project.module}.add", (i, 1)).id for i in range(4)]
    copy = f"sqlite:///{tmp_path_factory.mktemp('copy') / 'copy.sqlite3'}"

    moved = project.run("migrate", project.url, copy, "--limit", "3")

    assert moved.returncode == 0, moved.stderr
    assert "Migrated 3 message(s)" in moved.stdout
    assert "(still in the source)" in moved.stdout
    assert client.broker.size("celery") == 4
    target = caraway.Celery("copy", broker=copy, set_as_current=False)
    got = [d.message.task_id for d in target.broker.fetch(["celery"], 10, 0.5)]
    assert got == sent[:3]
    target.close()
    forever = project.run("migrate", project.url, copy, "--forever")
    assert forever.returncode == 2
    assert "--forever needs --ack-messages" in forever.stderr
