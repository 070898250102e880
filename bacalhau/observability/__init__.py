"""Observability: Prometheus metrics served over HTTP."""

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

__all__ = [
    "CONTENT_TYPE",
    "Child",
    "Counter",
    "Gauge",
    "Histogram",
    "Metric",
    "MetricsError",
    "Registry",
    "start_http_server",
]
