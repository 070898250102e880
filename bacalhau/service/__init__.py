"""The application layer between gRPC and the roles: plain Python calls for job queries,
waiting, watching, logs, results, data ingest, node info and traces (`jobs`, `results`,
`data`, `info`, `traces`). The gRPC servicers in `bacalhau.api` only adapt requests and
replies onto these."""

from __future__ import annotations

from bacalhau.service.callers import Access, Caller, Forbidden
from bacalhau.service.data import DataService
from bacalhau.service.info import InfoService, NodeView, PeerView
from bacalhau.service.jobs import JobService, LogChunk
from bacalhau.service.results import NoResult, ResultService, result_execution
from bacalhau.service.traces import TraceService
from bacalhau.service.watch import JobWatch

__all__ = [
    "Access",
    "Caller",
    "DataService",
    "Forbidden",
    "InfoService",
    "JobService",
    "JobWatch",
    "LogChunk",
    "NoResult",
    "NodeView",
    "PeerView",
    "ResultService",
    "TraceService",
    "result_execution",
]
