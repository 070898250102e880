"""One trace per job across real nodes: spans exported over OTLP/gRPC to a real receiver
(the `opentelemetry-proto` TraceService, served here), and `bacalhauctl trace`."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.client import Client
from bacalhau.identity import Identity
from tests._wait import wait_for
from tests.integration.conftest import ECHO_WASM, Cluster, Ctl, start_node, wait_connected

SPANS = {
    "job",
    "submit",
    "bid_round",
    "bid",
    "selection",
    "input_fetch",
    "execution",
    "run",
    "result_storage",
    "verification",
    "get",
}


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """An OTLP/gRPC trace receiver: keeps every span it is sent, with its node."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            for rs in request.resource_spans:
                res = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        attrs = {a.key: _value(a.value) for a in s.attributes}
                        self.spans.append(
                            {
                                "name": s.name,
                                "node": res.get("service.instance.id", ""),
                                "trace_id": s.trace_id.hex(),
                                "span_id": s.span_id.hex(),
                                "parent": s.parent_span_id.hex(),
                                "attrs": attrs,
                            }
                        )
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_job(self, job_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["attrs"].get("bacalhau.job_id") == job_id]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    r = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(r, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield r, port
    server.stop(0)


def _ancestors(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    while span["parent"] in by_id and len(out) < 50:
        span = by_id[span["parent"]]
        out.append(span)
    return out


def test_one_trace_across_nodes(
    tmp_path: Path, receiver: tuple[Receiver, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, port = receiver
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export within 0.1 s, not 5 s
    cluster = Cluster(tmp_path / "c", 3, ("--otlp-endpoint", f"127.0.0.1:{port}"))
    try:
        ctl = Ctl(cluster[0].address, tmp_path)
        # Run on node-2 (its label): the module is fetched from node-0, the requester.
        res = ctl("wasm", "run", "--labels", "name=node-2", str(ECHO_WASM), "traced")
        assert res.returncode == 0, res.stderr
        job_id = res.stdout.split()[0]
        got = ctl("get", job_id, "--output-dir", str(tmp_path / "out"))
        assert got.returncode == 0, got.stderr

        def complete() -> list[dict[str, Any]] | None:
            spans = r.of_job(job_id)
            return spans if {s["name"] for s in spans} >= SPANS else None

        spans = wait_for(complete, 30, "every span of the job at the receiver")
        ids = {n.name: n.node_id for n in cluster.nodes}
        assert len({s["trace_id"] for s in spans}) == 1, spans  # one trace
        by_name: dict[str, list[dict[str, Any]]] = {}
        for s in spans:
            by_name.setdefault(s["name"], []).append(s)
        by_id = {s["span_id"]: s for s in spans}
        (root,) = by_name["job"]
        assert root["node"] == ids["node-0"] and root["parent"] == ""
        assert {s["node"] for s in spans} >= {ids["node-0"], ids["node-2"]}
        # every node was asked to bid: each bid span is a child of the requester's job span
        bids = by_name["bid"]
        assert {b["node"] for b in bids} == set(ids.values())
        assert all(b["parent"] == root["span_id"] for b in bids)
        willing = {b["node"]: b["attrs"]["bacalhau.willing"] for b in bids}
        assert willing[ids["node-2"]] is True and willing[ids["node-1"]] is False
        # the execution, on node-2, descends from node-0's selection and job spans
        (ex,) = by_name["execution"]
        assert ex["node"] == ids["node-2"]
        assert ex["attrs"]["bacalhau.engine"] == "wasm" and ex["attrs"]["bacalhau.exit_code"] == 0
        up = _ancestors(ex, by_id)
        assert [a["name"] for a in up] == ["selection", "job"]
        assert all(a["node"] == ids["node-0"] for a in up)
        for name in ("input_fetch", "run", "result_storage"):
            for s in by_name[name]:
                assert s["node"] == ids["node-2"]
                assert ex in _ancestors(s, by_id), name
        fetch = by_name["input_fetch"][0]
        assert fetch["attrs"]["bacalhau.cid"] and fetch["attrs"]["bacalhau.bytes"] > 0
        assert ids["node-0"] in fetch["attrs"]["bacalhau.sources"].split(",")  # the module's
        assert by_name["run"][0]["attrs"]["bacalhau.exit_code"] == 0
        for name in ("submit", "bid_round", "selection", "verification", "get"):
            (s,) = by_name[name]
            assert s["node"] == ids["node-0"] and s["parent"] == root["span_id"], name
        assert by_name["verification"][0]["attrs"]["bacalhau.accepted"] == 1

        # bacalhauctl trace: the same spans, gathered by the requester from node-2
        doc = ctl.json("trace", job_id)
        assert doc["job_id"] == job_id and doc["missing_nodes"] == []
        names = {(s["name"], s["node_id"]) for s in doc["spans"]}
        assert ("execution", ids["node-2"]) in names and ("job", ids["node-0"]) in names
        assert {s["span_id"] for s in doc["spans"]} >= {s["span_id"] for s in spans} - {
            root["span_id"]  # ended once the job was final: kept too, but may race the get
        }
        text = ctl("trace", job_id)
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert lines[0].startswith(f"job {job_id}  trace {root['trace_id']}")
        assert any(" execution" in x and ids["node-2"][-8:] in x and "ms" in x for x in lines)

        # someone else may not read it
        other = Identity.generate()
        with Client(cluster[0].address, user_key=other) as c:
            try:
                c.get_trace(job_id)
            except Exception as e:  # ClientError: PERMISSION_DENIED
                assert "only its owner or an admin" in str(e)
            else:
                raise AssertionError("another user read the trace")
    finally:
        cluster.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_collector_down_is_logged_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    node = start_node(tmp_path / "n", args=("--otlp-endpoint", f"127.0.0.1:{_closed_port()}"))
    try:
        ctl = Ctl(node.address, tmp_path)
        for word in ("one", "two"):
            res = ctl("wasm", "run", str(ECHO_WASM), word)
            assert res.returncode == 0, res.stderr
        wait_for(lambda: "could not export" in node.log, 30, "the export failure logged")
        job_id = res.stdout.split()[0]
        doc = ctl.json("trace", job_id)  # still kept in memory
        assert {"job", "execution"} <= {s["name"] for s in doc["spans"]}
        assert node.proc.poll() is None
        assert node.log.count("could not export") == 1, node.log
        assert "Traceback" not in node.log
    finally:
        node.stop()


def test_tracing_off(tmp_path: Path) -> None:
    node = start_node(tmp_path / "n", args=("--tracing", "off"))
    try:
        ctl = Ctl(node.address, tmp_path)
        res = ctl("wasm", "run", str(ECHO_WASM), "untraced")
        assert res.returncode == 0, res.stderr
        job_id = res.stdout.split()[0]
        assert ctl.json("describe", job_id)  # the job is fine
        doc = ctl.json("trace", job_id)
        assert doc["spans"] == []
        assert "no spans" in ctl("trace", job_id).stdout
        assert json.loads(ctl("--output", "json", "trace", job_id).stdout)["job_id"] == job_id
    finally:
        node.stop()


def test_client_traceparent_continues_or_is_ignored(tmp_path: Path) -> None:
    node = start_node(tmp_path / "n")
    try:
        with Client(node.address) as c:
            module = c.add_file(ECHO_WASM).cid
            spec = types_pb2.JobSpec(
                engine="wasm",
                wasm=types_pb2.WasmSpec(module_cid=module, args=["x"]),
                outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
            )
            theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            traced = c.submit(spec, traceparent=theirs).job_id
            bogus = ("00-zz", theirs.upper(), "00-" + "0" * 32 + "-b7ad6b7169203331-01")
            untraced = [c.submit(spec, traceparent=b).job_id for b in bogus]
            for job_id in (traced, *untraced):
                assert c.wait(job_id).job.state == types_pb2.JOB_STATE_COMPLETED

            def root(job_id: str) -> Any:
                spans = [s for s in c.get_trace(job_id).spans if s.name == "job"]
                return spans[0] if spans else None

            mine = wait_for(lambda: root(traced), 10, "the job span")
            assert mine.trace_id == theirs[3:35] and mine.parent_span_id == theirs[36:52]
            assert c.get_job(traced).job.trace_parent.startswith(f"00-{theirs[3:35]}-")
            for job_id in untraced:  # a trace of its own
                other = wait_for(lambda job_id=job_id: root(job_id), 10, "the job span")
                assert other.parent_span_id == "" and other.trace_id != mine.trace_id
    finally:
        node.stop()


def test_spans_after_a_restart_join_the_jobs_trace(tmp_path: Path) -> None:
    a = start_node(tmp_path / "a", name="a", args=("--labels", "name=a"))
    b = start_node(tmp_path / "b", name="b", peers=(a.address,), args=("--labels", "name=b"))
    try:
        wait_connected([a, b])
        res = Ctl(a.address, tmp_path)("wasm", "run", "--labels", "name=b", str(ECHO_WASM), "r")
        assert res.returncode == 0, res.stderr
        job_id = res.stdout.split()[0]
        with Client(a.address) as c:
            trace_parent = c.get_job(job_id).job.trace_parent
        trace_id, root_id = trace_parent[3:35], trace_parent[36:52]
        a.stop()
        # a comes back on a new port: it dials b (of two nodes that remember each other only
        # the one with the smaller ID redials, so the test does not rely on that)
        a = start_node(a.data_dir, name="a", peers=(b.address,), args=("--labels", "name=a"))
        wait_connected([a, b], timeout=30)
        got = Ctl(a.address, tmp_path)("get", job_id, "--output-dir", str(tmp_path / "out"))
        assert got.returncode == 0, got.stderr
        ctl = Ctl(a.address, tmp_path)

        def traced() -> Any:  # the get span ends as its stream closes, maybe after the client
            doc = ctl.json("trace", job_id)
            return doc if any(s["name"] == "get" for s in doc["spans"]) else None

        doc = wait_for(traced, 10, "the get span in the job's trace")
        spans = {(s["name"], s["node_id"]): s for s in doc["spans"]}
        get = spans[("get", a.node_id)]  # made after the restart, from the stored context
        assert get["trace_id"] == trace_id and get["parent_span_id"] == root_id
        assert spans[("execution", b.node_id)]["trace_id"] == trace_id  # b kept its spans
        assert ("job", a.node_id) not in spans  # a's memory went with the restart
        assert {s["trace_id"] for s in doc["spans"]} == {trace_id}
    finally:
        a.stop()
        b.stop()
