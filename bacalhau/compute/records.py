"""The compute node's own records of the executions it accepted (`LocalExecution` in the
datastore): each state change is written before it is reported to the requester."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bacalhau._pb.bacalhau.v1 import peer_pb2, records_pb2
from bacalhau.datastore import Datastore, Tx
from bacalhau.errors import BacalhauError
from bacalhau.models import ExecutionState, IllegalTransition, now_ns, pb, set_execution_state
from bacalhau.network import Network
from bacalhau.spec import MAX_ID_LENGTH

log = logging.getLogger(__name__)


# The states whose report names a result (proposed, or what a failed or cancelled run wrote).
_WITH_RESULT = frozenset(
    s.pb for s in (ExecutionState.RESULT_PROPOSED, ExecutionState.FAILED, ExecutionState.CANCELLED)
)


class LocalRecords:
    """Writes and reports the state of this node's executions."""

    def __init__(
        self,
        store: Datastore,
        network: Network,
        result_blocks: Callable[[str], list[tuple[bytes, bytes]]] = lambda cid: [],
    ) -> None:
        """`result_blocks(cid)`: a small result's whole DAG, sent with its report ([]: none)."""
        self._store = store
        self._net = network
        self._result_blocks = result_blocks
        # This node's requester (`Requester.report_here`): a report on an execution it placed
        # here is written with this node's record of it, in one transaction. Set by the node.
        self.report_here: Callable[[Any, Callable[[Tx], Any]], Awaitable[Any]] | None = None

    def get(self, execution_id: str) -> Any:
        """The record of `execution_id`, or None."""
        if not execution_id or len(execution_id) > MAX_ID_LENGTH:
            return None
        return self._store.get_local(execution_id)

    async def list(self) -> list[Any]:
        return await asyncio.to_thread(self._store.list_local)

    async def create(self, record: Any, *, running: bool = False) -> None:
        """Write a newly accepted execution; with `running`, already started (accepted and
        running in one commit: `record` is changed to say so, and reported). Raises
        BacalhauError if it exists already."""
        if running:
            set_execution_state(record.execution, ExecutionState.RUNNING)
        await asyncio.wrap_future(self._store.submit(lambda tx: put_new(tx, record)))
        if running:
            self.report(record)

    async def advance(self, record: Any, state: ExecutionState, message: str = "") -> None:
        """Write `state` (with the record's result fields), then report it to the requester.

        Raises IllegalTransition if the stored state cannot go there.
        """
        ex = record.execution
        snapshot = pb.Execution()
        snapshot.CopyFrom(ex)

        def write(tx: Tx) -> Any:
            rec = tx.get_local(ex.id)
            if rec is None:
                raise BacalhauError(f"execution {ex.id} is not known here")
            stored_state = rec.execution.state
            rec.execution.CopyFrom(snapshot)
            rec.execution.state = stored_state
            set_execution_state(rec.execution, state, message)
            tx.put_local(rec)
            return rec

        here = self.report_here
        if here is not None and record.requester_node_id == self._net.node_id:
            # Its requester is this node: the report and this record go in one transaction.
            # (The report is made from the execution as it will be written; the spec is not
            # needed for it, so it is not copied.)
            preview = records_pb2.LocalExecution(
                execution=record.execution, traceparent=record.traceparent
            )
            try:
                set_execution_state(preview.execution, state, message)
            except IllegalTransition:
                pass  # the write says so, as below
            else:
                rec = await here(update_of(preview), write)
                ex.CopyFrom(rec.execution)
                return
        rec = await asyncio.wrap_future(self._store.submit(write))
        ex.CopyFrom(rec.execution)
        self.report(rec)

    async def decide(self, execution_id: str, accepted: bool, reason: str) -> Any:
        """Record the requester's decision on a proposed result; the record after it.

        A decision repeated (after a reconnect) changes nothing. Raises IllegalTransition if
        the execution proposed no result.
        """
        return await asyncio.wrap_future(
            self._store.submit(lambda tx: decide_in(tx, execution_id, accepted, reason))
        )

    def report(self, rec: Any) -> None:
        """Tell the requester where the execution stands."""
        update = update_of(rec)
        ex = rec.execution
        here = rec.requester_node_id == self._net.node_id  # its blocks are here already
        if ex.result_cid and ex.state in _WITH_RESULT and not here:
            for cid, data in self._result_blocks(ex.result_cid):
                update.result_blocks.add(cid=cid, data=data)
        if not self._net.send(rec.requester_node_id, execution_update=update):
            log.warning("requester %s of %s is not connected", rec.requester_node_id, ex.job_id)


def accepted_record(
    execution_id: str, job_id: str, node_id: str, shard: int, requester: str, spec: Any, tp: str
) -> Any:
    """The record of an execution this node (`node_id`) was just chosen for (bid accepted)."""
    now = now_ns()
    return records_pb2.LocalExecution(
        execution=pb.Execution(
            id=execution_id,
            job_id=job_id,
            node_id=node_id,
            shard=shard,
            state=ExecutionState.BID_ACCEPTED.pb,
            create_time_unix_nano=now,
            update_time_unix_nano=now,
        ),
        requester_node_id=requester,
        spec=spec,
        traceparent=tp,
    )


def put_new(tx: Tx, record: Any) -> None:
    """Write a newly accepted execution's record; raises BacalhauError if it exists."""
    execution_id = record.execution.id
    if tx.get_local(execution_id) is not None:
        raise BacalhauError(f"execution {execution_id} already accepted")
    tx.put_local(record)


def accept_in(tx: Tx, job: Any, ex: Any, spec: Any, traceparent: str) -> Any:
    """Write this node's record of its execution `ex` of `job` (running `spec`: the job's, or a
    shard's own), which its own requester chose it for, already running, in `tx` (the
    requester's); the record. Raises BacalhauError if it exists already."""
    record = accepted_record(ex.id, job.id, ex.node_id, ex.shard, ex.node_id, spec, traceparent)
    set_execution_state(record.execution, ExecutionState.RUNNING)
    put_new(tx, record)
    return record


def decide_in(tx: Tx, execution_id: str, accepted: bool, reason: str) -> Any:
    """Record a requester's decision on a proposed result in `tx` (see `LocalRecords.decide`);
    the record after it. Raises BacalhauError if the execution is not known here, and
    IllegalTransition if it proposed no result."""
    state = ExecutionState.PUBLISHED if accepted else ExecutionState.RESULT_REJECTED
    rec = tx.get_local(execution_id)
    if rec is None:
        raise BacalhauError(f"execution {execution_id} is not known here")
    current = ExecutionState.of(rec.execution.state)
    if current == state:
        return rec
    if accepted and current == ExecutionState.RESULT_PROPOSED:
        set_execution_state(rec.execution, ExecutionState.RESULT_ACCEPTED)
    set_execution_state(rec.execution, state, reason)
    tx.put_local(rec)
    return rec


def update_of(rec: Any) -> Any:
    """The report of where the execution `rec` stands (its result's blocks not included)."""
    ex = rec.execution
    update = peer_pb2.ExecutionUpdate(
        job_id=ex.job_id,
        execution_id=ex.id,
        state=ex.state,
        result_cid=ex.result_cid,
        stderr_tail=ex.stderr_tail,
        message=ex.message,
        inputs=ex.inputs,
        traceparent=rec.traceparent,
    )
    if ex.HasField("exit_code"):
        update.exit_code = ex.exit_code
    return update
