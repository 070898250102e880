"""The LMDB datastore: synced state transitions per second, and reads from 100,000 jobs.

Everything runs on real LMDB files in a temporary folder on the normal disk, synced.

Baseline: one synced commit of a ~300-byte put with the raw `lmdb` module, same run.
Writes: a realistic transition (read the job, accept a bid, move the job to running, put it,
add an event) through `LmdbDatastore.submit`: one at a time, waiting for each (one commit
each); from 8 threads, each waiting for its own; and 2,000 submitted at once, then awaited
(the writer thread group-commits what is queued).
Reads: pages, a describe and an ID-prefix lookup in a store of 100,000 jobs with 3 executions
and ~10 events each, built once per session.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lmdb
import pytest

from bacalhau._pb.bacalhau.v1 import types_pb2 as pb
from bacalhau.datastore import LmdbDatastore, Tx
from bacalhau.datastore.base import ACTIVE_JOB_STATES, JobQuery
from bacalhau.models import ExecutionState, JobState, set_execution_state, set_job_state

Record = Callable[[str, object], None]
Big = tuple[LmdbDatastore, list[str]]  # the read store and its job IDs, oldest first
E = ExecutionState

N_JOBS = 100_000  # jobs in the read store
BUILD_BATCH = 2_000  # jobs (with their events) per write while building it
THREADS = 8
PER_THREAD = 250  # transitions each thread makes per round, one at a time
INFLIGHT = 2_000  # transitions submitted at once per round
PAGE = 20
DEEP = 50_000  # jobs before the deep page
T0 = 1_700_000_000 * 10**9  # the first job's create time (ns); one job a second after it

CLIENTS = ("alice@laptop", "ci-pipeline", "notebook-7f3a", "batch-runner")
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


# -- realistic records ------------------------------------------------------------------


def _cid(rng: random.Random) -> str:
    return "bafybei" + rng.randbytes(26).hex()


def _node_id(rng: random.Random) -> str:
    return "12D3KooW" + "".join(rng.choices(B58, k=44))


def _uuid(rng: random.Random) -> str:
    h = rng.randbytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


NODES = [_node_id(random.Random(i)) for i in range(12)]
# protobuf enum values, looked up once (building 100,000 jobs is mostly Python)
J_PENDING, J_RUNNING, J_COMPLETED, J_FAILED, J_CANCELLED = (
    JobState(s).pb for s in ("pending", "running", "completed", "failed", "cancelled")
)
X_PROPOSED, X_ACCEPTED, X_REJECTED, X_RUNNING, X_PUBLISHED, X_FAILED, X_CANCELLED = (
    E(s).pb
    for s in ("bid_proposed", "bid_accepted", "bid_rejected", "running", "published", "failed",
              "cancelled")
)  # fmt: skip
# (cumulative share, state) of the stored jobs: 78% completed, 10% failed, 5% cancelled,
# 4% running, 3% pending
STATE_MIX = ((0.78, J_COMPLETED), (0.88, J_FAILED), (0.93, J_CANCELLED), (0.97, J_RUNNING))


def _spec_template(n: int) -> pb.JobSpec:
    return pb.JobSpec(
        engine="wasm",
        wasm=pb.WasmSpec(
            entry_point="_start",
            args=["--input", "/inputs/data.csv", "--shard", str(n % 16), "--format", "parquet"],
            env={"LOG_LEVEL": "info"},
        ),
        inputs=[
            pb.InputSpec(source="ipfs", mount_path="/inputs/data.csv"),
            pb.InputSpec(
                source="url",
                url=f"https://data.example.org/sets/{n % 97}/part-{n % 13:04d}.csv",
                mount_path="/inputs/extra.csv",
            ),
        ],
        outputs=[pb.OutputSpec(name="outputs", path="/outputs")],
        resources=pb.Resources(cpu=1.0, memory_bytes=512 << 20, disk_bytes=1 << 30),
        deal=pb.Deal(concurrency=1),
        timeout_seconds=600,
        node_selector={"zone": "eu-west"},
        annotations={"project": f"survey-{n % 7}", "team": ("geo", "bio", "ml")[n % 3]},
    )


SPECS = [_spec_template(n) for n in range(21 * 16)]  # copying one is 5x faster than building


def make_spec(rng: random.Random, n: int) -> pb.JobSpec:
    spec = pb.JobSpec()
    spec.CopyFrom(SPECS[n % len(SPECS)])
    spec.wasm.module_cid = _cid(rng)
    spec.wasm.env["RUN"] = str(n)
    spec.inputs[0].cid = _cid(rng)
    return spec


def pending_job(rng: random.Random, n: int, created: int) -> pb.Job:
    """A new job with three bids in (BID_PROPOSED), as the requester has it before selecting."""
    job = pb.Job(
        id="j-" + _uuid(rng),
        spec=make_spec(rng, n),
        state=J_PENDING,
        requester_node_id=NODES[0],
        client_id=CLIENTS[n % len(CLIENTS)],
        create_time_unix_nano=created,
        update_time_unix_nano=created,
    )
    bid_time = created + 50_000_000
    for node in rng.sample(NODES, 3):
        job.executions.add(
            id="e-" + _uuid(rng),
            job_id=job.id,
            node_id=node,
            state=X_PROPOSED,
            create_time_unix_nano=bid_time,
            update_time_unix_nano=bid_time,
        )
    return job


def _ev(job: pb.Job, type_: str, t: int, ex: pb.Execution | None = None, detail: str = "") -> Any:
    if ex is None:
        return pb.Event(
            job_id=job.id,
            type=type_,
            time_unix_nano=t,
            job_state=job.state,
            detail=detail,
            node_id=NODES[0],
        )
    return pb.Event(
        job_id=job.id,
        type=type_,
        time_unix_nano=t,
        job_state=job.state,
        detail=detail,
        execution_id=ex.id,
        node_id=ex.node_id,
        execution_state=ex.state,
    )


def stored_job(rng: random.Random, n: int) -> tuple[pb.Job, list[pb.Event]]:
    """Job `n` of the read store, in a state of STATE_MIX, with its events (4 to 11, ~10.6
    on average)."""
    created = T0 + n * 1_000_000_000
    r = rng.random()
    state = next((s for share, s in STATE_MIX if r < share), J_PENDING)
    job = pending_job(rng, n, created)
    chosen, *others = job.executions
    t = created
    events = [_ev(job, "JobCreated", t)]
    events += [_ev(job, "BidReceived", t + 50_000_000, ex, "queue 0") for ex in job.executions]
    if state != J_PENDING:
        t += 500_000_000
        chosen.state = X_ACCEPTED
        for ex in others:
            ex.state = X_REJECTED
            events.append(_ev(job, "BidRejected", t, ex))
        job.state = J_RUNNING
        events.append(_ev(job, "BidAccepted", t, chosen))
        events.append(_ev(job, "JobRunning", t))
        chosen.state = X_RUNNING
        events.append(_ev(job, "ExecutionRunning", t + 10_000_000, chosen))
    t += 3_000_000_000
    if state == J_COMPLETED:
        chosen.state, chosen.exit_code, chosen.result_cid = X_PUBLISHED, 0, _cid(rng)
        job.state = state
        events.append(_ev(job, "ExecutionPublished", t, chosen, chosen.result_cid))
        events.append(_ev(job, "JobCompleted", t))
    elif state == J_FAILED:
        chosen.state, chosen.exit_code = X_FAILED, 1
        chosen.stderr_tail = "Traceback (most recent call last):\n  ...\nValueError: bad row 1874"
        chosen.message = "exit code 1"
        job.state = state
        job.message = f"execution on node {chosen.node_id[-8:]} failed: exit code 1"
        events.append(_ev(job, "ExecutionFailed", t, chosen, chosen.message))
        events.append(_ev(job, "JobFailed", t, detail=job.message))
    elif state == J_CANCELLED:
        chosen.state, chosen.message = X_CANCELLED, "cancelled by the user"
        job.state, job.message = state, "cancelled by the user"
        events.append(_ev(job, "ExecutionCancelled", t, chosen, job.message))
        events.append(_ev(job, "JobCancelled", t, detail=job.message))
    job.update_time_unix_nano = t
    return job, events


def _create(batch: list[tuple[pb.Job, list[pb.Event]]]) -> Callable[[Tx], None]:
    def write(tx: Tx) -> None:
        for job, events in batch:
            tx.put_job(job)
            for ev in events:
                tx.add_event(ev)

    return write


def transition(job_id: str) -> Callable[[Tx], None]:
    """Select the first bid and start the job, as the requester does (one job, one event)."""

    def write(tx: Tx) -> None:
        job = tx.get_job(job_id)
        ex = job.executions[0]
        set_execution_state(ex, E.BID_ACCEPTED)
        set_job_state(job, JobState.RUNNING, f"placed on node {ex.node_id[-8:]}")
        tx.put_job(job)
        ev = pb.Event(job_id=job.id, type="BidAccepted", execution_id=ex.id, node_id=ex.node_id)
        ev.job_state, ev.execution_state = job.state, ex.state
        tx.add_event(ev)

    return write


def per_round(benchmark: Any, n: int) -> Any:
    """`benchmark`'s stats over `n` operations a round, in the shape `record` reads."""
    s = benchmark.stats.stats
    stats = SimpleNamespace(mean=s.mean / n, median=s.median / n)
    return SimpleNamespace(stats=SimpleNamespace(stats=stats))


