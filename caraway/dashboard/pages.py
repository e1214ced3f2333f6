"""The HTML pages and the actions their forms post (each checked for its CSRF token)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from caraway import states
from caraway.dashboard import beat, charts, retry
from caraway.dashboard.graph import workflow_graph
from caraway.dashboard.security import checked_form, csrf_token
from caraway.dashboard.store import TaskFilter

if TYPE_CHECKING:
    from caraway.dashboard.service import Dashboard

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
TEMPLATES.env.filters["clock"] = lambda stamp: datetime.fromtimestamp(float(stamp)).strftime(
    "%Y-%m-%d %H:%M:%S.%f"
)[:-3]
ALL_STATES = (states.PENDING, states.RECEIVED, states.STARTED, states.SUCCESS, states.FAILURE,
              states.RETRY, states.REVOKED, states.REJECTED)  # fmt: skip
#: The time windows of the tasks page, in seconds ("" is all the history kept).
WINDOWS = (("", "all kept"), ("300", "last 5 min"), ("3600", "last hour"), ("86400", "last day"))
#: Remote-control commands the Workers page may send, and what each needs from the form.
WORKER_ACTIONS = ("pool_grow", "pool_shrink", "rate_limit", "cancel_consumer", "shutdown")


def _dashboard(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def render(request: Request, template: str, section: str = "", **context: Any) -> Response:
    dashboard = _dashboard(request)
    context.update(
        prefix=dashboard.config.url_prefix, read_only=dashboard.config.read_only,
        broker=dashboard.broker_description(), csrf=csrf_token(request), section=section,
        message=request.query_params.get("message", ""), title=context.get("title", section),
    )  # fmt: skip
    return TEMPLATES.TemplateResponse(request, template, context)


def _back(request: Request, path: str, message: str) -> RedirectResponse:
    prefix = _dashboard(request).config.url_prefix
    return RedirectResponse(f"{prefix}{path}?{urlencode({'message': message})}", 303)


def _task_filter(request: Request) -> tuple[TaskFilter, str]:
    query = request.query_params
    window = query.get("window", "")
    since = time.time() - float(window) if window.isdigit() else None
    wanted = TaskFilter(
        state=query.get("state", ""), name=query.get("name", ""),
        worker=query.get("worker", "").strip(), queue=query.get("queue", "").strip(),
        since=since, search=query.get("search", "").strip(),
    )  # fmt: skip
    return wanted, window


def tasks_page(request: Request) -> Response:
    wanted, window = _task_filter(request)
    store = _dashboard(request).store
    return render(
        request, "tasks.html", "/tasks", title="Tasks", tasks=store.tasks(wanted),
        wanted=wanted, window=window, windows=WINDOWS, names=store.task_names(),
        all_states=ALL_STATES, query=urlencode(list(request.query_params.multi_items())),
    )  # fmt: skip


def task_rows(request: Request) -> Response:
    wanted, _ = _task_filter(request)
    return render(request, "task_rows.html", tasks=_dashboard(request).store.tasks(wanted))


def _task_context(request: Request) -> dict[str, Any]:
    store = _dashboard(request).store
    task_id = request.path_params["task_id"]
    task = store.task(task_id)
    return {"task_id": task_id, "task": task, "children": store.children(task_id),
            "timeline": store.timeline(task_id), "ready_states": states.READY_STATES,
            "graph": workflow_graph(store, task) if task else None,
            "retry_queue": retry.known_queue(task) if task else ""}  # fmt: skip


def task_page(request: Request) -> Response:
    return render(request, "task.html", "/tasks", title="Task", **_task_context(request))


def task_panel(request: Request) -> Response:
    return render(request, "task_panel.html", **_task_context(request))


async def revoke_task(request: Request) -> Response:
    form = await checked_form(request)
    task_id = request.path_params["task_id"]
    terminate = form.get("terminate") == "1"
    _dashboard(request).app.control.revoke(task_id, terminate=terminate)
    verb = "Terminated" if terminate else "Revoked"
    return _back(request, f"/task/{task_id}", f"{verb} {task_id}.")


async def retry_task(request: Request) -> Response:
    form = await checked_form(request)
    task_id = request.path_params["task_id"]
    dashboard = _dashboard(request)
    task = dashboard.store.task(task_id)
    if task is None:
        raise HTTPException(404, f"no task {task_id!r} in the dashboard's history")
    try:
        new_id = retry.retry_now(dashboard.app, task, str(form.get("queue") or "").strip())
    except retry.CannotRetry as exc:
        return _back(request, f"/task/{task_id}", f"Cannot retry {task_id}: {exc}.")
    return _back(request, f"/task/{new_id}", f"Sent {task_id} again as {new_id}.")


def workers_page(request: Request) -> Response:
    return render(request, "workers.html", "/workers", title="Workers",
                  workers=_dashboard(request).workers())  # fmt: skip


def worker_rows(request: Request) -> Response:
    return render(request, "worker_rows.html", workers=_dashboard(request).workers())


async def worker_action(request: Request) -> Response:
    form = await checked_form(request)
    hostname, command = request.path_params["hostname"], request.path_params["command"]
    control = _dashboard(request).app.control
    destination = [hostname]
    if command == "pool_grow":
        control.pool_grow(1, destination=destination)
    elif command == "pool_shrink":
        control.pool_shrink(1, destination=destination)
    elif command == "rate_limit":
        task_name, rate = str(form.get("task_name") or ""), str(form.get("rate_limit") or "")
        if not task_name or not rate:
            raise HTTPException(400, "a rate limit needs a task name and a rate (e.g. 10/m)")
        control.rate_limit(task_name, rate, destination=destination)
    elif command == "cancel_consumer":
        queue = form.get("queue") or ""
        if not queue:
            raise HTTPException(400, "cancelling a consumer needs the queue's name")
        control.cancel_consumer(queue, destination=destination)
    elif command == "shutdown":
        if form.get("confirm") != "yes":
            raise HTTPException(400, "shutting a worker down needs confirm=yes")
        control.shutdown(destination=destination)
    else:
        raise HTTPException(404, f"unknown worker action {command!r}: one of {WORKER_ACTIONS}")
    return _back(request, "/workers", f"Sent {command} to {hostname}.")


def queues_page(request: Request) -> Response:
    return render(request, "queues.html", "/queues", title="Queues",
                  queues=_dashboard(request).queues())  # fmt: skip


def queue_rows(request: Request) -> Response:
    return render(request, "queue_rows.html", queues=_dashboard(request).queues())


def dead_letters_page(request: Request) -> Response:
    return render(request, "dead_letters.html", "/dead-letters", title="Dead letters",
                  letters=_dashboard(request).dead_letters())  # fmt: skip


async def settle_dead_letter(request: Request) -> Response:
    form = await checked_form(request)
    requeue = request.path_params["verb"] == "requeue"
    key = str(form.get("key") or "")
    found = _dashboard(request).app.broker.settle_dead_letter(key, requeue=requeue)
    if not found:
        return _back(request, "/dead-letters", "That dead letter is gone already.")
    return _back(request, "/dead-letters", "Requeued." if requeue else "Deleted.")


def beat_page(request: Request) -> Response:
    found, problem = beat.schedules(_dashboard(request).app)
    return render(request, "beat.html", "/beat", title="Beat", schedules=found, problem=problem)


async def beat_action(request: Request) -> Response:
    form = await checked_form(request)
    app, name, verb = _dashboard(request).app, form.get("name") or "", request.path_params["verb"]
    if verb == "run":
        try:
            task_id = beat.run_now(app, name)
        except KeyError:
            raise HTTPException(404, f"no periodic task named {name!r}") from None
        return _back(request, "/beat", f"Sent {name} now (task {task_id}).")
    if verb not in ("enable", "disable", "edit"):
        raise HTTPException(404, f"unknown beat action {verb!r}: run, enable, disable or edit")
    try:
        if verb == "edit":
            beat.edit(app, name, form.get("schedule", ""), form.get("args", ""),
                      form.get("kwargs", ""))  # fmt: skip
        else:
            beat.set_enabled(app, name, verb == "enable")
    except KeyError:
        raise HTTPException(404, f"no stored periodic task named {name!r}") from None
    except beat.BadEdit as exc:
        return _back(request, "/beat", f"{name} not changed: {exc}.")
    return _back(request, "/beat", f"{name} {verb}ed." if verb == "edit" else f"{name} {verb}d.")


#: The Charts page's windows, in seconds.
CHART_WINDOWS = (("300", "last 5 min"), ("3600", "last hour"), ("21600", "last 6 hours"))


def _charts_context(request: Request) -> dict[str, Any]:
    window = request.query_params.get("window", "3600")
    if window not in dict(CHART_WINDOWS):
        window = "3600"
    name = request.query_params.get("name", "")
    found = charts.figures(_dashboard(request).store, float(window), name=name)
    seconds = float(window) / charts.BUCKETS
    label = f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.0f} min"
    return {"window": window, "windows": CHART_WINDOWS, "buckets": found.buckets,
            "table": found.table, "name": name, "series": found.series, "bucket_label": label,
            "query": urlencode({"window": window, "name": name})}  # fmt: skip


def charts_page(request: Request) -> Response:
    names = _dashboard(request).store.task_names()
    return render(request, "charts.html", "/charts", title="Charts", names=names,
                  **_charts_context(request))  # fmt: skip


def charts_panel(request: Request) -> Response:
    return render(request, "charts_panel.html", **_charts_context(request))


def home(request: Request) -> Response:
    return RedirectResponse(f"{_dashboard(request).config.url_prefix}/tasks", 307)


ROUTES = [
    Route("/", home),
    Route("/tasks", tasks_page),
    Route("/tasks/rows", task_rows),
    Route("/task/{task_id}", task_page),
    Route("/task/{task_id}/panel", task_panel),
    Route("/task/{task_id}/revoke", revoke_task, methods=["POST"]),
    Route("/task/{task_id}/retry", retry_task, methods=["POST"]),
    Route("/workers", workers_page),
    Route("/workers/rows", worker_rows),
    Route("/workers/{hostname}/{command}", worker_action, methods=["POST"]),
    Route("/queues", queues_page),
    Route("/queues/rows", queue_rows),
    Route("/dead-letters", dead_letters_page),
    Route("/dead-letters/{verb:str}", settle_dead_letter, methods=["POST"]),
    Route("/charts", charts_page),
    Route("/charts/panel", charts_panel),
    Route("/beat", beat_page),
    Route("/beat/{verb:str}", beat_action, methods=["POST"]),
]
