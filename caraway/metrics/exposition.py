"""The text a Prometheus server scrapes, for any HTTP server to send."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

#: The ``Content-Type`` of ``render_latest``'s bytes (Prometheus' text format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_LATEST


def render_latest(registry: CollectorRegistry = REGISTRY) -> bytes:
    """Every metric of ``registry`` in the text format, as an answer to ``GET /metrics``."""
    return generate_latest(registry)
