"""The dashboard served for real (uvicorn on a free port) over an in-process app: who may see
it, which requests may change anything, and what it never shows (passwords)."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from polling import poll
from services import free_port, rabbitmq_vhost, require
from worker.worker_support import ThreadedWorker

uvicorn = pytest.importorskip("uvicorn", reason="the dashboard's extra: pip install -e '.[test]'")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from caraway import Caraway, chord  # noqa: E402
from caraway.beat import PeriodicTasks  # noqa: E402
from caraway.dashboard.config import DashboardConfig  # noqa: E402
from caraway.dashboard.metrics_route import metrics_routes  # noqa: E402
from caraway.dashboard.server import build_app  # noqa: E402
from caraway.dashboard.service import Dashboard  # noqa: E402
from caraway.schedules import crontab  # noqa: E402


class Served:
    def __init__(self, app: Caraway, config: DashboardConfig, ingest: bool = True) -> None:
        self.dashboard = Dashboard(app, config)
        web = build_app(self.dashboard, metrics_routes(self.dashboard), ingest=ingest)
        self.server = uvicorn.Server(uvicorn.Config(web, host="127.0.0.1", port=config.port,
                                                    log_level="warning"))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base = f"http://127.0.0.1:{config.port}{config.url_prefix}"

    def __enter__(self) -> Served:
        self.thread.start()
        poll(lambda: self.server.started, 10, "uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def request(
        self, path: str, method: str = "GET", data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:  # fmt: skip
        req = urllib.request.Request(self.base + path, data, headers or {}, method=method)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(req, timeout=10) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture
def config(tmp_path: Path) -> DashboardConfig:
    return DashboardConfig(port=free_port(), store_path=tmp_path / "dash.sqlite3")


@pytest.fixture
def app() -> Iterator[Caraway]:
    app = Caraway("dashweb", broker=f"memory://dash-{uuid.uuid4().hex}")
    yield app
    app.close()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_with_basic_auth_nothing_is_shown_without_credentials(
    app: Caraway, config: DashboardConfig
) -> None:
    with Served(app, replace(config, basic_auth=(("ann", "pw"),)), ingest=False) as site:
        assert site.request("/tasks")[0] == 401
        assert site.request("/api/tasks")[0] == 401
        assert site.request("/tasks", headers=_basic("ann", "nope"))[0] == 401
        assert site.request("/tasks", headers=_basic("ann", "pw"))[0] == 200


def test_actions_need_the_csrf_token_of_the_page(app: Caraway, config: DashboardConfig) -> None:
    with Served(app, config, ingest=False) as site:
        status, headers, _ = site.request("/tasks")
        assert status == 200
        cookie = headers["set-cookie"].split(";")[0]
        token = cookie.split("=", 1)[1]
        assert "SameSite=strict" in headers["set-cookie"]

        forged = site.request("/task/abc/revoke", "POST", b"csrf_token=guess",
                              {"Cookie": cookie})  # fmt: skip
        assert forged[0] == 403
        ok = site.request("/task/abc/revoke", "POST", f"csrf_token={token}".encode(),
                          {"Cookie": cookie})  # fmt: skip
        assert ok[0] == 303
        assert app.broker.revocations(0)[0] == [("abc", False)]


def test_scripts_may_post_to_the_api_but_other_sites_may_not(
    app: Caraway, config: DashboardConfig
) -> None:
    with Served(app, config, ingest=False) as site:
        cross = site.request("/api/task/revoke/t1", "POST", b"",
                             {"Origin": "http://evil.example"})  # fmt: skip
        assert cross[0] == 403
        fetched = site.request("/api/task/revoke/t1", "POST", b"",
                               {"Sec-Fetch-Site": "cross-site"})  # fmt: skip
        assert fetched[0] == 403
        behind_proxy = site.request("/api/task/revoke/t1", "POST", b"", {
            "Origin": "https://dash.example", "Sec-Fetch-Site": "same-origin"})  # fmt: skip
        assert behind_proxy[0] == 200
        status, _, body = site.request("/api/task/revoke/t1", "POST", b"")
        assert (status, json.loads(body)) == (200, {"message": "Revoked 't1'"})


def test_read_only_changes_nothing(app: Caraway, config: DashboardConfig) -> None:
    with Served(app, replace(config, read_only=True), ingest=False) as site:
        status, _, body = site.request("/api/task/revoke/t1", "POST", b"")
        assert status == 403
        assert "read-only" in body
        assert app.broker.revocations(0)[0] == []
        assert "Revoke" not in site.request("/tasks")[2]


def test_broker_passwords_are_never_shown(config: DashboardConfig) -> None:
    app = Caraway("masked", broker="redis://ann:s3cret-pw@127.0.0.1:1/0")
    with Served(app, config, ingest=False) as site:
        for path in ("/tasks", "/queues/rows", "/workers"):
            status, _, page = site.request(path)
            assert "s3cret-pw" not in page, path
            assert status in (200, 503), path  # the broker is away: said, never a crash
        assert "Service unavailable" in site.request("/queues/rows")[2]
        assert "redis://ann:**@127.0.0.1:1/0" in site.request("/tasks")[2]


def test_the_url_prefix_serves_pages_and_api_under_it(app: Caraway,
                                                      config: DashboardConfig) -> None:  # fmt: skip
    with Served(app, replace(config, url_prefix="/dash"), ingest=False) as site:
        status, _, page = site.request("/tasks")
        assert status == 200
        assert 'href="/dash/workers"' in page
        assert site.request("/api/task/types")[0] == 200


@pytest.mark.parametrize("broker", ["memory", "sqlite"])
def test_events_from_a_worker_reach_the_tasks_api(
    broker: str, tmp_path: Path, config: DashboardConfig
) -> None:
    url = f"memory://dash-{uuid.uuid4().hex}" if broker == "memory" else \
        f"sqlite:///{tmp_path / 'broker.sqlite3'}"  # fmt: skip
    app = Caraway("dashweb", broker=url)

    @app.task(name="dashweb.add")
    def add(x: int, y: int) -> int:
        return x + y

    with Served(app, config) as site:
        worker = ThreadedWorker(app, concurrency=1, task_events=True).start()
        try:
            result = add.delay(2, 3)

            def seen() -> Any:
                task = json.loads(site.request("/api/tasks")[2]).get(result.id)
                return task if task and task["state"] == "SUCCESS" else None

            task = poll(seen, 20, "the task in the dashboard")
            assert (task["name"], task["args"], task["result"]) == ("dashweb.add", "(2, 3)", "5")
            status = json.loads(site.request("/api/workers?status=true")[2])
            assert list(status.values()) == [True]
            assert app.broker.size("celery") == 0
            workers = site.request("/workers/rows")[2]
            assert 'class="reserved">0<' in workers  # asked of the worker itself
            queues = site.request("/queues/rows")[2]
            assert 'data-queue="celery"' in queues
            families = {
                family.name: family
                for family in text_string_to_metric_families(site.request("/metrics")[2])
            }
            samples = families["caraway_tasks"].samples
            [done] = [s for s in samples if s.labels["state"] == "SUCCESS"]
            assert (done.labels["task"], done.value) == ("dashweb.add", 1.0)
            [depth] = families["caraway_queue_depth"].samples
            assert (depth.labels["queue"], depth.value) == ("celery", 0.0)
        finally:
            worker.stop()
            app.close()


def test_a_chord_is_drawn_with_every_header_member_joined_to_its_body(
    config: DashboardConfig,
) -> None:
    app = Caraway("dashweb", broker=f"memory://dash-{uuid.uuid4().hex}", backend="memory://")

    @app.task(name="dashweb.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="dashweb.total")
    def total(numbers: list[int]) -> int:
        return sum(numbers)

    with Served(app, config) as site:
        worker = ThreadedWorker(app, concurrency=2, task_events=True).start()
        try:
            result = chord([add.s(i, i) for i in range(3)], total.s()).apply_async()
            assert result.get(timeout=20) == 6

            def drawn() -> str | None:  # the last member's events may come a batch later
                page = site.request(f"/task/{result.id}/panel")[2]
                return page if page.count('class="edge') == 3 else None

            page = poll(drawn, 20, "the chord's graph")
            nodes = re.findall(r'<g class="node (\w+)( current)?" data-member="([^"]+)"', page)
            assert len(nodes) == 4
            assert {state for state, _, _ in nodes} == {"SUCCESS"}
            assert [member for _, current, member in nodes if current] == [result.id]
            targets = re.findall(r'class="edge[^"]*" data-source="[^"]+" data-target="([^"]+)"',
                                 page)  # fmt: skip
            assert targets == [result.id] * 3
            assert page.count('class="edge join"') == 2  # the third is the body's parent
            assert f'href="/task/{result.id}"' in page
        finally:
            worker.stop()
            app.close()


def test_the_charts_page_shows_one_task_names_throughput_over_time(
    app: Caraway, config: DashboardConfig
) -> None:
    now = time.time()
    finished = [("proj.a", "task-succeeded", 10), ("proj.a", "task-succeeded", 12),
                ("proj.a", "task-failed", 14), ("proj.a", "task-succeeded", 1800),
                ("proj.b", "task-succeeded", 10)]  # fmt: skip
    with Served(app, config, ingest=False) as site:
        for n, (name, kind, ago) in enumerate(finished):
            site.dashboard.store.add_task_events([
                {"type": "task-received", "uuid": f"c{n}", "timestamp": now - ago - 1,
                 "name": name},
                {"type": kind, "uuid": f"c{n}", "timestamp": now - ago, "runtime": 0.5},
            ])  # fmt: skip

        page = site.request("/charts?window=3600")[2]
        assert 'href="/charts?window=3600&amp;name=proj.a"' in page  # from the per-name table
        assert 'id="series"' not in page
        status, _, page = site.request("/charts?window=3600&name=proj.a")
        assert status == 200
        assert '<option value="proj.a" selected>' in page
        assert 'data-refresh="/charts/panel?window=3600&amp;name=proj.a"' in page
        panel = site.request("/charts/panel?window=3600&name=proj.a")[2]
        series = panel.split('<div id="series" data-name="proj.a">')[1].split("</svg>")[0]
        slots = re.findall(r'data-succeeded="(\d+)" data-failed="(\d+)"', series)
        assert len(slots) == 60
        busy = [(int(ok), int(bad)) for ok, bad in slots if ok != "0" or bad != "0"]
        assert busy == [(1, 0), (2, 1)]  # half an hour ago, and now
        assert slots[-1] == ("2", "1")
        totals = re.findall(r'data-succeeded="(\d+)"', panel.split('id="series"')[0])
        assert sum(map(int, totals)) == 4  # every name's chart: proj.b counted too


def test_beat_lists_configured_schedules_and_runs_one_now(
    app: Caraway, config: DashboardConfig
) -> None:
    app.conf.beat_schedule = {"tick": {"task": "dashweb.tick", "schedule": 60.0, "args": (7,)}}
    with Served(app, config, ingest=False) as site:
        status, headers, page = site.request("/beat")
        assert status == 200
        assert 'data-schedule="tick"' in page
        assert "stored schedules unavailable" in page  # no result backend: config ones only
        cookie = headers["set-cookie"].split(";")[0]
        form = f"csrf_token={cookie.split('=', 1)[1]}&name=tick".encode()
        assert site.request("/beat/run", "POST", form, {"Cookie": cookie})[0] == 303

    (delivery,) = app.broker.fetch(["celery"], 1, 1.0)
    assert delivery.message.headers["task"] == "dashweb.tick"
    assert delivery.message.headers["argsrepr"] == "(7,)"


def test_task_fields_are_escaped_in_pages(app: Caraway, config: DashboardConfig) -> None:
    with Served(app, config, ingest=False) as site:
        site.dashboard.store.add_task_events([
            {"type": "task-received", "uuid": "x1", "timestamp": time.time(), "name": "proj.t",
             "args": "('<script>alert(1)</script>',)"},
        ])  # fmt: skip
        for path in ("/tasks", "/task/x1"):
            page = site.request(path)[2]
            assert "<script>alert(1)" not in page
            assert "&lt;script&gt;alert(1)" in page


def _post_form(site: Served, path: str, fields: dict[str, str]) -> tuple[int, dict[str, str]]:
    """POST ``fields`` as the page's form would, with the page's CSRF token."""
    cookie = site.request("/tasks")[1]["set-cookie"].split(";")[0]
    body = urlencode({"csrf_token": cookie.split("=", 1)[1], **fields}).encode()
    status, headers, _ = site.request(path, "POST", body, {"Cookie": cookie})
    return status, headers


def test_retry_now_sends_the_task_again_with_its_arguments(
    app: Caraway, config: DashboardConfig
) -> None:
    with Served(app, config, ingest=False) as site:
        site.dashboard.store.add_task_events([
            {"type": "task-received", "uuid": "r1", "timestamp": time.time(),
             "name": "proj.add", "args": "(2, 3)", "kwargs": "{'z': [1]}"},
            {"type": "task-failed", "uuid": "r1", "timestamp": time.time()},
            {"type": "task-received", "uuid": "r2", "timestamp": time.time(),
             "name": "proj.add", "args": "(<object at 0x1>,)"},
            {"type": "task-failed", "uuid": "r2", "timestamp": time.time()},
        ])  # fmt: skip
        assert "Retry now" in site.request("/task/r1")[2]

        status, headers = _post_form(site, "/task/r1/retry", {"queue": ""})
        assert status == 303
        assert "Sent+r1+again+as" in headers["location"]
        new_id = headers["location"].split("/task/")[1].split("?")[0]
        (delivery,) = app.broker.fetch(["celery"], 1, 1.0)
        message = delivery.message
        assert (message.task_id, message.headers["task"]) == (new_id, "proj.add")
        assert (message.headers["argsrepr"], message.headers["kwargsrepr"]) == (
            "(2, 3)", "{'z': [1]}")  # fmt: skip

        status, headers = _post_form(site, "/task/r1/retry", {"queue": "elsewhere"})
        assert status == 303
        (again,) = app.broker.fetch(["elsewhere"], 1, 1.0)
        assert again.message.headers["argsrepr"] == "(2, 3)"

        status, headers = _post_form(site, "/task/r2/retry", {})
        assert status == 303
        assert "Cannot+retry+r2" in headers["location"]
        assert app.broker.fetch(["celery"], 1, 0.2) == []


def test_a_stored_schedule_is_edited_from_the_beat_page(
    tmp_path: Path, config: DashboardConfig
) -> None:
    app = Caraway("dashbeat", broker=f"sqlite:///{tmp_path / 'broker.sqlite3'}")
    schedules = PeriodicTasks(app)
    schedules.add("report", "proj.report", 60.0, args=(1,))
    try:
        with Served(app, config, ingest=False) as site:
            page = site.request("/beat")[2]
            assert 'name="schedule" value="60"' in page
            assert 'name="args" value="[1]"' in page

            edit = {"name": "report", "schedule": "*/5 9-17 * * *", "args": '["daily", 2]',
                    "kwargs": '{"to": "ops"}'}  # fmt: skip
            status, headers = _post_form(site, "/beat/edit", edit)
            assert (status, "report+edited.") == (303, headers["location"].split("=")[1])
            changed = schedules.get("report")
            assert isinstance(changed.schedule, crontab)
            assert (changed.args, changed.kwargs) == (("daily", 2), {"to": "ops"})
            assert 'value="*/5 9-17 * * *"' in site.request("/beat")[2]

            status, headers = _post_form(site, "/beat/edit", {**edit, "schedule": "often"})
            assert "report+not+changed" in headers["location"]
            assert isinstance(schedules.get("report").schedule, crontab)
        with Served(app, replace(config, read_only=True), ingest=False) as site:
            assert "Edit" not in site.request("/beat")[2]
            assert _post_form(site, "/beat/edit", {**edit, "schedule": "5"})[0] == 403
        assert isinstance(schedules.get("report").schedule, crontab)
    finally:
        app.close()


def test_the_queues_page_shows_depth_per_priority_age_and_rates(
    tmp_path: Path, config: DashboardConfig
) -> None:
    app = Caraway("dashq", broker=f"sqlite:///{tmp_path / 'broker.sqlite3'}")
    try:
        first = app.send_task("proj.a")
        app.send_task("proj.a")
        app.send_task("proj.a", priority=5)
        with Served(app, config, ingest=False) as site:
            row = site.request("/queues/rows")[2]
            assert 'class="messages">3<' in row
            assert "0: 2</span>, <span" in row
            assert "5: 1</span>" in row
            assert re.search(r'class="oldest">\d+\.\d s</td>', row)
            assert "task_send_sent_event = True" in row  # no rates without task-sent events
            assert "SQLite keeps no list of consumers" not in row  # workers are listed instead

            site.dashboard.store.add_task_events([
                {"type": "task-sent", "uuid": first.id, "timestamp": time.time(),
                 "name": "proj.a", "queue": "celery"},
            ])  # fmt: skip
            row = site.request("/queues/rows")[2]
            assert 'class="rate-in">0.02</td><td class="rate-out">0.00</td>' in row
    finally:
        app.close()


def test_the_queues_page_says_why_a_figure_is_missing(app: Caraway,
                                                      config: DashboardConfig) -> None:  # fmt: skip
    app.send_task("proj.a")
    with Served(app, config, ingest=False) as site:
        row = site.request("/queues/rows")[2]
        assert 'class="messages">1<' in row
        assert "n/a" in row
        assert "the memory broker keeps no publish time" in row


@contextmanager
def _server_broker(kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if kind == "redis":
        host, port = require("redis")
        prefix = f"dashq-{uuid.uuid4().hex[:8]}:"  # db 11 is shared by prefix, never flushed
        try:
            yield f"redis://{host}:{port}/11", {"global_keyprefix": prefix}
        finally:
            client = redis.Redis(host=host, port=port, db=11)
            keys = list(client.scan_iter(f"{prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()
        return
    with rabbitmq_vhost("caraway-test-dashq") as url:
        yield url, {}


@pytest.mark.parametrize(
    ("kind", "by_priority", "oldest"),
    [("redis", "0: 2</span>, <span", "Redis lists keep no publish time"),
     ("amqp", "RabbitMQ does not say how many", "shows a message&#39;s age only to whoever")],
)  # fmt: skip
def test_the_queues_page_on_a_server_broker(
    kind: str, by_priority: str, oldest: str, config: DashboardConfig
) -> None:
    with _server_broker(kind) as (url, options):
        queue = f"dashq-{uuid.uuid4().hex[:8]}"
        app = Caraway("dashq", broker=url, broker_transport_options=options,
                      task_default_queue=queue)  # fmt: skip
        try:
            for priority in (0, 0, 9):
                app.send_task("proj.a", priority=priority)
            with Served(app, config, ingest=False) as site:
                row = site.request("/queues/rows")[2]
            assert f'data-queue="{queue}"' in row
            assert 'class="messages">3<' in row
            assert by_priority in row
            assert oldest in row
            if kind == "amqp":
                assert "0 on the broker" in row  # RabbitMQ counts its consumers
        finally:
            app.broker.purge(queue)
            app.close()
