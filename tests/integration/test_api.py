"""The ClientService as other languages see it: required fields, google.rpc.ErrorInfo details,
messages free of one client's advice, string CIDs, Logs by execution, ListPeers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bacalhau import callsign
from bacalhau._pb.bacalhau.v1 import client_pb2
from bacalhau.client import Client, ClientError, ClientStub, load_user_key
from bacalhau.content import dag
from bacalhau.content.cid import CID
from tests.integration.conftest import ECHO_WASM, Ctl, NodeProc, start_node, wait_connected


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProc, NodeProc]]:
    root = tmp_path_factory.mktemp("api")
    a = start_node(root / "a", name="a", args=("--queue-timeout", "1"))
    b = start_node(root / "b", name="b", peers=(a.address,))
    try:
        wait_connected([a, b])
        yield a, b
    finally:
        b.stop()
        a.stop()


@pytest.fixture(scope="module")
def stub(nodes: tuple[NodeProc, NodeProc], tmp_path_factory: pytest.TempPathFactory) -> Any:
    key = load_user_key(tmp_path_factory.mktemp("key") / "user.key")
    with grpc.insecure_channel(nodes[0].address) as ch:
        yield ClientStub(ch, key)


@pytest.fixture
def ctl(nodes: tuple[NodeProc, NodeProc], tmp_path: Path) -> Ctl:
    return Ctl(nodes[0].address, tmp_path)


def failure(call: Any) -> tuple[grpc.StatusCode, str, str, dict[str, str]]:
    """(code, message, ErrorInfo reason, metadata) of a call that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        result = call()
        if hasattr(result, "__iter__"):
            list(result)
    e = caught.value
    status = rpc_status.from_call(e)
    assert status is not None, f"no rich status: {e}"
    infos = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        assert detail.Unpack(info)
        infos.append(info)
    assert len(infos) == 1 and infos[0].domain == "bacalhau.v1"
    assert "bacalhauctl" not in e.details()  # the API gives no one client's advice
    return e.code(), e.details(), infos[0].reason, dict(infos[0].metadata)


def completed_job(ctl: Ctl) -> str:
    res = ctl("wasm", "run", str(ECHO_WASM), "hello", "api")
    assert res.returncode == 0, res.stderr
    return res.stdout.split()[0]


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("GetJob", client_pb2.GetJobRequest()),
        ("WatchEvents", client_pb2.WatchEventsRequest()),
        ("Logs", client_pb2.LogsRequest()),
        ("Cancel", client_pb2.CancelRequest()),
        ("GetResults", client_pb2.GetResultsRequest()),
        ("Lineage", client_pb2.LineageRequest()),
        ("Unpin", client_pb2.UnpinRequest()),
        ("Submit", client_pb2.SubmitRequest()),
    ],
)
def test_required_fields_are_invalid_argument_naming_them(stub: Any, method: str, request_: Any):
    code, message, reason, meta = failure(lambda: getattr(stub, method)(request_, timeout=10))
    field = meta["field"]
    assert code == grpc.StatusCode.INVALID_ARGUMENT and reason == "FIELD_REQUIRED"
    assert message.startswith(f"{field} is required")
    assert field in {"job_id", "cid", "spec"}


