"""Results and blocks: which execution's result stands for a job, fetching a result DAG onto
this node, reading its files, and serving blocks to clients and peers."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from bacalhau.blockstore import Blockstore
from bacalhau.content import dag
from bacalhau.content.cid import CID, RAW
from bacalhau.content.errors import NotFound
from bacalhau.models import ExecutionState, JobState
from bacalhau.network import DagFetcher, serve_blocks
from bacalhau.network.blocks import peek_blocks
from bacalhau.observability import Counter

_RESULT_STATES = (ExecutionState.PUBLISHED, ExecutionState.RESULT_ACCEPTED)


class NoResult(NotFound):
    """A job has no result: not yet (it is pending or running), or never (`final`: it failed
    or was cancelled before an execution published one)."""

    def __init__(self, job: Any) -> None:
        state = JobState.of(job.state)
        self.final = state.is_terminal
        self.details = {"job_id": job.id, "job_state": state.value}
        if self.final:
            why = f": {job.message}" if job.message else ""
            super().__init__(f"job {job.id} {state.value} without a result{why}")
        else:
            super().__init__(
                f"job {job.id} has no result yet (it is {state.value})",
                hint="ask again once it has completed",
            )


def result_execution(job: Any, shard: int | None = None) -> Any:
    """The execution whose result stands for the job (with `shard`: for that shard):
    published first, else any with one that was not rejected or cancelled (a rejected result
    is never served as the job's; a cancelled run's output is its logs only)."""
    no = (ExecutionState.RESULT_REJECTED.pb, ExecutionState.CANCELLED.pb)
    with_result = [
        ex
        for ex in job.executions
        if ex.result_cid and ex.state not in no and (shard is None or ex.shard == shard)
    ]
    for ex in with_result:
        if ExecutionState.of(ex.state) in _RESULT_STATES:
            return ex
    return with_result[0] if with_result else None


def output_execution(job: Any, shard: int | None = None) -> Any:
    """The execution whose stdout and stderr stand for the job's: its result's, else what the
    last cancelled execution wrote until it was stopped."""
    ex = result_execution(job, shard)
    if ex is not None:
        return ex
    cancelled = ExecutionState.CANCELLED.pb
    stopped = [
        e
        for e in job.executions
        if e.result_cid and e.state == cancelled and (shard is None or e.shard == shard)
    ]
    return stopped[-1] if stopped else None


class ResultService:
    """Result DAGs and blocks of this node's blockstore (fetched from peers when missing)."""

    def __init__(self, blockstore: Blockstore, dags: DagFetcher, sent: Counter) -> None:
        self.blockstore = blockstore
        self._dags = dags
        self._sent = sent

    def job_result(self, job: Any, shard: int | None = None) -> tuple[str, list[str]]:
        """(result CID, nodes that hold it) of a job (with `shard`: of that shard). Raises
        NoResult if it has none: yet, or ever (it ended without one)."""
        ex = result_execution(job, shard)
        if ex is None:
            raise NoResult(job)
        return ex.result_cid, [ex.node_id, *ex.replica_node_ids]

    async def ensure_dag(self, cid_text: str, holders: list[str], max_bytes: int = 0) -> bytes:
        """The DAG under `cid_text`, fetched into the blockstore from `holders` if missing
        (with `max_bytes`: no more than that, see `fetch_dag`).

        Raises InvalidCID for a malformed CID, NotFound when nobody has a block of it, and
        TooLarge past `max_bytes`.
        """
        root = bytes(CID.parse(cid_text))
        with self.blockstore.hold(root):  # what came so far is kept from a collection
            await self._dags.fetch(root, holders, max_bytes=max_bytes)
        return root

    async def ensure_entry(self, cid_text: str, name: str, holders: list[str]) -> bytes | None:
        """The entry `name` of the folder `cid_text` with its DAG made local (from `holders`
        first), or None if the folder has no such entry: only that entry's blocks (and the
        folder's root block) come, not the whole folder. Raises as `ensure_dag`."""
        root = bytes(CID.parse(cid_text))
        if self.blockstore.has(root):
            block = self.blockstore.get(root)
        else:
            block = (await self.peek([root])).get(root) or b""
            if not block:  # nobody sends it alone: fetch the folder (says who lacks it)
                await self.ensure_dag(cid_text, holders)
                block = self.blockstore.get(root)
        for link in dag.decode(root, block).links:
            if link.name == name.encode():
                await self.ensure_dag(str(CID.from_bytes(link.cid)), holders)
                return bytes(link.cid)
        return None

    def store_raw(self, data: bytes) -> str:
        """Store `data` as one raw block (CIDv1), pinned; its CID."""
        cid = CID(1, RAW, hashlib.sha256(data).digest())
        with self.blockstore.batch() as batch:
            batch.put(bytes(cid), data)
            batch.pin(bytes(cid))
        return str(cid)

    async def peek(self, cids: list[bytes]) -> dict[bytes, bytes]:
        """These blocks, from this node's blockstore or read from peers without storing them
        (`peek_blocks`); those nobody has are left out."""
        found = {c: self.blockstore.get(c) for c in cids if self.blockstore.has(c)}
        missing = [c for c in cids if c not in found]
        if missing:
            found.update(await peek_blocks(self._dags.net, missing))
        return found

    def child(self, root: bytes, name: str) -> bytes | None:
        """The CID of the entry `name` of the folder `root`, or None."""
        for link in dag.decode(root, self.blockstore.get(root)).links:
            if link.name == name.encode():
                return bytes(link.cid)
        return None

    def cat(self, cid: bytes) -> Iterator[bytes]:
        """The bytes of the file `cid`, chunk by chunk (every block verified)."""
        return dag.cat(self.blockstore.get, cid)

    def blocks(
        self, roots: list[bytes], *, recursive: bool, skip: frozenset[bytes] = frozenset()
    ) -> AsyncIterator[Any]:
        """Blocks of `roots` (and with `recursive`, of their DAGs), except those in `skip`."""
        return serve_blocks(self.blockstore, roots, recursive=recursive, sent=self._sent, skip=skip)
