"""Result replicas, a peer's side: a requester asks this node to keep a copy of an accepted
result of one of its jobs (`Deal.result_replicas`), so the result outlives both the node that
made it and the requester.

Who may ask: only the job's requester, which its ID names (`bacalhau.models.requester_tag`),
so a peer cannot have this node copy results of jobs that are not its own. What it may cost:
a copy is at most `max_bytes` (`serve --max-result-size`), and the copies kept for one
requester count as that node's uploads here, within `serve --upload-quota`; one that would go
over is refused, saying so, and nothing of it kept. The copy is fetched from the holders the
requester names and every block verified; its root is pinned as an upload of the requester's
node ID (an admin's `bacalhauctl unpin CID` removes it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bacalhau._pb.bacalhau.v1 import peer_pb2
from bacalhau.blockstore import UPLOAD, Blockstore
from bacalhau.content import dag
from bacalhau.content.cid import CID
from bacalhau.errors import BacalhauError
from bacalhau.models import node_tag, requester_tag
from bacalhau.network import DagFetcher, Network
from bacalhau.network.dispatch import MayFrom
from bacalhau.service.data import DataService

log = logging.getLogger(__name__)

MAX_HOLDERS = 8  # holders a request may name
MAX_AT_ONCE = 4  # copies made at once for all requesters


def _its_requester(sender: str, body: Any) -> bool:
    return requester_tag(body.job_id) == node_tag(sender) and len(body.holders) <= MAX_HOLDERS


class Replicas:
    """Keeps copies of other requesters' results when they ask."""

    def __init__(
        self,
        *,
        network: Network,
        blockstore: Blockstore,
        dags: DagFetcher,
        data: DataService,
        max_bytes: int,
    ) -> None:
        self._net = network
        self._blocks = blockstore
        self._dags = dags
        self._data = data
        self._max_bytes = max_bytes
        self._gate = asyncio.Semaphore(MAX_AT_ONCE)
        self._tasks: set[asyncio.Task[None]] = set()
        network.dispatcher.register(
            "replicate_result",
            self._on_replicate,
            MayFrom("the requester of the job (its ID's tag)", _its_requester),
        )

    def _on_replicate(self, sender: str, ask: Any) -> None:
        task = asyncio.ensure_future(self._replicate(sender, ask))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replicate(self, requester: str, ask: Any) -> None:
        answer = peer_pb2.ResultReplicated(
            job_id=ask.job_id, execution_id=ask.execution_id, result_cid=ask.result_cid, ok=True
        )
        try:
            async with self._gate:
                await self.keep(requester, ask.result_cid, list(ask.holders))
        except BacalhauError as e:
            answer.ok, answer.message = False, e.message
        except Exception as e:  # a peer's request must not take the node down
            log.exception("keeping a copy of result %s failed", ask.result_cid)
            answer.ok, answer.message = False, f"{type(e).__name__}: {e}"
        self._net.send(requester, result_replicated=answer)

    async def keep(self, requester: str, cid_text: str, holders: list[str]) -> None:
        """Copy the result DAG `cid_text` here from `holders`, verified, and pin it as an
        upload of `requester`. Raises BacalhauError saying why not."""
        root = bytes(CID.parse(cid_text))
        quota = self._data.quota
        room = self._max_bytes  # 0: any size
        if quota:
            left = quota - await asyncio.to_thread(self._data.uploaded_bytes, requester)
            if left <= 0:
                raise BacalhauError(f"the copies kept here for node {requester} fill its quota")
            room = min(room, left) if room else left
        blockstore = self._blocks
        with blockstore.hold(root):
            await self._dags.fetch(root, holders, max_bytes=room)
            size = dag.declared_size(root, blockstore.get(root))
            await self._data.record(requester, cid_text, size)
            await asyncio.to_thread(blockstore.pin, root, UPLOAD)
