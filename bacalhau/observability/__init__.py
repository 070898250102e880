"""Observability: Prometheus metrics served over HTTP, OpenTelemetry traces."""

from __future__ import annotations

from bacalhau.observability.metrics import (
    CONTENT_TYPE,
    Child,
    Counter,
    Gauge,
    Histogram,
    Metric,
    MetricsError,
    Registry,
    start_http_server,
)
from bacalhau.observability.tracing import (
    KeptSpan,
    SpanStore,
    Tracing,
    context_of,
    parse_traceparent,
    traceparent_of,
)

__all__ = [
    "CONTENT_TYPE",
    "Child",
    "Counter",
    "Gauge",
    "Histogram",
    "KeptSpan",
    "Metric",
    "MetricsError",
    "Registry",
    "SpanStore",
    "Tracing",
    "context_of",
    "parse_traceparent",
    "start_http_server",
    "traceparent_of",
]
