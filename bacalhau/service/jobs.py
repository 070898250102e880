"""Jobs as plain Python calls: submit, cancel, get (and wait), list, watch events, logs."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bacalhau import spec as jobspec
from bacalhau.content.cid import CID
from bacalhau.content.errors import NotFound
from bacalhau.datastore import Datastore
from bacalhau.datastore.base import ACTIVE_JOB_STATES, JobQuery
from bacalhau.engines import blockstore_head
from bacalhau.engines import get as get_engine
from bacalhau.errors import UsageError
from bacalhau.models import ExecutionState, JobState
from bacalhau.requester.logs import STDERR, STDOUT
from bacalhau.requester.node import Requester
from bacalhau.service.callers import Access, Caller, check_owner, view
from bacalhau.service.results import ResultService, output_execution
from bacalhau.service.shards import expand
from bacalhau.service.watch import JobWatch

_LOG_STREAMS = (("stdout", STDOUT), ("stderr", STDERR))
MAX_LINEAGE_DEPTH = 32
MAX_LINEAGE_NODES = 1000
_LOG_CHUNK = 64 << 10


async def _nobody(key: str) -> None:
    return None


def _with(job: Any, executions: list[Any]) -> Any:
    """A copy of `job` with only `executions` (to pick one shard's result)."""
    out = type(job)()
    out.CopyFrom(job)
    del out.executions[:]
    out.executions.extend(executions)
    return out


@dataclass(frozen=True)
class LogChunk:
    stream: int  # 1 stdout, 2 stderr
    data: bytes
    execution_id: str


class JobService:
    """What clients may ask of the jobs this node is the requester of."""

    def __init__(
        self,
        *,
        store: Datastore,
        requester: Requester,
        watch: JobWatch,
        results: ResultService,
        on_submit: Callable[[], None] = lambda: None,
        ask_peers: Callable[[str], Awaitable[Any]] | None = None,
        max_timeout_s: float = jobspec.MAX_TIMEOUT_S,
        max_spec_bytes: int = jobspec.MAX_SPEC_BYTES,
        access: Access | None = None,
    ) -> None:
        self._store = store
        self._requester = requester
        self._watch = watch
        self._results = results
        self._on_submit = on_submit
        self._ask_peers = ask_peers or _nobody
        self._max_timeout_s = max_timeout_s
        self._max_spec_bytes = max_spec_bytes
        self.access = access or Access()

    async def submit(self, spec: Any, caller: Caller, traceparent: str = "") -> Any:
        """Check `spec` and store the job, owned by `caller`; the job once durable.
        `traceparent`: the caller's span (W3C), the parent of the job's trace.

        Raises Forbidden if the caller may not submit here, SpecError naming what is wrong,
        NotFound for data the engine needs on this node (a wasm module) that is not here.
        """
        self.access.check_submit(caller)
        await asyncio.to_thread(self._check, spec)
        record = jobspec.memo_record(spec)
        if record is not None:
            # The canonical record is content too: lineage names it by its CID.
            await asyncio.to_thread(self._results.store_raw, record)
            if not spec.no_memo:
                memo = await self._memo(jobspec.memo_key(record))
                if memo is not None:
                    job = await self._requester.submit_memoized(spec, caller.user_id, memo)
                    self._on_submit()
                    return job
        shards = None
        if jobspec.is_sharded(spec):
            shards = await expand(spec, self._results.peek)
        job = await self._requester.submit(spec, caller.user_id, shards, traceparent)
        self._on_submit()
        return job

    def lineage(self, cid_text: str, depth: int = 1) -> list[dict[str, Any]]:
        """Breadth first from `cid_text`: for each CID, the verified job that made it (its
        record and input CIDs) and the jobs that read it; back `depth` input steps (at most
        MAX_LINEAGE_DEPTH), at most MAX_LINEAGE_NODES CIDs. Raises InvalidCID, UsageError."""
        if not 0 <= depth <= MAX_LINEAGE_DEPTH:
            raise UsageError(f"depth must be 0 to {MAX_LINEAGE_DEPTH}, not {depth}")
        start = str(CID.parse(cid_text))
        steps = max(depth, 1)
        out: list[dict[str, Any]] = []
        seen = {start}
        level, d = [start], 0
        while level and d <= steps:
            following = []
            for cid in level:
                made = self._store.made_by(cid)
                inputs = list(made.input_cids) if made else []
                out.append(
                    {
                        "cid": cid,
                        "depth": d,
                        "job_id": made.job_id if made else "",
                        "record": made.record.decode() if made else "",
                        "record_cid": made.key if made else "",
                        "input_cids": inputs,
                        "used_by": [e.job_id for e in self._store.used_by(cid)],
                    }
                )
                if len(out) >= MAX_LINEAGE_NODES:
                    return out
                if d < steps:
                    following += [i for i in inputs if i not in seen]
                    seen.update(inputs)
            level, d = following, d + 1
        return out

    async def _memo(self, key: str) -> Any:
        """The verified result known for a memo key: this node's, else the first peer's that
        knows one (a peer penalised here is not asked)."""
        entry = self._store.get_memo(key)
        if entry is not None:
            return entry
        return await self._ask_peers(key)

    def _check(self, spec: Any) -> None:
        jobspec.check(spec)
        problems = jobspec.check_size(spec, self._max_spec_bytes)
        if spec.timeout_seconds > self._max_timeout_s:
            problems.append(
                jobspec.Problem(
                    "timeout_seconds",
                    f"timeout {spec.timeout_seconds:g} s is above this node's maximum of "
                    f"{self._max_timeout_s:g} s",
                    "ask for less, or submit to a node that allows more",
                )
            )
        if not problems:  # the stored data only of a spec the node would take
            head = blockstore_head(self._results.blockstore.get)
            problems = get_engine(spec.engine).check_stored(spec, head)
        if problems:
            raise jobspec.SpecError(problems)

    async def cancel(self, job_id: str, caller: Caller, reason: str = "") -> Any:
        """Cancel a job. Raises SpecError for a malformed ID, JobNotFound, Forbidden unless
        the caller owns it, JobStateError if it is final already."""
        job = self.get(job_id)
        check_owner(caller, job, "cancel")
        return await self._requester.cancel(job.id, reason[:1000])

    def describe(self, job_id: str, caller: Caller) -> Any:
        """The job as `caller` may see it (env values hidden from all but its owner)."""
        return view(self.get(job_id), caller)

    def get(self, job_id: str) -> Any:
        """The job (`job_id` may be a unique prefix). Raises SpecError for an empty, overlong
        or garbled ID, JobNotFound, AmbiguousID."""
        problems = jobspec.check_id(job_id)
        if problems:
            raise jobspec.SpecError(problems)
        return self._store.get_job(job_id)

    def events(self, job_id: str, after_seq: int = 0) -> list[Any]:
        return self._store.events(job_id, after_seq)

    async def wait_final(self, job_id: str) -> Any:
        """The job once it is completed, failed or cancelled."""
        while True:
            waiter = self._watch.waiter(job_id)
            try:
                job = self._store.get_job(job_id)
                if JobState.of(job.state).is_terminal:
                    return job
                await waiter
            finally:
                self._watch.forget(job_id, waiter)

    def list(
        self,
        caller: Caller,
        *,
        all_users: bool = False,
        states: frozenset[int] = frozenset(),
        all: bool = False,
        client_id: str = "",
        labels: dict[str, str] | None = None,
        oldest_first: bool = False,
        limit: int = 0,
        cursor: str = "",
    ) -> Any:
        """A page of jobs (active ones unless `all` or `states`) of user `client_id`, else of
        the caller unless `all_users`, as the caller may see them. Raises UsageError for a
        cursor that is not one this node gave."""
        try:
            bytes.fromhex(cursor)
        except ValueError:
            raise UsageError(f"bad cursor {cursor!r}") from None
        query = JobQuery(
            states=states or (frozenset() if all else ACTIVE_JOB_STATES),
            client_id=client_id or ("" if all_users else caller.user_id),
            labels=labels or {},
            oldest_first=oldest_first,
            limit=limit,
            cursor=cursor,
        )
        page = self._store.query_jobs(query)
        return dataclasses.replace(page, jobs=[view(job, caller) for job in page.jobs])

    async def watch_events(
        self, job_id: str, after_seq: int = 0, follow: bool = False
    ) -> AsyncIterator[Any]:
        """The job's events after `after_seq`; with `follow`, new ones until it is final."""
        job_id = self.get(job_id).id
        seq = after_seq
        while True:
            waiter = self._watch.waiter(job_id)
            try:
                events = self._store.events(job_id, seq)
                for ev in events:
                    yield ev
                    seq = ev.seq
                if not follow:
                    return
                if not events and JobState.of(self._store.get_job(job_id).state).is_terminal:
                    return
                if not events:
                    await waiter
            finally:
                self._watch.forget(job_id, waiter)

    async def logs(
        self,
        job_id: str,
        follow: bool = False,
        shard: int | None = None,
        execution_id: str = "",
    ) -> AsyncIterator[LogChunk]:
        """The job's stdout and stderr: with `follow`, live while it runs, then the rest from
        its result. A sharded job's are each shard's in shard order (or shard `shard`'s
        only), from their results (`follow` waits for the job to end first). With
        `execution_id`, that execution's, from its result (`follow` waits for the job to end
        first). Raises NotFound when the result's blocks cannot be had or the execution has
        no result, UsageError for a shard or an execution the job has not."""
        job = self.get(job_id)
        if execution_id:
            async for chunk in self._execution_logs(job, execution_id, follow):
                yield chunk
            return
        count = job.shard_count or 1
        if shard is not None and not 0 <= shard < count:
            raise UsageError(
                f"job {job.id} has {count} shard{'s' * (count > 1)}: there is no shard {shard}",
                hint=f"shards are numbered 0 to {count - 1}",
            )
        if count > 1:
            if follow:
                job = await self.wait_final(job.id)
            for s in range(count) if shard is None else [shard]:
                mine = [ex for ex in job.executions if ex.shard == s]
                ex = output_execution(_with(job, mine))
                if ex is not None:
                    async for chunk in self._result_logs(ex, {STDOUT: 0, STDERR: 0}):
                        yield chunk
            return
        sent = {stream: 0 for _, stream in _LOG_STREAMS}  # bytes sent live
        live_id = ""
        if follow:
            async for chunk in self._follow(job.id, sent):
                live_id = chunk.execution_id
                yield chunk
            job = self._store.get_job(job.id)
        ex = output_execution(job)
        if ex is None or (live_id and ex.id != live_id):
            return
        async for chunk in self._result_logs(ex, sent):
            yield chunk

    async def _execution_logs(
        self, job: Any, execution_id: str, follow: bool
    ) -> AsyncIterator[LogChunk]:
        problems = jobspec.check_id(execution_id, "execution_id")
        if problems:
            raise jobspec.SpecError(problems)
        if not any(ex.id == execution_id for ex in job.executions):
            raise UsageError(f"job {job.id} has no execution {execution_id}")
        if follow:
            job = await self.wait_final(job.id)
        ex = next(ex for ex in job.executions if ex.id == execution_id)
        if not ex.result_cid:
            state = ExecutionState.of(ex.state).value
            why = f": {ex.message}" if ex.message else ""
            raise NotFound(f"execution {ex.id} has no result (it is {state}){why}")
        async for chunk in self._result_logs(ex, {STDOUT: 0, STDERR: 0}):
            yield chunk

    async def _result_logs(self, ex: Any, sent: dict[int, int]) -> AsyncIterator[LogChunk]:
        """stdout and stderr from an execution's result, less the bytes already `sent`."""
        for name, stream in _LOG_STREAMS:
            # stdout and stderr only: a result's output folders may be far larger
            cid = await self._results.ensure_entry(ex.result_cid, name, [ex.node_id])
            if cid is None:
                continue
            skip = sent[stream]
            for data in self._results.cat(cid):
                if skip >= len(data):
                    skip -= len(data)
                    continue
                data, skip = data[skip:], 0
                for i in range(0, len(data), _LOG_CHUNK):
                    yield LogChunk(stream, data[i : i + _LOG_CHUNK], ex.id)

    async def _follow(self, job_id: str, sent: dict[int, int]) -> AsyncIterator[LogChunk]:
        """What the job's first execution writes, as it writes it, until the job is final."""
        logs = self._requester.logs
        live = None
        try:
            while True:
                waiter = self._watch.waiter(job_id)
                changed: asyncio.Future[Any] | None = None
                try:
                    final = JobState.of(self._store.get_job(job_id).state).is_terminal
                    event = None if final else logs.changed(job_id)
                    if event is not None:
                        event.clear()
                    live = live or logs.first(job_id)
                    if live is not None:
                        for stream, buf in live[1].streams.items():
                            data = bytes(buf[sent[stream] :])
                            sent[stream] += len(data)
                            for i in range(0, len(data), _LOG_CHUNK):
                                yield LogChunk(stream, data[i : i + _LOG_CHUNK], live[0])
                    if event is None:
                        return
                    changed = asyncio.ensure_future(event.wait())
                    await asyncio.wait({waiter, changed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if changed is not None:
                        changed.cancel()
                    self._watch.forget(job_id, waiter)
        finally:
            if JobState.of(self._store.get_job(job_id).state).is_terminal:
                logs.drop({job_id})
