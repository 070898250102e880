"""The `ipfs` storage provider: inputs by CID, from the blockstore or fetched from peers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bacalhau.blockstore import FETCHED, INPUT, Blockstore
from bacalhau.content import dag
from bacalhau.content.cid import CID
from bacalhau.data.base import InputRequest, Resolved

# fetch(root CID, holders to ask first): make the DAG local, or raise NotFound naming it
FetchDag = Callable[[bytes, list[str]], Awaitable[None]]


class IpfsProvider:
    """Inputs by CID: nothing to do if the DAG is stored here, else `fetch` it from peers."""

    name = "ipfs"

    def __init__(self, blocks: Blockstore, fetch: FetchDag) -> None:
        self._blocks = blocks
        self._fetch = fetch

    async def resolve(self, req: InputRequest) -> Resolved:
        """See `StorageProvider.resolve`. Raises InvalidCID, NotFound, CorruptData."""
        text = str(CID.parse(req.spec.cid))
        root = bytes(CID.parse(text))
        await self._fetch(root, [req.requester] if req.requester else [])
        return Resolved(text, await asyncio.to_thread(self._pin_and_size, root))

    def _pin_and_size(self, root: bytes) -> int:
        # Pinned as an input (the input cache unpins it on eviction); a pin the fetch made
        # is taken over.
        if self._blocks.pin_tags(root) & {INPUT, FETCHED} != {INPUT}:
            with self._blocks.batch() as batch:
                batch.pin(root, INPUT)
                batch.unpin(root, FETCHED)
        node = dag.decode(root, self._blocks.get(root, verify=False))
        return node.filesize or sum(link.tsize for link in node.links)
