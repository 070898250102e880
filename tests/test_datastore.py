"""The LMDB datastore: group commit, rollback of failed writes, events, lookups, durability."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from bacalhau._pb.bacalhau.v1 import records_pb2, types_pb2
from bacalhau.datastore import (
    AmbiguousID,
    DatastoreError,
    JobNotFound,
    LmdbDatastore,
    Tx,
)
from bacalhau.models import ExecutionState, IllegalTransition, JobState, set_job_state
from tests._wait import wait_for

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0  # seconds any single write may take before the test fails


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LmdbDatastore]:
    s = LmdbDatastore(tmp_path / "db")
    yield s
    s.close()


def new_job(job_id: str, created: int, state: JobState = JobState.PENDING) -> types_pb2.Job:
    return types_pb2.Job(
        id=job_id,
        state=state.pb,
        create_time_unix_nano=created,
        update_time_unix_nano=created,
        spec=types_pb2.JobSpec(engine="wasm"),
    )


def event(job_id: str, type_: str = "Something") -> types_pb2.Event:
    return types_pb2.Event(job_id=job_id, type=type_)


def add(job_id: str, type_: str) -> Callable[[Tx], types_pb2.Event]:
    """A write that appends one event."""
    return lambda tx: tx.add_event(event(job_id, type_))


def put_locals(*records: records_pb2.LocalExecution) -> Callable[[Tx], None]:
    def fn(tx: Tx) -> None:
        for record in records:
            tx.put_local(record)

    return fn


def write(store: LmdbDatastore, fn: Callable[[Tx], object]) -> object:
    return store.submit(fn).result(timeout=TIMEOUT)


def create(store: LmdbDatastore, *jobs: types_pb2.Job) -> None:
    def fn(tx: Tx) -> None:
        for job in jobs:
            tx.put_job(job)
            tx.add_event(event(job.id, "JobCreated"))

    write(store, fn)


def move(store: LmdbDatastore, job_id: str, state: JobState) -> types_pb2.Job:
    def fn(tx: Tx) -> types_pb2.Job:
        job = tx.get_job(job_id)
        set_job_state(job, state)
        tx.put_job(job)
        return job

    job = write(store, fn)
    assert isinstance(job, types_pb2.Job)
    return job


def put_job(job: types_pb2.Job) -> Callable[[Tx], None]:
    return lambda tx: tx.put_job(job)


def nonzero(counts: dict[int, int]) -> dict[int, int]:
    return {state: n for state, n in counts.items() if n}


# -- jobs ------------------------------------------------------------------------------------


def test_create_and_get_a_job(store: LmdbDatastore) -> None:
    job = new_job("j-abc", created=1000)
    job.spec.wasm.module_cid = "bafy-module"
    create(store, job)
    got = store.get_job("j-abc")
    assert got.id == "j-abc"
    assert got.revision == 1
    assert got.spec.engine == "wasm" and got.spec.wasm.module_cid == "bafy-module"
    assert JobState.of(got.state) is JobState.PENDING
    assert got.create_time_unix_nano == 1000


def test_put_job_bumps_the_revision_each_time(store: LmdbDatastore) -> None:
    create(store, new_job("j-1", created=1))
    assert move(store, "j-1", JobState.RUNNING).revision == 2
    assert store.get_job("j-1").revision == 2
    assert move(store, "j-1", JobState.COMPLETED).revision == 3
    got = store.get_job("j-1")
    assert got.revision == 3 and JobState.of(got.state) is JobState.COMPLETED


def test_submit_returns_the_functions_value(store: LmdbDatastore) -> None:
    assert write(store, lambda tx: 42) == 42


def test_reads_inside_a_transaction_see_its_own_writes(store: LmdbDatastore) -> None:
    def fn(tx: Tx) -> tuple[int, int]:
        tx.put_job(new_job("j-1", created=1))
        first = tx.get_job("j-1").revision
        job = tx.get_job("j-1")
        tx.put_job(job)
        return first, tx.get_job("j-1").revision

    assert write(store, fn) == (1, 2)


def test_tx_get_job_of_an_unknown_job(store: LmdbDatastore) -> None:
    fut = store.submit(lambda tx: tx.get_job("j-missing"))
    with pytest.raises(JobNotFound):
        fut.result(timeout=TIMEOUT)


def test_get_job_by_unique_prefix(store: LmdbDatastore) -> None:
    create(
        store,
        new_job("j-abc1", created=1),
        new_job("j-abc2", created=2),
        new_job("j-xyz", created=3),
        new_job("j-1", created=4),
        new_job("j-10", created=5),
    )
    assert store.get_job("j-x").id == "j-xyz"
    assert store.get_job("j-abc2").id == "j-abc2"
    # An exact ID wins over the longer IDs it is a prefix of.
    assert store.get_job("j-1").id == "j-1"
    assert store.get_job("j-10").id == "j-10"
    with pytest.raises(AmbiguousID) as info:
        store.get_job("j-abc")
    assert info.value.hint
    with pytest.raises(AmbiguousID):
        store.get_job("j-")
    for unknown in ("j-q", "j-abc3", "j-xyz0", "zzz", "a"):
        with pytest.raises(JobNotFound):
            store.get_job(unknown)


def test_not_found_on_an_empty_store(store: LmdbDatastore) -> None:
    with pytest.raises(JobNotFound) as info:
        store.get_job("j-1")
    assert isinstance(info.value, DatastoreError)
    assert store.list_jobs(active_only=False, limit=0) == []
    assert store.events("j-1") == []
    assert store.count_jobs_by_state() == {}
    assert store.list_local() == []


def test_get_job_of_an_empty_id_is_not_found(store: LmdbDatastore) -> None:
    create(store, new_job("j-1", created=1))
    with pytest.raises(JobNotFound):
        store.get_job("")


def test_list_jobs_newest_first(store: LmdbDatastore) -> None:
    # Created out of order: the listing follows the create time, not the write order.
    create(store, new_job("j-b", created=200), new_job("j-a", created=300))
    create(store, new_job("j-c", created=100))
    create(store, new_job("j-d", created=400))
    ids = [j.id for j in store.list_jobs(active_only=False, limit=0)]
    assert ids == ["j-d", "j-a", "j-b", "j-c"]
    assert [j.id for j in store.list_jobs(active_only=False, limit=2)] == ["j-d", "j-a"]
    assert len(store.list_jobs(active_only=False, limit=10)) == 4
    # A state change keeps a job's place.
    move(store, "j-c", JobState.RUNNING)
    ids = [j.id for j in store.list_jobs(active_only=False, limit=0)]
    assert ids == ["j-d", "j-a", "j-b", "j-c"]


def test_list_jobs_active_only(store: LmdbDatastore) -> None:
    create(store, *(new_job(f"j-{i}", created=i) for i in range(1, 7)))
    move(store, "j-6", JobState.FAILED)
    move(store, "j-5", JobState.RUNNING)
    move(store, "j-4", JobState.RUNNING)
    move(store, "j-4", JobState.COMPLETED)
    move(store, "j-2", JobState.CANCELLED)
    active = store.list_jobs(active_only=True, limit=0)
    assert [j.id for j in active] == ["j-5", "j-3", "j-1"]
    # The limit counts only the jobs that are listed.
    assert [j.id for j in store.list_jobs(active_only=True, limit=2)] == ["j-5", "j-3"]
    all_ids = [j.id for j in store.list_jobs(active_only=False, limit=0)]
    assert all_ids == ["j-6", "j-5", "j-4", "j-3", "j-2", "j-1"]


def test_count_jobs_by_state_follows_state_changes(store: LmdbDatastore) -> None:
    pending, running = JobState.PENDING.pb, JobState.RUNNING.pb
    completed, failed = JobState.COMPLETED.pb, JobState.FAILED.pb
    create(store, *(new_job(f"j-{i}", created=i) for i in range(3)))
    assert nonzero(store.count_jobs_by_state()) == {pending: 3}
    move(store, "j-0", JobState.RUNNING)
    assert nonzero(store.count_jobs_by_state()) == {pending: 2, running: 1}
    move(store, "j-0", JobState.COMPLETED)
    move(store, "j-1", JobState.FAILED)
    assert nonzero(store.count_jobs_by_state()) == {pending: 1, completed: 1, failed: 1}
    # Rewriting a job without changing its state counts it once.
    write(store, lambda tx: tx.put_job(tx.get_job("j-2")))
    assert nonzero(store.count_jobs_by_state()) == {pending: 1, completed: 1, failed: 1}


# -- failures and group commit ----------------------------------------------------------------


class Boom(Exception):
    pass


def test_a_failed_function_leaves_no_trace_while_its_group_commits(
    store: LmdbDatastore,
) -> None:
    seen: list[list[types_pb2.Event]] = []
    store.add_listener(lambda events: seen.append(list(events)))
    gate = threading.Event()
    started = threading.Event()

    def hold(tx: Tx) -> None:
        started.set()
        assert gate.wait(TIMEOUT), "the test never opened the gate"

    # Hold the writer so that the 200 writes queue up and go into one group.
    held = store.submit(hold)
    assert started.wait(TIMEOUT)

    def job_fn(i: int) -> Callable[[Tx], str]:
        def fn(tx: Tx) -> str:
            job = new_job(f"j-{i:03d}", created=i + 1)
            tx.put_job(job)
            tx.add_event(event(job.id, "JobCreated"))
            tx.put_local(records_pb2.LocalExecution(execution=types_pb2.Execution(id=f"e-{i:03d}")))
            if i % 7 == 0:
                raise Boom(i)
            return job.id

        return fn

    futures = [store.submit(job_fn(i)) for i in range(200)]
    gate.set()
    held.result(timeout=TIMEOUT)

    ok = [i for i in range(200) if i % 7]
    failed = [i for i in range(200) if i % 7 == 0]
    for i, fut in enumerate(futures):
        if i % 7 == 0:
            exc = fut.exception(timeout=TIMEOUT)
            assert isinstance(exc, Boom) and exc.args == (i,)
        else:
            assert fut.result(timeout=TIMEOUT) == f"j-{i:03d}"

    for i in failed:
        with pytest.raises(JobNotFound):
            store.get_job(f"j-{i:03d}")
        assert store.events(f"j-{i:03d}") == []
        assert store.get_local(f"e-{i:03d}") is None
    for i in ok:
        assert store.get_job(f"j-{i:03d}").revision == 1
        assert [e.seq for e in store.events(f"j-{i:03d}")] == [1]
    listed = store.list_jobs(active_only=False, limit=0)
    assert [j.id for j in listed] == [f"j-{i:03d}" for i in reversed(ok)]
    assert nonzero(store.count_jobs_by_state()) == {JobState.PENDING.pb: len(ok)}
    assert len(store.list_local()) == len(ok)

    # The listener heard only the committed writes; they shared commits (fewer calls than writes).
    # It runs after the futures resolve, so wait for it.
    wait_for(lambda: sum(map(len, seen)) >= len(ok), TIMEOUT, "the listener")
    heard = [e.job_id for batch in seen for e in batch]
    assert sorted(heard) == [f"j-{i:03d}" for i in ok]
    assert len(seen) < len(ok)


def test_a_failed_state_change_rolls_back(store: LmdbDatastore) -> None:
    create(store, new_job("j-1", created=1))

    def fn(tx: Tx) -> None:
        job = tx.get_job("j-1")
        set_job_state(job, JobState.RUNNING)
        tx.put_job(job)
        tx.add_event(event("j-1", "Started"))
        raise Boom("after writing")

    with pytest.raises(Boom):
        write(store, fn)
    got = store.get_job("j-1")
    assert JobState.of(got.state) is JobState.PENDING and got.revision == 1
    assert [e.type for e in store.events("j-1")] == ["JobCreated"]
    assert nonzero(store.count_jobs_by_state()) == {JobState.PENDING.pb: 1}
    # The next event takes the sequence number the failed one did not keep.
    write(store, lambda tx: tx.add_event(event("j-1", "Next")))
    assert [(e.seq, e.type) for e in store.events("j-1")] == [(1, "JobCreated"), (2, "Next")]


def test_an_illegal_transition_reaches_the_caller(store: LmdbDatastore) -> None:
    create(store, new_job("j-1", created=1))
    move(store, "j-1", JobState.CANCELLED)
    with pytest.raises(IllegalTransition):
        move(store, "j-1", JobState.RUNNING)
    assert store.get_job("j-1").revision == 2


# -- events ----------------------------------------------------------------------------------


def test_events_are_numbered_per_job_in_order(store: LmdbDatastore) -> None:
    create(store, new_job("j-1", created=1))

    def two(tx: Tx) -> list[int]:
        return [tx.add_event(event("j-1", "A")).seq, tx.add_event(event("j-1", "B")).seq]

    assert write(store, two) == [2, 3]
    futures = [store.submit(add("j-1", f"C{n}")) for n in range(5)]
    assert [f.result(timeout=TIMEOUT).seq for f in futures] == [4, 5, 6, 7, 8]

    events = store.events("j-1")
    assert [e.seq for e in events] == list(range(1, 9))
    assert [e.type for e in events] == ["JobCreated", "A", "B", "C0", "C1", "C2", "C3", "C4"]
    assert all(e.job_id == "j-1" and e.time_unix_nano > 0 for e in events)
    assert [e.seq for e in store.events("j-1", after_seq=5)] == [6, 7, 8]
    assert [e.seq for e in store.events("j-1", after_seq=7)] == [8]
    assert store.events("j-1", after_seq=8) == []
    assert store.events("j-1", after_seq=100) == []


def test_an_events_time_is_kept_when_given(store: LmdbDatastore) -> None:
    given = types_pb2.Event(job_id="j-1", type="X", time_unix_nano=12345, detail="d")
    got = write(store, lambda tx: tx.add_event(given))
    assert isinstance(got, types_pb2.Event) and got.seq == 1
    [stored] = store.events("j-1")
    assert stored.time_unix_nano == 12345 and stored.detail == "d" and stored.type == "X"


def test_events_of_jobs_whose_ids_share_a_prefix_do_not_mix(store: LmdbDatastore) -> None:
    ids = ["j-1", "j-10", "j-100", "j-0", "j-2"]
    # Interleave, with the longer IDs first so that the shorter ones start amid their events.
    order = ["j-10", "j-100", "j-10", "j-1", "j-100", "j-1", "j-0", "j-10", "j-1", "j-2"]
    for job_id in order:
        write(store, add(job_id, "E"))
    for job_id in ids:
        got = store.events(job_id)
        assert [e.job_id for e in got] == [job_id] * order.count(job_id), job_id
        assert [e.seq for e in got] == list(range(1, order.count(job_id) + 1)), job_id
    assert [e.seq for e in store.events("j-1", after_seq=1)] == [2, 3]
    assert [e.seq for e in store.events("j-10", after_seq=2)] == [3]
    assert store.events("j-100", after_seq=2) == []
    assert store.events("j-") == []
    assert store.events("j-3") == []


def test_listeners_hear_each_commit_after_it(store: LmdbDatastore) -> None:
    heard: list[tuple[list[tuple[str, int, str]], bool, bool]] = []
    done = threading.Event()

    def listener(events: Iterable[types_pb2.Event]) -> None:
        batch = [(e.job_id, e.seq, e.type) for e in events]
        # After the commit: a separate read already sees the job.
        try:
            visible = all(store.get_job(job_id).id == job_id for job_id, _, _ in batch)
        except JobNotFound:
            visible = False
        heard.append((batch, visible, threading.current_thread() is threading.main_thread()))
        done.set()

    other: list[list[types_pb2.Event]] = []
    store.add_listener(listener)
    store.add_listener(lambda events: other.append(list(events)))

    create(store, new_job("j-1", created=1))
    assert done.wait(TIMEOUT)
    assert heard == [([("j-1", 1, "JobCreated")], True, False)]
    assert [[e.type for e in batch] for batch in other] == [["JobCreated"]]

    done.clear()

    def two(tx: Tx) -> None:
        tx.add_event(event("j-1", "A"))
        tx.add_event(event("j-1", "B"))

    write(store, two)
    assert done.wait(TIMEOUT)
    assert heard[1] == ([("j-1", 2, "A"), ("j-1", 3, "B")], True, False)

    # A failed write is not heard of.
    def fails(tx: Tx) -> None:
        tx.add_event(event("j-1", "C"))
        raise Boom

    with pytest.raises(Boom):
        write(store, fails)
    done.clear()
    write(store, add("j-1", "D"))
    assert done.wait(TIMEOUT)
    assert [batch for batch, _, _ in heard[2:]] == [[("j-1", 4, "D")]]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_raising_listener_does_not_stop_later_writes(store: LmdbDatastore) -> None:
    calls: list[int] = []

    def listener(events: Iterable[types_pb2.Event]) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("Event loop is closed")

    store.add_listener(listener)
    create(store, new_job("j-1", created=1))
    # The next write must still be committed (the listener's failure is the listener's).
    fut = store.submit(lambda tx: tx.add_event(event("j-1", "After")))
    fut.result(timeout=1.0)
    assert [e.type for e in store.events("j-1")] == ["JobCreated", "After"]


# -- local executions ------------------------------------------------------------------------


def local(
    execution_id: str, state: ExecutionState = ExecutionState.BID_ACCEPTED
) -> records_pb2.LocalExecution:
    return records_pb2.LocalExecution(
        execution=types_pb2.Execution(id=execution_id, job_id="j-1", state=state.pb),
        requester_node_id="12D3KooWRequester",
        spec=types_pb2.JobSpec(engine="wasm", timeout_seconds=5.0),
    )


def test_local_executions(store: LmdbDatastore) -> None:
    assert store.get_local("e-1") is None
    write(store, put_locals(local("e-1")))
    write(store, put_locals(local("e-2"), local("e-3")))
    got = store.get_local("e-1")
    assert got == local("e-1")
    assert got.spec.timeout_seconds == 5.0 and got.requester_node_id == "12D3KooWRequester"
    assert sorted(r.execution.id for r in store.list_local()) == ["e-1", "e-2", "e-3"]

    # A transaction reads its own and earlier writes; a rewrite replaces the record.
    def update(tx: Tx) -> tuple[bool, ExecutionState]:
        missing = tx.get_local("e-9") is None
        record = tx.get_local("e-2")
        assert record is not None
        record.execution.state = ExecutionState.RUNNING.pb
        tx.put_local(record)
        again = tx.get_local("e-2")
        assert again is not None
        return missing, ExecutionState.of(again.execution.state)

    assert write(store, update) == (True, ExecutionState.RUNNING)
    got2 = store.get_local("e-2")
    assert got2 is not None and got2 == local("e-2", ExecutionState.RUNNING)
    assert len(store.list_local()) == 3


# -- lifetime and durability -----------------------------------------------------------------


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


def store_summary(store: LmdbDatastore) -> dict[str, object]:
    jobs = store.list_jobs(active_only=False, limit=0)
    return {
        "jobs": [(j.id, j.revision, j.state) for j in jobs],
        "events": {j.id: [e.seq for e in store.events(j.id)] for j in jobs},
        "counts": nonzero(store.count_jobs_by_state()),
        "local": [r.execution.id for r in store.list_local()],
    }


def test_close_finishes_queued_writes(tmp_path: Path) -> None:
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


def test_submit_after_close_fails(tmp_path: Path) -> None:
    store = LmdbDatastore(tmp_path / "db")
    store.close()
    store.close()  # a second close is harmless
    ran: list[int] = []
    fut = store.submit(lambda tx: ran.append(1))
    with pytest.raises(DatastoreError, match="closed"):
        fut.result(timeout=TIMEOUT)
    assert ran == []


def test_opening_an_unusable_path_is_a_datastore_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    with pytest.raises(DatastoreError):
        LmdbDatastore(blocker / "db")


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
