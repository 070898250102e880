"""The LMDB datastore: one environment, a single writer thread, group commit.

Layout (named databases):
  jobs        job_id -> Job
  jobs_time   be64(create time ns) + job_id -> b""     (newest first listing)
  job_states  be32(state) -> be64(count)               (metrics without a scan)
  events      job_id + 0x00 + be64(seq) -> Event
  local       execution_id -> LocalExecution           (executions this node runs)

Writes queue up for the writer thread, which runs everything queued in one LMDB write
transaction (each function in its own nested transaction, so a failing one leaves no trace),
commits and syncs once, then resolves the futures. Under load many state changes share one
fsync; alone, a change costs one synced commit.
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from bacalhau._pb.bacalhau.v1 import records_pb2, types_pb2
from bacalhau.datastore.base import AmbiguousID, DatastoreError, JobNotFound, Tx
from bacalhau.models import now_ns

T = TypeVar("T")
log = logging.getLogger(__name__)

_BE64 = struct.Struct(">Q")
_BE32 = struct.Struct(">I")
_MAX_GROUP = 256  # functions per group commit
_STOP = object()


def _event_key(job_id: str, seq: int) -> bytes:
    return job_id.encode() + b"\x00" + _BE64.pack(seq)


class _Tx:
    """A `Tx` over one nested LMDB write transaction."""

    def __init__(self, store: LmdbDatastore, txn: lmdb.Transaction) -> None:
        self._s = store
        self._txn = txn
        self.events: list[types_pb2.Event] = []

    def get_job(self, job_id: str) -> types_pb2.Job:
        raw = self._txn.get(job_id.encode(), db=self._s._jobs)
        if raw is None:
            raise JobNotFound(f"job {job_id} not found")
        return types_pb2.Job.FromString(bytes(raw))

    def put_job(self, job: types_pb2.Job) -> None:
        key = job.id.encode()
        old_raw = self._txn.get(key, db=self._s._jobs)
        if old_raw is None:
            self._txn.put(_BE64.pack(job.create_time_unix_nano) + key, b"", db=self._s._jobs_time)
        else:
            self._count(types_pb2.Job.FromString(bytes(old_raw)).state, -1)
        self._count(job.state, +1)
        job.revision += 1
        self._txn.put(key, job.SerializeToString(), db=self._s._jobs)

    def _count(self, state: int, delta: int) -> None:
        key = _BE32.pack(state)
        raw = self._txn.get(key, db=self._s._states)
        n = (_BE64.unpack(raw)[0] if raw else 0) + delta
        self._txn.put(key, _BE64.pack(max(n, 0)), db=self._s._states)

    def add_event(self, event: types_pb2.Event) -> types_pb2.Event:
        prefix = event.job_id.encode() + b"\x00"
        cur = self._txn.cursor(db=self._s._events)
        seq = 1
        # The last event of this job sits just before the first key past its prefix.
        found = cur.prev() if cur.set_range(event.job_id.encode() + b"\x01") else cur.last()
        if found and bytes(cur.key()).startswith(prefix):
            seq = _BE64.unpack(cur.key()[len(prefix) :])[0] + 1
        event.seq = seq
        if not event.time_unix_nano:
            event.time_unix_nano = now_ns()
        self._txn.put(_event_key(event.job_id, seq), event.SerializeToString(), db=self._s._events)
        self.events.append(event)
        return event

    def get_local(self, execution_id: str) -> records_pb2.LocalExecution | None:
        raw = self._txn.get(execution_id.encode(), db=self._s._local)
        return None if raw is None else records_pb2.LocalExecution.FromString(bytes(raw))

    def put_local(self, record: records_pb2.LocalExecution) -> None:
        self._txn.put(record.execution.id.encode(), record.SerializeToString(), db=self._s._local)


class LmdbDatastore:
    """`Datastore` on an LMDB environment in `path` (a directory, created if missing)."""

    def __init__(self, path: str | Path, *, map_size: int = 1 << 34, sync: bool = True) -> None:
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(str(path), map_size=map_size, max_dbs=8, sync=sync, metasync=sync)
        except (OSError, lmdb.Error) as e:
            raise DatastoreError(f"cannot open the datastore in {path}: {e}") from e
        self._jobs = self._env.open_db(b"jobs")
        self._jobs_time = self._env.open_db(b"jobs_time")
        self._states = self._env.open_db(b"job_states")
        self._events = self._env.open_db(b"events")
        self._local = self._env.open_db(b"local")
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._listeners: list[Callable[[Iterable[types_pb2.Event]], None]] = []
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="datastore-writer")
        self._writer.daemon = True
        self._writer.start()

    # -- writes -------------------------------------------------------------------------

    def submit(self, fn: Callable[[Tx], T]) -> Future[T]:
        fut: Future[T] = Future()
        if self._closed:
            fut.set_exception(DatastoreError("the datastore is closed"))
            return fut
        self._queue.put((fn, fut))
        return fut

    def add_listener(self, fn: Callable[[Iterable[types_pb2.Event]], None]) -> None:
        self._listeners.append(fn)

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            group = [item]
            stop = False
            while len(group) < _MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                group.append(more)
            self._commit_group(group)
            if stop:
                return

    def _commit_group(self, group: list[tuple[Callable[[Tx], Any], Future[Any]]]) -> None:
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        events: list[types_pb2.Event] = []
        try:
            with self._env.begin(write=True) as txn:
                for fn, fut in group:
                    if not fut.set_running_or_notify_cancel():
                        continue
                    child = self._env.begin(write=True, parent=txn)
                    tx = _Tx(self, child)
                    try:
                        value = fn(tx)
                    except BaseException as e:
                        child.abort()
                        outcomes.append((fut, False, e))
                    else:
                        child.commit()
                        outcomes.append((fut, True, value))
                        events.extend(tx.events)
        except lmdb.Error as e:
            err = DatastoreError(f"datastore commit failed: {e}")
            for fut, _, _ in outcomes:
                fut.set_exception(err)
            return
        for fut, ok, value in outcomes:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        if events:
            for listener in self._listeners:
                try:
                    listener(events)
                except Exception:  # a listener's failure must not stop the writer
                    log.exception("datastore listener failed")

    # -- reads --------------------------------------------------------------------------

    def get_job(self, job_id: str) -> types_pb2.Job:
        key = job_id.encode()
        raw = None
        with self._env.begin(db=self._jobs) as txn:
            if key:
                raw = txn.get(key)
            if raw is None and key:
                cur = txn.cursor()
                if cur.set_range(key) and cur.key().startswith(key):
                    raw = cur.value()
                    if cur.next() and cur.key().startswith(key):
                        raise AmbiguousID(
                            f"job ID prefix {job_id!r} matches more than one job",
                            hint="give more of the ID",
                        )
        if raw is None:
            raise JobNotFound(
                f"job {job_id} not found on this node",
                hint="'bacalhauctl list --all' shows the jobs it knows",
            )
        return types_pb2.Job.FromString(bytes(raw))

    def list_jobs(self, *, active_only: bool, limit: int) -> list[types_pb2.Job]:
        out: list[types_pb2.Job] = []
        with self._env.begin() as txn:
            cur = txn.cursor(db=self._jobs_time)
            if not cur.last():
                return out
            while True:
                raw = txn.get(cur.key()[8:], db=self._jobs)
                if raw is not None:
                    job = types_pb2.Job.FromString(bytes(raw))
                    if not active_only or job.state in _ACTIVE_JOB_STATES:
                        out.append(job)
                        if limit and len(out) >= limit:
                            break
                if not cur.prev():
                    break
        return out

    def events(self, job_id: str, after_seq: int = 0) -> list[types_pb2.Event]:
        prefix = job_id.encode() + b"\x00"
        out: list[types_pb2.Event] = []
        with self._env.begin(db=self._events) as txn:
            cur = txn.cursor()
            if not cur.set_range(_event_key(job_id, after_seq + 1)):
                return out
            for key, value in cur:
                if not key.startswith(prefix):
                    break
                out.append(types_pb2.Event.FromString(value))
        return out

    def get_local(self, execution_id: str) -> records_pb2.LocalExecution | None:
        with self._env.begin(db=self._local) as txn:
            raw = txn.get(execution_id.encode())
        return None if raw is None else records_pb2.LocalExecution.FromString(bytes(raw))

    def list_local(self) -> list[records_pb2.LocalExecution]:
        with self._env.begin(db=self._local) as txn:
            return [records_pb2.LocalExecution.FromString(v) for _, v in txn.cursor()]

    def count_jobs_by_state(self) -> dict[int, int]:
        with self._env.begin(db=self._states) as txn:
            return {_BE32.unpack(k)[0]: _BE64.unpack(v)[0] for k, v in txn.cursor()}

    def close(self) -> None:
        """Finish queued writes, then close the environment."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        self._env.close()


_ACTIVE_JOB_STATES = frozenset({types_pb2.JOB_STATE_PENDING, types_pb2.JOB_STATE_RUNNING})
