"""The LMDB datastore's own concerns: files, reopening, map growth, schema, corruption, a full
disk, kill -9. The contract every datastore keeps is in test_datastore.py."""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import lmdb
import pytest

from bacalhau._pb.bacalhau.v1 import records_pb2, types_pb2
from bacalhau.datastore import DatastoreError, JobNotFound, LmdbDatastore, Tx
from bacalhau.datastore.base import SCHEMA_VERSION, JobQuery, SchemaError
from bacalhau.models import JobState
from tests.test_datastore import TIMEOUT, create, event, move, new_job, nonzero, put_job, write

ROOT = Path(__file__).resolve().parent.parent
BIG = 8000  # bytes of annotation per job in the tests that fill space


def local(execution_id: str) -> records_pb2.LocalExecution:
    return records_pb2.LocalExecution(execution=types_pb2.Execution(id=execution_id, job_id="j-1"))


def big_job(i: int) -> types_pb2.Job:
    job = new_job(f"j-{i:05d}", created=i + 1)
    job.spec.annotations["padding"] = "x" * BIG
    return job


def create_inside(i: int) -> Callable[[Tx], None]:
    """A write that builds its job itself, so that running it again is harmless."""
    return lambda tx: tx.put_job(big_job(i))


def main_db_keys(path: Path) -> list[bytes]:
    env = lmdb.open(str(path), max_dbs=16, readonly=True)
    try:
        with env.begin() as txn:
            return [bytes(k) for k, _ in txn.cursor()]
    finally:
        env.close()


def store_summary(store: LmdbDatastore) -> dict[str, object]:
    jobs = store.list_jobs(active_only=False, limit=0)
    return {
        "jobs": [(j.id, j.revision, j.state) for j in jobs],
        "events": {j.id: [e.seq for e in store.events(j.id)] for j in jobs},
        "counts": nonzero(store.count_jobs_by_state()),
        "local": [r.execution.id for r in store.list_local()],
    }


# -- reopening -------------------------------------------------------------------------------


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db"
    first = LmdbDatastore(path)
    create(first, new_job("j-1", created=1), new_job("j-2", created=2))
    move(first, "j-2", JobState.RUNNING)
    write(first, lambda tx: tx.add_event(event("j-1", "More")))
    write(first, lambda tx: tx.put_local(local("e-1")))
    first.close()

    second = LmdbDatastore(path)
    try:
        assert store_summary(second) == {
            "jobs": [("j-2", 2, JobState.RUNNING.pb), ("j-1", 1, JobState.PENDING.pb)],
            "events": {"j-1": [1, 2], "j-2": [1]},
            "counts": {JobState.PENDING.pb: 1, JobState.RUNNING.pb: 1},
            "local": ["e-1"],
        }
        # Sequence numbers and revisions carry on where they stopped.
        assert write(second, lambda tx: tx.add_event(event("j-1", "Again")).seq) == 3
        assert move(second, "j-2", JobState.COMPLETED).revision == 3
    finally:
        second.close()


