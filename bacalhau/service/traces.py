"""A job's trace: the spans this node keeps of it and those of the nodes that took part.

The requester asks each node that bid on or ran the job (at most MAX_NODES_ASKED, each
within ASK_TIMEOUT_S) for its spans of the job; a node that does not answer in time is named
in the answer, and its spans are missing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from bacalhau.models import pb
from bacalhau.observability.tracing import KeptSpan, Tracing
from bacalhau.service.callers import Caller, check_owner
from bacalhau.service.jobs import JobService

MAX_NODES_ASKED = 64  # nodes asked for their spans of one job
ASK_TIMEOUT_S = 3.0  # how long each may take
MAX_SPANS = 20_000  # spans in one answer (GetTrace and GetSpans alike)

AskPeer = Callable[[str, str], Awaitable[list[Any]]]


async def _nobody(node_id: str, job_id: str) -> list[Any]:
    return []


def to_pb(span: KeptSpan) -> Any:
    return pb.TraceSpan(
        name=span.name,
        node_id=span.node_id,
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        start_time_unix_nano=span.start_ns,
        end_time_unix_nano=span.end_ns,
        attributes=span.attributes,
        error=span.error,
    )


class TraceService:
    def __init__(
        self, *, jobs: JobService, tracing: Tracing, node_id: str, ask_peer: AskPeer = _nobody
    ) -> None:
        """`ask_peer(node_id, job_id)`: that node's spans of the job (TraceSpan messages);
        it may raise or take long (it is timed out)."""
        self._jobs = jobs
        self._tracing = tracing
        self._node_id = node_id
        self._ask_peer = ask_peer

    @contextlib.contextmanager
    def span(self, name: str, job: Any, **attrs: Any) -> Iterator[Any]:
        """A span of this node's work for a client on `job` (say, `get`), in the job's trace.
        Not made current: the block may be part of an async generator (a streamed answer)."""
        if not self._tracing.on:
            yield None
            return
        span = self._tracing.start(name, job.trace_parent, job_id=job.id, **attrs)
        try:
            yield span
        except BaseException as e:
            span.set_attribute("bacalhau.error", type(e).__name__)
            raise
        finally:
            span.end()

    def local(self, job_id: str) -> list[Any]:
        """The spans this node keeps of the job (exact ID), oldest first; at most MAX_SPANS."""
        return [to_pb(s) for s in self._tracing.store.spans(job_id)[:MAX_SPANS]]

    async def trace(self, job_id: str, caller: Caller) -> tuple[str, list[Any], list[str]]:
        """(the job's ID, its spans from every node that answered by start time, the nodes
        that did not answer). Raises JobNotFound, AmbiguousID, SpecError for a bad ID, and
        Forbidden unless the caller owns the job or is an admin."""
        job = self._jobs.get(job_id)
        check_owner(caller, job, "see the trace of")
        return await self.gather(job)

    async def gather(self, job: Any) -> tuple[str, list[Any], list[str]]:
        """`trace` of a job already read, with no owner check (the web dashboard, which
        shows every job to whoever may reach it, uses it)."""
        nodes = {ex.node_id for ex in job.executions}
        nodes.update(ev.node_id for ev in self._jobs.events(job.id) if ev.node_id)
        nodes.discard(self._node_id)
        nodes.discard("")
        asked = sorted(nodes)[:MAX_NODES_ASKED]
        answers = await asyncio.gather(
            *(asyncio.wait_for(self._ask_peer(n, job.id), ASK_TIMEOUT_S) for n in asked),
            return_exceptions=True,
        )
        spans = {s.span_id: s for s in self.local(job.id)}
        missing = []
        for node_id, answer in zip(asked, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer
                missing.append(node_id)
                continue
            for s in answer:
                # A node names itself in its spans: a span claiming another node is dropped.
                if s.node_id == node_id and s.span_id not in spans:
                    spans[s.span_id] = s
        ordered = sorted(spans.values(), key=lambda s: (s.start_time_unix_nano, s.name))
        return job.id, ordered[:MAX_SPANS], missing
