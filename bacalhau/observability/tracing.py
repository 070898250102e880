"""OpenTelemetry tracing: one trace per job, across the nodes that handle it.

A node makes its spans with its own `Tracing` (passed to the roles through their
constructors, so several nodes can live in one process). `Tracing.off()` is the API's no-op
tracer: no span is made and the helpers return at once. When on, finished spans that name a
job (`bacalhau.job_id`) are kept in a bounded `SpanStore` (for `GetTrace`), and, with an OTLP
endpoint, exported over OTLP/gRPC in batches. A node that only keeps its spans (the default)
makes them with `_LightTracer`, a few plain objects a span, not the SDK's: a trivial job
with tracing on took 1.025–1.038x tracing off so, where the SDK's spans kept in memory took
1.068x. One that exports uses the SDK.

A span context crosses nodes as a W3C traceparent string (gRPC metadata `traceparent`; the
`traceparent` field of peer messages). What a peer or a client sends is parsed strictly and
used for nothing but linking spans.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, Status, StatusCode, TraceFlags

log = logging.getLogger(__name__)

__all__ = [
    "JOB_ID",
    "KeptSpan",
    "SpanStore",
    "Tracing",
    "annotate",
    "context_of",
    "parse_traceparent",
    "traceparent_of",
]

JOB_ID = "bacalhau.job_id"  # the attribute that files a span under its job
NODE_ID = "bacalhau.node_id"
MAX_JOBS = 1000  # jobs whose spans a node keeps (the oldest go first)
MAX_SPANS = 50_000  # spans a node keeps in all
MAX_SPANS_PER_JOB = 5_000  # spans kept of one job (a sharded job makes one per shard)
MAX_ATTRIBUTE_CHARS = 256  # an attribute value kept longer is cut
MAX_ATTRIBUTES = 32  # attributes a span keeps (more are dropped), as the SDK's limit here
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def parse_traceparent(text: str) -> SpanContext | None:
    """The remote span context a W3C traceparent (version 00) names, or None for anything
    else: wrong length or case, another version, an all-zero trace or span ID."""
    if not isinstance(text, str) or len(text) != 55:
        return None
    m = _TRACEPARENT.fullmatch(text)
    if m is None:
        return None
    trace_id, span_id = int(m.group(1), 16), int(m.group(2), 16)
    if not trace_id or not span_id:
        return None
    flags = TraceFlags(int(m.group(3), 16) & TraceFlags.SAMPLED)
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)


def context_of(traceparent: str) -> Context | None:
    """A context whose current span is the one `traceparent` names; None if it names none."""
    sc = parse_traceparent(traceparent) if traceparent else None
    if sc is None:
        return None
    return trace.set_span_in_context(NonRecordingSpan(sc))


def traceparent_of(span: Span | None = None) -> str:
    """The W3C traceparent of `span` (default: the current span); "" if it is not valid."""
    sc = (span or trace.get_current_span()).get_span_context()
    if not sc.is_valid:
        return ""
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"


def annotate(**attrs: Any) -> None:
    """Add attributes to the current span, if one is being recorded (say, an input fetch's
    source peers, from the network layer that found them); nothing otherwise."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(_clean(attrs))


@dataclass(frozen=True)
class KeptSpan:
    """A finished span as a node keeps it (a few hundred bytes)."""

    name: str
    node_id: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, str] = field(default_factory=dict)
    error: bool = False


class SpanStore:
    """The finished spans of the last MAX_JOBS jobs, at most MAX_SPANS in all (thread-safe:
    spans end on the event loop and in the executor's threads)."""

    def __init__(
        self,
        max_jobs: int = MAX_JOBS,
        max_spans: int = MAX_SPANS,
        max_per_job: int = MAX_SPANS_PER_JOB,
    ) -> None:
        self._jobs: OrderedDict[str, list[KeptSpan]] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()
        self.max_jobs, self.max_spans, self.max_per_job = max_jobs, max_spans, max_per_job
        self.dropped = 0  # spans not kept: their job had max_per_job already

    def add(self, job_id: str, span: KeptSpan) -> None:
        with self._lock:
            spans = self._jobs.get(job_id)
            if spans is None:
                spans = self._jobs[job_id] = []
            else:
                self._jobs.move_to_end(job_id)
            if len(spans) >= self.max_per_job:
                self.dropped += 1
                return
            spans.append(span)
            self._count += 1
            while len(self._jobs) > self.max_jobs or self._count > self.max_spans:
                _, old = self._jobs.popitem(last=False)
                self._count -= len(old)

    def spans(self, job_id: str) -> list[KeptSpan]:
        with self._lock:
            return list(self._jobs.get(job_id, ()))

    def __len__(self) -> int:
        return self._count


