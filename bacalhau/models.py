"""The job model: job and execution lifecycles, and the records they live in.

Records are the protobuf messages of `proto/bacalhau/v1/types.proto`, so what a node stores is
what its API returns. States are `str` enums here ("pending", "bid_accepted", ...), mapped one to
one onto the protobuf enums. Every state change goes through `set_job_state` or
`set_execution_state`, which raise `IllegalTransition` on a change the lifecycle does not allow.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from enum import StrEnum
from typing import Any

from bacalhau._pb.bacalhau.v1 import records_pb2
from bacalhau._pb.bacalhau.v1 import types_pb2 as pb
from bacalhau.errors import BacalhauError

__all__ = [
    "ExecutionState",
    "IllegalTransition",
    "JobState",
    "new_id",
    "new_job_id",
    "node_tag",
    "now_ns",
    "pb",
    "requester_tag",
    "set_execution_state",
    "set_job_state",
    "upload_record",
]


class IllegalTransition(BacalhauError):
    """A state change that the lifecycle does not allow."""


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _JOB_TERMINAL

    @property
    def is_active(self) -> bool:
        return not self.is_terminal

    @property
    def pb(self) -> Any:
        """The protobuf enum value."""
        return _JOB_PB[self]

    @classmethod
    def of(cls, value: int) -> JobState:
        """The state of a protobuf value; ValueError for UNSPECIFIED or unknown values."""
        try:
            return _JOB_OF[value]
        except KeyError:
            raise ValueError(f"no JobState for {value}") from None


class ExecutionState(StrEnum):
    BID_PROPOSED = "bid_proposed"
    BID_ACCEPTED = "bid_accepted"
    BID_REJECTED = "bid_rejected"
    RUNNING = "running"
    RESULT_PROPOSED = "result_proposed"
    RESULT_ACCEPTED = "result_accepted"
    RESULT_REJECTED = "result_rejected"
    PUBLISHED = "published"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _EXEC_TERMINAL

    @property
    def is_active(self) -> bool:
        """Selected to run and not finished: it holds a slot of the job's concurrency."""
        return self in _EXEC_ACTIVE

    @property
    def pb(self) -> Any:
        """The protobuf enum value."""
        return _EXEC_PB[self]

    @classmethod
    def of(cls, value: int) -> ExecutionState:
        """The state of a protobuf value; ValueError for UNSPECIFIED or unknown values."""
        try:
            return _EXEC_OF[value]
        except KeyError:
            raise ValueError(f"no ExecutionState for {value}") from None


# Looked up on every state check: plain dicts, not protobuf's name lookups. (Separate per
# enum: members of both compare equal to their string values, e.g. "running".)
_JOB_PB: dict[JobState, Any] = {s: pb.JobState.Value("JOB_STATE_" + s.name) for s in JobState}
_JOB_OF: dict[int, JobState] = {int(v): s for s, v in _JOB_PB.items()}
_EXEC_PB: dict[ExecutionState, Any] = {
    s: pb.ExecutionState.Value("EXECUTION_STATE_" + s.name) for s in ExecutionState
}
_EXEC_OF: dict[int, ExecutionState] = {int(v): s for s, v in _EXEC_PB.items()}

_JOB_TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
_JOB_NEXT: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}),
}

E = ExecutionState
_EXEC_TERMINAL = frozenset({E.BID_REJECTED, E.RESULT_REJECTED, E.PUBLISHED, E.FAILED, E.CANCELLED})
_EXEC_ACTIVE = frozenset({E.BID_ACCEPTED, E.RUNNING, E.RESULT_PROPOSED, E.RESULT_ACCEPTED})
_ENDS = frozenset({E.FAILED, E.CANCELLED})
_EXEC_NEXT: dict[ExecutionState, frozenset[ExecutionState]] = {
    E.BID_PROPOSED: frozenset({E.BID_ACCEPTED, E.BID_REJECTED}) | _ENDS,
    E.BID_ACCEPTED: frozenset({E.RUNNING}) | _ENDS,
    E.RUNNING: frozenset({E.RESULT_PROPOSED}) | _ENDS,
    E.RESULT_PROPOSED: frozenset({E.RESULT_ACCEPTED, E.RESULT_REJECTED}) | _ENDS,
    E.RESULT_ACCEPTED: frozenset({E.PUBLISHED}) | _ENDS,
}
del E


def set_job_state(job: pb.Job, state: JobState, message: str = "") -> None:
    """Move `job` to `state`. Raises IllegalTransition if its lifecycle does not allow it."""
    current = JobState.of(job.state)
    if state not in _JOB_NEXT.get(current, ()):
        raise IllegalTransition(f"job {job.id} cannot go from {current.value} to {state.value}")
    job.state = state.pb
    if message:
        job.message = message
    job.update_time_unix_nano = now_ns()


def set_execution_state(execution: pb.Execution, state: ExecutionState, message: str = "") -> None:
    """Move `execution` to `state`. Raises IllegalTransition if not allowed."""
    current = ExecutionState.of(execution.state)
    if state not in _EXEC_NEXT.get(current, ()):
        raise IllegalTransition(
            f"execution {execution.id} cannot go from {current.value} to {state.value}"
        )
    execution.state = state.pb
    if message:
        execution.message = message
    execution.update_time_unix_nano = now_ns()


def new_id(prefix: str) -> str:
    """A fresh random ID such as ``j-5f0c...`` (`prefix` names the kind of record)."""
    return f"{prefix}-{uuid.uuid4()}"


_JOB_ID = re.compile(r"j-[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}-([a-z2-7]{16})")


def node_tag(node_id: str) -> str:
    """16 base32 characters (80 bits of SHA-256) standing for a node in the IDs of its jobs."""
    return base64.b32encode(hashlib.sha256(node_id.encode()).digest()[:10]).decode().lower()


def new_job_id(requester_node_id: str) -> str:
    """A fresh job ID, ``j-<uuid4>-<tag>``: the tag (`node_tag`) names the job's requester, so
    any node can tell where to ask about it, and no other node can claim it."""
    return f"j-{uuid.uuid4()}-{node_tag(requester_node_id)}"


def requester_tag(job_id: str) -> str | None:
    """The requester's tag of a whole job ID; None for a prefix or an ID of another form."""
    m = _JOB_ID.fullmatch(job_id)
    return m.group(1) if m else None


def now_ns() -> int:
    return time.time_ns()


def shard_states(job: Any) -> list[str]:
    """Each shard's state, by index: completed (an execution of it published), running (one is
    selected and not finished), failed or cancelled (the job ended without its result), else
    pending (waiting for a node, or to be tried again)."""
    count = job.shard_count or 1
    states = ["pending"] * count
    ended = JobState.of(job.state) in (JobState.FAILED, JobState.CANCELLED)
    for ex in job.executions:
        if ex.shard >= count:
            continue
        state = ExecutionState.of(ex.state)
        if state == ExecutionState.PUBLISHED:
            states[ex.shard] = "completed"
        elif state.is_active and states[ex.shard] != "completed":
            states[ex.shard] = "running"
    if ended:
        final = JobState.of(job.state).value
        states = [s if s == "completed" else final for s in states]
    return states


def upload_record(user_id: str, cid: str, size: int) -> Any:
    """A user's upload of `cid` (`size` bytes, as counted against the quota), made now."""
    return records_pb2.UploadRecord(
        user_id=user_id, cid=cid, bytes=size, create_time_unix_nano=now_ns()
    )
