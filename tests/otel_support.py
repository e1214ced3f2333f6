"""The OpenTelemetry SDK's in-memory exporter, for tests that read the spans caraway makes.

OpenTelemetry takes one global tracer provider per process: the first caller sets it, later
ones add their exporter to it.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def in_memory_exporter() -> InMemorySpanExporter:
    """A new exporter that receives every span ended from now on, in this process."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter
