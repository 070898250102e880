"""The `ipfs` storage provider: inputs by CID, from the blockstore or fetched from peers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bacalhau.blockstore import FETCHED, INPUT, Blockstore
from bacalhau.content import dag
from bacalhau.content.cid import CID
from bacalhau.content.errors import NotFound
from bacalhau.data.base import InputRequest, Resolved

# fetch(root CID, holders to ask first): make the DAG local, or raise NotFound naming it
FetchDag = Callable[[bytes, list[str]], Awaitable[None]]


def nobody_has(cid_text: str, e: NotFound) -> NotFound:
    """The error for an input whose root block no node could send (`e`, from the fetch,
    which gives up at once when every peer answered "not here"): in words a user acts on,
    naming the CID, with each peer's answer after them."""
    answers = []
    for answer in (e.hint or "").split("; "):
        peer, _, said = answer.partition(": ")
        # a peer's "not in the local blockstore: add the data first ..." is its own advice
        answers.append(f"{peer}: not there" if "not in the local blockstore" in said else answer)
    return NotFound(
        f"input {cid_text} is on no node: not on this node, and none of its peers has it",
        hint="upload it to a node first (AddData; 'bacalhauctl add' does), then run the job "
        "again (peers asked: " + ("; ".join(a for a in answers if a) or "none connected") + ")",
    )


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
        try:
            await self._fetch(root, [req.requester] if req.requester else [])
        except NotFound as e:
            if await asyncio.to_thread(self._blocks.has, root):
                raise  # a source had the root: the message names the block that is missing
            raise nobody_has(text, e) from None
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
