"""The datastore's interface: records, transactions, and the errors they raise."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Protocol, TypeVar

from bacalhau._pb.bacalhau.v1 import records_pb2, types_pb2
from bacalhau.errors import BacalhauError

T = TypeVar("T")


class DatastoreError(BacalhauError):
    """The datastore failed: a file could not be opened, written or synced."""


class JobNotFound(DatastoreError):
    """No job with that ID (or ID prefix)."""


class AmbiguousID(DatastoreError):
    """An ID prefix that matches more than one job."""


class Tx(Protocol):
    """One write transaction's view: reads see earlier writes of the same transaction."""

    def get_job(self, job_id: str) -> types_pb2.Job:
        """The job; raises JobNotFound."""
        ...

    def put_job(self, job: types_pb2.Job) -> None:
        """Store `job` (new or changed) and bump its revision."""
        ...

    def add_event(self, event: types_pb2.Event) -> types_pb2.Event:
        """Append `event` to its job's log, assigning `seq` (and the time if unset)."""
        ...

    def get_local(self, execution_id: str) -> records_pb2.LocalExecution | None: ...

    def put_local(self, record: records_pb2.LocalExecution) -> None: ...


class Datastore(Protocol):
    """Jobs, their events, and this node's own executions.

    Writes run as functions of a `Tx` in a single writer thread; each runs in its own nested
    transaction, so a function that raises leaves no trace, and several are committed (and
    synced) together. Reads may run on any thread.
    """

    def submit(self, fn: Callable[[Tx], T]) -> Future[T]:
        """Run `fn` in a write transaction; the future resolves after the commit is durable.

        The future raises what `fn` raised (nothing was written), or DatastoreError if the
        commit failed.
        """
        ...

    def get_job(self, job_id: str) -> types_pb2.Job:
        """The job with this ID or unique ID prefix; raises JobNotFound or AmbiguousID."""
        ...

    def list_jobs(self, *, active_only: bool, limit: int) -> list[types_pb2.Job]:
        """Jobs, newest first; `limit` 0 means all."""
        ...

    def events(self, job_id: str, after_seq: int = 0) -> list[types_pb2.Event]: ...

    def get_local(self, execution_id: str) -> records_pb2.LocalExecution | None: ...

    def list_local(self) -> list[records_pb2.LocalExecution]: ...

    def count_jobs_by_state(self) -> dict[int, int]: ...

    def add_listener(self, fn: Callable[[Iterable[types_pb2.Event]], None]) -> None:
        """Call `fn` (in the writer thread) with the events of each durable commit."""
        ...

    def close(self) -> None: ...