def value(x: float) -> Any:
    """A plain number, in the shape `record` reads (kept in its mean and median)."""
    return SimpleNamespace(stats=SimpleNamespace(stats=SimpleNamespace(mean=x, median=x)))


# -- baseline -----------------------------------------------------------------------------


def test_raw_lmdb_commit_baseline(benchmark: Any, tmp_path: Path, record: Record) -> None:
    env = lmdb.open(str(tmp_path / "raw"), map_size=1 << 30, sync=True, metasync=True)
    payload = os.urandom(300)
    keys = itertools.count()

    def commit() -> None:
        with env.begin(write=True) as txn:
            txn.put(b"job-%08d" % next(keys), payload)

    try:
        benchmark.pedantic(commit, rounds=1000, iterations=1, warmup_rounds=50)
    finally:
        env.close()
    record("ds_raw_commit", benchmark)


# -- synced transitions -------------------------------------------------------------------


class Commits:
    """Counts durable commits that carried events (every transition adds one event)."""

    def __init__(self) -> None:
        self.commits = 0
        self.events = 0

    def __call__(self, events: Iterable[pb.Event]) -> None:
        self.commits += 1
        self.events += sum(1 for _ in events)


@pytest.fixture(scope="module")
def wstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LmdbDatastore, Commits]]:
    store = LmdbDatastore(tmp_path_factory.mktemp("transitions") / "db")  # synced
    counter = Commits()
    store.add_listener(counter)
    yield store, counter
    store.close()


