"""A peer that sends blocks is not trusted: what it sends must be exactly the blocks asked for,
in order, each hashing to its CID. A peer that lies (another block, a block out of order, too
few or too many, a flipped byte, a malformed message) gets CorruptData, and the fetch takes the
blocks from an honest peer instead; what is stored is only ever verified blocks.

The honest peer serves a real blockstore through `add_peer_service` and `serve_blocks`, as a
node does; the liar is a gRPC server of its own that answers GetBlocks with crafted messages."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from bacalhau._pb.bacalhau.v1 import peer_pb2, peer_pb2_grpc
from bacalhau.blockstore import Blockstore, BlockstoreError
from bacalhau.content import ImportOptions, dag
from bacalhau.content.errors import CorruptData, NotFound, TooLarge
from bacalhau.content.importer import Importer
from bacalhau.network.blocks import (
    WireBlock,
    _fetch_levels,
    _head,
    add_peer_service,
    check_want,
    fetch_blocks,
    serve_blocks,
)

MIB = 1 << 20
LIES = ("other", "swap", "short", "extra", "corrupt", "malformed", "empty", "batch")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, bytes]:
    """A blockstore holding a 3 MiB file (12 leaves under one root): (store, root, bytes)."""
    root = tmp_path_factory.mktemp("source")
    data = random.Random(20).randbytes(3 * MIB)
    (root / "f.bin").write_bytes(data)
    with (
        Blockstore(root / "store") as store,
        store.batch() as batch,
        Importer(ImportOptions(), batch, workers=1) as imp,
    ):
        cid = imp.add_path(root / "f.bin").cid
    return root / "store", bytes(cid), data


class Honest(peer_pb2_grpc.PeerServiceServicer):  # type: ignore[misc]
    """GetBlocks as a node serves it (the other methods are not implemented)."""

    def __init__(self, store: Blockstore) -> None:
        self.store = store

    async def GetBlocks(self, request: Any, context: Any) -> AsyncIterator[Any]:
        check_want(list(request.cids))
        async for block in serve_blocks(self.store, list(request.cids), recursive=False):
            yield block


def lie(how: str, store: Blockstore, root: bytes) -> Callable[[Any, Any], AsyncIterator[bytes]]:
    async def get_blocks(request: Any, context: Any) -> AsyncIterator[bytes]:
        cids = list(request.cids)
        blocks = [WireBlock.of(c, store.get(c)) for c in cids]
        if how == "other":  # a real block of the DAG, but not one asked for
            spare = next(c for c, _ in dag.walk(store.get, root) if c not in cids)
            blocks[-1] = WireBlock.of(spare, store.get(spare))
        elif how == "swap" and len(blocks) > 1:
            blocks[0], blocks[1] = blocks[1], blocks[0]
        elif how == "swap":  # one block asked: send it twice
            blocks.append(blocks[0])
        elif how == "short":
            blocks = blocks[:-1]
        elif how == "extra":
            blocks.append(blocks[0])
        elif how == "corrupt":
            data = bytearray(blocks[-1].data)
            data[len(data) // 2] ^= 1
            blocks[-1] = WireBlock.of(blocks[-1].cid, bytes(data))
        if how == "batch":  # one well-formed batch: CIDs swapped, or a block cut by a byte
            cids = [b.cid for b in blocks]
            datas = [b.data for b in blocks]
            if len(cids) > 1:
                cids[0], cids[-1] = cids[-1], cids[0]
            else:
                datas[0] = datas[0][:-1]
            sizes = [len(d) for d in datas]
            blocks = [WireBlock(cids, _head(cids, sizes) + b"".join(datas), sizes)]
        for block in blocks:
            yield block.message
        if how == "malformed":
            yield b"\x0a\x05ab"
        elif how == "empty":
            yield b""

    return get_blocks


async def serve(handler: Any, raw: bool) -> tuple[grpc.aio.Server, grpc.aio.Channel]:
    server = grpc.aio.server()
    if raw:
        method = grpc.unary_stream_rpc_method_handler(
            handler, request_deserializer=peer_pb2.GetBlocksRequest.FromString
        )
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "bacalhau.v1.PeerService", {"GetBlocks": method}
                ),
            )
        )
    else:
        add_peer_service(handler, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


def run(source: tuple[Path, bytes, bytes], how: str, body: Callable[..., Awaitable[None]]) -> None:
    async def main() -> None:
        with Blockstore(source[0]) as store:
            honest, honest_ch = await serve(Honest(store), raw=False)
            liar, liar_ch = await serve(lie(how, store, source[1]), raw=True)
            try:
                await body(store, honest_ch, liar_ch)
            finally:
                for ch in (honest_ch, liar_ch):
                    await ch.close()
                for server in (honest, liar):
                    await server.stop(None)

    asyncio.run(main())


@pytest.mark.parametrize("how", LIES)
def test_a_lying_peer_gets_corrupt_data(source: tuple[Path, bytes, bytes], how: str) -> None:
    _, root, _ = source

    async def body(store: Blockstore, honest: grpc.aio.Channel, liar: grpc.aio.Channel) -> None:
        leaves = [link.cid for link in dag.decode(root, store.get(root)).links]
        for want in (leaves[:5], [root]):
            honest_blocks = await fetch_blocks(honest, want, recursive=False)
            assert [c for c, _ in honest_blocks] == want
            assert all(d == store.get(c) for c, d in honest_blocks)
            with pytest.raises(CorruptData):
                await fetch_blocks(liar, want, recursive=False)

    run(source, how, body)


@pytest.mark.parametrize("how", ("other", "corrupt", "short"))
def test_a_fetch_takes_what_a_liar_sent_wrong_from_an_honest_peer(
    source: tuple[Path, bytes, bytes], tmp_path: Path, how: str
) -> None:
    _, root, data = source

    async def body(store: Blockstore, honest: grpc.aio.Channel, liar: grpc.aio.Channel) -> None:
        errors: list[str] = []
        with Blockstore(tmp_path / "dest") as dest:
            # The liar's workers start first, so it is asked for the root and then a batch.
            await _fetch_levels(dest, root, [("node-liar0001", liar), ("node-good0001", honest)],
                                None, errors)  # fmt: skip
            assert b"".join(dag.cat(dest.get, root)) == data
            assert dest.is_pinned(root)
        assert errors and all(e.startswith("liar0001: ") for e in errors), errors

    run(source, how, body)


def test_a_liar_alone_stores_nothing_unverified(
    source: tuple[Path, bytes, bytes], tmp_path: Path
) -> None:
    _, root, _ = source

    async def body(store: Blockstore, honest: grpc.aio.Channel, liar: grpc.aio.Channel) -> None:
        with Blockstore(tmp_path / "dest") as dest:
            dest.put(root, store.get(root))  # the root is here: the leaves are fetched
            errors: list[str] = []
            with pytest.raises(NotFound) as err:
                await _fetch_levels(dest, root, [("node-liar0001", liar)], None, errors)
            assert "does not match its CID" in (err.value.hint or "")
            assert dest.verify().corrupt == []
            assert not dest.is_pinned(root)

    run(source, "corrupt", body)


class Older(peer_pb2_grpc.PeerServiceServicer):  # type: ignore[misc]
    """GetBlocks as a node that knows no batches serves it: a peer_pb2.Block a block."""

    def __init__(self, store: Blockstore) -> None:
        self.store = store

    async def GetBlocks(self, request: Any, context: Any) -> AsyncIterator[Any]:
        for cid in request.cids:
            yield peer_pb2.Block(cid=cid, data=self.store.get(cid))


def test_an_older_node_and_a_stock_client_are_understood(
    source: tuple[Path, bytes, bytes], tmp_path: Path
) -> None:
    _, root, data = source

    async def main() -> None:
        with Blockstore(source[0]) as store:
            older = grpc.aio.server()
            peer_pb2_grpc.add_PeerServiceServicer_to_server(Older(store), older)
            port = older.add_insecure_port("127.0.0.1:0")
            await older.start()
            honest, honest_ch = await serve(Honest(store), raw=False)
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                    with Blockstore(tmp_path / "dest") as dest:
                        await _fetch_levels(dest, root, [("node-old00001", ch)], None, [])
                        assert b"".join(dag.cat(dest.get, root)) == data
                # A client that knows no batches gets one peer_pb2.Block a block.
                leaves = [link.cid for link in dag.decode(root, store.get(root)).links]
                stub = peer_pb2_grpc.PeerServiceStub(honest_ch)
                got = [
                    (b.cid, b.data)
                    async for b in stub.GetBlocks(peer_pb2.GetBlocksRequest(cids=leaves))
                ]
                assert got == [(c, store.get(c)) for c in leaves]
            finally:
                await honest_ch.close()
                await honest.stop(None)
                await older.stop(None)

    asyncio.run(main())


def test_a_fetch_past_its_limit_or_onto_a_full_disk_fails_with_one_error(
    source: tuple[Path, bytes, bytes], tmp_path: Path
) -> None:
    _, root, _ = source
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=False
        ).returncode
        == 0
    )

    async def body(store: Blockstore, honest: grpc.aio.Channel, liar: grpc.aio.Channel) -> None:
        with Blockstore(tmp_path / "dest") as dest:
            with pytest.raises(TooLarge, match="by its root"):
                await _fetch_levels(dest, root, [("node-good0001", honest)], None, [], 1 << 20)
            assert not dest.is_pinned(root)
        if not mounted:
            return
        with Blockstore(mnt / "dest") as dest:
            with pytest.raises(BlockstoreError, match="nothing was stored"):
                await _fetch_levels(dest, root, [("node-good0001", honest)], None, [])
            assert not dest.is_pinned(root) and dest.verify().corrupt == []
            dest.put(root, store.get(root))  # still writable

    try:
        run(source, "corrupt", body)
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)
