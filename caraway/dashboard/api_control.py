"""Flower's remote-control API: a worker's pool, its queues, a task's limits; and the two
other ways Flower starts a task (``apply`` waits for the result, ``send-task`` sends by name).

Each control call waits for the worker's answer and passes on what it said: ``{"message":
...}`` when it did it, a 403 with the worker's reason when it refused, as Flower does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from caraway.dashboard.api import async_options, read_result

if TYPE_CHECKING:
    from caraway.control import Control
    from caraway.dashboard.service import Dashboard

#: Seconds a control call waits for the worker's answer.
REPLY_TIMEOUT = 2.0


def _dashboard(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def _worker(request: Request, name: str) -> tuple[Control, str]:
    """The app's control and a worker name it knows (a 404 otherwise, as Flower)."""
    dashboard = _dashboard(request)
    if name not in dashboard.worker_status() and name not in dashboard.inspect():
        raise HTTPException(404, f"Unknown worker '{name}'")
    return dashboard.app.control, name


def _argument(request: Request, name: str, kind: type = str, default: Any = None) -> Any:
    value = request.query_params.get(name)
    if value is None:
        if default is None:
            raise HTTPException(400, f"Missing argument {name}")
        return default
    try:
        return kind(value)
    except ValueError:
        raise HTTPException(400, f"Invalid argument {name}: {value!r}") from None


def _answered(replies: Any, worker: str, success: str | None, failure: str) -> Response:
    """The worker's ``ok`` (or ``success`` in its place), else its error as a 403."""
    answer = next((r[worker] for r in replies or () if worker in r), None)
    if isinstance(answer, dict) and "ok" in answer:
        return JSONResponse({"message": success or answer["ok"]})
    reason = answer.get("error", answer) if isinstance(answer, dict) else "no answer"
    return PlainTextResponse(f"{failure}: {reason}", 403)


def worker_shutdown(request: Request) -> Response:
    control, worker = _worker(request, request.path_params["worker"])
    control.shutdown(destination=[worker])
    return JSONResponse({"message": "Shutting down!"})


def pool_restart(request: Request) -> Response:
    control, worker = _worker(request, request.path_params["worker"])
    replies = control.pool_restart(reply=True, destination=[worker], timeout=REPLY_TIMEOUT)
    return _answered(replies, worker, f"Restarting '{worker}' worker's pool",
                     f"Failed to restart the '{worker}' pool")  # fmt: skip


def pool_resize(request: Request) -> Response:
    control, worker = _worker(request, request.path_params["worker"])
    verb = request.path_params["verb"]
    if verb not in ("grow", "shrink"):
        raise HTTPException(404, f"no pool action {verb!r}: grow, shrink, autoscale or restart")
    n = _argument(request, "n", int, 1)
    if verb == "grow":
        replies = control.pool_grow(n, reply=True, destination=[worker], timeout=REPLY_TIMEOUT)
        return _answered(replies, worker, f"Growing '{worker}' worker's pool by {n}",
                         f"Failed to grow '{worker}' worker's pool")  # fmt: skip
    replies = control.pool_shrink(n, reply=True, destination=[worker], timeout=REPLY_TIMEOUT)
    return _answered(replies, worker, f"Shrinking '{worker}' worker's pool by {n}",
                     f"Failed to shrink '{worker}' worker's pool")  # fmt: skip


def pool_autoscale(request: Request) -> Response:
    control, worker = _worker(request, request.path_params["worker"])
    low, high = _argument(request, "min", int), _argument(request, "max", int)
    replies = control.autoscale(high, low, reply=True, destination=[worker],
                                timeout=REPLY_TIMEOUT)  # fmt: skip
    return _answered(replies, worker, f"Autoscaling '{worker}' worker (min={low}, max={high})",
                     f"Failed to autoscale '{worker}' worker")  # fmt: skip


def queue_consumer(request: Request) -> Response:
    control, worker = _worker(request, request.path_params["worker"])
    verb = request.path_params["verb"]
    if verb not in ("add-consumer", "cancel-consumer"):
        raise HTTPException(404, f"no queue action {verb!r}: add-consumer or cancel-consumer")
    queue = _argument(request, "queue")
    if verb == "add-consumer":
        replies = control.add_consumer(queue, destination=[worker], timeout=REPLY_TIMEOUT)
        return _answered(replies, worker, None,
                         f"Failed to add '{queue}' consumer to '{worker}' worker")  # fmt: skip
    replies = control.cancel_consumer(queue, destination=[worker], timeout=REPLY_TIMEOUT)
    return _answered(replies, worker, None,
                     f"Failed to cancel '{queue}' consumer from '{worker}' worker")  # fmt: skip


def _task_name(request: Request) -> str:
    name: str = request.path_params["name"]
    if name not in _dashboard(request).app.tasks:
        raise HTTPException(404, f"Unknown task '{name}'")
    return name


def task_timeout(request: Request) -> Response:
    name = _task_name(request)
    control, worker = _worker(request, _argument(request, "workername"))
    hard = _argument(request, "hard", float, 0.0) or None
    soft = _argument(request, "soft", float, 0.0) or None
    replies = control.time_limit(name, soft, hard, destination=[worker], timeout=REPLY_TIMEOUT)
    return _answered(replies, worker, None, "Failed to set timeouts")


def task_rate_limit(request: Request) -> Response:
    name = _task_name(request)
    control, worker = _worker(request, _argument(request, "workername"))
    rate = _argument(request, "ratelimit")
    replies = control.rate_limit(name, rate, destination=[worker], reply=True,
                                 timeout=REPLY_TIMEOUT)  # fmt: skip
    return _answered(replies, worker, None, "Failed to set rate limit")


async def task_apply(request: Request) -> Response:
    """Start a task and wait for its result (``timeout`` in the body, as Flower)."""
    name = _task_name(request)
    args, kwargs, options = await async_options(request)
    timeout = options.pop("timeout", None)
    task = _dashboard(request).app.tasks[name]
    result = task.apply_async(args=args, kwargs=kwargs, **options)
    return JSONResponse(read_result(result, float(timeout) if timeout else 3600.0))


async def task_send(request: Request) -> Response:
    """Send a task by name; the dashboard need not know it (Flower's send-task)."""
    args, kwargs, options = await async_options(request)
    result = _dashboard(request).app.send_task(request.path_params["name"], args=args,
                                               kwargs=kwargs, **options)  # fmt: skip
    return JSONResponse({"task-id": result.id, "state": result.state})


ROUTES = [
    Route("/api/worker/shutdown/{worker}", worker_shutdown, methods=["POST"]),
    Route("/api/worker/pool/restart/{worker}", pool_restart, methods=["POST"]),
    Route("/api/worker/pool/autoscale/{worker}", pool_autoscale, methods=["POST"]),
    Route("/api/worker/pool/{verb:str}/{worker}", pool_resize, methods=["POST"]),
    Route("/api/worker/queue/{verb:str}/{worker}", queue_consumer, methods=["POST"]),
    Route("/api/task/timeout/{name}", task_timeout, methods=["POST"]),
    Route("/api/task/rate-limit/{name}", task_rate_limit, methods=["POST"]),
    Route("/api/task/apply/{name}", task_apply, methods=["POST"]),
    Route("/api/task/send-task/{name}", task_send, methods=["POST"]),
]