_fresh_rng = random.Random(3)
_fresh_n = itertools.count()


def fresh_jobs(store: LmdbDatastore, n: int) -> list[str]:
    """`n` new pending jobs, stored in one write (no events, so `Commits` does not see it)."""
    jobs = []
    for _ in range(n):
        i = next(_fresh_n)
        jobs.append(pending_job(_fresh_rng, i, T0 + i * 1_000_000))
    store.submit(_create([(job, []) for job in jobs])).result()
    return [job.id for job in jobs]


def _group_size(counter: Commits, before: tuple[int, int]) -> float:
    commits, events = counter.commits - before[0], counter.events - before[1]
    return events / commits if commits else 0.0


def test_transition_one_at_a_time(
    benchmark: Any, wstore: tuple[LmdbDatastore, Commits], record: Record
) -> None:
    store, counter = wstore
    ids = iter(fresh_jobs(store, 600))
    before = (counter.commits, counter.events)

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        return (next(ids),), {}

    def one(job_id: str) -> None:
        store.submit(transition(job_id)).result()

    benchmark.pedantic(one, setup=setup, rounds=500, iterations=1, warmup_rounds=20)
    record("ds_tx_serial", benchmark)
    record("ds_tx_serial_group", value(_group_size(counter, before)))
    assert store.get_job(next(ids)).state == JobState.PENDING.pb


def test_transitions_8_threads(
    benchmark: Any, wstore: tuple[LmdbDatastore, Commits], record: Record
) -> None:
    store, counter = wstore
    pool = ThreadPoolExecutor(THREADS)
    before = (counter.commits, counter.events)

    def setup() -> tuple[tuple[list[list[str]]], dict[str, Any]]:
        ids = fresh_jobs(store, THREADS * PER_THREAD)
        return ([ids[i::THREADS] for i in range(THREADS)],), {}

    def each(ids: list[str]) -> None:
        for job_id in ids:
            store.submit(transition(job_id)).result()

    def run(chunks: list[list[str]]) -> None:
        for fut in [pool.submit(each, chunk) for chunk in chunks]:
            fut.result()

    try:
        benchmark.pedantic(run, setup=setup, rounds=4, iterations=1, warmup_rounds=1)
    finally:
        pool.shutdown()
    record("ds_tx_threads", per_round(benchmark, THREADS * PER_THREAD))
    record("ds_tx_threads_group", value(_group_size(counter, before)))


def test_transitions_in_flight(
    benchmark: Any, wstore: tuple[LmdbDatastore, Commits], record: Record
) -> None:
    store, counter = wstore
    before = (counter.commits, counter.events)

    def setup() -> tuple[tuple[list[str]], dict[str, Any]]:
        return (fresh_jobs(store, INFLIGHT),), {}

    def run(ids: list[str]) -> None:
        for fut in [store.submit(transition(job_id)) for job_id in ids]:
            fut.result()

    benchmark.pedantic(run, setup=setup, rounds=5, iterations=1, warmup_rounds=1)
    record("ds_tx_inflight", per_round(benchmark, INFLIGHT))
    record("ds_tx_inflight_group", value(_group_size(counter, before)))
    assert store.count_jobs(JobQuery(states=frozenset({JobState.RUNNING.pb}))) >= INFLIGHT * 6


# -- reads from 100,000 jobs --------------------------------------------------------------


