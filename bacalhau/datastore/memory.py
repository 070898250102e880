"""An in-memory `Datastore` for unit tests: the LMDB store's semantics, nothing on disk.

Like the LMDB store, writes queue up for one writer thread, which runs everything queued as a
group: each function writes into its own layer of changes on top of the group's, so one that
raises leaves no trace; the group's layer is applied under a lock, then the futures resolve and
the listeners hear the group's events. Stored records are copies, never the caller's objects.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TypeVar

from bacalhau._pb.bacalhau.v1 import records_pb2, types_pb2
from bacalhau.datastore._writer import Group, GroupWriter, Outcomes
from bacalhau.datastore.base import (
    ACTIVE_JOB_STATES,
    AmbiguousID,
    Conflict,
    DatastoreError,
    JobNotFound,
    JobPage,
    JobQuery,
    clip,
    order_key,
)
from bacalhau.models import now_ns

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class _Layer:
    """Records written by a function, a group, or (the bottom layer) everything committed."""

    jobs: dict[str, types_pb2.Job] = field(default_factory=dict)
    events: dict[str, list[types_pb2.Event]] = field(default_factory=dict)
    local: dict[str, records_pb2.LocalExecution] = field(default_factory=dict)
    peers: dict[str, records_pb2.PeerRecord | None] = field(default_factory=dict)  # None: gone
    shards: dict[tuple[str, int], types_pb2.Shard] = field(default_factory=dict)
    memo: dict[str, records_pb2.MemoEntry] = field(default_factory=dict)
    # (user ID, CID) -> record; None: removed
    uploads: dict[tuple[str, str], records_pb2.UploadRecord | None] = field(default_factory=dict)

    def absorb(self, other: _Layer, bottom: bool = False) -> None:
        self.jobs.update(other.jobs)
        for job_id, events in other.events.items():
            self.events.setdefault(job_id, []).extend(events)
        self.local.update(other.local)
        self.peers.update(other.peers)
        self.shards.update(other.shards)
        self.memo.update(other.memo)
        self.uploads.update(other.uploads)
        if bottom:  # nothing below to hide: a deletion is just an absence
            for node_id in [n for n, rec in self.peers.items() if rec is None]:
                del self.peers[node_id]
            for key in [k for k, rec in self.uploads.items() if rec is None]:
                del self.uploads[key]


class _Tx:
    """A `Tx` over a stack of layers; it writes only into the top one."""

    def __init__(self, layers: list[_Layer]) -> None:
        self._layers = layers
        self.own = layers[-1]
        self.events: list[types_pb2.Event] = []

    def _find(self, job_id: str) -> types_pb2.Job | None:
        for layer in reversed(self._layers):
            if job_id in layer.jobs:
                return layer.jobs[job_id]
        return None

    def get_job(self, job_id: str) -> types_pb2.Job:
        job = self._find(job_id) if job_id else None
        if job is None:
            raise JobNotFound(f"job {job_id} not found")
        return copy.deepcopy(job)

    def put_job(self, job: types_pb2.Job) -> None:
        if not job.id:
            raise DatastoreError("a job needs an ID")
        old = self._find(job.id)
        stored_revision = old.revision if old is not None else 0
        if job.revision != stored_revision or (old is None) != (job.revision == 0):
            raise Conflict(
                f"job {job.id} changed meanwhile (revision {stored_revision}, "
                f"the update was based on {job.revision})"
            )
        job.message = clip(job.message)
        job.revision += 1
        self.own.jobs[job.id] = copy.deepcopy(job)

    def add_event(self, event: types_pb2.Event) -> types_pb2.Event:
        event.seq = sum(len(layer.events.get(event.job_id, ())) for layer in self._layers) + 1
        event.detail = clip(event.detail)
        if not event.time_unix_nano:
            event.time_unix_nano = now_ns()
        self.own.events.setdefault(event.job_id, []).append(copy.deepcopy(event))
        self.events.append(event)
        return event

    def active_jobs(self) -> list[types_pb2.Job]:
        jobs: dict[str, types_pb2.Job] = {}
        for layer in self._layers:
            jobs.update(layer.jobs)
        active = [job for job in jobs.values() if job.state in ACTIVE_JOB_STATES]
        active.sort(key=lambda job: (job.state, order_key(job)))  # the LMDB store's order
        return [copy.deepcopy(job) for job in active]

    def get_local(self, execution_id: str) -> records_pb2.LocalExecution | None:
        for layer in reversed(self._layers):
            if execution_id in layer.local:
                return copy.deepcopy(layer.local[execution_id])
        return None

    def put_local(self, record: records_pb2.LocalExecution) -> None:
        record.execution.message = clip(record.execution.message)
        record.execution.stderr_tail = clip(record.execution.stderr_tail)
        self.own.local[record.execution.id] = copy.deepcopy(record)

    def get_peer(self, node_id: str) -> records_pb2.PeerRecord | None:
        for layer in reversed(self._layers):
            if node_id in layer.peers:
                rec = layer.peers[node_id]
                return None if rec is None else copy.deepcopy(rec)
        return None

    def put_peer(self, record: records_pb2.PeerRecord) -> None:
        self.own.peers[record.node_id] = copy.deepcopy(record)

    def delete_peer(self, node_id: str) -> None:
        self.own.peers[node_id] = None

    def put_shard(self, shard: types_pb2.Shard) -> None:
        self.own.shards[(shard.job_id, shard.index)] = copy.deepcopy(shard)

    def put_memo(self, entry: records_pb2.MemoEntry) -> None:
        self.own.memo[entry.key] = copy.deepcopy(entry)

    def get_memo(self, key: str) -> records_pb2.MemoEntry | None:
        for layer in reversed(self._layers):
            if key in layer.memo:
                return copy.deepcopy(layer.memo[key])
        return None

    def get_shard(self, job_id: str, index: int) -> types_pb2.Shard | None:
        for layer in reversed(self._layers):
            if (job_id, index) in layer.shards:
                return copy.deepcopy(layer.shards[(job_id, index)])
        return None

    def _all_uploads(self) -> dict[tuple[str, str], records_pb2.UploadRecord]:
        merged: dict[tuple[str, str], records_pb2.UploadRecord | None] = {}
        for layer in self._layers:
            merged.update(layer.uploads)
        return {k: v for k, v in merged.items() if v is not None}

    def get_upload(self, user_id: str, cid: str) -> records_pb2.UploadRecord | None:
        rec = self._all_uploads().get((user_id, cid))
        return None if rec is None else copy.deepcopy(rec)

    def put_upload(self, record: records_pb2.UploadRecord) -> None:
        self.own.uploads[(record.user_id, record.cid)] = copy.deepcopy(record)

    def delete_upload(self, user_id: str, cid: str) -> bool:
        found = (user_id, cid) in self._all_uploads()
        self.own.uploads[(user_id, cid)] = None
        return found

    def upload_holders(self, cid: str) -> list[str]:
        return sorted(u for u, c in self._all_uploads() if c == cid)

    def uploaded_bytes(self, user_id: str) -> int:
        return sum(r.bytes for (u, _), r in self._all_uploads().items() if u == user_id)


class MemoryDatastore(GroupWriter):
    """`Datastore` in memory, for tests; everything is lost when it is dropped."""

    def __init__(self) -> None:
        self._committed = _Layer()  # changed only by the writer thread, under the lock
        self._lock = threading.Lock()
        self._start_writer("memory-datastore-writer")

    # -- writes -------------------------------------------------------------------------

    def _run_group(self, group: Group) -> tuple[Outcomes, list[types_pb2.Event]]:
        pending = _Layer()
        outcomes: Outcomes = []
        events: list[types_pb2.Event] = []
        for fn, fut in group:
            tx = _Tx([self._committed, pending, _Layer()])
            try:
                value = fn(tx)
            except BaseException as e:  # as in the LMDB store: the future carries it
                outcomes.append((fut, False, e))
            else:
                pending.absorb(tx.own)
                outcomes.append((fut, True, value))
                events.extend(tx.events)
        with self._lock:
            self._committed.absorb(pending, bottom=True)
        return outcomes, events

    # -- reads (stored objects are never changed, only replaced, so copies may be taken
    # outside the lock) ----------------------------------------------------------------

    def get_job(self, job_id: str) -> types_pb2.Job:
        with self._lock:
            job = self._committed.jobs.get(job_id) if job_id else None
            if job is None and job_id:
                matches = [k for k in self._committed.jobs if k.startswith(job_id)]
                if len(matches) > 1:
                    raise AmbiguousID(
                        f"job ID prefix {job_id!r} matches more than one job",
                        hint="give more of the ID",
                    )
                job = self._committed.jobs[matches[0]] if matches else None
        if job is None:
            raise JobNotFound(
                f"job {job_id} not found on this node",
            )
        return copy.deepcopy(job)

    def _matching(self, query: JobQuery) -> list[tuple[bytes, types_pb2.Job]]:
        with self._lock:
            jobs = list(self._committed.jobs.values())
        return sorted(((order_key(j), j) for j in jobs if query.matches(j)), key=lambda p: p[0])

    def query_jobs(self, query: JobQuery) -> JobPage:
        keyed = self._matching(query)
        if not query.oldest_first:
            keyed.reverse()
        if query.cursor:
            after = bytes.fromhex(query.cursor)
            keyed = [(k, j) for k, j in keyed if (k > after if query.oldest_first else k < after)]
        page = keyed[: query.limit] if query.limit else keyed
        more = len(page) < len(keyed)
        return JobPage([copy.deepcopy(j) for _, j in page], page[-1][0].hex() if more else "")

    def list_jobs(self, *, active_only: bool, limit: int) -> list[types_pb2.Job]:
        states = ACTIVE_JOB_STATES if active_only else frozenset()
        return self.query_jobs(JobQuery(states=states, limit=limit)).jobs

    def count_jobs(self, query: JobQuery) -> int:
        return len(self._matching(query))

    def events(self, job_id: str, after_seq: int = 0) -> list[types_pb2.Event]:
        with self._lock:
            events = list(self._committed.events.get(job_id, ()))
        return [copy.deepcopy(e) for e in events if e.seq > after_seq]

    def get_local(self, execution_id: str) -> records_pb2.LocalExecution | None:
        with self._lock:
            record = self._committed.local.get(execution_id)
        return None if record is None else copy.deepcopy(record)

    def list_local(self) -> list[records_pb2.LocalExecution]:
        with self._lock:
            records = sorted(self._committed.local.items(), key=lambda kv: kv[0].encode())
        return [copy.deepcopy(record) for _, record in records]

    def get_shard(self, job_id: str, index: int) -> types_pb2.Shard | None:
        with self._lock:
            shard = self._committed.shards.get((job_id, index))
        return None if shard is None else copy.deepcopy(shard)

    def get_memo(self, key: str) -> records_pb2.MemoEntry | None:
        with self._lock:
            entry = self._committed.memo.get(key)
        return None if entry is None else copy.deepcopy(entry)

    def made_by(self, cid: str) -> records_pb2.MemoEntry | None:
        with self._lock:
            found = [e for e in self._committed.memo.values() if e.result_cid == cid]
        return copy.deepcopy(found[-1]) if found else None

    def used_by(self, cid: str) -> list[records_pb2.MemoEntry]:
        with self._lock:
            found = [e for e in self._committed.memo.values() if cid in e.input_cids]
        return [copy.deepcopy(e) for e in sorted(found, key=lambda e: e.key)]

    def list_peers(self) -> list[records_pb2.PeerRecord]:
        with self._lock:
            records = sorted(self._committed.peers.items(), key=lambda kv: kv[0].encode())
        return [copy.deepcopy(record) for _, record in records if record is not None]

    def list_uploads(self, user_id: str) -> list[records_pb2.UploadRecord]:
        with self._lock:
            found = [(c, r) for (u, c), r in self._committed.uploads.items() if u == user_id]
        return [copy.deepcopy(r) for _, r in sorted(found, key=lambda cr: cr[0].encode()) if r]

    def uploaded_bytes(self, user_id: str) -> int:
        return sum(r.bytes for r in self.list_uploads(user_id))

    def upload_holders(self, cid: str) -> list[str]:
        with self._lock:
            return sorted(u for (u, c), r in self._committed.uploads.items() if c == cid and r)

    def count_jobs_by_state(self) -> dict[int, int]:
        with self._lock:
            return dict(Counter(job.state for job in self._committed.jobs.values()))

    def close(self) -> None:
        """Finish queued writes, then refuse new ones."""
        self._stop_writer()
