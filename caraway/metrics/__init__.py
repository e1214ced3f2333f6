"""Prometheus metrics (docs/metrics.md): a worker's own on its health port (``--metrics``),
and the cluster's from an events ``State`` for a dashboard to serve at ``/metrics``::

    registry = CollectorRegistry()
    registry.register(events_collector(state, app))
    body = render_latest(registry)  # answer with Content-Type: CONTENT_TYPE

Needs the ``prometheus`` extra; importing this package without it says how to install it.
"""

from __future__ import annotations

from caraway.exceptions import ImproperlyConfigured

try:
    import prometheus_client  # noqa: F401 - here only to turn its absence into a clear error
except ImportError as exc:
    raise ImproperlyConfigured(
        'Prometheus metrics need prometheus-client: pip install "caraway[prometheus]"'
    ) from exc

from caraway.metrics.events import EventsCollector, events_collector
from caraway.metrics.exposition import CONTENT_TYPE, render_latest
from caraway.metrics.worker import WorkerMetrics

__all__ = ["CONTENT_TYPE", "EventsCollector", "WorkerMetrics", "events_collector", "render_latest"]
