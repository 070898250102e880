"""One node's life: graceful stop, restart with its state, metrics, health, reflection, peers."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import grpc
import lmdb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bacalhau.datastore.base import SCHEMA_VERSION
from tests._wait import wait_for
from tests._web import QuietHandler, serve, stop
from tests.integration.conftest import ECHO_WASM, Ctl, start_node, wait_connected


def test_sigterm_stops_gracefully_and_state_survives(tmp_path: Path):
    node = start_node(tmp_path / "a", args=("--metrics-port", "0"))
    try:
        ctl = Ctl(node.address, tmp_path)
        res = ctl("wasm", "run", str(ECHO_WASM), "kept")
        assert res.returncode == 0, res.stderr
        job_id = res.stdout.split()[0]

        port = int(wait_for(lambda: re.search(r"metrics on http://[^:]+:(\d+)", node.log), 10)[1])
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = body.decode()
        assert 'bacalhau_jobs{state="completed"} 1' in text
        assert "bacalhau_jobs_submitted_total 1" in text
    finally:
        assert node.stop(signal.SIGTERM) == 0, node.log
    assert not (tmp_path / "a" / "api.addr").exists()

    again = start_node(tmp_path / "a")
    try:
        assert again.node_id == node.node_id  # the key is kept in the data dir
        doc = Ctl(again.address, tmp_path).json("describe", job_id)
        assert doc["state"] == "completed"
        out = tmp_path / "out"
        assert Ctl(again.address, tmp_path)("get", job_id, "--output-dir", str(out)).returncode == 0
        assert (out / "stdout").read_text() == "kept\n"
    finally:
        again.stop()


def test_health_and_reflection(tmp_path: Path):
    node = start_node(tmp_path / "h")
    try:
        with grpc.insecure_channel(node.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for service in ("", "bacalhau.v1.ClientService", "bacalhau.v1.PeerService"):
                resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert resp.status == health_pb2.HealthCheckResponse.SERVING
            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            req = reflection_pb2.ServerReflectionRequest(list_services="")
            (resp,) = list(refl.ServerReflectionInfo(iter([req]), timeout=5))
            names = {s.name for s in resp.list_services_response.service}
            assert {"bacalhau.v1.ClientService", "bacalhau.v1.PeerService",
                    "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                    "grpc.reflection.v1alpha.ServerReflection"} <= names  # fmt: skip
            # v1 is the same protocol renamed (same fields and numbers): v1alpha's messages
            # speak it, as a v1 client's would.
            v1 = ch.stream_stream(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            asks = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="bacalhau.v1.ClientService"
                ),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="grpc.reflection.v1.ServerReflection"
                ),
            ]
            listed, client_file, v1_file = list(v1(iter(asks), timeout=5))
            assert names == {s.name for s in listed.list_services_response.service}
            protos = client_file.file_descriptor_response.file_descriptor_proto
            assert any(b"ListPeers" in p for p in protos)
            assert v1_file.file_descriptor_response.file_descriptor_proto, v1_file
    finally:
        node.stop()


def test_peer_reconnects_after_restart(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = start_node(tmp_path / "a", name="a", args=("--port", str(port)))
    b = start_node(tmp_path / "b", name="b", peers=(a.address,))
    try:
        wait_connected([a, b])
        a.stop(signal.SIGKILL)
        wait_for(lambda: not any(p.connected for p in b.info().peers), 30, "b to notice")
        a = start_node(tmp_path / "a", name="a", args=("--port", str(port)))
        wait_connected([a, b], timeout=30)
    finally:
        a.stop()
        b.stop()


def _running_on(ctl: Ctl, job_id: str) -> str:
    doc = ctl.json("describe", job_id)
    return next((e["node_id"] for e in doc["executions"] if e["state"] == "running"), "")


def test_lost_node_fails_its_execution_when_no_other_can_run_it(tmp_path: Path):
    # a runs no wasm itself, so the job must go to b, and nowhere once b is gone
    a = start_node(tmp_path / "a", name="a", args=("--engines", "noop", "--node-lost-timeout", "1"))
    b = start_node(tmp_path / "b", name="b", peers=(a.address,))
    try:
        wait_connected([a, b])
        ctl = Ctl(a.address, tmp_path)
        res = ctl("wasm", "run", "--no-wait", str(ECHO_WASM), "spin")
        job_id = res.stdout.split()[0]
        wait_for(lambda: _running_on(ctl, job_id), 30, "the job to run on b")
        b.stop(signal.SIGKILL)
        doc = wait_for(
            lambda: (d := ctl.json("describe", job_id))["state"] == "failed" and d, 30, "failure"
        )
        assert "no node can run this job" in doc["message"]
        assert "engine 'wasm' is not enabled" in doc["message"]
        (ex,) = doc["executions"]
        assert ex["node_id"] == b.node_id and ex["state"] == "failed"
        assert "disconnected and did not come back" in ex["message"]
        assert "JobRequeued" in [e["type"] for e in doc["events"]]
    finally:
        a.stop()
        b.stop()


def test_a_lost_nodes_execution_is_run_elsewhere(tmp_path: Path):
    a = start_node(tmp_path / "a", name="a", args=("--engines", "noop", "--node-lost-timeout", "1"))
    b = start_node(tmp_path / "b", name="b", peers=(a.address,), args=("--allow-private-urls",))
    c = start_node(tmp_path / "c", name="c", peers=(a.address,), args=("--allow-private-urls",))
    nodes = {b.node_id: b, c.node_id: c}
    # The job's URL input is held back until the first node is gone, so it cannot finish first.
    gate = threading.Event()

    class Gated(QuietHandler):
        def do_GET(self) -> None:
            gate.wait(60)
            self._send(200, b"data")

    server, base = serve(Gated)
    try:
        wait_connected([a, b, c])
        ctl = Ctl(a.address, tmp_path)
        res = ctl("wasm", "run", "--no-wait", "-u", f"{base}/in.txt", str(ECHO_WASM), "long", "job")
        job_id = res.stdout.split()[0]
        first = wait_for(lambda: _running_on(ctl, job_id), 30, "the job to start")
        nodes.pop(first).stop(signal.SIGKILL)
        gate.set()
        (other,) = nodes.values()

        # a notices within seconds that the node stopped answering
        def lost() -> bool:
            peers = {p["id"]: p for p in ctl.json("peers")}
            return not peers[first]["alive"]

        wait_for(lost, 15, "the killed node to be shown not alive")
        doc = wait_for(
            lambda: (d := ctl.json("describe", job_id))["state"] == "completed" and d,
            60,
            "the job to complete elsewhere",
        )
        published = [e for e in doc["executions"] if e["state"] == "published"]
        assert [e["node_id"] for e in published] == [other.node_id]
        assert ctl("logs", job_id).stdout == "long job\n"
    finally:
        gate.set()
        stop(server)
        a.stop()
        b.stop()
        c.stop()


def _serve_once(data_dir: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "bacalhau.cli.daemon", "serve", "--data-dir", str(data_dir),
           "--port", "0"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_bad_data_dirs_are_refused_at_start_with_one_line(tmp_path: Path):
    foreign = tmp_path / "foreign"
    (foreign / "datastore").mkdir(parents=True)
    env = lmdb.open(str(foreign / "datastore"))
    with env.begin(write=True) as txn:
        txn.put(b"hello", b"world")
    env.close()
    newer = tmp_path / "newer"
    (newer / "datastore").mkdir(parents=True)
    env = lmdb.open(str(newer / "datastore"), max_dbs=4)
    meta = env.open_db(b"meta")
    with env.begin(write=True, db=meta) as txn:
        txn.put(b"schema_version", (SCHEMA_VERSION + 1).to_bytes(4, "big"))
    env.close()
    corrupt = tmp_path / "corrupt"
    (corrupt / "datastore").mkdir(parents=True)
    (corrupt / "datastore" / "data.mdb").write_bytes(b"\x17" * 20000)
    for data_dir, words in (
        (foreign, "something else"),
        (newer, "newer bacalhaud"),
        (corrupt, "datastore"),
    ):
        proc = _serve_once(data_dir)
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
