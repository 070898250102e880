"""Property tests: concurrent writers (threads and an event loop) never lose an update, on
every datastore; a write based on a stale read conflicts instead of overwriting."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.datastore import Datastore, Tx
from bacalhau.datastore.base import Conflict
from bacalhau.models import IllegalTransition, JobState, set_job_state
from tests.test_datastore import KINDS, TIMEOUT, new_job, open_store

JOBS = 3

# One write: which job, and the state to move it to (None: only annotate it).
Op = tuple[int, JobState | None]
ops = st.tuples(
    st.integers(0, JOBS - 1),
    st.one_of(st.none(), st.none(), st.sampled_from(list(JobState))),
)
programs = st.lists(st.lists(ops, min_size=1, max_size=6), min_size=1, max_size=3)


@dataclass(frozen=True)
class Outcome:
    job: int
    key: str  # the annotation (and event detail) the write adds: unique per write
    target: JobState | None
    ok: bool
    error: BaseException | None = None
    read_revision: int = 0  # for stale writes: the revision they read


@contextmanager
def fresh_store(kind: str) -> Iterator[Datastore]:
    # Not pytest's tmp_path: a store per example, and hypothesis wants no function fixtures.
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(kind, Path(tmp))
        try:
            yield store
        finally:
            store.close()


def job_id(i: int) -> str:
    return f"j-{i}"


def create_jobs(store: Datastore) -> None:
    def fn(tx: Tx) -> None:
        for i in range(JOBS):
            tx.put_job(new_job(job_id(i), created=i + 1))

    store.submit(fn).result(timeout=TIMEOUT)


def change(i: int, key: str, target: JobState | None) -> Callable[[Tx], int]:
    """Read the job inside the transaction, annotate it, maybe move it, put it, log it."""

    def fn(tx: Tx) -> int:
        job = tx.get_job(job_id(i))
        job.spec.annotations[key] = "1"
        if target is not None:
            set_job_state(job, target)  # IllegalTransition: the whole write is dropped
        tx.put_job(job)
        tx.add_event(types_pb2.Event(job_id=job_id(i), type="Changed", detail=key))
        return int(job.revision)

    return fn


def put_stale(job: types_pb2.Job, key: str) -> Callable[[Tx], int]:
    """Put a copy read outside the transaction."""

    def fn(tx: Tx) -> int:
        tx.put_job(job)
        tx.add_event(types_pb2.Event(job_id=job.id, type="Changed", detail=key))
        return int(job.revision)

    return fn


def run_thread_writer(store: Datastore, name: str, program: list[Op], out: list[Outcome]) -> None:
    for n, (i, target) in enumerate(program):
        key = f"{name}-{n}"
        exc = store.submit(change(i, key, target)).exception(timeout=TIMEOUT)
        out.append(Outcome(i, key, target, exc is None, exc))


def run_stale_writer(store: Datastore, program: list[int], out: list[Outcome]) -> None:
    for n, i in enumerate(program):
        key = f"stale-{n}"
        job = store.get_job(job_id(i))
        read_revision = job.revision
        job.spec.annotations[key] = "1"
        exc = store.submit(put_stale(job, key)).exception(timeout=TIMEOUT)
        out.append(Outcome(i, key, None, exc is None, exc, read_revision))


async def run_loop_writers(store: Datastore, programs: list[list[Op]], out: list[Outcome]) -> None:
    async def writer(name: str, program: list[Op]) -> None:
        for n, (i, target) in enumerate(program):
            key = f"{name}-{n}"
            try:
                await asyncio.wrap_future(store.submit(change(i, key, target)))
            except Exception as e:
                out.append(Outcome(i, key, target, False, e))
            else:
                out.append(Outcome(i, key, target, True))

    await asyncio.wait_for(
        asyncio.gather(*(writer(f"aio{w}", p) for w, p in enumerate(programs))), TIMEOUT * 10
    )


def check(store: Datastore, outcomes: list[Outcome]) -> None:
    """Every successful write is there, in an order the lifecycle allows; no failed one is."""
    for i in range(JOBS):
        mine = [o for o in outcomes if o.job == i]
        done = {o.key: o for o in mine if o.ok}
        job = store.get_job(job_id(i))
        assert set(job.spec.annotations) == set(done), f"job {i}: lost or leaked annotations"
        assert job.revision == len(done) + 1
        events = store.events(job_id(i))
        assert [e.seq for e in events] == list(range(1, len(done) + 1))
        assert sorted(e.detail for e in events) == sorted(done)
        # Replaying the writes in their commit order follows the lifecycle to the stored state.
        replay = new_job(job_id(i), created=1)
        for e in events:
            target = done[e.detail].target
            if target is not None:
                set_job_state(replay, target)
        assert replay.state == job.state

        for o in mine:
            if o.key.startswith("stale-"):
                if o.ok:  # nobody wrote between its read and its write
                    assert next(e.seq for e in events if e.detail == o.key) == o.read_revision
                else:  # somebody did
                    assert isinstance(o.error, Conflict), repr(o.error)
                    assert job.revision > o.read_revision
            elif not o.ok:
                assert isinstance(o.error, IllegalTransition), repr(o.error)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=25)
@given(
    threads=programs,
    loop=programs,
    stale=st.lists(st.integers(0, JOBS - 1), max_size=6),
)
def test_concurrent_writers_lose_no_update(
    kind: str, threads: list[list[Op]], loop: list[list[Op]], stale: list[int]
) -> None:
    with fresh_store(kind) as store:
        create_jobs(store)
        outcomes: list[Outcome] = []  # list.append is atomic: the writers share it
        start = threading.Barrier(len(threads) + 2)

        def started(fn: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                start.wait(TIMEOUT)
                fn()

            return run

        def thread_writer(w: int, program: list[Op]) -> Callable[[], None]:
            return started(lambda: run_thread_writer(store, f"t{w}", program, outcomes))

        workers = [threading.Thread(target=thread_writer(w, p)) for w, p in enumerate(threads)]
        workers.append(
            threading.Thread(target=started(lambda: run_stale_writer(store, stale, outcomes)))
        )
        for worker in workers:
            worker.start()
        start.wait(TIMEOUT)
        asyncio.run(run_loop_writers(store, loop, outcomes))
        for worker in workers:
            worker.join(TIMEOUT * 10)
            assert not worker.is_alive(), "a writer hung"

        expected = sum(map(len, threads)) + sum(map(len, loop)) + len(stale)
        assert len(outcomes) == expected
        check(store, outcomes)
        # For --hypothesis-show-statistics: how often the interesting cases come up.
        conflicts = sum(isinstance(o.error, Conflict) for o in outcomes)
        illegal = any(isinstance(o.error, IllegalTransition) for o in outcomes)
        event(f"stale writes that conflicted: {conflicts}")
        event(f"illegal transitions: {illegal}")


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=25)
@given(writes_between=st.lists(st.integers(0, JOBS - 1), max_size=4), target=st.integers(0, 2))
def test_a_stale_write_conflicts_exactly_when_someone_wrote_in_between(
    kind: str, writes_between: list[int], target: int
) -> None:
    with fresh_store(kind) as store:
        create_jobs(store)
        stale = store.get_job(job_id(target))
        stale.spec.annotations["stale"] = "1"
        for n, i in enumerate(writes_between):
            store.submit(change(i, f"between-{n}", None)).result(timeout=TIMEOUT)
        fut = store.submit(put_stale(stale, "stale"))
        exc = fut.exception(timeout=TIMEOUT)
        job = store.get_job(job_id(target))
        if target in writes_between:
            assert isinstance(exc, Conflict)
            assert "stale" not in job.spec.annotations
            assert job.revision == 1 + writes_between.count(target)
        else:
            assert fut.result(timeout=TIMEOUT) == 2
            assert "stale" in job.spec.annotations and job.revision == 2
