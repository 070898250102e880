"""GetBlocks is open to anyone who can reach the port: a request names at most MAX_WANT CIDs,
each once, so one request cannot make a node send the same block 200,000 times."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bacalhau._pb.bacalhau.v1 import peer_pb2, peer_pb2_grpc
from bacalhau.client import Client
from bacalhau.content.cid import CID
from bacalhau.network.blocks import MAX_WANT
from tests.integration.conftest import NodeProc, start_node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    n = start_node(tmp_path_factory.mktemp("blocks"), args=("--engines", "noop"))
    yield n
    n.stop()


def get_blocks(node: NodeProc, cids: list[bytes]) -> list[bytes]:
    with grpc.insecure_channel(node.address) as ch:
        stub = peer_pb2_grpc.PeerServiceStub(ch)
        return [b.cid for b in stub.GetBlocks(peer_pb2.GetBlocksRequest(cids=cids), timeout=30)]


def test_repeated_and_too_many_cids_are_refused(node: NodeProc, tmp_path: Path) -> None:
    data = tmp_path / "one.txt"
    data.write_bytes(b"a block\n")
    with Client(node.address) as c:
        cid = bytes(CID.parse(c.add_file(data).cid))
    assert get_blocks(node, [cid]) == [cid]  # served
    for cids, says in (
        ([cid] * 200_000, f"200000 CIDs, more than {MAX_WANT}"),
        ([cid, cid], "names a CID more than once"),
        ([cid[:-1] + bytes([i % 256]) + bytes([i // 256]) for i in range(MAX_WANT + 1)],
         f"more than {MAX_WANT}"),
        ([], "names no CID"),
    ):  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            get_blocks(node, cids)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
        assert says in (err.value.details() or "")
    assert get_blocks(node, [cid]) == [cid]  # still serving
