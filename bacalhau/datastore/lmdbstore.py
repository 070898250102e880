"""The LMDB datastore: one environment, a single writer thread, group commit.

Layout (named databases):
  meta         b"schema_version" -> be32
  jobs         job_id -> Job
  jobs_time    be64(create time ns) + job_id -> b""            (all jobs by time)
  jobs_state   be32(state) + be64(create ns) + job_id -> b""   (by state, by time)
  jobs_client  client_id + 0x00 + be64(create ns) + job_id     (by client, by time)
  job_states   be32(state) -> be64(count)                      (counts without a scan)
  events       job_id + 0x00 + be64(seq) -> Event              (append-only per job)
  local        execution_id -> LocalExecution                  (executions this node runs)
  peers        node_id -> PeerRecord                           (the peer table)
  shards       job_id + 0x00 + be32(index) -> Shard           (a sharded job's files)
  memo         memo key -> MemoEntry                           (verified y = f(x))
  made_by      result CID -> memo key                          (lineage: what made a CID)
  used_by      input CID + 0x00 + memo key -> b""             (lineage: what read a CID)
  uploads      b"u" + user_id + 0x00 + cid -> UploadRecord      (each user's uploads)
               b"c" + cid + 0x00 + user_id -> b""               (who uploaded a CID)

Writes queue up for the writer thread, which runs everything queued in one LMDB write
transaction (each function in its own nested transaction, so a failing one leaves no trace),
commits and syncs once, then resolves the futures. Under load many state changes share one
fsync; alone, a change costs one synced commit. When the map is full it is doubled and the
group retried; the environment is opened with a large sparse map, so that is rare.
"""

from __future__ import annotations

import heapq
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from bacalhau._pb.bacalhau.v1 import records_pb2, types_pb2
from bacalhau.datastore._writer import Group, GroupWriter, Outcomes
from bacalhau.datastore.base import (
    ACTIVE_JOB_STATES,
    SCHEMA_VERSION,
    AmbiguousID,
    Conflict,
    DatastoreError,
    JobNotFound,
    JobPage,
    JobQuery,
    SchemaError,
    Tx,
    clip,
    order_key,
)
from bacalhau.models import now_ns

T = TypeVar("T")
log = logging.getLogger(__name__)

_BE64 = struct.Struct(">Q")
_BE32 = struct.Struct(">I")
_SCHEMA_KEY = b"schema_version"
_DBS = (b"meta", b"jobs", b"jobs_time", b"jobs_state", b"jobs_client", b"job_states", b"events",
        b"local", b"peers", b"shards", b"memo", b"made_by", b"used_by", b"uploads")  # fmt: skip

# Migrations: MIGRATIONS[v] takes a store at version v to v + 1 inside one write transaction.
Migration = Callable[["LmdbDatastore", lmdb.Transaction], None]


def _shard_key(job_id: str, index: int) -> bytes:
    return job_id.encode() + b"\x00" + _BE32.pack(index)


def _event_key(job_id: str, seq: int) -> bytes:
    return job_id.encode() + b"\x00" + _BE64.pack(seq)


def _index_keys(job: types_pb2.Job) -> dict[bytes, bytes]:
    """The index entries of `job`: index name -> key."""
    tkey = order_key(job)
    keys = {b"jobs_time": tkey, b"jobs_state": _state_prefix(job.state) + tkey}
    if job.client_id:
        keys[b"jobs_client"] = _client_prefix(job.client_id) + tkey
    return keys


def _upload_key(user_id: str, cid: str) -> bytes:
    return b"u" + user_id.encode() + b"\0" + cid.encode()


def _holder_key(cid: str, user_id: str) -> bytes:
    return b"c" + cid.encode() + b"\0" + user_id.encode()


