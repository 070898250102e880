"""The datastore contract, run against every implementation (LMDB in a temporary directory, and
memory): group commit, rollback of failed writes, revisions and conflicts, events, lookups,
queries and paging, listeners. LMDB's own concerns (files, schema, crashes) are in
test_datastore_lmdb.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from bacalhau._pb.bacalhau.v1 import records_pb2, types_pb2
from bacalhau.datastore import (
    AmbiguousID,
    Datastore,
    DatastoreError,
    JobNotFound,
    LmdbDatastore,
    MemoryDatastore,
    Tx,
)
from bacalhau.datastore.base import MAX_TEXT, Conflict, JobQuery
from bacalhau.models import ExecutionState, IllegalTransition, JobState, set_job_state
from tests._wait import wait_for

TIMEOUT = 10.0  # seconds any single write may take before the test fails
KINDS = ("lmdb", "memory")


def open_store(kind: str, path: Path) -> Datastore:
    """A fresh store of this kind (`path` is a directory it may use)."""
    if kind == "lmdb":
        return LmdbDatastore(path / "db")
    assert kind == "memory", kind
    return MemoryDatastore()


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Datastore]:
    s = open_store(request.param, tmp_path)
    yield s
    s.close()


def new_job(
    job_id: str,
    created: int,
    state: JobState = JobState.PENDING,
    *,
    client_id: str = "",
    labels: dict[str, str] | None = None,
) -> types_pb2.Job:
    job = types_pb2.Job(
        id=job_id,
        state=state.pb,
        create_time_unix_nano=created,
        update_time_unix_nano=created,
        client_id=client_id,
        spec=types_pb2.JobSpec(engine="wasm"),
    )
    job.spec.annotations.update(labels or {})
    return job


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


def write(store: Datastore, fn: Callable[[Tx], object]) -> object:
    return store.submit(fn).result(timeout=TIMEOUT)


def create(store: Datastore, *jobs: types_pb2.Job) -> None:
    def fn(tx: Tx) -> None:
        for job in jobs:
            tx.put_job(job)
            tx.add_event(event(job.id, "JobCreated"))

    write(store, fn)


def move(store: Datastore, job_id: str, state: JobState) -> types_pb2.Job:
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


def ids(jobs: Iterable[types_pb2.Job]) -> list[str]:
    return [job.id for job in jobs]


# -- jobs ------------------------------------------------------------------------------------


def test_create_and_get_a_job(store: Datastore) -> None:
    job = new_job("j-abc", created=1000)
    job.spec.wasm.module_cid = "bafy-module"
    create(store, job)
    got = store.get_job("j-abc")
    assert got.id == "j-abc"
    assert got.revision == 1
    assert got.spec.engine == "wasm" and got.spec.wasm.module_cid == "bafy-module"
    assert JobState.of(got.state) is JobState.PENDING
    assert got.create_time_unix_nano == 1000


def test_put_job_bumps_the_revision_each_time(store: Datastore) -> None:
    create(store, new_job("j-1", created=1))
    assert move(store, "j-1", JobState.RUNNING).revision == 2
    assert store.get_job("j-1").revision == 2
    assert move(store, "j-1", JobState.COMPLETED).revision == 3
    got = store.get_job("j-1")
    assert got.revision == 3 and JobState.of(got.state) is JobState.COMPLETED


def test_submit_returns_the_functions_value(store: Datastore) -> None:
    assert write(store, lambda tx: 42) == 42


def test_reads_inside_a_transaction_see_its_own_writes(store: Datastore) -> None:
    def fn(tx: Tx) -> tuple[int, int]:
        tx.put_job(new_job("j-1", created=1))
        first = tx.get_job("j-1").revision
        job = tx.get_job("j-1")
        tx.put_job(job)
        return first, tx.get_job("j-1").revision

    assert write(store, fn) == (1, 2)


def test_tx_get_job_of_an_unknown_job(store: Datastore) -> None:
    fut = store.submit(lambda tx: tx.get_job("j-missing"))
    with pytest.raises(JobNotFound):
        fut.result(timeout=TIMEOUT)


def test_get_job_by_unique_prefix(store: Datastore) -> None:
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


def test_not_found_on_an_empty_store(store: Datastore) -> None:
    with pytest.raises(JobNotFound) as info:
        store.get_job("j-1")
    assert isinstance(info.value, DatastoreError)
    assert store.list_jobs(active_only=False, limit=0) == []
    assert store.events("j-1") == []
    assert store.count_jobs_by_state() == {}
    assert store.list_local() == []


def test_get_job_of_an_empty_id_is_not_found(store: Datastore) -> None:
    create(store, new_job("j-1", created=1))
    with pytest.raises(JobNotFound):
        store.get_job("")


def test_list_jobs_newest_first(store: Datastore) -> None:
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


def test_list_jobs_active_only(store: Datastore) -> None:
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


def test_count_jobs_by_state_follows_state_changes(store: Datastore) -> None:
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
    store: Datastore,
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


def test_a_failed_state_change_rolls_back(store: Datastore) -> None:
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


def test_an_illegal_transition_reaches_the_caller(store: Datastore) -> None:
    create(store, new_job("j-1", created=1))
    move(store, "j-1", JobState.CANCELLED)
    with pytest.raises(IllegalTransition):
        move(store, "j-1", JobState.RUNNING)
    assert store.get_job("j-1").revision == 2


# -- events ----------------------------------------------------------------------------------


def test_events_are_numbered_per_job_in_order(store: Datastore) -> None:
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


def test_an_events_time_is_kept_when_given(store: Datastore) -> None:
    given = types_pb2.Event(job_id="j-1", type="X", time_unix_nano=12345, detail="d")
    got = write(store, lambda tx: tx.add_event(given))
    assert isinstance(got, types_pb2.Event) and got.seq == 1
    [stored] = store.events("j-1")
    assert stored.time_unix_nano == 12345 and stored.detail == "d" and stored.type == "X"


def test_events_of_jobs_whose_ids_share_a_prefix_do_not_mix(store: Datastore) -> None:
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


def test_listeners_hear_each_commit_after_it(store: Datastore) -> None:
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
def test_a_raising_listener_does_not_stop_later_writes(store: Datastore) -> None:
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


def test_local_executions(store: Datastore) -> None:
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


# -- revisions and conflicts -----------------------------------------------------------------


def test_a_stale_update_conflicts_and_the_first_update_survives(store: Datastore) -> None:
    create(store, new_job("j-1", created=1))
    first, second = store.get_job("j-1"), store.get_job("j-1")
    first.spec.annotations["by"] = "first"
    write(store, put_job(first))
    assert first.revision == 2  # put_job bumps the caller's copy

    second.spec.annotations["by"] = "second"

    def stale(tx: Tx) -> None:
        tx.add_event(event("j-1", "Stale"))
        tx.put_job(second)

    with pytest.raises(Conflict) as info:
        write(store, stale)
    assert isinstance(info.value, DatastoreError)
    assert "j-1" in str(info.value) and "\n" not in str(info.value)
    assert second.revision == 1
    got = store.get_job("j-1")
    assert got.revision == 2 and got.spec.annotations["by"] == "first"
    assert [e.type for e in store.events("j-1")] == ["JobCreated"]

    # Read again, the same change goes through.
    fresh = store.get_job("j-1")
    fresh.spec.annotations["by"] = "second"
    write(store, put_job(fresh))
    got = store.get_job("j-1")
    assert got.revision == 3 and got.spec.annotations["by"] == "second"


def test_a_stale_update_conflicts_within_one_group(store: Datastore) -> None:
    create(store, new_job("j-1", created=1))
    base = store.get_job("j-1")
    gate, started = threading.Event(), threading.Event()

    def hold(tx: Tx) -> None:
        started.set()
        assert gate.wait(TIMEOUT), "the test never opened the gate"

    # Both updates are queued behind `hold`, so they share a commit.
    held = store.submit(hold)
    assert started.wait(TIMEOUT)
    updates = []
    for who in ("a", "b"):
        job = types_pb2.Job()
        job.CopyFrom(base)
        job.spec.annotations["by"] = who
        updates.append(store.submit(put_job(job)))
    gate.set()
    held.result(timeout=TIMEOUT)
    assert updates[0].result(timeout=TIMEOUT) is None
    assert isinstance(updates[1].exception(timeout=TIMEOUT), Conflict)
    got = store.get_job("j-1")
    assert got.revision == 2 and got.spec.annotations["by"] == "a"


def test_creating_a_job_whose_id_exists_conflicts(store: Datastore) -> None:
    create(store, new_job("j-1", created=1, labels={"v": "original"}))
    with pytest.raises(Conflict):
        write(store, put_job(new_job("j-1", created=99, labels={"v": "copy"})))
    got = store.get_job("j-1")
    assert got.revision == 1 and got.create_time_unix_nano == 1
    assert got.spec.annotations["v"] == "original"

    # Twice in one transaction: the second conflicts, and the function leaves no trace.
    def twice(tx: Tx) -> None:
        tx.put_job(new_job("j-2", created=2))
        tx.put_job(new_job("j-2", created=2))

    with pytest.raises(Conflict):
        write(store, twice)
    with pytest.raises(JobNotFound):
        store.get_job("j-2")
    assert store.count_jobs(JobQuery()) == 1


def test_a_new_job_must_have_revision_zero(store: Datastore) -> None:
    job = new_job("j-1", created=1)
    job.revision = 3
    with pytest.raises(Conflict):
        write(store, put_job(job))
    with pytest.raises(JobNotFound):
        store.get_job("j-1")


def test_a_job_needs_an_id(store: Datastore) -> None:
    with pytest.raises(DatastoreError):
        write(store, put_job(new_job("", created=1)))
    assert store.count_jobs(JobQuery()) == 0


def test_stored_records_are_not_the_callers_objects(store: Datastore) -> None:
    job = new_job("j-1", created=1)
    create(store, job)
    job.state = JobState.FAILED.pb  # after the commit: not stored
    got = store.get_job("j-1")
    got.spec.annotations["x"] = "y"
    assert JobState.of(store.get_job("j-1").state) is JobState.PENDING
    assert "x" not in store.get_job("j-1").spec.annotations

    # A job read and changed in a transaction but not put back is not stored.
    before = store.get_job("j-1")

    def changes_without_put(tx: Tx) -> None:
        tx.get_job("j-1").spec.annotations["x"] = "y"

    write(store, changes_without_put)
    assert store.get_job("j-1") == before

    record = local("e-1")
    write(store, put_locals(record))
    record.execution.message = "changed"
    stored = store.get_local("e-1")
    assert stored is not None and stored.execution.message == ""


# -- queries ---------------------------------------------------------------------------------

STATES = [JobState.PENDING, JobState.RUNNING, JobState.COMPLETED, JobState.FAILED]


def populate(store: Datastore) -> list[types_pb2.Job]:
    """12 jobs, three to a create time, written out of order; returns them as stored."""
    jobs = [
        new_job(
            f"j-{i:02d}",
            created=100 + i // 3,
            state=STATES[i % 4],
            client_id=("alice", "bob", "")[i % 3],
            labels={"team": ("red", "blue")[i % 2], "tier": "gold" if i % 4 == 1 else "tin"},
        )
        for i in range(12)
    ]
    order = [7, 2, 11, 0, 5, 9, 1, 10, 3, 8, 6, 4]  # neither by time nor by ID
    create(store, *(jobs[i] for i in order[:5]))
    create(store, *(jobs[i] for i in order[5:]))
    return jobs


def expected(jobs: list[types_pb2.Job], keep: Callable[[types_pb2.Job], bool]) -> list[str]:
    """IDs of the jobs kept, newest first: by create time, then by ID."""
    kept = [j for j in jobs if keep(j)]
    return [j.id for j in sorted(kept, key=lambda j: (j.create_time_unix_nano, j.id), reverse=True)]


def test_query_filters(store: Datastore) -> None:
    jobs = populate(store)
    running, pending = JobState.RUNNING.pb, JobState.PENDING.pb
    cases: list[tuple[JobQuery, Callable[[types_pb2.Job], bool]]] = [
        (JobQuery(), lambda j: True),
        (JobQuery(states=frozenset({running})), lambda j: j.state == running),
        (JobQuery(states=frozenset({running, pending})), lambda j: j.state in (running, pending)),
        (JobQuery(client_id="alice"), lambda j: j.client_id == "alice"),
        (JobQuery(client_id="nobody"), lambda j: False),
        (JobQuery(labels={"team": "red"}), lambda j: j.spec.annotations["team"] == "red"),
        (
            JobQuery(labels={"team": "blue", "tier": "gold"}),
            lambda j: j.spec.annotations["team"] == "blue" and j.spec.annotations["tier"] == "gold",
        ),
        (JobQuery(labels={"team": "green"}), lambda j: False),
        (JobQuery(labels={"owner": ""}), lambda j: False),  # a missing key is not an empty value
        (
            JobQuery(states=frozenset({running}), client_id="bob", labels={"tier": "gold"}),
            lambda j: j.state == running and j.client_id == "bob",
        ),
        (
            JobQuery(states=frozenset({pending, running}), client_id="alice"),
            lambda j: j.state in (pending, running) and j.client_id == "alice",
        ),
    ]
    for query, keep in cases:
        want = expected(jobs, keep)
        page = store.query_jobs(query)
        assert ids(page.jobs) == want, query
        assert page.next_cursor == ""
        assert store.count_jobs(query) == len(want), query
    # Spot checks, so that the expectations above are not just the filters restated.
    assert ids(store.query_jobs(JobQuery(client_id="alice")).jobs) == [
        "j-09", "j-06", "j-03", "j-00"
    ]  # fmt: skip
    assert ids(store.query_jobs(JobQuery(labels={"tier": "gold"})).jobs) == ["j-09", "j-05", "j-01"]


def test_query_order_newest_or_oldest_first(store: Datastore) -> None:
    populate(store)
    newest = ids(store.query_jobs(JobQuery()).jobs)
    # Equal create times are ordered by ID.
    assert newest == [f"j-{i:02d}" for i in reversed(range(12))]
    assert ids(store.query_jobs(JobQuery(oldest_first=True)).jobs) == newest[::-1]
    assert ids(store.list_jobs(active_only=False, limit=0)) == newest
    pending = JobQuery(states=frozenset({JobState.PENDING.pb}), oldest_first=True)
    assert ids(store.query_jobs(pending).jobs) == ["j-00", "j-04", "j-08"]


def test_paging_visits_every_job_once(store: Datastore) -> None:
    jobs = populate(store)
    queries = [
        JobQuery(),
        JobQuery(states=frozenset({JobState.RUNNING.pb})),
        JobQuery(states=frozenset({JobState.PENDING.pb, JobState.COMPLETED.pb})),
        JobQuery(client_id="bob"),
        JobQuery(labels={"team": "red"}),
        JobQuery(client_id="nobody"),
    ]
    for base in queries:
        want = expected(jobs, base.matches)
        for oldest_first in (False, True):
            whole = want[::-1] if oldest_first else want
            for limit in range(1, len(jobs) + 2):
                pages = read_pages(store, base, oldest_first=oldest_first, limit=limit)
                where = (base, oldest_first, limit)
                assert [job_id for page in pages for job_id in page] == whole, where
                assert len(pages) == max(1, -(-len(whole) // limit)), where
                assert all(len(page) == limit for page in pages[:-1]), where


def read_pages(
    store: Datastore, base: JobQuery, *, oldest_first: bool, limit: int
) -> list[list[str]]:
    """Every page of `base`, following the cursors until the last page says there is no more."""
    pages: list[list[str]] = []
    cursor = ""
    while True:
        query = JobQuery(
            base.states, base.client_id, base.labels, oldest_first, limit=limit, cursor=cursor
        )
        page = store.query_jobs(query)
        pages.append(ids(page.jobs))
        cursor = page.next_cursor
        if not cursor:
            return pages
        assert len(pages) <= 100, "the cursor does not move on"


def test_paging_while_jobs_are_added(store: Datastore) -> None:
    populate(store)
    seen: list[str] = []
    page = store.query_jobs(JobQuery(limit=4))
    seen += ids(page.jobs)
    # New jobs land before, at and after the cursor's place.
    assert page.jobs[-1].id == "j-08" and page.jobs[-1].create_time_unix_nano == 102
    create(
        store,
        new_job("n-099", created=99),
        new_job("a-102", created=102),  # the cursor's time, an ID before it: still to come
        new_job("z-102", created=102),  # the cursor's time, an ID after it: already passed
        new_job("n-200", created=200),
    )
    while page.next_cursor:
        page = store.query_jobs(JobQuery(limit=4, cursor=page.next_cursor))
        seen += ids(page.jobs)
    assert [j for j in seen if j.startswith("j-")] == [f"j-{i:02d}" for i in reversed(range(12))]
    assert len(seen) == len(set(seen))
    assert {j for j in seen if not j.startswith("j-")} == {"n-099", "a-102"}


def test_count_jobs(store: Datastore) -> None:
    assert store.count_jobs(JobQuery()) == 0
    populate(store)
    assert store.count_jobs(JobQuery()) == 12
    assert store.count_jobs(JobQuery(states=frozenset({JobState.RUNNING.pb}))) == 3
    assert store.count_jobs(JobQuery(client_id="alice", labels={"team": "red"})) == 2
    # Paging does not change the count.
    assert store.count_jobs(JobQuery(limit=2, oldest_first=True)) == 12
    move(store, "j-00", JobState.RUNNING)
    assert store.count_jobs(JobQuery(states=frozenset({JobState.RUNNING.pb}))) == 4
    assert store.count_jobs(JobQuery(states=frozenset({JobState.PENDING.pb}))) == 2


def test_count_jobs_by_state_has_no_zero_entries(store: Datastore) -> None:
    create(store, new_job("j-1", created=1), new_job("j-2", created=2))
    assert store.count_jobs_by_state() == {JobState.PENDING.pb: 2}
    move(store, "j-1", JobState.RUNNING)
    move(store, "j-2", JobState.RUNNING)
    assert store.count_jobs_by_state() == {JobState.RUNNING.pb: 2}
    move(store, "j-1", JobState.COMPLETED)
    assert store.count_jobs_by_state() == {JobState.RUNNING.pb: 1, JobState.COMPLETED.pb: 1}


def active_ids(tx: Tx) -> list[str]:
    return sorted(ids(tx.active_jobs()))


def test_active_jobs(store: Datastore) -> None:
    assert write(store, active_ids) == []
    create(
        store,
        new_job("j-1", created=1),
        new_job("j-2", created=2, state=JobState.RUNNING),
        new_job("j-3", created=3, state=JobState.COMPLETED),
        new_job("j-4", created=4, state=JobState.FAILED),
        new_job("j-5", created=5, state=JobState.CANCELLED),
    )
    assert write(store, active_ids) == ["j-1", "j-2"]

    # A transaction sees its own changes.
    def changes(tx: Tx) -> list[str]:
        tx.put_job(new_job("j-6", created=6))
        job = tx.get_job("j-2")
        set_job_state(job, JobState.COMPLETED)
        tx.put_job(job)
        job = tx.get_job("j-1")
        set_job_state(job, JobState.RUNNING)
        tx.put_job(job)
        return ids(tx.active_jobs())

    got = write(store, changes)
    assert isinstance(got, list) and sorted(got) == ["j-1", "j-6"]

    # ...and not those of a function that failed.
    def fails(tx: Tx) -> None:
        tx.put_job(new_job("j-7", created=7))
        raise Boom

    with pytest.raises(Boom):
        write(store, fails)
    assert write(store, active_ids) == ["j-1", "j-6"]


def test_texts_are_clipped(store: Datastore) -> None:
    long = "head" + "x" * MAX_TEXT + "tail"
    clipped = "…" + long[-(MAX_TEXT - 1) :]
    exact = "y" * MAX_TEXT

    def fn(tx: Tx) -> None:
        job = new_job("j-1", created=1)
        job.message = long
        tx.put_job(job)
        job2 = new_job("j-2", created=2)
        job2.message = exact
        tx.put_job(job2)
        tx.add_event(types_pb2.Event(job_id="j-1", type="Long", detail=long))
        tx.add_event(types_pb2.Event(job_id="j-1", type="Exact", detail=exact))
        record = local("e-1")
        record.execution.message = long
        record.execution.stderr_tail = long
        tx.put_local(record)

    write(store, fn)
    assert store.get_job("j-1").message == clipped
    assert len(clipped) == MAX_TEXT
    assert store.get_job("j-2").message == exact
    assert [e.detail for e in store.events("j-1")] == [clipped, exact]
    record = store.get_local("e-1")
    assert record is not None
    assert record.execution.message == clipped and record.execution.stderr_tail == clipped

    # An update clips too.
    def update(tx: Tx) -> None:
        job = tx.get_job("j-2")
        set_job_state(job, JobState.FAILED, message=long)
        tx.put_job(job)

    write(store, update)
    assert store.get_job("j-2").message == clipped


def test_an_update_that_changes_indexed_fields_keeps_listings_right(store: Datastore) -> None:
    create(store, new_job("j-1", created=5, client_id="a"))

    def fn(tx: Tx) -> None:
        job = tx.get_job("j-1")
        job.client_id = "b"
        job.create_time_unix_nano = 7
        set_job_state(job, JobState.RUNNING)
        tx.put_job(job)

    # Either refused (the fields are fixed at creation) or listed by the new values.
    try:
        write(store, fn)
    except DatastoreError:
        client, created = "a", 5
    else:
        client, created = "b", 7
    job = store.get_job("j-1")
    assert (job.client_id, job.create_time_unix_nano) == (client, created)
    assert ids(store.query_jobs(JobQuery(client_id=client)).jobs) == ["j-1"]
    assert store.query_jobs(JobQuery(client_id="b" if client == "a" else "a")).jobs == []
    assert store.count_jobs(JobQuery(client_id=client)) == 1
    assert write(store, lambda tx: ids(tx.active_jobs())) == ["j-1"]
    state = JobQuery(states=frozenset({job.state}))
    assert ids(store.query_jobs(state).jobs) == ["j-1"]


# -- lifetime --------------------------------------------------------------------------------


def test_close_finishes_queued_writes(store: Datastore) -> None:
    futures: list[Future[None]] = [
        store.submit(put_job(new_job(f"j-{i:02d}", created=i + 1))) for i in range(50)
    ]
    store.close()
    assert all(f.done() and f.exception() is None for f in futures)


def test_submit_after_close_fails(store: Datastore) -> None:
    store.close()
    store.close()  # a second close is harmless
    ran: list[int] = []
    fut = store.submit(lambda tx: ran.append(1))
    with pytest.raises(DatastoreError, match="closed"):
        fut.result(timeout=TIMEOUT)
    assert ran == []


def test_peer_table(store: Datastore) -> None:
    assert store.list_peers() == []
    rec = records_pb2.PeerRecord(node_id="12D3KooWb", addresses=["127.0.0.1:2"], alive=True)
    rec.engines.append("wasm")
    write(store, lambda tx: tx.put_peer(rec))

    def mark_down(tx: Tx) -> None:
        found = tx.get_peer("12D3KooWb")
        assert found is not None and found.alive
        found.alive = False
        tx.put_peer(found)
        tx.put_peer(records_pb2.PeerRecord(node_id="12D3KooWa"))
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        write(store, mark_down)
    assert [p.node_id for p in store.list_peers()] == ["12D3KooWb"]
    assert store.list_peers()[0].alive
    write(store, lambda tx: tx.put_peer(records_pb2.PeerRecord(node_id="12D3KooWa")))
    assert [p.node_id for p in store.list_peers()] == ["12D3KooWa", "12D3KooWb"]
    assert write(store, lambda tx: tx.get_peer("nobody")) is None


def test_uploads(store: Datastore) -> None:
    def rec(user: str, cid: str, n: int) -> records_pb2.UploadRecord:
        return records_pb2.UploadRecord(user_id=user, cid=cid, bytes=n, create_time_unix_nano=1)

    assert store.list_uploads("alice") == [] and store.upload_holders("Qm1") == []
    write(
        store,
        lambda tx: (tx.put_upload(rec("alice", "Qm1", 10)), tx.put_upload(rec("alice", "Qm2", 5))),
    )
    write(store, lambda tx: tx.put_upload(rec("bob", "Qm1", 7)))
    write(store, lambda tx: tx.put_upload(rec("alice", "Qm1", 12)))  # again: replaced
    assert [(r.cid, r.bytes) for r in store.list_uploads("alice")] == [("Qm1", 12), ("Qm2", 5)]
    assert store.uploaded_bytes("alice") == 17 and store.uploaded_bytes("bob") == 7
    assert store.upload_holders("Qm1") == ["alice", "bob"]
    # "alice" is not a prefix of "alice2": the keys are separated.
    write(store, lambda tx: tx.put_upload(rec("alice2", "Qm3", 1)))
    assert store.uploaded_bytes("alice") == 17

    def unpin(tx: Tx) -> tuple[bool, bool, list[str], int, bool]:
        gone = tx.delete_upload("alice", "Qm1")
        again = tx.delete_upload("alice", "Qm1")
        return (
            gone,
            again,
            tx.upload_holders("Qm1"),
            tx.uploaded_bytes("alice"),
            (tx.get_upload("bob", "Qm1") is not None),
        )

    assert write(store, unpin) == (True, False, ["bob"], 5, True)
    assert store.upload_holders("Qm1") == ["bob"]

    def rolled_back(tx: Tx) -> None:
        tx.delete_upload("bob", "Qm1")
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        write(store, rolled_back)
    assert store.upload_holders("Qm1") == ["bob"]
