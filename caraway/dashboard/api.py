"""Flower's HTTP API, same paths and field names, so scripts written for Flower keep working."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from caraway import states
from caraway.dashboard.service import flower_task
from caraway.dashboard.store import TaskFilter

if TYPE_CHECKING:
    from caraway.dashboard.service import Dashboard

#: Flower's date format for ``eta``/``expires`` and its task list filters.
DATE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
LIST_DATE_FORMAT = "%Y-%m-%d %H:%M"


def _dashboard(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes", "on")


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def workers(request: Request) -> JSONResponse:
    dashboard = _dashboard(request)
    if _flag(request, "status"):
        return JSONResponse(dashboard.worker_status())
    name = request.query_params.get("workername") or None
    answers = dashboard.inspect(refresh=_flag(request, "refresh"), workername=name)
    if name is not None:
        if name not in answers:
            raise HTTPException(404, f"Unknown worker '{name}'")
        return JSONResponse({name: answers[name]})
    return JSONResponse(answers)


def _when(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, LIST_DATE_FORMAT).timestamp()
    except ValueError:
        raise HTTPException(
            400, "Invalid received_start or received_end, expected format 'YYYY-MM-DD HH:MM'"
        ) from None


def tasks(request: Request) -> JSONResponse:
    query = request.query_params
    try:
        limit = int(query.get("limit") or 0) or 100_000
        offset = max(int(query.get("offset") or 0), 0)
    except ValueError:
        raise HTTPException(400, "limit and offset are whole numbers") from None

    def chosen(name: str) -> str:
        value = query.get(name) or ""
        return "" if value == "All" else value

    wanted = TaskFilter(
        state=chosen("state"), name=chosen("taskname"), worker=chosen("workername"),
        since=_when(query.get("received_start")), until=_when(query.get("received_end")),
        search=query.get("search") or "", limit=limit + offset, sort_by=query.get("sort_by") or "",
    )  # fmt: skip
    try:
        rows = _dashboard(request).store.tasks(wanted)[offset:]
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    return JSONResponse({row["uuid"]: flower_task(row) for row in rows})


def task_info(request: Request) -> JSONResponse:
    store = _dashboard(request).store
    task_id = request.path_params["task_id"]
    row = store.task(task_id)
    if row is None:
        raise HTTPException(404, f"Unknown task '{task_id}'")
    return JSONResponse(flower_task(row, store.children(task_id)))


def _result_fields(result: Any) -> dict[str, Any]:
    if result.state == states.FAILURE:
        return {"result": _json_safe(result.result), "traceback": result.traceback}
    return {"result": _json_safe(result.result)}


def read_result(result: Any, timeout: float | None) -> dict[str, Any]:
    """Flower's answer about a result: its state, and its value once ready (waiting up to
    ``timeout`` seconds for it)."""
    response: dict[str, Any] = {"task-id": result.id, "state": result.state}
    if timeout:
        try:
            result.get(timeout=timeout, propagate=False)
        except TimeoutError:
            return response
        response["state"] = result.state
        response.update(_result_fields(result))
    elif result.ready():
        response.update(_result_fields(result))
    return response


def task_result(request: Request) -> JSONResponse:
    task_id = request.path_params["task_id"]
    raw = request.query_params.get("timeout")
    try:
        timeout = float(raw) if raw is not None else None
    except ValueError:
        raise HTTPException(400, "Invalid timeout") from None
    result = _dashboard(request).app.AsyncResult(task_id)
    return JSONResponse(read_result(result, timeout))


async def async_options(request: Request) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """A start request's JSON body: ``args``, ``kwargs`` and the ``apply_async`` options,
    with Flower's formats for ``eta``, ``countdown`` and ``expires``."""
    raw = await request.body()
    try:
        options = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    if not isinstance(options, dict):
        raise HTTPException(400, "invalid options")
    args = options.pop("args", [])
    kwargs = options.pop("kwargs", {})
    if not isinstance(args, list):
        raise HTTPException(400, "args must be an array")
    if not isinstance(kwargs, dict):
        raise HTTPException(400, "kwargs must be an object")
    try:
        if "countdown" in options:
            options["countdown"] = float(options["countdown"])
        if "expires" in options:
            try:
                options["expires"] = float(options["expires"])
            except ValueError:
                options["expires"] = datetime.strptime(options["expires"], DATE_FORMAT)
        if "eta" in options:
            options["eta"] = datetime.strptime(options["eta"], DATE_FORMAT)
    except (TypeError, ValueError):
        raise HTTPException(400, "Invalid option") from None
    return args, kwargs, options


async def async_apply(request: Request) -> JSONResponse:
    dashboard = _dashboard(request)
    name = request.path_params["name"]
    args, kwargs, options = await async_options(request)
    if name not in dashboard.app.tasks:
        raise HTTPException(404, f"Unknown task '{name}'")
    result = dashboard.app.tasks[name].apply_async(args=args, kwargs=kwargs, **options)
    return JSONResponse({"task-id": result.id, "state": result.state})


def task_revoke(request: Request) -> JSONResponse:
    task_id = request.path_params["task_id"]
    terminate = _flag(request, "terminate")
    signal = request.query_params.get("signal") or "SIGTERM"
    _dashboard(request).app.control.revoke(task_id, terminate=terminate, signal=signal)
    return JSONResponse({"message": f"Revoked '{task_id}'"})


def task_types(request: Request) -> JSONResponse:
    return JSONResponse({"task-types": _dashboard(request).store.task_names()})


def queue_lengths(request: Request) -> JSONResponse:
    return JSONResponse({"active_queues": _dashboard(request).queue_lengths()})


ROUTES = [
    Route("/api/workers", workers),
    Route("/api/tasks", tasks),
    Route("/api/task/info/{task_id}", task_info),
    Route("/api/task/result/{task_id}", task_result),
    Route("/api/task/async-apply/{name}", async_apply, methods=["POST"]),
    Route("/api/task/revoke/{task_id}", task_revoke, methods=["POST"]),
    Route("/api/task/types", task_types),
    Route("/api/queues/length", queue_lengths),
]
