"""Block exchange: PeerService.GetBlocks on both ends, every block checked against its CID."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from bacalhau._pb.bacalhau.v1 import peer_pb2, peer_pb2_grpc
from bacalhau.blockstore import Blockstore
from bacalhau.content import dag
from bacalhau.content.cid import CID
from bacalhau.content.dag import check_block
from bacalhau.content.errors import ContentError, NotFound

if TYPE_CHECKING:
    from bacalhau.network.peers import Network

_BATCH_BYTES = 4 << 20


def _blocks(store: Blockstore, cids: list[bytes], recursive: bool) -> Iterator[tuple[bytes, bytes]]:
    for cid in cids:
        if recursive:
            yield from dag.walk(store.get, cid)
        else:
            yield cid, store.get(cid)


async def serve_blocks(
    store: Blockstore, cids: list[bytes], *, recursive: bool
) -> AsyncIterator[Any]:
    """Yield `peer_pb2.Block`s of `cids` (with `recursive`, of their DAGs, parents first);
    walking and reading happen in a worker thread. Raises NotFound for a missing block."""
    it = _blocks(store, cids, recursive)

    def next_batch() -> list[tuple[bytes, bytes]]:
        out, size = [], 0
        for cid, data in it:
            out.append((cid, data))
            size += len(data)
            if size >= _BATCH_BYTES:
                break
        return out

    while batch := await asyncio.to_thread(next_batch):
        for cid, data in batch:
            yield peer_pb2.Block(cid=cid, data=data)


async def fetch_blocks(
    channel: grpc.aio.Channel, cids: list[bytes], *, recursive: bool, timeout: float = 60.0
) -> list[tuple[bytes, bytes]]:
    """Blocks from a peer, each verified. Raises CorruptData, NotFound, or grpc.RpcError."""
    stub = peer_pb2_grpc.PeerServiceStub(channel)
    out: list[tuple[bytes, bytes]] = []
    call = stub.GetBlocks(
        peer_pb2.GetBlocksRequest(cids=cids, recursive=recursive), timeout=timeout
    )
    try:
        async for block in call:
            check_block(block.cid, block.data)
            out.append((block.cid, block.data))
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            raise NotFound(e.details() or "block not found on the peer") from e
        raise
    return out


def missing(store: Blockstore, root: bytes) -> bool:
    """True if any block of the DAG under `root` is not stored locally."""
    try:
        for _ in dag.walk(store.get, root):
            pass
    except (NotFound, ContentError):
        return True
    return False


def rpc_error_line(e: BaseException) -> str:
    """A gRPC or other error as one line."""
    if isinstance(e, grpc.aio.AioRpcError):
        details = (e.details() or "").splitlines()
        return f"{e.code().name.lower()}: {details[0] if details else 'no details'}"
    lines = str(e).splitlines()
    return lines[0] if lines else type(e).__name__


async def fetch_dag(
    net: Network,
    store: Blockstore,
    root: bytes,
    holders: list[str],
    *,
    patience_s: float = 0.0,
) -> None:
    """Make the DAG under `root` local, asking `holders` first, then every connected peer.

    Keeps trying (backing off) for `patience_s` seconds while no peer can send it, so a
    holder that restarts or reconnects meanwhile still serves it. Raises NotFound with each
    peer's answer once out of patience.
    """
    if not await asyncio.to_thread(missing, store, root):
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience_s
    backoff = 0.1
    while True:
        errors = []
        # Waiting only helps while a holder is away; if they all answered "not here", stop.
        holders_answered = True
        for node_id in dict.fromkeys([*holders, *net.connected()]):
            channel = net.channel_to(node_id) if net.is_connected(node_id) else None
            if channel is None or node_id == net.node_id:
                errors.append(f"{node_id[-8:]}: not connected")
                holders_answered = holders_answered and node_id not in holders
                continue
            try:
                blocks = await fetch_blocks(channel, [root], recursive=True)
            except NotFound as e:
                errors.append(f"{node_id[-8:]}: {rpc_error_line(e)}")
                continue
            except (grpc.RpcError, ContentError) as e:
                errors.append(f"{node_id[-8:]}: {rpc_error_line(e)}")
                holders_answered = holders_answered and node_id not in holders
                continue
            await asyncio.to_thread(store_blocks, store, blocks, root)
            return
        if loop.time() >= deadline or holders_answered:
            raise NotFound(
                f"{CID.from_bytes(root)} is not on this node and no peer could send it",
                hint="; ".join(errors) or "no peer is connected",
            )
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 2.0)


def store_blocks(store: Blockstore, blocks: list[tuple[bytes, bytes]], pin: bytes | None) -> None:
    """Write `blocks` in one batch (pinning `pin`); blocking, run it in a thread."""
    with store.batch() as batch:
        for cid, data in blocks:
            batch.put(cid, data)
        if pin is not None:
            batch.pin(pin)
