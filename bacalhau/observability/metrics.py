"""Counters and gauges exposed in the Prometheus text format 0.0.4, with no dependency."""

from __future__ import annotations

import logging
import math
import re
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

from bacalhau.errors import BacalhauError

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

LabelValues = tuple[str, ...]
GaugeCallback = Callable[[], Mapping[LabelValues, float]]

_log = logging.getLogger(__name__)
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class MetricsError(BacalhauError):
    """A metric was declared or used wrongly, or the metrics server could not start."""


class Registry:
    """The metrics a process exposes, rendered in registration order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, Metric] = {}

    def register(self, metric: Metric) -> None:
        """Add a metric; raises MetricsError if its name is taken."""
        with self._lock:
            if metric.name in self._metrics:
                raise MetricsError(f"metric {metric.name} is already registered")
            self._metrics[metric.name] = metric

    def render(self) -> str:
        """The exposition text of every metric (Prometheus text format 0.0.4)."""
        with self._lock:
            metrics = list(self._metrics.values())
        lines: list[str] = []
        for metric in metrics:
            lines.append(f"# HELP {metric.name} {_escape_help(metric.help)}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            for values, value in sorted(metric.samples()):
                lines.append(f"{metric.name}{_labels(metric.labelnames, values)} {_number(value)}")
        return "".join(line + "\n" for line in lines)


class Child:
    """One labelled series of a counter or gauge."""

    def __init__(self, metric: Metric, values: LabelValues) -> None:
        self._metric = metric
        self._values = values

    def inc(self, n: float = 1) -> None:
        """Add `n` (a counter refuses negative `n`)."""
        if self._metric.kind == "counter" and n < 0:
            raise MetricsError(f"counter {self._metric.name} cannot decrease (inc by {n})")
        self._metric._add(self._values, n)

    def dec(self, n: float = 1) -> None:
        """Subtract `n`; gauges only."""
        self._metric._require_gauge("dec")
        self._metric._add(self._values, -n)

    def set(self, value: float) -> None:
        """Set the value; gauges only."""
        self._metric._require_gauge("set")
        self._metric._set(self._values, float(value))


class Metric:
    """The base of Counter and Gauge: a named family of series, one per label-value tuple."""

    kind = "untyped"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Iterable[str] = (),
        *,
        registry: Registry | None = None,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise MetricsError(f"invalid metric name {name!r}")
        self.name = name
        self.help = help
        self.labelnames: LabelValues = tuple(labelnames)
        for label in self.labelnames:
            if not _LABEL.fullmatch(label) or label.startswith("__"):
                raise MetricsError(f"invalid label name {label!r} for metric {name}")
        if len(set(self.labelnames)) != len(self.labelnames):
            raise MetricsError(f"duplicate label names for metric {name}")
        self._lock = threading.Lock()
        # An unlabelled metric has its one series from the start, as Prometheus clients do.
        self._values: dict[LabelValues, float] = {} if self.labelnames else {(): 0.0}
        if registry is not None:
            registry.register(self)

    def labels(self, **kv: object) -> Child:
        """The series with these label values (every label name, no others)."""
        if set(kv) != set(self.labelnames):
            raise MetricsError(
                f"metric {self.name} takes labels {list(self.labelnames)}, got {sorted(kv)}"
            )
        return Child(self, tuple(str(kv[label]) for label in self.labelnames))

    def inc(self, n: float = 1) -> None:
        """Add `n` to an unlabelled metric."""
        self._unlabelled().inc(n)

    def samples(self) -> list[tuple[LabelValues, float]]:
        """A snapshot of every series."""
        with self._lock:
            return list(self._values.items())

    def _unlabelled(self) -> Child:
        if self.labelnames:
            raise MetricsError(f"metric {self.name} has labels: use .labels(...) first")
        return Child(self, ())

    def _add(self, values: LabelValues, n: float) -> None:
        with self._lock:
            self._values[values] = self._values.get(values, 0.0) + n

    def _set(self, values: LabelValues, value: float) -> None:
        with self._lock:
            self._values[values] = value

    def _require_gauge(self, op: str) -> None:
        if self.kind != "gauge":
            raise MetricsError(f"{self.kind} {self.name} does not support {op}")


class Counter(Metric):
    """A value that only goes up; by convention its name ends in `_total`."""

    kind = "counter"


class Gauge(Metric):
    """A value that goes up and down, or is computed at scrape time by `callback`."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Iterable[str] = (),
        *,
        registry: Registry | None = None,
        callback: GaugeCallback | None = None,
    ) -> None:
        self._callback = callback
        super().__init__(name, help, labelnames, registry=registry)

    def set(self, value: float) -> None:
        """Set an unlabelled gauge."""
        self._unlabelled().set(value)

    def dec(self, n: float = 1) -> None:
        """Subtract `n` from an unlabelled gauge."""
        self._unlabelled().dec(n)

    def samples(self) -> list[tuple[LabelValues, float]]:
        """A snapshot of every series; a callback gauge calls its callback now."""
        if self._callback is None:
            return super().samples()
        try:
            result = [(tuple(map(str, k)), float(v)) for k, v in self._callback().items()]
        except Exception:
            # One failing callback must not break the whole scrape: expose no series for it.
            _log.exception("metrics callback for %s failed", self.name)
            return []
        width = len(self.labelnames)
        bad = [k for k, _ in result if len(k) != width]
        if bad:
            _log.error("metrics callback for %s returned label values %r", self.name, bad[0])
        return [(k, v) for k, v in result if len(k) == width]

    def _add(self, values: LabelValues, n: float) -> None:
        self._refuse_callback()
        super()._add(values, n)

    def _set(self, values: LabelValues, value: float) -> None:
        self._refuse_callback()
        super()._set(values, value)

    def _refuse_callback(self) -> None:
        if self._callback is not None:
            raise MetricsError(f"gauge {self.name} is computed by a callback and cannot be set")


def start_http_server(
    registry: Registry, host: str = "127.0.0.1", port: int = 0
) -> tuple[ThreadingHTTPServer, int]:
    """Serve `GET /metrics` on a daemon thread; returns the server and its bound port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            body = registry.render().encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line on stderr per scrape is noise

    server_class = _ThreadingHTTPServerV6 if ":" in host else ThreadingHTTPServer
    try:
        server = server_class((host, port), Handler)
    except OSError as e:
        raise MetricsError(
            f"cannot serve metrics on {host}:{port}: {e.strerror}",
            hint="choose another metrics port, or free this one",
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, int(server.server_address[1])


class _ThreadingHTTPServerV6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: LabelValues, values: LabelValues) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{_escape_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)