def _prefixed(txn: lmdb.Transaction, db: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    cur = txn.cursor(db=db)
    if not cur.set_range(prefix):
        return
    for key, value in cur:
        if not bytes(key).startswith(prefix):
            return
        yield bytes(key), bytes(value)


def _uploads(txn: lmdb.Transaction, db: Any, user_id: str) -> list[records_pb2.UploadRecord]:
    prefix = b"u" + user_id.encode() + b"\0"
    return [records_pb2.UploadRecord.FromString(v) for _, v in _prefixed(txn, db, prefix)]


def _holders(txn: lmdb.Transaction, db: Any, cid: str) -> list[str]:
    prefix = b"c" + cid.encode() + b"\0"
    return [k[len(prefix) :].decode() for k, _ in _prefixed(txn, db, prefix)]


def _state_prefix(state: int) -> bytes:
    return _BE32.pack(state)


def _client_prefix(client_id: str) -> bytes:
    return client_id.encode() + b"\x00"


class _Tx:
    """A `Tx` over one nested LMDB write transaction."""

    def __init__(self, store: LmdbDatastore, txn: lmdb.Transaction) -> None:
        self._s = store
        self._txn = txn
        self.events: list[types_pb2.Event] = []
        self.bumped: list[tuple[types_pb2.Job, int]] = []
        # What is stored of jobs read or written here: (revision, state, index keys), so that
        # put_job need not read and decode the record again.
        self._stored: dict[str, tuple[int, int, dict[bytes, bytes]]] = {}

    def get_job(self, job_id: str) -> types_pb2.Job:
        raw = self._txn.get(job_id.encode(), db=self._s._db[b"jobs"]) if job_id else None
        if raw is None:
            raise JobNotFound(f"job {job_id} not found")
        job = types_pb2.Job.FromString(bytes(raw))
        self._stored[job_id] = (job.revision, job.state, _index_keys(job))
        return job

    def _stored_of(self, job_id: str) -> tuple[int, int, dict[bytes, bytes]] | None:
        known = self._stored.get(job_id)
        if known is None:
            raw = self._txn.get(job_id.encode(), db=self._s._db[b"jobs"])
            if raw is not None:
                old = types_pb2.Job.FromString(bytes(raw))
                known = (old.revision, old.state, _index_keys(old))
        return known

    def put_job(self, job: types_pb2.Job) -> None:
        db = self._s._db
        key = job.id.encode()
        if not key:
            raise DatastoreError("a job needs an ID")
        old = self._stored_of(job.id)
        stored_revision = old[0] if old is not None else 0
        if job.revision != stored_revision or (old is None) != (job.revision == 0):
            raise Conflict(
                f"job {job.id} changed meanwhile (revision {stored_revision}, "
                f"the update was based on {job.revision})"
            )
        old_keys = old[2] if old is not None else {}
        new_keys = _index_keys(job)
        for index, ikey in old_keys.items():
            if new_keys.get(index) != ikey:
                self._txn.delete(ikey, db=db[index])
        for index, ikey in new_keys.items():
            if old_keys.get(index) != ikey:
                self._txn.put(ikey, b"", db=db[index])
        if old is None or old[1] != job.state:
            if old is not None:
                self._s._count(self._txn, old[1], -1)
            self._s._count(self._txn, job.state, +1)
        job.message = clip(job.message)
        # The caller's record takes the new revision; undone if the group must run again.
        self.bumped.append((job, job.revision))
        job.revision += 1
        self._txn.put(key, job.SerializeToString(), db=db[b"jobs"])
        self._stored[job.id] = (job.revision, job.state, new_keys)

    def add_event(self, event: types_pb2.Event) -> types_pb2.Event:
        db = self._s._db[b"events"]
        prefix = event.job_id.encode() + b"\x00"
        cur = self._txn.cursor(db=db)
        seq = 1
        # The last event of this job sits just before the first key past its prefix.
        found = cur.prev() if cur.set_range(event.job_id.encode() + b"\x01") else cur.last()
        if found and bytes(cur.key()).startswith(prefix):
            seq = _BE64.unpack(cur.key()[len(prefix) :])[0] + 1
        event.seq = seq
        event.detail = clip(event.detail)
        if not event.time_unix_nano:
            event.time_unix_nano = now_ns()
        self._txn.put(_event_key(event.job_id, seq), event.SerializeToString(), db=db)
        self.events.append(event)
        return event

    def active_jobs(self) -> list[types_pb2.Job]:
        out = []
        for state in sorted(ACTIVE_JOB_STATES):
            for key in self._s._scan(self._txn, b"jobs_state", _state_prefix(state)):
                out.append(self.get_job(key[12:].decode()))
        return out

    def get_local(self, execution_id: str) -> records_pb2.LocalExecution | None:
        raw = self._txn.get(execution_id.encode(), db=self._s._db[b"local"])
        return None if raw is None else records_pb2.LocalExecution.FromString(bytes(raw))

    def put_local(self, record: records_pb2.LocalExecution) -> None:
        record.execution.message = clip(record.execution.message)
        record.execution.stderr_tail = clip(record.execution.stderr_tail)
        db = self._s._db[b"local"]
        self._txn.put(record.execution.id.encode(), record.SerializeToString(), db=db)

    def get_peer(self, node_id: str) -> records_pb2.PeerRecord | None:
        raw = self._txn.get(node_id.encode(), db=self._s._db[b"peers"]) if node_id else None
        return None if raw is None else records_pb2.PeerRecord.FromString(bytes(raw))

    def put_peer(self, record: records_pb2.PeerRecord) -> None:
        db = self._s._db[b"peers"]
        self._txn.put(record.node_id.encode(), record.SerializeToString(), db=db)

    def delete_peer(self, node_id: str) -> None:
        self._txn.delete(node_id.encode(), db=self._s._db[b"peers"])

    def put_shard(self, shard: types_pb2.Shard) -> None:
        key = _shard_key(shard.job_id, shard.index)
        self._txn.put(key, shard.SerializeToString(), db=self._s._db[b"shards"])

    def get_shard(self, job_id: str, index: int) -> types_pb2.Shard | None:
        raw = self._txn.get(_shard_key(job_id, index), db=self._s._db[b"shards"])
        return None if raw is None else types_pb2.Shard.FromString(bytes(raw))

    def get_memo(self, key: str) -> records_pb2.MemoEntry | None:
        raw = self._txn.get(key.encode(), db=self._s._db[b"memo"]) if key else None
        return None if raw is None else records_pb2.MemoEntry.FromString(bytes(raw))

    def put_memo(self, entry: records_pb2.MemoEntry) -> None:
        db = self._s._db
        self._txn.put(entry.key.encode(), entry.SerializeToString(), db=db[b"memo"])
        self._txn.put(entry.result_cid.encode(), entry.key.encode(), db=db[b"made_by"])
        for cid in entry.input_cids:
            self._txn.put(cid.encode() + b"\x00" + entry.key.encode(), b"", db=db[b"used_by"])

    def get_upload(self, user_id: str, cid: str) -> records_pb2.UploadRecord | None:
        raw = self._txn.get(_upload_key(user_id, cid), db=self._s._db[b"uploads"])
        return None if raw is None else records_pb2.UploadRecord.FromString(bytes(raw))

    def put_upload(self, record: records_pb2.UploadRecord) -> None:
        db = self._s._db[b"uploads"]
        key = _upload_key(record.user_id, record.cid)
        self._txn.put(key, record.SerializeToString(), db=db)
        self._txn.put(_holder_key(record.cid, record.user_id), b"", db=db)

    def delete_upload(self, user_id: str, cid: str) -> bool:
        db = self._s._db[b"uploads"]
        self._txn.delete(_holder_key(cid, user_id), db=db)
        return bool(self._txn.delete(_upload_key(user_id, cid), db=db))

    def upload_holders(self, cid: str) -> list[str]:
        return _holders(self._txn, self._s._db[b"uploads"], cid)

    def uploaded_bytes(self, user_id: str) -> int:
        return sum(r.bytes for r in _uploads(self._txn, self._s._db[b"uploads"], user_id))


class LmdbDatastore(GroupWriter):
    """`Datastore` on an LMDB environment in `path` (a directory, created if missing).

    Raises SchemaError if `path` holds something that is not a datastore of ours, a corrupt
    one, or one written by a newer version; DatastoreError if it cannot be opened at all.
    """

    def __init__(self, path: str | Path, *, map_size: int = 1 << 34, sync: bool = True) -> None:
        path = Path(path)
        self.path = path
        try:
            path.mkdir(parents=True, exist_ok=True)
            if not (path / "data.mdb").exists():
                _check_room(path)  # LMDB dies of SIGBUS if it cannot grow fresh files
            self._env = lmdb.open(
                str(path), map_size=map_size, max_dbs=32, sync=sync, metasync=sync
            )
        except lmdb.InvalidError as e:
            raise SchemaError(
                f"{path} does not hold a readable datastore ({e})",
                hint="is --data-dir right? restore it from a backup, or use an empty folder",
            ) from e
        except (OSError, lmdb.Error) as e:
            raise DatastoreError(f"cannot open the datastore in {path}: {e}") from e
        self._lock = threading.Lock()  # held by readers and by map growth (set_mapsize)
        try:
            self._refuse_foreign()
            self._refuse_newer()
            self._db = {name: self._env.open_db(name) for name in _DBS}
            self._check_schema()
        except lmdb.Error as e:
            self._env.close()
            raise SchemaError(f"{path} holds a corrupt datastore ({e})") from e
        except BaseException:
            self._env.close()
            raise
        self._start_writer("datastore-writer")

    def _check_schema(self) -> None:
        with self._env.begin(write=True) as txn:
            raw = txn.get(_SCHEMA_KEY, db=self._db[b"meta"])
            if raw is None:
                version = 0 if txn.stat(self._db[b"jobs"])["entries"] else SCHEMA_VERSION
            else:
                if len(raw) != 4:
                    raise SchemaError(f"{self.path}: the schema version record is corrupt")
                version = _BE32.unpack(raw)[0]
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path} was written by a newer bacalhaud (schema {version}; "
                    f"this one reads up to {SCHEMA_VERSION})",
                    hint="upgrade bacalhaud, or use another --data-dir",
                )
            while version < SCHEMA_VERSION:
                log.info("migrating the datastore from schema %d", version)
                _MIGRATIONS[version](self, txn)
                version += 1
            txn.put(_SCHEMA_KEY, _BE32.pack(version), db=self._db[b"meta"])

    def _refuse_foreign(self) -> None:
        """Before writing anything: keys in the main database other than our database names
        mean someone else's LMDB environment."""
        with self._env.begin() as txn:
            names = {bytes(k) for k, _ in txn.cursor()}
        foreign = sorted(n.decode(errors="replace") for n in names - set(_DBS))
        if foreign:
            raise SchemaError(
                f"{self.path} is an LMDB environment of something else (it holds {foreign[:3]})",
                hint="point --data-dir at a bacalhau data directory or an empty folder",
            )

    def _refuse_newer(self) -> None:
        """Before writing anything: a schema newer than ours is refused."""
        with self._env.begin() as txn:
            if txn.get(b"meta") is None:
                return  # a new environment
        meta = self._env.open_db(b"meta", create=False)
        with self._env.begin(db=meta) as txn:
            raw = txn.get(_SCHEMA_KEY)
        if raw is not None and len(raw) == 4 and _BE32.unpack(raw)[0] > SCHEMA_VERSION:
            raise SchemaError(
                f"{self.path} was written by a newer bacalhaud (schema {_BE32.unpack(raw)[0]}; "
                f"this one reads up to {SCHEMA_VERSION})",
                hint="upgrade bacalhaud, or use another --data-dir",
            )

    def _count(self, txn: lmdb.Transaction, state: int, delta: int) -> None:
        key = _BE32.pack(state)
        db = self._db[b"job_states"]
        raw = txn.get(key, db=db)
        n = (_BE64.unpack(raw)[0] if raw else 0) + delta
        txn.put(key, _BE64.pack(max(n, 0)), db=db)

    # -- writes -------------------------------------------------------------------------

    def _run_group(self, group: Group) -> tuple[Outcomes, list[types_pb2.Event]]:
        while True:
            try:
                return self._try_group(group)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as e:
                err = DatastoreError(f"datastore commit failed: {e}")
                if isinstance(e, lmdb.DiskError) or any(
                    m in str(e) for m in ("No space", "Input/output error")
                ):
                    err = DatastoreError(
                        f"datastore commit failed: disk full or failing ({e})",
                        hint=f"free space on the disk holding {self.path}",
                    )
                raise err from e

    def _try_group(
        self, group: list[tuple[Callable[[Tx], Any], Future[Any]]]
    ) -> tuple[list[tuple[Future[Any], bool, Any]], list[types_pb2.Event]]:
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        events: list[types_pb2.Event] = []
        txs: list[_Tx] = []
        try:
            with self._env.begin(write=True) as txn:
                for fn, fut in group:
                    child = self._env.begin(write=True, parent=txn)
                    tx = _Tx(self, child)
                    txs.append(tx)
                    try:
                        value = fn(tx)
                    except lmdb.MapFullError:
                        child.abort()
                        raise
                    except BaseException as e:
                        child.abort()
                        outcomes.append((fut, False, e))
                    else:
                        child.commit()
                        outcomes.append((fut, True, value))
                        events.extend(tx.events)
        except lmdb.Error:
            # Nothing was written: the callers' records go back to the revisions they had.
            for tx in reversed(txs):
                for job, revision in reversed(tx.bumped):
                    job.revision = revision
            raise
        return outcomes, events

    def _grow(self) -> None:
        with self._lock:
            size = self._env.info()["map_size"] * 2
            log.info("datastore map full: growing it to %d MiB", size >> 20)
            self._env.set_mapsize(size)

    # -- reads --------------------------------------------------------------------------

    def _read(self) -> Any:
        return _ReadTxn(self)

    def get_job(self, job_id: str) -> types_pb2.Job:
        key = job_id.encode()
        raw = None
        with self._read() as txn:
            db = self._db[b"jobs"]
            if key:
                raw = txn.get(key, db=db)
            if raw is None and key:
                cur = txn.cursor(db=db)
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
                )
            return types_pb2.Job.FromString(bytes(raw))

    def _scan(
        self,
        txn: lmdb.Transaction,
        index: bytes,
        prefix: bytes,
        *,
        newest_first: bool = False,
        after: bytes = b"",
    ) -> Iterator[bytes]:
        """Keys of `index` under `prefix`, in order, strictly past `prefix + after`."""
        cur = txn.cursor(db=self._db[index])
        if newest_first:
            upper = prefix + after if after else _successor(prefix)
            if not upper:
                ok = cur.last()
            elif cur.set_range(upper):
                ok = cur.prev()  # the last key below `upper`
            else:
                ok = cur.last()  # every key is below `upper`
            step = cur.prev
        else:
            start = prefix + after
            ok = cur.set_range(start)
            if ok and after and bytes(cur.key()) == start:
                ok = cur.next()
            step = cur.next
        while ok:
            key = bytes(cur.key())
            if not key.startswith(prefix):
                return
            yield key
            ok = step()

    def query_jobs(self, query: JobQuery) -> JobPage:
        newest_first = not query.oldest_first
        after = bytes.fromhex(query.cursor) if query.cursor else b""
        jobs: list[types_pb2.Job] = []
        last = b""
        with self._read() as txn:
            jobs_db = self._db[b"jobs"]
            for tail in self._candidates(txn, query, newest_first, after):
                raw = txn.get(tail[8:], db=jobs_db)
                if raw is None:
                    continue
                job = types_pb2.Job.FromString(bytes(raw))
                if not query.matches(job):
                    continue
                if query.limit and len(jobs) == query.limit:
                    return JobPage(jobs, last.hex())
                jobs.append(job)
                last = tail
        return JobPage(jobs, "")

    def _candidates(
        self, txn: lmdb.Transaction, query: JobQuery, newest_first: bool, after: bytes
    ) -> Iterator[bytes]:
        """be64(create time) + job ID of the jobs an index says may match, in order."""

        def tails(index: bytes, prefix: bytes) -> Iterator[bytes]:
            for key in self._scan(txn, index, prefix, newest_first=newest_first, after=after):
                yield key[len(prefix) :]

        if query.client_id:
            return tails(b"jobs_client", _client_prefix(query.client_id))
        if query.states:  # one index range per state, merged by time
            ranges = [tails(b"jobs_state", _state_prefix(s)) for s in sorted(query.states)]
            return heapq.merge(*ranges, reverse=newest_first)
        return tails(b"jobs_time", b"")

    def list_jobs(self, *, active_only: bool, limit: int) -> list[types_pb2.Job]:
        states = ACTIVE_JOB_STATES if active_only else frozenset()
        return self.query_jobs(JobQuery(states=states, limit=limit)).jobs

    def count_jobs(self, query: JobQuery) -> int:
        if not (query.client_id or query.labels):
            counts = self.count_jobs_by_state()
            wanted = query.states or counts.keys()
            return sum(counts.get(s, 0) for s in wanted)
        return len(self.query_jobs(JobQuery(query.states, query.client_id, query.labels)).jobs)

    def events(self, job_id: str, after_seq: int = 0) -> list[types_pb2.Event]:
        prefix = job_id.encode() + b"\x00"
        out: list[types_pb2.Event] = []
        with self._read() as txn:
            cur = txn.cursor(db=self._db[b"events"])
            if not cur.set_range(_event_key(job_id, after_seq + 1)):
                return out
            for key, value in cur:
                if not bytes(key).startswith(prefix):
                    break
                out.append(types_pb2.Event.FromString(bytes(value)))
        return out

    def get_local(self, execution_id: str) -> records_pb2.LocalExecution | None:
        with self._read() as txn:
            raw = txn.get(execution_id.encode(), db=self._db[b"local"])
            return None if raw is None else records_pb2.LocalExecution.FromString(bytes(raw))

    def list_local(self) -> list[records_pb2.LocalExecution]:
        with self._read() as txn:
            cur = txn.cursor(db=self._db[b"local"])
            return [records_pb2.LocalExecution.FromString(bytes(v)) for _, v in cur]

    def get_shard(self, job_id: str, index: int) -> types_pb2.Shard | None:
        with self._read() as txn:
            raw = txn.get(_shard_key(job_id, index), db=self._db[b"shards"])
            return None if raw is None else types_pb2.Shard.FromString(bytes(raw))

    def get_memo(self, key: str) -> records_pb2.MemoEntry | None:
        with self._read() as txn:
            return self._memo(txn, key.encode())

    def _memo(self, txn: lmdb.Transaction, key: bytes) -> records_pb2.MemoEntry | None:
        raw = txn.get(key, db=self._db[b"memo"]) if key else None
        return None if raw is None else records_pb2.MemoEntry.FromString(bytes(raw))

    def made_by(self, cid: str) -> records_pb2.MemoEntry | None:
        with self._read() as txn:
            key = txn.get(cid.encode(), db=self._db[b"made_by"]) if cid else None
            return None if key is None else self._memo(txn, bytes(key))

    def used_by(self, cid: str) -> list[records_pb2.MemoEntry]:
        prefix = cid.encode() + b"\x00"
        out = []
        with self._read() as txn:
            cur = txn.cursor(db=self._db[b"used_by"])
            if cur.set_range(prefix):
                for key, _ in cur:
                    if not bytes(key).startswith(prefix):
                        break
                    entry = self._memo(txn, bytes(key)[len(prefix) :])
                    if entry is not None:
                        out.append(entry)
        return out

    def list_peers(self) -> list[records_pb2.PeerRecord]:
        with self._read() as txn:
            cur = txn.cursor(db=self._db[b"peers"])
            return [records_pb2.PeerRecord.FromString(bytes(v)) for _, v in cur]

    def list_uploads(self, user_id: str) -> list[records_pb2.UploadRecord]:
        with self._read() as txn:
            return _uploads(txn, self._db[b"uploads"], user_id)

    def uploaded_bytes(self, user_id: str) -> int:
        return sum(r.bytes for r in self.list_uploads(user_id))

    def upload_holders(self, cid: str) -> list[str]:
        with self._read() as txn:
            return _holders(txn, self._db[b"uploads"], cid)

    def count_jobs_by_state(self) -> dict[int, int]:
        with self._read() as txn:
            cur = txn.cursor(db=self._db[b"job_states"])
            counts = {_BE32.unpack(k)[0]: _BE64.unpack(v)[0] for k, v in cur}
        return {s: n for s, n in counts.items() if n}

    def close(self) -> None:
        """Finish queued writes, then close the environment."""
        if self._stop_writer():
            with self._lock:
                self._env.close()


