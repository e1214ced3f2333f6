"""Remote control and events on the embedded engines (SQLite, the default, and memory), with
workers in threads, and the ``caraway`` commands that talk to workers."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from worker_support import WAIT, make_app, wait_until

from caraway import Celery, signals, states
from caraway.cli.base import CLIState
from caraway.cli.main import cli
from caraway.events import EventReceiver
from caraway.queues import Exchange, Queue


@pytest.fixture(params=["sqlite", "memory"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Celery]:
    made = make_app(request.param, "remote", tmp_path / "b.sqlite3")
    yield made
    made.close()


def run(app: Celery, *args: str) -> Any:
    return CliRunner().invoke(cli, list(args), obj=CLIState(app))


def test_two_workers_answer_and_terminate_stops_a_running_task(
    app: Celery, start_worker: Callable[..., Any]
) -> None:
    release = threading.Event()

    @app.task(name="remote.wait")
    def wait() -> str:
        while not release.is_set():  # Python steps: the terminate exception lands between
            release.wait(0.01)
        return "done"

    start_worker(app, hostname="w1@embedded", concurrency=1)
    start_worker(app, hostname="w2@embedded", concurrency=1, queues=["other"])
    try:
        assert sorted(next(iter(r)) for r in app.control.ping(timeout=2, limit=2)) == [
            "w1@embedded",
            "w2@embedded",
        ]
        result = wait.delay()
        inspect = app.control.inspect(timeout=2, limit=2)
        wait_until(lambda: (inspect.active() or {}).get("w1@embedded"), what="the task to run")

        replies = app.control.revoke(result.id, terminate=True, reply=True, timeout=2, limit=2)

        assert {"w1@embedded": {"ok": f"terminate: {result.id}"}} in replies
        wait_until(lambda: result.state == states.REVOKED, what="the REVOKED state")
        wait_until(lambda: inspect.active() == {"w1@embedded": [], "w2@embedded": []},
                   what="no active task")  # fmt: skip
    finally:
        release.set()


def test_task_events_reach_a_receiver(app: Celery, start_worker: Callable[..., Any]) -> None:
    @app.task(name="remote.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="remote.fail")
    def fail() -> None:
        raise ValueError("kaboom")

    app.conf.worker_send_task_events = True
    start_worker(app, hostname="ev@embedded", concurrency=1)
    seen: list[dict[str, Any]] = []
    with EventReceiver(app) as receiver:
        result = add.delay(1, 2)
        failed = fail.delay()
        for event in receiver.itercapture(timeout=WAIT):
            seen.append(event)
            if event.get("uuid") == failed.id and event["type"] == "task-failed":
                break
    kinds = [event["type"] for event in seen if event.get("uuid") == result.id]
    assert kinds == ["task-received", "task-started", "task-succeeded"]
    [failure] = [event for event in seen if event["type"] == "task-failed"]
    assert failure["exception"] == "ValueError('kaboom')"
    assert "ValueError: kaboom" in failure["traceback"]
    assert any(event["type"] == "worker-heartbeat" for event in seen)  # asked by wakeup


def test_task_sent_events_come_from_the_producer(app: Celery) -> None:
    @app.task(name="remote.add")
    def add(x: int, y: int) -> int:
        return x + y

    app.conf.task_send_sent_event = True
    with EventReceiver(app) as receiver:
        result = add.apply_async((1, 2), queue="elsewhere")
        [sent] = list(receiver.itercapture(limit=1, timeout=WAIT, wakeup=False))

    assert sent["type"] == "task-sent"
    assert sent["uuid"] == result.id
    assert (sent["name"], sent["args"], sent["kwargs"]) == ("remote.add", "(1, 2)", "{}")
    assert (sent["queue"], sent["routing_key"], sent["retries"]) == ("elsewhere", "elsewhere", 0)
    assert sent["hostname"].startswith("gen")


def test_status_without_workers_exits_69(app: Celery) -> None:
    result = run(app, "status", "-t", "0.3")

    assert result.exit_code == 69
    assert "No nodes replied within time constraint" in result.output


def test_commands_talk_to_a_worker(app: Celery, start_worker: Callable[..., Any]) -> None:
    @app.task(name="remote.add", rate_limit="5/m")
    def add(x: int, y: int) -> int:
        return x + y

    start_worker(app, hostname="cli@embedded")
    task_id = str(uuid.uuid4())

    status = run(app, "status", "-t", "0.3")
    registered = run(app, "inspect", "registered", "-d", "cli@embedded")
    as_json = run(app, "inspect", "ping", "--json", "-t", "0.3")
    limited = run(app, "control", "rate_limit", "remote.add", "10/s", "-t", "0.3")
    revoked = run(app, "revoke", task_id, "-t", "0.3")
    unknown = run(app, "inspect", "activ")

    assert status.exit_code == 0, status.output
    assert "->  cli@embedded: OK\n    pong\n\n1 node online." in status.output
    assert "    * remote.add [rate_limit=5/m]" in registered.output
    assert as_json.output.strip() == '{"cli@embedded": {"ok": "pong"}}'
    assert "new rate limit set successfully" in limited.output
    assert add.rate_limit == "10/s"  # the worker shares this process's task object
    assert revoked.exit_code == 0
    assert "Revoked 1 task." in revoked.output
    assert task_id in app.control.inspect(timeout=2, limit=1).revoked()["cli@embedded"]
    assert unknown.exit_code == 2
    assert "unknown inspect method 'activ'" in unknown.output


def test_events_dump_and_live_view(app: Celery, start_worker: Callable[..., Any]) -> None:
    start_worker(app, hostname="view@embedded")

    dumped = run(app, "events", "--dump", "--timeout", "1")
    view = run(app, "events", "--timeout", "1", "-F", "0.4")

    assert "view@embedded [" in dumped.output
    assert "worker-heartbeat: freq=2.0" in dumped.output
    assert view.output.count("caraway events — ") >= 2  # redrawn (ANSI codes off in pipes)
    assert "view@embedded" in view.output
    assert "online" in view.output


def test_heartbeat_sent_follows_each_worker_heartbeat(
    app: Celery, start_worker: Callable[..., Any]
) -> None:
    beats: list[Any] = []

    def on_heartbeat(sender: Any = None, **kwargs: Any) -> None:
        beats.append(sender)

    signals.heartbeat_sent.connect(on_heartbeat)
    try:
        worker = start_worker(app, hostname="heart@embedded")
        wait_until(lambda: beats, what="a heartbeat")  # one every 2 s
    finally:
        signals.heartbeat_sent.disconnect(on_heartbeat)
    assert beats[0] is worker


def test_list_bindings(app: Celery) -> None:
    app.conf.task_queues = ["alpha", "beta"]

    result = run(app, "list", "bindings")

    assert result.exit_code == 0
    assert result.output.splitlines()[2:] == [
        f"{'alpha':<22}{'alpha':<22}alpha",
        f"{'beta':<22}{'beta':<22}beta",
    ]


def test_list_bindings_shows_the_exchanges_of_task_queues(app: Celery) -> None:
    app.conf.task_queues = [Queue("sport", Exchange("news", "topic"), "news.sport.*"),
                            Queue("images")]  # fmt: skip

    result = run(app, "list", "bindings")

    assert result.output.splitlines()[2:] == [
        f"{'images':<22}{'celery':<22}celery",  # Celery's defaults: task_default_exchange/key
        f"{'sport':<22}{'news':<22}news.sport.*",
    ]


def test_celerys_real_time_monitoring_recipe_runs_unchanged(
    app: Celery, start_worker: Callable[..., Any]
) -> None:
    """The recipe of Celery's monitoring guide: app.events.State, app.connection() and
    app.events.Receiver(connection, handlers=...).capture(...)."""

    @app.task(name="remote.fail")
    def fail() -> None:
        raise ValueError("kaboom")

    app.conf.worker_send_task_events = True
    start_worker(app, hostname="mon@embedded", concurrency=1)
    state = app.events.State()
    failed: list[tuple[str, str]] = []

    def announce_failed_tasks(event: dict[str, Any]) -> None:
        state.event(event)
        task = state.tasks.get(event["uuid"])
        assert task is not None
        failed.append((task.name or "", task.uuid))
        receiver.should_stop = True

    timer = threading.Timer(0.5, lambda: sent.append(fail.delay()))
    sent: list[Any] = []
    with app.connection() as connection:
        receiver = app.events.Receiver(
            connection, handlers={"task-failed": announce_failed_tasks, "*": state.event}
        )
        timer.start()
        receiver.capture(limit=None, timeout=WAIT, wakeup=True)
    timer.join()
    assert failed == [("remote.fail", sent[0].id)]
    assert "mon@embedded" in state.workers
    assert state.tasks[sent[0].id].state == states.FAILURE


def test_a_connection_names_its_app_s_broker_and_refuses_the_rest(app: Celery) -> None:
    with app.connection() as connection:
        assert connection.as_uri() == app.broker.describe()
        assert connection.ensure_connection() is connection
        with pytest.raises(Exception, match="no kombu channels"):
            connection.default_channel  # noqa: B018 - the attribute access is the test
    other = make_app("memory", "other", Path("unused"))
    with pytest.raises(Exception, match="another app"):
        app.events.Receiver(other.connection())
    with pytest.raises(TypeError, match="serializer"):
        app.events.Dispatcher(serializer="auth")
    with pytest.raises(Exception, match="names another broker"):
        app.connection("redis://elsewhere:6379/0")
    with app.events.Receiver() as receiver:
        with app.events.default_dispatcher(hostname="me@embedded") as dispatcher:
            dispatcher.send("custom-event", value=1)
        [event] = list(receiver.itercapture(limit=1, timeout=WAIT, wakeup=False))
    assert (event["type"], event["value"], event["hostname"]) == ("custom-event", 1, "me@embedded")
