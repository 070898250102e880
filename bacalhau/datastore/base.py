"""The datastore's interface: records, transactions, queries, and the errors they raise."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from bacalhau._pb.bacalhau.v1 import records_pb2, types_pb2
from bacalhau.errors import BacalhauError

T = TypeVar("T")

SCHEMA_VERSION = 5  # 2: the peer table; 3: shards; 4: memo and lineage; 5: uploads
MAX_TEXT = 4096  # longest message, event detail or stderr tail kept in a record


def order_key(job: types_pb2.Job) -> bytes:
    """Where a job sorts among all jobs (creation time, then ID), and its cursor in job
    queries: the same on every node, so one cursor pages a list merged from many."""
    return job.create_time_unix_nano.to_bytes(8, "big") + job.id.encode()


class DatastoreError(BacalhauError):
    """The datastore failed: a file could not be opened, written or synced."""


class SchemaError(DatastoreError):
    """The data directory is not ours, is corrupt, or is from a newer version."""


class JobNotFound(DatastoreError):
    """No job with that ID (or ID prefix)."""


class AmbiguousID(DatastoreError):
    """An ID prefix that matches more than one job."""


class Conflict(DatastoreError):
    """A write based on a stale read: someone else changed the record meanwhile."""


@dataclass(frozen=True)
class JobQuery:
    """Which jobs to list. Empty filters match everything."""

    states: frozenset[int] = frozenset()  # protobuf JobState values
    client_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)  # the job's annotations must include
    oldest_first: bool = False
    limit: int = 0  # 0: no limit
    cursor: str = ""  # from JobPage.next_cursor

    def matches(self, job: types_pb2.Job) -> bool:
        if self.states and job.state not in self.states:
            return False
        if self.client_id and job.client_id != self.client_id:
            return False
        annotations = job.spec.annotations
        return all(annotations.get(k) == v for k, v in self.labels.items())


@dataclass
class JobPage:
    jobs: list[types_pb2.Job]
    next_cursor: str  # "" when there is no more


class Tx(Protocol):
    """One write transaction's view: reads see earlier writes of the same transaction."""

    def get_job(self, job_id: str) -> types_pb2.Job:
        """The job; raises JobNotFound."""
        ...

    def put_job(self, job: types_pb2.Job) -> None:
        """Store `job` (new, or changed since it was read) and bump its revision.

        Raises Conflict if the stored revision is not the one `job` was read at (a new job
        must have revision 0 and an unused ID), so no update is silently lost.
        """
        ...

    def add_event(self, event: types_pb2.Event) -> types_pb2.Event:
        """Append `event` to its job's log, assigning `seq` (and the time if unset)."""
        ...

    def active_jobs(self) -> list[types_pb2.Job]:
        """Jobs that are pending or running."""
        ...

    def get_local(self, execution_id: str) -> records_pb2.LocalExecution | None: ...

    def put_local(self, record: records_pb2.LocalExecution) -> None: ...

    def get_peer(self, node_id: str) -> records_pb2.PeerRecord | None: ...

    def put_peer(self, record: records_pb2.PeerRecord) -> None: ...

    def delete_peer(self, node_id: str) -> None: ...

    def put_shard(self, shard: types_pb2.Shard) -> None: ...

    def get_shard(self, job_id: str, index: int) -> types_pb2.Shard | None: ...

    def put_memo(self, entry: records_pb2.MemoEntry) -> None: ...

    def get_memo(self, key: str) -> records_pb2.MemoEntry | None: ...

    def get_upload(self, user_id: str, cid: str) -> records_pb2.UploadRecord | None: ...

    def put_upload(self, record: records_pb2.UploadRecord) -> None:
        """Record (or replace) `record.user_id`'s upload of `record.cid`."""
        ...

    def delete_upload(self, user_id: str, cid: str) -> bool:
        """Remove a user's record of an upload; False if there was none."""
        ...

    def upload_holders(self, cid: str) -> list[str]:
        """The users with a record of an upload of `cid`, sorted."""
        ...

    def uploaded_bytes(self, user_id: str) -> int:
        """What a user's upload records add up to."""
        ...


class Datastore(Protocol):
    """Jobs, their events, and this node's own executions.

    Writes are functions of a `Tx`, each run in its own (nested) transaction, so a function
    that raises leaves no trace; several may be committed (and synced) together. Reads may run
    on any thread.
    """

    def submit(self, fn: Callable[[Tx], T]) -> Future[T]:
        """Run `fn` in a write transaction; the future resolves once the commit is durable.

        The future raises what `fn` raised (nothing was written), or DatastoreError if the
        commit failed (nothing of that group was written).
        """
        ...

    def get_job(self, job_id: str) -> types_pb2.Job:
        """The job with this ID or unique ID prefix; raises JobNotFound or AmbiguousID."""
        ...

    def query_jobs(self, query: JobQuery) -> JobPage:
        """A page of jobs matching `query`, newest first unless `oldest_first`."""
        ...

    def list_jobs(self, *, active_only: bool, limit: int) -> list[types_pb2.Job]:
        """Jobs, newest first; `limit` 0 means all."""
        ...

    def count_jobs(self, query: JobQuery) -> int: ...

    def events(self, job_id: str, after_seq: int = 0) -> list[types_pb2.Event]: ...

    def get_local(self, execution_id: str) -> records_pb2.LocalExecution | None: ...

    def list_local(self) -> list[records_pb2.LocalExecution]: ...

    def get_shard(self, job_id: str, index: int) -> types_pb2.Shard | None:
        """Shard `index` of job `job_id` (exact ID), or None."""
        ...

    def get_memo(self, key: str) -> records_pb2.MemoEntry | None:
        """The verified result of the memo key `key`, or None."""
        ...

    def made_by(self, cid: str) -> records_pb2.MemoEntry | None:
        """The memo entry whose result is `cid` (the job that made it), or None."""
        ...

    def used_by(self, cid: str) -> list[records_pb2.MemoEntry]:
        """The memo entries of the jobs that read `cid` as an input."""
        ...

    def list_peers(self) -> list[records_pb2.PeerRecord]:
        """The peer table, by node ID."""
        ...

    def count_jobs_by_state(self) -> dict[int, int]: ...

    def list_uploads(self, user_id: str) -> list[records_pb2.UploadRecord]:
        """A user's upload records, by CID."""
        ...

    def uploaded_bytes(self, user_id: str) -> int:
        """What a user's upload records add up to."""
        ...

    def upload_holders(self, cid: str) -> list[str]:
        """The users with a record of an upload of `cid`, sorted."""
        ...

    def add_listener(self, fn: Callable[[Iterable[types_pb2.Event]], None]) -> None:
        """Call `fn` (in the writing thread) with the events of each durable commit."""
        ...

    def close(self) -> None: ...


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """`text`, cut to `limit` characters (keeping its end, where errors usually are)."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


ACTIVE_JOB_STATES = frozenset({types_pb2.JOB_STATE_PENDING, types_pb2.JOB_STATE_RUNNING})
