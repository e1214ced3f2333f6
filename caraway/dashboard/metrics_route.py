"""``/metrics`` on the dashboard: the cluster's Prometheus metrics, as the events tell them.

Mounted when prometheus-client is installed (``caraway[prometheus]``): a State of its own,
fed by the ingest thread, drives ``caraway.metrics.events_collector``; the answer also holds
the depths of the app's queues, read from the broker at scrape time.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from caraway.dashboard.service import Dashboard
from caraway.events import State
from caraway.routing import queue_names

#: Tasks the metrics' State keeps to name a task's later events (older ones count as unknown).
TASKS_KEPT = 10_000


def metrics_routes(dashboard: Dashboard) -> list[BaseRoute]:
    """The ``/metrics`` route, or none when prometheus-client is not installed."""
    try:
        # Lazy, an extra: the dashboard runs without it, only /metrics needs it.
        from prometheus_client import CollectorRegistry

        # Lazy, caraway.metrics needs prometheus-client too (it says so when imported without).
        from caraway.metrics import CONTENT_TYPE, events_collector, render_latest
    except ImportError:
        return []
    app = dashboard.app
    state = State(max_tasks_in_memory=TASKS_KEPT)
    queues = sorted(queue_names(app.conf.task_queues) or {app.conf.task_default_queue})
    registry = CollectorRegistry()
    registry.register(events_collector(state, app, queues))
    dashboard.ingestor.observers.append(state.event)

    async def metrics(request: Request) -> Response:
        return Response(render_latest(registry), media_type=CONTENT_TYPE)

    return [Route("/metrics", metrics)]