def test_errors_carry_reasons_and_metadata(stub: Any, ctl: Ctl):
    code, message, reason, meta = failure(
        lambda: stub.GetJob(client_pb2.GetJobRequest(job_id="j-nope"), timeout=10)
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
    assert message == "job j-nope not found on this node or on its 1 connected peer"
    code, message, reason, meta = failure(
        lambda: stub.GetResults(client_pb2.GetResultsRequest(job_id="j-1", cid="bafy"), timeout=10)
    )
    assert (code, reason, meta) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        {"field": "cid"},
    )
    bad = client_pb2.GetResultsRequest(cid="QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
                                       have_cids=["nonsense"])  # fmt: skip
    code, message, reason, meta = failure(lambda: stub.GetResults(bad, timeout=10))
    assert reason == "INVALID_FIELD" and meta == {"field": "have_cids[0]"}
    job_id = completed_job(ctl)
    other = ClientStub(grpc.insecure_channel(ctl.api), load_user_key(ctl.cwd / "other.key"))
    code, message, reason, _ = failure(
        lambda: other.Cancel(client_pb2.CancelRequest(job_id=job_id), timeout=10)
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert "--user-key" not in message
    # Unsigned: refused at the door, with the same kind of details.
    raw = grpc.insecure_channel(ctl.api).unary_unary(
        "/bacalhau.v1.ClientService/NodeInfo",
        request_serializer=client_pb2.NodeInfoRequest.SerializeToString,
        response_deserializer=client_pb2.NodeInfoResponse.FromString,
    )
    code, message, reason, _ = failure(lambda: raw(client_pb2.NodeInfoRequest(), timeout=10))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CALL_REFUSED")


def test_results_of_a_job_that_never_ran_say_so(stub: Any, ctl: Ctl):
    res = ctl("wasm", "run", "--labels", "nobody=here", str(ECHO_WASM))
    assert res.returncode != 0
    job_id = res.stdout.split()[0]
    code, message, reason, meta = failure(
        lambda: stub.GetResults(client_pb2.GetResultsRequest(job_id=job_id), timeout=10)
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_HAS_NO_RESULT")
    assert meta == {"job_id": job_id, "job_state": "failed"}
    assert message.startswith(f"job {job_id} failed without a result: ")
    assert "wait" not in message
    # bacalhauctl adds its own advice, from the reason.
    got = ctl("get", job_id, "--output-dir", str(ctl.cwd / "out"))
    line = got.one_line_error()
    assert "failed without a result" in line and f"'bacalhauctl describe {job_id}'" in line


def test_results_name_blocks_by_string_cids_and_skip_what_the_client_has(stub: Any, ctl: Ctl):
    job_id = completed_job(ctl)
    chunks = list(stub.GetResults(client_pb2.GetResultsRequest(job_id=job_id), timeout=30))
    root = chunks[0].root_cid
    blocks = {c.block_cid: c.data for c in chunks[1:]}
    for c in chunks[1:]:
        assert bytes(CID.parse(c.block_cid)) == c.cid  # the deprecated field still filled
        dag.check_block(c.cid, c.data)
    assert root in blocks and len(blocks) >= 4  # the folder, stdout, stderr, exitCode, ...
    have = [cid for cid in blocks if cid != root]
    again = list(stub.GetResults(client_pb2.GetResultsRequest(job_id=job_id, have_cids=have)))
    assert [c.block_cid for c in again[1:]] == [root]
    old = list(stub.GetResults(client_pb2.GetResultsRequest(
        job_id=job_id, have=[bytes(CID.parse(c)) for c in have])))  # fmt: skip
    assert [c.block_cid for c in old[1:]] == [root]


def test_logs_of_one_execution(stub: Any, ctl: Ctl):
    job_id = completed_job(ctl)
    doc = ctl.json("describe", job_id)
    (ex,) = [e for e in doc["executions"] if e.get("result_cid")]
    req = client_pb2.LogsRequest(job_id=job_id, execution_id=ex["id"])
    chunks = list(stub.Logs(req, timeout=10))
    assert b"".join(c.data for c in chunks if c.stream == 1) == b"hello api\n"
    assert {c.execution_id for c in chunks} == {ex["id"]}
    assert ctl("logs", job_id, "--execution", ex["id"]).stdout == "hello api\n"
    bad = client_pb2.LogsRequest(job_id=job_id, execution_id="e-nope")
    code, message, reason, _ = failure(lambda: stub.Logs(bad, timeout=10))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert message == f"job {job_id} has no execution e-nope"


def test_list_peers(nodes: tuple[NodeProc, NodeProc], tmp_path: Path):
    a, b = nodes
    with Client(a.address, user_key=tmp_path / "k") as c:
        peers = c.list_peers().peers
        assert [p.node_id for p in peers] == [b.node_id]
        (p,) = peers
        assert p.alive and p.addresses and p.engines
        assert p.connected == p.alive and p.address == p.addresses[0]  # deprecated, still set
        assert len(c.list_peers(limit=1).peers) == 1
        assert [p.node_id for p in c.list_peers(alive_only=True).peers] == [b.node_id]
        with pytest.raises(ClientError) as caught:
            c.get_job("")
        assert caught.value.reason == "FIELD_REQUIRED"
        assert caught.value.metadata == {"field": "job_id"}
    # ListPeers is signed like every call.
    key = load_user_key(tmp_path / "k")
    md = callsign.sign(key, "/bacalhau.v1.ClientService/ListPeers", b"")
    with grpc.insecure_channel(a.address) as ch:
        call = ch.unary_unary("/bacalhau.v1.ClientService/ListPeers")
        reply = client_pb2.ListPeersResponse.FromString(call(b"", metadata=md, timeout=10))
        assert [p.node_id for p in reply.peers] == [b.node_id]
        with pytest.raises(grpc.RpcError) as refused:
            call(b"", metadata=md, timeout=10)  # the same signature again: a replay
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