@pytest.fixture(scope="session")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Big]:
    """100,000 jobs (3 executions, ~10 events each), built unsynced in big writes, then
    reopened synced. Also returns the job IDs, oldest first."""
    path = tmp_path_factory.mktemp("jobs100k") / "db"
    rng = random.Random(5)
    ids: list[str] = []
    build = LmdbDatastore(path, sync=False)
    try:
        for start in range(0, N_JOBS, BUILD_BATCH):
            batch = [stored_job(rng, n) for n in range(start, min(start + BUILD_BATCH, N_JOBS))]
            ids += [job.id for job, _ in batch]
            build.submit(_create(batch)).result()  # (overlapping the next batch is slower)
    finally:
        build.close()
    store = LmdbDatastore(path)  # synced, as a node opens it
    yield store, ids
    store.close()


def _read_bench(
    benchmark: Any, fn: Callable[..., Any], setup: Any = None, rounds: int = 300
) -> None:
    benchmark.pedantic(fn, setup=setup, rounds=rounds, iterations=1, warmup_rounds=20)


def test_page_first(benchmark: Any, big_store: Big, record: Record) -> None:
    store, ids = big_store
    page = store.query_jobs(JobQuery(limit=PAGE))
    assert [j.id for j in page.jobs] == ids[::-1][:PAGE] and page.next_cursor
    _read_bench(benchmark, lambda: store.query_jobs(JobQuery(limit=PAGE)))
    record("ds_page_first", benchmark)


def test_page_deep(benchmark: Any, big_store: Big, record: Record) -> None:
    store, ids = big_store
    cursor = store.query_jobs(JobQuery(limit=DEEP)).next_cursor
    query = JobQuery(limit=PAGE, cursor=cursor)
    page = store.query_jobs(query)
    assert [j.id for j in page.jobs] == ids[::-1][DEEP : DEEP + PAGE]
    _read_bench(benchmark, lambda: store.query_jobs(query))
    record("ds_page_deep", benchmark)


def test_page_failed(benchmark: Any, big_store: Big, record: Record) -> None:
    store, _ = big_store
    query = JobQuery(states=frozenset({JobState.FAILED.pb}), limit=PAGE)
    page = store.query_jobs(query)
    assert len(page.jobs) == PAGE and all(j.state == JobState.FAILED.pb for j in page.jobs)
    n_failed = store.count_jobs(JobQuery(states=query.states))
    assert 0.08 * N_JOBS < n_failed < 0.12 * N_JOBS
    _read_bench(benchmark, lambda: store.query_jobs(query))
    record("ds_page_failed", benchmark)


def test_page_active(benchmark: Any, big_store: Big, record: Record) -> None:
    """`list` without --all: pending or running, two states, so no index; ~7% match."""
    store, _ = big_store
    query = JobQuery(states=ACTIVE_JOB_STATES, limit=PAGE)
    assert len(store.query_jobs(query).jobs) == PAGE
    _read_bench(benchmark, lambda: store.query_jobs(query))
    record("ds_page_active", benchmark)


def test_all_active_unlimited(benchmark: Any, big_store: Big, record: Record) -> None:
    """Requester.sync's query (on every peer connect): every active job, no limit."""
    store, _ = big_store
    query = JobQuery(states=ACTIVE_JOB_STATES)
    n = len(store.query_jobs(query).jobs)
    assert 0.05 * N_JOBS < n < 0.09 * N_JOBS
    benchmark.pedantic(store.query_jobs, args=(query,), rounds=3, iterations=1)
    record("ds_all_active", benchmark)


def test_describe(benchmark: Any, big_store: Big, record: Record) -> None:
    store, ids = big_store
    rng = random.Random(9)

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        return (rng.choice(ids),), {}

    def describe(job_id: str) -> None:
        job = store.get_job(job_id)
        events = store.events(job_id)
        assert job.id == job_id and len(events) >= 4

    _read_bench(benchmark, describe, setup, rounds=500)
    record("ds_describe", benchmark)


def test_get_by_prefix(benchmark: Any, big_store: Big, record: Record) -> None:
    """`describe j-1a2b3c4d`: the kind prefix and 8 characters of the UUID."""
    store, ids = big_store
    width = len("j-") + 8
    ordered = sorted(ids)
    before, after = ["", *ordered[:-1]], [*ordered[1:], ""]
    unique = [
        job_id
        for b, job_id, a in zip(before, ordered, after, strict=True)
        if b[:width] != job_id[:width] != a[:width]
    ]
    rng = random.Random(13)
    chosen = rng.sample(unique, 1000)

    def setup() -> tuple[tuple[str, str], dict[str, Any]]:
        job_id = rng.choice(chosen)
        return (job_id[:width], job_id), {}

    def lookup(prefix: str, job_id: str) -> None:
        assert store.get_job(prefix).id == job_id

    _read_bench(benchmark, lookup, setup, rounds=500)
    record("ds_get_prefix", benchmark)
