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
            lines.extend(metric.exposition())
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

    def exposition(self) -> list[str]:
        """The sample lines of this metric."""
        return [
            f"{self.name}{_labels(self.labelnames, values)} {_number(value)}"
            for values, value in sorted(self.samples())
        ]

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


DEFAULT_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                          5.0, 10.0, 30.0, 60.0, 300.0)  # fmt: skip


class Histogram(Metric):
    """Observed values (seconds, by convention) counted in cumulative buckets, with their sum
    and count, per label-value tuple."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Iterable[str] = (),
        *,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
        registry: Registry | None = None,
    ) -> None:
        self.buckets = tuple(sorted(buckets))
        self._series: dict[LabelValues, list[float]] = {}  # bucket counts..., sum, count
        super().__init__(name, help, labelnames, registry=registry)

    def observe(self, value: float, **labels: object) -> None:
        """Count one observation (NaN and negative values are dropped)."""
        if not value >= 0:
            return
        if set(labels) != set(self.labelnames):
            raise MetricsError(
                f"metric {self.name} takes labels {list(self.labelnames)}, got {sorted(labels)}"
            )
        key = tuple(str(labels[label]) for label in self.labelnames)
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
            series[-2] += value
            series[-1] += 1

    def exposition(self) -> list[str]:
        with self._lock:
            snapshot = sorted((k, list(v)) for k, v in self._series.items())
        lines = []
        for values, series in snapshot:
            for bound, n in zip((*self.buckets, math.inf), (*series[:-2], series[-1]), strict=True):
                le = "+Inf" if bound == math.inf else _number(bound)
                labels = _labels((*self.labelnames, "le"), (*values, le))
                lines.append(f"{self.name}_bucket{labels} {_number(n)}")
            plain = _labels(self.labelnames, values)
            lines.append(f"{self.name}_sum{plain} {_number(series[-2])}")
            lines.append(f"{self.name}_count{plain} {_number(series[-1])}")
        return lines


Check = Callable[[], list[str]]  # what is wrong ([] when all is well)


def start_http_server(
    registry: Registry,
    host: str = "127.0.0.1",
    port: int = 0,
    checks: Mapping[str, Check] | None = None,
) -> tuple[ThreadingHTTPServer, int]:
    """Serve `GET /metrics`, and `GET /<name>` for each of `checks` (200 "ok", or 503 with
    each problem on a line), on a daemon thread; returns the server and its bound port."""
    health = dict(checks or {})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, registry.render(), CONTENT_TYPE)
                return
            check = health.get(path.lstrip("/"))
            if check is None:
                known = ", ".join(["/metrics", *(f"/{n}" for n in health)])
                self.send_error(404, f"served here: {known}")
                return
            try:
                problems = check()
            except Exception as e:  # a failing check is a failed check, not a dead server
                problems = [f"the check failed: {e}"]
            text = "\n".join(problems) + "\n" if problems else "ok\n"
            self._send(503 if problems else 200, text, "text/plain; charset=utf-8")

        def _send(self, code: int, text: str, content_type: str) -> None:
            body = text.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", content_type)
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
