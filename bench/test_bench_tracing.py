"""What tracing costs a trivial job: one WASM job, submit to completed, on three 2-node
networks started in the same run: `--tracing off` (no spans made), tracing on with no
exporter (the default: spans kept in memory), and on with `--otlp-endpoint` exporting to an
OTLP/gRPC receiver in this process. Rounds alternate between the three, so a slow spell of
the machine falls on each alike; the summary gives each p50 as a ratio to the first.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.client import Client
from tests.integration.conftest import ECHO_WASM, Cluster

ROUNDS = int(os.environ.get("BENCH_TRACE_ROUNDS", "60"))
MODES = {
    "off": ("--tracing", "off"),
    "memory": (),
    "otlp": ("--otlp-endpoint",),  # the receiver's address is added
}


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.spans = 0

    def Export(self, request: Any, context: Any) -> Any:
        self.spans += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[_Receiver, int]]:
    r = _Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(r, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield r, port
    server.stop(0)


@pytest.fixture(scope="module")
def networks(
    tmp_path_factory: pytest.TempPathFactory, receiver: tuple[_Receiver, int]
) -> Iterator[dict[str, Cluster]]:
    out: dict[str, Cluster] = {}
    try:
        for mode, args in MODES.items():
            if mode == "otlp":
                args = (*args, f"127.0.0.1:{receiver[1]}")
            out[mode] = Cluster(tmp_path_factory.mktemp(f"trace-{mode}"), 2, args)
        yield out
    finally:
        for c in out.values():
            c.close()


def _spec(client: Client) -> Any:
    cid = client.add_file(ECHO_WASM).cid
    return types_pb2.JobSpec(
        engine="wasm",
        wasm=types_pb2.WasmSpec(module_cid=cid, args=["bench"]),
        outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
    )


def _one_job(client: Client, spec: Any) -> float:
    started = time.perf_counter()
    job = client.wait(client.submit(spec).job_id).job
    took = time.perf_counter() - started
    assert job.state == types_pb2.JOB_STATE_COMPLETED, job.message
    return took


def test_tracing_cost(
    networks: dict[str, Cluster],
    receiver: tuple[_Receiver, int],
    note: Callable[[str, float], None],
) -> None:
    clients = {m: Client(c[0].address) for m, c in networks.items()}
    try:
        specs = {m: _spec(c) for m, c in clients.items()}
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for m in MODES:  # warm up: the first job of each network compiles its module
            for _ in range(3):
                _one_job(clients[m], specs[m])
        for i in range(ROUNDS):
            order = list(MODES)[i % 3 :] + list(MODES)[: i % 3]
            for m in order:
                times[m].append(_one_job(clients[m], specs[m]))
    finally:
        for c in clients.values():
            c.close()
    for m, ts in times.items():
        note(f"trace_{m}", statistics.median(ts))
    note("trace_spans_exported", receiver[0].spans)  # batched: the last may be on their way


def summary(tr: pytest.TerminalReporter, notes: dict[str, float]) -> None:
    """Lines for the bench summary (bench/conftest.py)."""
    off = notes.get("trace_off")
    if not off:
        return
    for mode, label in (
        ("off", "tracing off"),
        ("memory", "tracing, no exporter"),
        ("otlp", "tracing + OTLP export"),
    ):
        t = notes.get(f"trace_{mode}")
        if t:
            tr.write_line(
                f"{label:>22}: {t * 1e3:8.2f} ms p50 trivial job ({t / off:.3f}x tracing off)"
            )
    tr.write_line(f"{'spans exported':>22}: {notes.get('trace_spans_exported', 0):8.0f} (OTLP)")