def _keeper(store: SpanStore, node_id: str) -> Any:
    """A span processor that files each finished span of a job in the store (the SDK's
    base class, imported only by a node that traces)."""
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

    class Keeper(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            attrs = span.attributes or {}
            job_id = attrs.get(JOB_ID)
            if not isinstance(job_id, str) or not job_id or span.context is None:
                return
            sc, parent = span.context, span.parent
            store.add(
                job_id,
                KeptSpan(
                    name=span.name,
                    node_id=node_id,
                    trace_id=f"{sc.trace_id:032x}",
                    span_id=f"{sc.span_id:016x}",
                    parent_span_id=f"{parent.span_id:016x}" if parent is not None else "",
                    start_ns=span.start_time or 0,
                    end_ns=span.end_time or 0,
                    attributes={k: str(v)[:MAX_ATTRIBUTE_CHARS] for k, v in attrs.items()},
                    error=span.status.status_code == trace.StatusCode.ERROR,
                ),
            )

    return Keeper()


class _LightSpan(Span):
    """A span that, when it ends, is filed in a `SpanStore` if it names a job, and is
    otherwise forgotten: what a node that exports nothing needs of a span, at a fraction of
    the SDK's cost. Used from one thread at a time (the one that made it), as spans are."""

    __slots__ = ("_attrs", "_context", "_ended", "_error", "_keep", "_name", "_parent", "_start")

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        start_ns: int,
        attrs: dict[str, Any],
        keep: Any,
    ) -> None:
        self._name = name
        self._context = context
        self._parent = parent
        self._start = start_ns
        self._attrs = attrs
        self._error = False
        self._ended = False
        self._keep = keep

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._ended and (key in self._attrs or len(self._attrs) < MAX_ATTRIBUTES):
            self._attrs[key] = value

    def set_attributes(self, attributes: Any) -> None:
        for k, v in (attributes or {}).items():
            self.set_attribute(k, v)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        pass  # events are not kept (GetTrace shows spans and their attributes)

    def update_name(self, name: str) -> None:
        if not self._ended:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        code = status.status_code if isinstance(status, Status) else status
        if not self._ended:
            self._error = code == StatusCode.ERROR

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        pass  # as the SDK's spans here: an exception sets the status, nothing more is kept

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        self._keep(self, end_time if end_time is not None else time.time_ns())

    def kept(self, node_id: str, end_ns: int) -> KeptSpan:
        sc, parent = self._context, self._parent
        return KeptSpan(
            name=self._name,
            node_id=node_id,
            trace_id=f"{sc.trace_id:032x}",
            span_id=f"{sc.span_id:016x}",
            parent_span_id=f"{parent.span_id:016x}" if parent is not None else "",
            start_ns=self._start,
            end_ns=end_ns,
            attributes={k: str(v)[:MAX_ATTRIBUTE_CHARS] for k, v in self._attrs.items()},
            error=self._error,
        )


class _LightTracer(trace.Tracer):
    """Makes `_LightSpan`s: IDs from a random generator of its own (as the SDK's are: from
    `random`, not a secret), every span recorded and sampled."""

    def __init__(self, store: SpanStore, node_id: str) -> None:
        self._store = store
        self._node_id = node_id
        self._random = random.Random()

    def _keep(self, span: _LightSpan, end_ns: int) -> None:
        job_id = span._attrs.get(JOB_ID)
        if isinstance(job_id, str) and job_id:
            self._store.add(job_id, span.kept(self._node_id, end_ns))

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: Any = None,
        attributes: Any = None,
        links: Any = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        current = trace.get_current_span(context).get_span_context()
        parent = current if current.is_valid else None
        rnd = self._random
        span_id = rnd.getrandbits(64) or 1
        trace_id = parent.trace_id if parent is not None else (rnd.getrandbits(128) or 1)
        sc = SpanContext(
            trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
        )
        attrs = dict(list((attributes or {}).items())[:MAX_ATTRIBUTES])
        return _LightSpan(name, sc, parent, start_time or time.time_ns(), attrs, self._keep)

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: Context | None = None, **kw: Any
    ) -> Iterator[Span]:
        span = self.start_span(name, context, **kw)
        with trace.use_span(span, end_on_exit=True):
            yield span


