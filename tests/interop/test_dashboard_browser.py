"""The dashboard in a real browser (the system's Chromium, driven by Playwright) while a real
worker runs: a task goes received → success live, its page, a long task terminated, a task
retried, a dead letter requeued and run, a periodic task disabled and edited, the queues'
figures. Screenshots land in ``artefacts/dashboard/`` (git-ignored)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from interop_support import BIN, WAIT, Workers, die_with_parent, redis_wire, wait_until
from services import free_port

from caraway import group
from caraway.beat import PeriodicTasks
from caraway.engines.base.broker import Outgoing
from caraway.protocol import build_task_message

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    if os.environ.get("CI") == "true":
        raise RuntimeError("Chromium is missing: .ci/run installs it (apt-get install chromium)")
    pytest.skip("no Chromium on this machine (apt-get install chromium)", allow_module_level=True)

ARTEFACTS = Path(__file__).resolve().parents[2] / "artefacts" / "dashboard"
QUEUE, PARKED = "dashui", "dashui-parked"
#: Live parts refresh every second; a loaded 2-core machine gets a generous bound.
SEEN = WAIT * 1000


@pytest.fixture(scope="module")
def site(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("dashui")
    with redis_wire() as wire:
        env = {**os.environ, **wire.env(folder), "PYTHONPATH": str(project)}
        env.pop("CARAWAY_HOME", None)
        port = free_port()
        worker_name = f"ui-{uuid.uuid4().hex[:6]}"
        with open(folder / "dash.log", "wb") as dash_out, \
                open(folder / "worker.log", "wb") as worker_out:  # fmt: skip
            procs = [
                subprocess.Popen(
                    [str(BIN / "caraway"), "-A", "caraway_side", "dashboard", f"--port={port}",
                     f"--db={folder / 'dash.sqlite3'}"], cwd=project, env=env, stdout=dash_out,
                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
                ),
                subprocess.Popen(
                    [str(BIN / "caraway"), "-A", "caraway_side", "worker", "-P", "prefork",
                     "-c", "2", "-E", "-l", "INFO", "-Q", QUEUE, "-n", f"{worker_name}@%h"],
                    cwd=project, env=env, stdout=worker_out, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=die_with_parent,
                ),
            ]  # fmt: skip
        import importlib

        client = importlib.import_module("caraway_side").build(
            wire.broker, wire.backend, wire.transport, wire.result_transport
        )
        node = f"{worker_name}@{socket.gethostname()}"
        try:
            wait_until(
                lambda: " ready." in (folder / "worker.log").read_text(),
                30,
                f"the worker: {folder / 'worker.log'}",
            )
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            with sync_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                page = browser.new_page(viewport={"width": 1200, "height": 300})
                page.on("dialog", lambda dialog: dialog.accept())
                yield {"page": page, "base": f"http://127.0.0.1:{port}", "client": client,
                       "node": node, "folder": folder, "Workers": Workers}  # fmt: skip
                browser.close()
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=WAIT)
                except subprocess.TimeoutExpired:
                    proc.kill()
            client.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def test_a_task_goes_from_received_to_success_live(site: dict[str, Any]) -> None:
    page, client = site["page"], site["client"]
    page.goto(f"{site['base']}/tasks")
    page.wait_for_selector("#task-rows")
    result = client.tasks["interop.slow"].apply_async((1, 2.0, "ui"), queue=QUEUE)
    row = page.locator(f'tr[data-task="{result.id}"]')
    row.locator(".state.STARTED, .state.RECEIVED").wait_for(timeout=SEEN)
    shot(page, "tasks-running")
    row.locator(".state.SUCCESS").wait_for(timeout=SEEN)
    shot(page, "tasks")

    row.locator("a").click()
    page.locator("#task-state.SUCCESS").wait_for(timeout=SEEN)
    assert "interop.slow" in page.content()
    assert page.locator("dd.mono", has_text="(1, 2.0, 'ui')").count() == 1
    assert page.locator("td", has_text="task-succeeded").count() == 1
    shot(page, "task")


def test_a_chain_is_shown_as_one_workflow(site: dict[str, Any]) -> None:
    page, client = site["page"], site["client"]
    add = client.tasks["interop.add"]
    result = (add.s(1, 2).set(queue=QUEUE) | add.s(3).set(queue=QUEUE)).apply_async()
    assert result.get(timeout=WAIT) == 6
    first = result.parent.id

    page.goto(f"{site['base']}/task/{first}")
    last = page.locator(f'svg.workflow g.node[data-member="{result.id}"]')
    last.and_(page.locator("g.SUCCESS")).wait_for(timeout=SEEN)
    assert page.locator(f'g.node.current[data-member="{first}"]').count() == 1
    assert page.locator(f'path.edge[data-source="{first}"][data-target="{result.id}"]').count() == 1


def test_a_chord_is_drawn_as_a_graph_with_its_join(site: dict[str, Any]) -> None:
    page, client = site["page"], site["client"]
    add, tsum, echo = (client.tasks[f"interop.{name}"] for name in ("add", "tsum", "echo"))
    members = [add.s(n).set(queue=QUEUE) for n in (1, 2, 3)]
    workflow = (add.s(1, 1).set(queue=QUEUE) | group(members) | tsum.s().set(queue=QUEUE)
                | echo.s().set(queue=QUEUE))  # fmt: skip
    result = workflow.apply_async()
    assert result.get(timeout=WAIT)["value"]["sum"] == 3 + 4 + 5
    body = result.parent.id

    page.goto(f"{site['base']}/task/{body}")
    done = page.locator("svg.workflow g.node.SUCCESS")
    page.wait_for_function(  # the panel refreshes every second until every event is stored
        "() => document.querySelectorAll('svg.workflow g.node.SUCCESS').length === 6"
        " && document.querySelectorAll('svg.workflow path.edge').length === 7", timeout=SEEN,
    )  # fmt: skip
    assert done.count() == 6
    into_body = page.locator(f'svg.workflow path.edge[data-target="{body}"]')
    assert into_body.count() == 3  # every member of the header, not only the last one
    assert page.locator("svg.workflow path.edge.join").count() == 2
    assert page.locator(f'g.node.current[data-member="{body}"]').count() == 1
    shot(page, "workflow")
    page.locator(f'svg.workflow g.node[data-member="{result.id}"]').click()
    page.wait_for_url(f"**/task/{result.id}")
    page.locator("#task-state.SUCCESS").wait_for(timeout=SEEN)


def test_a_long_task_is_terminated_from_its_page(site: dict[str, Any]) -> None:
    page, client = site["page"], site["client"]
    result = client.tasks["interop.slow"].apply_async((2, 60, "ui"), queue=QUEUE)
    page.goto(f"{site['base']}/task/{result.id}")
    page.locator("#task-state.STARTED").wait_for(timeout=SEEN)
    page.get_by_role("button", name="Terminate").click()
    page.locator("#task-state.REVOKED").wait_for(timeout=SEEN)
    shot(page, "task-revoked")
    assert client.AsyncResult(result.id).state == "REVOKED"


def test_a_finished_task_is_retried_now_from_its_page(site: dict[str, Any]) -> None:
    page, client = site["page"], site["client"]
    result = client.tasks["interop.add"].apply_async((20, 22), queue=QUEUE)
    assert result.get(timeout=WAIT) == 42
    page.goto(f"{site['base']}/task/{result.id}")
    page.locator("#task-state.SUCCESS").wait_for(timeout=SEEN)

    page.get_by_label("queue to send it to").fill(QUEUE)  # workers' events do not name it
    page.get_by_role("button", name="Retry now").click()
    page.get_by_role("status").filter(has_text=f"Sent {result.id} again as").wait_for(timeout=SEEN)
    new_id = page.url.split("/task/")[1].split("?")[0]
    assert new_id != result.id
    page.locator("#task-state.SUCCESS").wait_for(timeout=SEEN)
    assert page.locator("dd.mono", has_text="(20, 22)").count() == 1
    assert client.AsyncResult(new_id).get(timeout=WAIT) == 42
    shot(page, "task-retried")


def test_the_queues_page_shows_depth_per_priority_rates_and_age(site: dict[str, Any]) -> None:
    page, client = site["page"], site["client"]
    idle = client.conf.task_default_queue  # listed by the app, consumed by no worker
    client.conf.task_send_sent_event = True  # the rates and the age on Redis come from these
    try:
        for priority in (0, 0, 9):
            client.tasks["interop.add"].apply_async((1, 1), queue=idle, priority=priority)
        page.goto(f"{site['base']}/queues")
        row = page.locator(f'tr[data-queue="{idle}"]')
        row.locator(".messages", has_text="3").wait_for(timeout=SEEN)
        assert "0: 2" in row.locator(".by-priority").inner_text()
        assert "9: 1" in row.locator(".by-priority").inner_text()
        row.locator(".oldest", has_text="from task-sent events").wait_for(timeout=SEEN)
        assert row.locator(".rate-in").inner_text() != "n/a"
        mine = page.locator(f'tr[data-queue="{QUEUE}"]')
        assert site["node"] in mine.locator(".consumers").inner_text()
        shot(page, "queues")
    finally:
        client.conf.task_send_sent_event = False
        client.broker.purge(idle)


def test_a_dead_letter_is_requeued_and_runs(site: dict[str, Any]) -> None:
    page, client = site["page"], site["client"]
    task_id = str(uuid.uuid4())
    broker = client.broker
    broker.publish([Outgoing(build_task_message("interop.add", task_id, (5, 6), {}), PARKED)])
    (delivery,) = wait_until(lambda: broker.fetch([PARKED], 1, 0.5), WAIT, "the parked message")
    broker.dead_letter(delivery, "parked by the test")
    client.control.add_consumer(PARKED, destination=[site["node"]], reply=True, timeout=5)

    page.goto(f"{site['base']}/dead-letters")
    row = page.locator("tr[data-letter]", has_text=task_id)
    assert "parked by the test" in row.inner_text()
    shot(page, "dead-letters")
    row.get_by_role("button", name="Requeue").click()
    page.get_by_role("status").filter(has_text="Requeued").wait_for(timeout=SEEN)
    assert page.locator("tr[data-letter]", has_text=task_id).count() == 0

    assert client.AsyncResult(task_id).get(timeout=WAIT) == 11
    page.goto(f"{site['base']}/task/{task_id}")
    page.locator("#task-state.SUCCESS").wait_for(timeout=SEEN)


def test_a_periodic_task_is_disabled_from_the_beat_page(site: dict[str, Any]) -> None:
    page, client = site["page"], site["client"]
    schedules = PeriodicTasks(client)
    name = f"nightly-{uuid.uuid4().hex[:6]}"
    schedules.add(name, "interop.add", 3600.0, args=(1, 1))
    try:
        page.goto(f"{site['base']}/beat")
        row = page.locator(f'tr[data-schedule="{name}"]')
        assert "enabled" in row.inner_text()
        row.get_by_role("button", name="Disable").click()
        page.get_by_role("status").filter(has_text=f"{name} disabled").wait_for(timeout=SEEN)
        assert "disabled" in page.locator(f'tr[data-schedule="{name}"]').inner_text()
        shot(page, "beat")
        assert schedules.get(name).enabled is False

        row = page.locator(f'tr[data-schedule="{name}"]')
        row.locator("summary", has_text="Edit").click()
        row.locator('input[name="schedule"]').fill("*/5 * * * *")
        row.locator('input[name="args"]').fill("[2, 3]")
        shot(page, "beat-edit")
        row.get_by_role("button", name="Save").click()
        page.get_by_role("status").filter(has_text=f"{name} edited").wait_for(timeout=SEEN)
        edited = page.locator(f'tr[data-schedule="{name}"]')
        assert edited.locator('input[name="schedule"]').input_value() == "*/5 * * * *"
        assert edited.locator('input[name="args"]').input_value() == "[2, 3]"
        assert schedules.get(name).args == (2, 3)
        assert type(schedules.get(name).schedule).__name__ == "crontab"
    finally:
        schedules.remove(name)


def test_workers_page_shows_the_worker_online(site: dict[str, Any]) -> None:
    page = site["page"]
    page.goto(f"{site['base']}/workers")
    row = page.locator(f'tr[data-worker="{site["node"]}"]')
    row.locator(".online").wait_for(timeout=SEEN)
    assert "prefork" in row.inner_text()
    row.locator(".reserved", has_text="0").wait_for(timeout=SEEN)
    shot(page, "workers")
    page.goto(f"{site['base']}/tasks")
    page.locator(".state.REVOKED").first.wait_for(timeout=SEEN)
    shot(page, "tasks-overview")


def test_charts_count_what_ran(site: dict[str, Any]) -> None:
    page, client = site["page"], site["client"]
    for n in range(3):
        client.tasks["interop.add"].apply_async((n, n), queue=QUEUE).get(timeout=WAIT)
    failing = client.tasks["interop.fail"].apply_async(("value", "boom"), queue=QUEUE)
    failing.get(timeout=WAIT, propagate=False)
    page.goto(f"{site['base']}/charts?window=300")
    row = page.locator('tr[data-name="interop.add"]')
    row.wait_for(timeout=SEEN)
    assert page.locator("svg.chart rect").count() == 2 * 60
    page.wait_for_function(  # the panel refreshes every 5 s until the events are stored
        "() => Number(document.querySelector('tr[data-name=\"interop.add\"] td:nth-child(2)')"
        ".textContent) >= 3", timeout=SEEN,
    )  # fmt: skip
    failed = page.locator('tr[data-name="interop.fail"] td:nth-child(3)')
    assert failed.inner_text() == "1"

    page.locator('tr[data-name="interop.add"] a').click()  # that name over time
    page.wait_for_url("**/charts?window=300&name=interop.add")
    series = page.locator('#series[data-name="interop.add"] svg.chart')
    assert series.locator("rect").count() == 2 * 60
    in_table = int(page.locator('tr[data-name="interop.add"] td:nth-child(2)').inner_text())
    per_slot = series.locator("g").evaluate_all(
        "slots => slots.map(slot => Number(slot.dataset.succeeded))"
    )
    assert sum(per_slot) == in_table >= 3
    assert page.get_by_label("task name").input_value() == "interop.add"
    shot(page, "charts")