def test_close_writes_queued_writes_to_disk(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = LmdbDatastore(path)
    futures: list[Future[None]] = [
        store.submit(put_job(new_job(f"j-{i:02d}", created=i + 1))) for i in range(50)
    ]
    store.close()
    assert all(f.done() and f.exception() is None for f in futures)
    reopened = LmdbDatastore(path)
    try:
        assert len(reopened.list_jobs(active_only=False, limit=0)) == 50
    finally:
        reopened.close()


def test_reads_after_close_raise_a_datastore_error(tmp_path: Path) -> None:
    store = LmdbDatastore(tmp_path / "db")
    create(store, new_job("j-1", created=1))
    store.close()
    with pytest.raises(DatastoreError, match="closed"):
        store.get_job("j-1")


def test_opening_an_unusable_path_is_a_datastore_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    with pytest.raises(DatastoreError):
        LmdbDatastore(blocker / "db")


# -- map growth ------------------------------------------------------------------------------


def test_the_map_grows_when_full(tmp_path: Path) -> None:
    path = tmp_path / "db"
    count = 300  # about 2.4 MB of annotations in a 1 MiB map
    store = LmdbDatastore(path, map_size=1 << 20)
    try:
        # Half in flight at once (group commits), half one at a time.
        futures = [store.submit(create_inside(i)) for i in range(count // 2)]
        assert [f.result(timeout=TIMEOUT) for f in futures] == [None] * len(futures)
        for i in range(count // 2, count):
            write(store, create_inside(i))
        assert store.count_jobs(JobQuery()) == count
    finally:
        store.close()
    assert (path / "data.mdb").stat().st_size > 2 << 20

    reopened = LmdbDatastore(path, map_size=1 << 20)
    try:
        jobs = reopened.query_jobs(JobQuery(oldest_first=True)).jobs
        assert [j.id for j in jobs] == [f"j-{i:05d}" for i in range(count)]
        assert all(j.revision == 1 and len(j.spec.annotations["padding"]) == BIG for j in jobs)
        write(reopened, create_inside(count))  # and it still takes writes
    finally:
        reopened.close()


def test_the_map_grows_under_writes_of_jobs_built_before_submit(tmp_path: Path) -> None:
    store = LmdbDatastore(tmp_path / "db", map_size=1 << 20)
    try:
        futures = [store.submit(put_job(big_job(i))) for i in range(300)]
        for f in futures:
            f.result(timeout=TIMEOUT)
        assert store.count_jobs(JobQuery()) == 300
    finally:
        store.close()


# -- schema, foreign and corrupt directories --------------------------------------------------


def test_a_fresh_directory_gets_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "db"
    LmdbDatastore(path).close()
    env = lmdb.open(str(path), max_dbs=16, readonly=True)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            raw = txn.get(b"schema_version", db=meta)
    finally:
        env.close()
    assert raw is not None and struct.unpack(">I", raw) == (SCHEMA_VERSION,)
    LmdbDatastore(path).close()  # and it opens again


def write_newer_schema(path: Path) -> None:
    env = lmdb.open(str(path), max_dbs=16)
    try:
        meta = env.open_db(b"meta")
        with env.begin(write=True) as txn:
            txn.put(b"schema_version", struct.pack(">I", SCHEMA_VERSION + 1), db=meta)
    finally:
        env.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    write_newer_schema(path)
    with pytest.raises(SchemaError) as info:
        LmdbDatastore(path)
    message = str(info.value)
    assert "newer" in message and "\n" not in message
    assert info.value.hint


def test_a_newer_schema_directory_is_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "db"
    write_newer_schema(path)
    before = main_db_keys(path)
    with pytest.raises(SchemaError):
        LmdbDatastore(path)
    assert main_db_keys(path) == before == [b"meta"]


def test_a_schema_2_directory_gains_the_later_tables(tmp_path: Path) -> None:
    """Schema 2 to 5: shards (3), memo and lineage (4), uploads (5), each created empty."""
    path = tmp_path / "db"
    path.mkdir()
    env = lmdb.open(str(path), max_dbs=16)
    dbs = {
        name: env.open_db(name)
        for name in (b"meta", b"jobs", b"jobs_time", b"jobs_state", b"jobs_client",
                     b"job_states", b"events", b"local", b"peers")
    }  # fmt: skip
    with env.begin(write=True) as txn:
        txn.put(b"schema_version", struct.pack(">I", 2), db=dbs[b"meta"])
        job = types_pb2.Job(id="j-old", state=1, create_time_unix_nano=1)
        txn.put(b"j-old", job.SerializeToString(), db=dbs[b"jobs"])
    env.close()
    store = LmdbDatastore(path)
    try:
        assert store.get_job("j-old").id == "j-old"
        assert store.list_uploads("alice") == []
        rec = records_pb2.UploadRecord(user_id="alice", cid="Qm1", bytes=3)
        store.submit(lambda tx: tx.put_upload(rec)).result(timeout=10)
        assert store.uploaded_bytes("alice") == 3
        assert store.get_shard("j-old", 0) is None and store.get_memo("k") is None
        assert store.made_by("Qm1") is None and store.used_by("Qm1") == []
    finally:
        store.close()
    env = lmdb.open(str(path), max_dbs=16)
    meta = env.open_db(b"meta")
    with env.begin(db=meta) as txn:
        assert struct.unpack(">I", txn.get(b"schema_version")) == (SCHEMA_VERSION,) == (5,)
    env.close()


def test_a_foreign_environment_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "db"
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        txn.put(b"hello", b"world")
    env.close()
    keys, data = main_db_keys(path), (path / "data.mdb").read_bytes()
    with pytest.raises(SchemaError) as info:
        LmdbDatastore(path)
    assert "\n" not in str(info.value) and info.value.hint
    assert main_db_keys(path) == keys == [b"hello"]
    assert (path / "data.mdb").read_bytes() == data


@pytest.mark.parametrize("size", [1, 100, 4096, 65536, 1 << 20])
def test_a_data_file_of_random_bytes_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / "db"
    path.mkdir()
    (path / "data.mdb").write_bytes(random.Random(size).randbytes(size))
    with pytest.raises(DatastoreError):  # SchemaError is one
        LmdbDatastore(path)


CORRUPT_PAGES = """
import random, sys
from pathlib import Path
from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.datastore import DatastoreError, LmdbDatastore
from bacalhau.datastore.base import JobQuery

path = Path(sys.argv[1])
store = LmdbDatastore(path)
for i in range(200):
    job = types_pb2.Job(id=f"j-{i:04d}", state=1, create_time_unix_nano=i + 1)
    store.submit(lambda tx, job=job: tx.put_job(job)).result()
store.close()
data = bytearray((path / "data.mdb").read_bytes())
start = 2 * 4096  # keep the two meta pages, so that LMDB takes it for an environment
data[start:] = random.Random(int(sys.argv[2])).randbytes(len(data) - start)
(path / "data.mdb").write_bytes(bytes(data))
try:
    store = LmdbDatastore(path)
    store.query_jobs(JobQuery())
    print("read")
except DatastoreError as e:
    print("refused", type(e).__name__)
"""


@pytest.mark.parametrize("seed", [1, 2])
def test_a_data_file_with_corrupt_pages_is_refused(tmp_path: Path, seed: int) -> None:
    # In a child process: LMDB reading garbage pages might crash it, and not this run.
    proc = subprocess.run(
        [sys.executable, "-c", CORRUPT_PAGES, str(tmp_path / "db"), str(seed)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().split()[0] == "refused", proc.stdout.decode()


# -- a full disk -----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root only; skipped where it cannot be mounted)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    cmd = ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)]
    mounted = subprocess.run(cmd, capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
            pytest.fail(f"{mount_point} was still busy at unmount")


def test_a_full_disk_fails_writes_and_keeps_the_acknowledged_ones(small_disk: Path) -> None:
    path = small_disk / "db"
    store = LmdbDatastore(path)
    ok: list[str] = []
    failed: list[tuple[str, BaseException]] = []
    try:
        i = 0
        while not failed:
            assert i < 5000, "the disk never filled"
            batch = []
            for _ in range(8):  # several in flight, so that some commits are groups
                batch.append((f"j-{i:05d}", store.submit(create_inside(i))))
                i += 1
            for job_id, fut in batch:
                exc = fut.exception(timeout=TIMEOUT)
                if exc is None:
                    ok.append(job_id)
                else:
                    failed.append((job_id, exc))
        assert ok, "not a single job fitted"
        for _, exc in failed:
            assert isinstance(exc, DatastoreError), repr(exc)
            assert "\n" not in str(exc)
        assert store.get_job(ok[-1]).id == ok[-1]  # reads still work
    finally:
        store.close()

    reopened = LmdbDatastore(path)
    try:
        for job_id in ok:
            assert reopened.get_job(job_id).revision == 1
        for job_id, _ in failed:  # a failed commit left nothing of its group
            with pytest.raises(JobNotFound):
                reopened.get_job(job_id)
        assert reopened.count_jobs(JobQuery()) == len(ok)
        assert nonzero(reopened.count_jobs_by_state()) == {JobState.PENDING.pb: len(ok)}
    finally:
        reopened.close()


def fill(directory: Path, leave: int = 0) -> None:
    """Fill the file system holding `directory`, then free `leave` bytes of it."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        block = b"x" * 4096
        try:
            while True:
                f.write(block)
        except OSError:
            pass
    if leave:
        os.truncate(filler, max(filler.stat().st_size - leave, 0))


def test_a_write_larger_than_the_free_space_says_disk_full(small_disk: Path) -> None:
    store = LmdbDatastore(small_disk / "db")
    try:
        fill(small_disk, leave=512 * 1024)

        def huge(tx: Tx) -> None:
            job = new_job("j-huge", created=1)
            job.spec.annotations["padding"] = "x" * (1 << 20)
            tx.put_job(job)

        exc = store.submit(huge).exception(timeout=TIMEOUT)
        assert isinstance(exc, DatastoreError)
        assert "disk full" in str(exc) and exc.hint
    finally:
        store.close()


OPEN_ON_A_FULL_DISK = """
import sys
from bacalhau.datastore import DatastoreError, LmdbDatastore

try:
    LmdbDatastore(sys.argv[1]).close()
    print("opened")
except DatastoreError as e:
    print("refused", e)
"""


def test_opening_a_new_datastore_on_a_full_disk_is_a_datastore_error(small_disk: Path) -> None:
    fill(small_disk)
    # In a child process: what goes wrong here kills the process.
    proc = subprocess.run(
        [sys.executable, "-c", OPEN_ON_A_FULL_DISK, str(small_disk / "db")],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"exit status {proc.returncode}: {proc.stderr.decode()[-300:]}"
    assert proc.stdout.decode().startswith("refused"), proc.stdout.decode()


# -- kill -9 ---------------------------------------------------------------------------------

CHILD = """
import sys
from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.datastore import LmdbDatastore

store = LmdbDatastore(sys.argv[1])
i = 0
while True:
    futures = []
    for _ in range(8):  # several in flight, so that some commits are groups
        i += 1
        job = types_pb2.Job(id=f"j-{i:06d}", state=1, create_time_unix_nano=i)
        futures.append((job.id, store.submit(lambda tx, job=job: tx.put_job(job))))
    for job_id, fut in futures:
        fut.result()
        print(job_id, flush=True)
"""


def test_kill_9_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "db"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # A watchdog, so that a child that hangs fails the test instead of stalling it.
    watchdog = threading.Timer(60.0, proc.kill)
    watchdog.start()
    printed: list[str] = []
    try:
        assert proc.stdout is not None
        while len(printed) < 100:
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(line.decode().strip())
        assert len(printed) >= 100, proc.stderr.read().decode() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    printed += rest.decode().split()

    reopened = LmdbDatastore(path)
    try:
        for job_id in printed:
            assert reopened.get_job(job_id).revision == 1
        stored = {j.id for j in reopened.list_jobs(active_only=False, limit=0)}
        assert set(printed) <= stored
        # Nothing half-written: the counters match the jobs that are there.
        assert nonzero(reopened.count_jobs_by_state()) == {JobState.PENDING.pb: len(stored)}
    finally:
        reopened.close()