class _OnceLogged:
    """Wraps an exporter: an export that fails is logged once (then at debug), never raised."""

    def __init__(self, delegate: Any, endpoint: str) -> None:
        self._delegate, self._endpoint, self._warned = delegate, endpoint, False

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            result = self._delegate.export(spans)
        except Exception as e:
            result, why = SpanExportResult.FAILURE, str(e)
        else:
            why = "the endpoint did not take them"
        if result != SpanExportResult.SUCCESS:
            level = logging.DEBUG if self._warned else logging.WARNING
            log.log(level, "could not export %d span(s) to %s: %s", len(spans), self._endpoint, why)
            self._warned = True
        elif self._warned:
            log.info("exporting spans to %s again", self._endpoint)
            self._warned = False
        return result

    def shutdown(self) -> None:
        self._delegate.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._delegate.force_flush(timeout_millis))


class Tracing:
    """A node's tracer, the spans it keeps, and its exporter (if any)."""

    def __init__(
        self,
        node_id: str = "",
        *,
        keep: bool = True,
        otlp_endpoint: str = "",
        store: SpanStore | None = None,
    ) -> None:
        """`keep`: trace, keeping the spans of recent jobs in memory; `otlp_endpoint`
        (HOST:PORT): trace, and export over OTLP/gRPC (plaintext). Neither: off (no-op)."""
        self.node_id = node_id
        self.store = store or SpanStore()
        self._provider: Any = None
        self.on = bool(keep or otlp_endpoint)
        if not self.on:
            self.tracer: trace.Tracer = trace.NoOpTracer()
            return
        if not otlp_endpoint:
            self.tracer = _LightTracer(self.store, node_id)
            return
        # Imported only when on: a node that traces nothing loads no SDK.
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanLimits, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        resource = Resource.create({"service.name": "bacalhaud", "service.instance.id": node_id})
        # ALWAYS_ON, not the default ParentBased: the node records every job it takes part
        # in, whatever sampled flag a client or a peer sent (it cannot turn tracing off).
        provider = TracerProvider(
            resource=resource,
            sampler=ALWAYS_ON,
            span_limits=SpanLimits(max_attributes=32, max_events=16),
        )
        if keep:
            provider.add_span_processor(_keeper(self.store, node_id))
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True, timeout=5)
            # The exporter logs every failed try; ours says it once (`_OnceLogged`).
            logging.getLogger("opentelemetry.exporter.otlp.proto.grpc").setLevel(logging.CRITICAL)
            provider.add_span_processor(
                BatchSpanProcessor(_OnceLogged(exporter, otlp_endpoint))  # type: ignore[arg-type]
            )
        self._provider = provider
        self.tracer = provider.get_tracer("bacalhau")

    @classmethod
    def off(cls) -> Tracing:
        return cls(keep=False)

    def start(self, name: str, parent: str = "", job_id: str = "", **attrs: Any) -> Span:
        """Start a span (end it yourself): a child of the span `parent` names (a traceparent),
        else of the current span."""
        if job_id:
            attrs[JOB_ID] = job_id
        attrs[NODE_ID] = self.node_id
        return self.tracer.start_span(name, context_of(parent), attributes=_clean(attrs))

    @contextlib.contextmanager
    def span(self, name: str, parent: str = "", job_id: str = "", **attrs: Any) -> Iterator[Span]:
        """A span over the block, current inside it (so the spans made inside are its
        children); an exception ends it with status ERROR."""
        if not self.on:
            yield trace.INVALID_SPAN
            return
        s = self.start(name, parent, job_id, **attrs)
        with trace.use_span(s, end_on_exit=True, record_exception=False):
            yield s

    def record(
        self,
        name: str,
        start_ns: int,
        end_ns: int | None = None,
        parent: str = "",
        job_id: str = "",
        **attrs: Any,
    ) -> None:
        """A span of something already over (timed by the caller; `time.time_ns()`)."""
        if not self.on:
            return
        if job_id:
            attrs[JOB_ID] = job_id
        attrs[NODE_ID] = self.node_id
        s = self.tracer.start_span(
            name, context_of(parent), attributes=_clean(attrs), start_time=start_ns
        )
        s.end(end_time=end_ns if end_ns is not None else time.time_ns())

    def flush(self, timeout_s: float = 5.0) -> None:
        if self._provider is not None:
            self._provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Export what is left (a few seconds at most) and stop."""
        if self._provider is not None:
            provider, self._provider = self._provider, None
            with contextlib.suppress(Exception):
                provider.shutdown()  # exports what is left (one try: at most the timeout)


def _clean(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes OpenTelemetry takes: a plain name gets the `bacalhau.` prefix; None is
    dropped, other types become text."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if v is None:
            continue
        key = k if "." in k else f"bacalhau.{k}"
        out[key] = v if isinstance(v, str | bool | int | float) else str(v)
    return out