class _ReadTxn:
    """A read transaction taken under the store's lock (map growth needs none open)."""

    def __init__(self, store: LmdbDatastore) -> None:
        self._store = store

    def __enter__(self) -> lmdb.Transaction:
        self._store._lock.acquire()
        try:
            if self._store._closed:
                raise DatastoreError("the datastore is closed")
            self._txn = self._store._env.begin()
        except lmdb.Error as e:
            self._store._lock.release()
            raise DatastoreError(f"cannot read the datastore: {e}") from e
        except BaseException:
            self._store._lock.release()
            raise
        return self._txn

    def __exit__(self, *exc: object) -> None:
        try:
            self._txn.abort()
        finally:
            self._store._lock.release()


_MIN_FREE = 1 << 20


def _check_room(path: Path) -> None:
    st = os.statvfs(path)
    if st.f_bavail * st.f_frsize < _MIN_FREE:
        raise DatastoreError(
            f"cannot create a datastore in {path}: disk full",
            hint=f"free some space on the disk holding {path}",
        )


def _successor(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix` (b"" if none)."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return b""


def _migrate_0_to_1(store: LmdbDatastore, txn: lmdb.Transaction) -> None:
    """Schema 0 (no version record) had no state or client indexes: build them."""
    db = store._db
    for _, raw in txn.cursor(db=db[b"jobs"]):
        job = types_pb2.Job.FromString(bytes(raw))
        tkey = order_key(job)
        txn.put(_state_prefix(job.state) + tkey, b"", db=db[b"jobs_state"])
        if job.client_id:
            txn.put(_client_prefix(job.client_id) + tkey, b"", db=db[b"jobs_client"])


def _migrate_1_to_2(store: LmdbDatastore, txn: lmdb.Transaction) -> None:
    """Schema 2 adds the `peers` database, which opening the environment created empty."""


def _migrate_2_to_3(store: LmdbDatastore, txn: lmdb.Transaction) -> None:
    """Schema 3 adds the `shards` database, which opening the environment created empty."""


def _migrate_3_to_4(store: LmdbDatastore, txn: lmdb.Transaction) -> None:
    """Schema 4 adds `memo`, `made_by` and `used_by`, which opening the environment created
    empty."""


def _migrate_4_to_5(store: LmdbDatastore, txn: lmdb.Transaction) -> None:
    """Schema 5 adds the `uploads` database, which opening the environment created empty
    (uploads made before it have no record: their roots stay pinned as they were)."""


_MIGRATIONS: dict[int, Migration] = {
    0: _migrate_0_to_1,
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
    3: _migrate_3_to_4,
    4: _migrate_4_to_5,
}
