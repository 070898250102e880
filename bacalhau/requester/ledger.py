"""The requester's ledger: every change to a job is one named transition here.

Each transition reads the job, changes it through `models.set_*_state` (which refuse illegal
changes), appends its events, and writes it back, all in one datastore transaction; it returns
what must be sent because of it, and only after the commit is anything sent. Executions are
kept per shard: a job completes when every shard has a published result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from bacalhau import spec as jobspec
from bacalhau._pb.bacalhau.v1 import peer_pb2, records_pb2
from bacalhau.datastore import Datastore, Tx
from bacalhau.errors import BacalhauError, JobStateError
from bacalhau.models import (
    ExecutionState,
    JobState,
    new_id,
    new_job_id,
    now_ns,
    pb,
    set_execution_state,
    set_job_state,
)
from bacalhau.verifier import get as get_verifier

E = ExecutionState
T = TypeVar("T")
MAX_REPLACEMENTS = 3  # placements of a job after the first, when its nodes are lost
LOST = "did not come back"
NO_RECORD = "has no record of this execution"


def short(node_id: str) -> str:
    """The tail of a node ID, enough to tell nodes apart in messages."""
    return node_id[-8:]


def event(job: Any, type_: str, ex: Any = None, detail: str = "", node_id: str = "") -> Any:
    ev = pb.Event(job_id=job.id, type=type_, job_state=job.state, detail=detail)
    if ex is not None:
        ev.execution_id = ex.id
        ev.node_id = ex.node_id
        ev.shard = ex.shard
        ev.execution_state = ex.state
    elif node_id:
        ev.node_id = node_id
    return ev


def shard_count(job: Any) -> int:
    """How many shards the job has (1 unless it is sharded)."""
    return job.shard_count or 1


def unplaced_shards(job: Any) -> list[int]:
    """The shards with no execution that is running or published (placed anew on requeue)."""
    placed = {ex.shard for ex in job.executions if _placed(ex)}
    return [s for s in range(shard_count(job)) if s not in placed]


def to_place(job: Any) -> list[int]:
    """The shards to place (again): nothing placed, and tries left. A shard tries again after
    its node was lost up to MAX_REPLACEMENTS times; a sharded job's shard also after it failed,
    up to its retries (`spec.retries`)."""
    retries = jobspec.retries(job.spec) if jobspec.is_sharded(job.spec) else 0
    placed: set[int] = set()
    lost: dict[int, int] = {}
    failed: dict[int, int] = {}
    for ex in job.executions:
        if _placed(ex):
            placed.add(ex.shard)
        elif ex.state == E.FAILED.pb:
            if LOST in ex.message or NO_RECORD in ex.message:
                lost[ex.shard] = lost.get(ex.shard, 0) + 1
            else:
                failed[ex.shard] = failed.get(ex.shard, 0) + 1
    return [
        s
        for s in range(shard_count(job))
        if s not in placed and lost.get(s, 0) <= MAX_REPLACEMENTS and failed.get(s, 0) <= retries
    ]


def _ranges(shards: list[int]) -> str:
    """1,2,3,7 -> '1-3, 7' (at most a few ranges shown)."""
    runs: list[list[int]] = []
    for s in sorted(shards):
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    text = [f"{a}-{b}" if a != b else f"{a}" for a, b in runs[:5]]
    return ", ".join(text) + (", ..." if len(runs) > 5 else "")


def failed_nodes(job: Any) -> dict[int, set[str]]:
    """Shard -> the nodes an execution of it failed on (a retry goes elsewhere); not those
    that were lost or restarted without a record of it: they may run it again."""
    out: dict[int, set[str]] = {}
    for ex in job.executions:
        if ex.state == E.FAILED.pb and LOST not in ex.message and NO_RECORD not in ex.message:
            out.setdefault(ex.shard, set()).add(ex.node_id)
    return out


@dataclass(frozen=True)
class Pick:
    """Whom a bid round chose for a shard (`trusted`: one node, alone, by adaptive
    replication), and every node that was willing."""

    shard: int
    chosen: frozenset[str]
    willing: frozenset[str] = frozenset()
    trusted: bool = False


class Recorded(NamedTuple):
    """What recording execution reports leaves to do: `outgoing` result decisions (node,
    ResultDecision) to send, but those on executions of this node decided in the same
    transaction (`here`: their records, as this node's compute role keeps them, see
    `Ledger.compute_here`; nothing is sent for them); `requeue`: the job, if it must be placed
    again."""

    outgoing: list[tuple[str, Any]]
    requeue: Any
    here: list[Any]
    first: list[Any]  # what the writes done first returned (see `Ledger.update_many`)


@dataclass(frozen=True)
class ComputeHere:
    """This node's compute role, whose records share the requester's datastore: what it
    writes when its own requester chooses it, or decides on its result, can go in the
    requester's transaction (one commit instead of three: the requester's, the compute
    role's, and the one recording its report). Each raises BacalhauError if it cannot be
    written; the message is then sent as to any node."""

    # (tx, job, execution, spec it runs, traceparent) -> the compute record of `execution`,
    # written running
    accept: Callable[[Tx, Any, Any, Any, str], Any]
    # (tx, execution ID, accepted, reason) -> the compute record after the decision
    decide: Callable[[Tx, str, bool, str], Any]
    # a compute record -> the ExecutionUpdate that reports it
    update_of: Callable[[Any], Any]


@dataclass(frozen=True)
class Decision:
    """A bid decision to send: to `node_id` about its bid (`execution_id`) for a shard."""

    node_id: str
    execution_id: str
    shard: int
    accepted: bool
    # this node's own execution, written running with the choice (`Ledger.compute_here`):
    # its compute record; nothing is sent for it
    here: Any = None


class Ledger:
    """The named transitions of the jobs this node is the requester of."""

    def __init__(self, store: Datastore, node_id: str, penalty_s: float = 3600.0) -> None:
        self._store = store
        self.node_id = node_id
        self.penalty_ns = int(penalty_s * 1e9)
        # This node's compute role (see `ComputeHere`): set by the node that has both.
        # Choosing it for an execution (of a job, or of a shard) writes its record, running; a
        # decision on its result writes its record, published, unless the job asks for result
        # replicas (publishing waits for them then).
        self.compute_here: ComputeHere | None = None

    async def _write(self, fn: Callable[[Tx], T]) -> T:
        return await asyncio.wrap_future(self._store.submit(fn))

    # -- submit, cancel, restart ----------------------------------------------------------

    def _new_job(self, spec: Any, client_id: str, state: JobState, **fields: Any) -> Any:
        now = now_ns()
        return pb.Job(
            id=new_job_id(self.node_id),
            spec=spec,
            client_id=client_id,
            state=state.pb,
            requester_node_id=self.node_id,
            create_time_unix_nano=now,
            update_time_unix_nano=now,
            **fields,
        )

    async def create(
        self,
        spec: Any,
        client_id: str,
        shards: list[list[Any]] | None = None,
        trace_parent: str = "",
    ) -> Any:
        """Store a new pending job (with its shards' inputs, if sharded; the traceparent of
        its root span); return it once durable."""
        job = self._new_job(spec, client_id, JobState.PENDING, shard_count=len(shards or []))
        job.trace_parent = trace_parent

        def write(tx: Tx) -> Any:
            for index, inputs in enumerate(shards or []):
                tx.put_shard(pb.Shard(job_id=job.id, index=index, inputs=inputs))
            tx.put_job(job)
            tx.add_event(event(job, "JobCreated", node_id=self.node_id))
            return job

        return await self._write(write)

    async def create_memoized(self, spec: Any, client_id: str, memo: Any) -> Any:
        """Store a new job answered with an equal job's verified result (`memo`, a MemoEntry
        or MemoAnswer): completed at once, its one execution that result; nothing is run."""
        job = self._new_job(spec, client_id, JobState.COMPLETED, memoized_from=memo.job_id)
        now = job.create_time_unix_nano
        ex = job.executions.add(
            id=new_id("e"),
            job_id=job.id,
            node_id=memo.node_ids[0] if memo.node_ids else self.node_id,
            state=E.PUBLISHED.pb,
            result_cid=memo.result_cid,
            exit_code=0,
            create_time_unix_nano=now,
            update_time_unix_nano=now,
        )

        def write(tx: Tx) -> Any:
            tx.put_job(job)
            tx.add_event(event(job, "JobCreated", node_id=self.node_id))
            detail = f"memoized from {memo.job_id}: its verified result {memo.result_cid}"
            tx.add_event(event(job, "JobMemoized", ex, detail, node_id=self.node_id))
            tx.add_event(event(job, "JobCompleted", node_id=self.node_id))
            return job

        return await self._write(write)

    async def cancel(self, job_id: str, reason: str) -> tuple[Any, list[tuple[str, str]]]:
        """Cancel a job that is not final: (the job, (node, execution) pairs to stop).

        Raises JobStateError if it is final already.
        """

        def write(tx: Tx) -> Any:
            job = tx.get_job(job_id)
            state = JobState.of(job.state)
            if state.is_terminal:
                raise JobStateError(f"job {job_id} is already {state.value}")
            set_job_state(job, JobState.CANCELLED, reason)
            stopped = []
            for ex in job.executions:
                es = E.of(ex.state)
                if es.is_terminal:
                    continue
                if es.is_active:
                    stopped.append((ex.node_id, ex.id))
                set_execution_state(ex, E.CANCELLED, reason)
                tx.add_event(event(job, "ExecutionCancelled", ex, reason))
            tx.put_job(job)
            tx.add_event(event(job, "JobCancelled", detail=reason, node_id=self.node_id))
            return job, stopped

        return await self._write(write)

    async def recover(self) -> list[Any]:
        """After a restart: drop undecided bids; return the jobs with shards to place."""
        reason = "the requester restarted before deciding"

        def write(tx: Tx) -> list[Any]:
            unplaced = []
            for job in tx.active_jobs():
                for ex in job.executions:
                    if E.of(ex.state) == E.BID_PROPOSED:
                        set_execution_state(ex, E.BID_REJECTED, reason)
                        tx.add_event(event(job, "BidRejected", ex, reason))
                if to_place(job):  # shards with nothing placed (all of them, unsharded)
                    unplaced.append(job)
                tx.put_job(job)
            return unplaced

        return await self._write(write)

    # -- bidding --------------------------------------------------------------------------

    async def record_bids(self, job_id: str, bids: list[tuple[str, Any]]) -> None:
        """Nodes' answers (sender, Bid) to announcements of one job, in one transaction: an
        event each, and a proposed execution for each willing one."""

        def write(tx: Tx) -> None:
            job = tx.get_job(job_id)
            if _record_bids(tx, job, bids):
                tx.put_job(job)

        await self._write(write)

    async def record_shard_bids(self, sender: str, job_id: str, detail: str, willing: bool) -> None:
        """A node's answer to an announcement of many shards: one event (its executions are
        made when it is chosen, by `select`)."""

        def write(tx: Tx) -> None:
            job = tx.get_job(job_id)
            kind = "BidReceived" if willing else "BidDeclined"
            tx.add_event(event(job, kind, detail=detail, node_id=sender))

        await self._write(write)

    async def select(
        self,
        job_id: str,
        picks: list[Pick],
        bids: list[tuple[str, Any]] | None = None,
        traceparent: str = "",
    ) -> list[Decision]:
        """Decide the bids on shards of a job, in one transaction: for each `Pick`, accept the
        chosen nodes' bids and reject the others. A chosen node whose bid was not recorded as
        a proposed execution (it answered an announcement of many shards) gets a new one;
        the other willing nodes of such a bid are told no. `bids` not recorded yet are recorded
        first, in the same transaction, as `record_bids` does. `traceparent`: the selection's
        span, the parent of the executions' (see `compute_here`)."""

        def write(tx: Tx) -> list[Decision]:
            job = tx.get_job(job_id)
            proposed_now = _record_bids(tx, job, bids or [])
            final = JobState.of(job.state).is_terminal
            proposed: dict[int, list[Any]] = {}
            for ex in job.executions:
                if E.of(ex.state) == E.BID_PROPOSED:
                    proposed.setdefault(ex.shard, []).append(ex)
            decisions = []
            for pick in picks:
                mine = proposed.get(pick.shard, [])
                recorded = {ex.node_id for ex in mine}
                for node_id in sorted(pick.chosen - recorded):
                    if final:
                        break
                    mine.append(_propose(job, node_id, pick.shard))
                for ex in mine:
                    accepted = not final and ex.node_id in pick.chosen
                    if not final:
                        set_execution_state(ex, E.BID_ACCEPTED if accepted else E.BID_REJECTED)
                        detail = ""
                        if accepted and pick.trusted:
                            ex.trusted = True
                            detail = "runs alone: its node has a long verified record"
                        kind = "BidAccepted" if accepted else "BidRejected"
                        tx.add_event(event(job, kind, ex, detail))
                    here = self._accepted_here(tx, job, ex, traceparent) if accepted else None
                    decisions.append(Decision(ex.node_id, ex.id, pick.shard, accepted, here))
                for node_id in sorted(pick.willing - pick.chosen - recorded):
                    decisions.append(Decision(node_id, "", pick.shard, False))
            if final:
                if proposed_now:
                    tx.put_job(job)
                return decisions
            if JobState.of(job.state) == JobState.PENDING:
                set_job_state(job, JobState.RUNNING)
                tx.add_event(event(job, "JobRunning", node_id=self.node_id))
            tx.put_job(job)
            return decisions

        return await self._write(write)

    async def fail(self, job_id: str, message: str) -> None:
        """Fail a job that is not final yet (nobody can run it, ...)."""

        def write(tx: Tx) -> None:
            job = tx.get_job(job_id)
            if JobState.of(job.state).is_terminal:
                return
            set_job_state(job, JobState.FAILED, message)
            tx.put_job(job)
            tx.add_event(event(job, "JobFailed", detail=message, node_id=self.node_id))

        await self._write(write)

    # -- execution progress ---------------------------------------------------------------

    async def update(self, sender: str, u: Any) -> Recorded:
        """Record an execution's report: result decisions to send, and the job if it must be
        placed again because its only execution never ran (`Recorded`)."""
        return await self.update_many(u.job_id, [(sender, u)])

    async def update_many(
        self,
        job_id: str,
        reports: list[tuple[str, Any]],
        first: Sequence[Callable[[Tx], Any]] = (),
    ) -> Recorded:
        """Record reports (sender, ExecutionUpdate) on executions of one job in one
        transaction, as `update` does each; if one is refused, nothing is written (the caller
        records them one by one). `first`: writes done first in the same transaction (this
        node's compute role's own records of its reports); what they return is
        `Recorded.first`, and if one raises, nothing is written."""

        def write(tx: Tx) -> Recorded:
            done = [fn(tx) for fn in first]
            job = tx.get_job(job_id)
            index = {ex.id: ex for ex in job.executions}
            outgoing: list[tuple[str, Any]] = []
            verify: set[int] = set()
            requeue: Any = None
            changed = False
            for sender, u in reports:
                if u.job_id != job_id:
                    raise BacalhauError(f"a report on job {u.job_id} among those of {job_id}")
                ex = index.get(u.execution_id)
                if ex is None:
                    raise BacalhauError(f"job {job.id} has no execution {u.execution_id}")
                again, changes, shard, back = self._apply(tx, job, ex, sender, u)
                outgoing.extend(again)
                changed = changed or changes
                if shard is not None:
                    verify.add(shard)
                requeue = requeue or back
            if verify:
                by_shard: dict[int, list[Any]] = {}
                for ex in job.executions:
                    if ex.shard in verify:
                        by_shard.setdefault(ex.shard, []).append(ex)
                for shard in sorted(verify):
                    outgoing.extend(self._verify(tx, job, shard, by_shard[shard]))
            here = self._decided_here(tx, job, index, outgoing)
            if not changed and not here:
                return Recorded(outgoing, None, [], done)
            if requeue is None:
                self._settle(tx, job)
            tx.put_job(job)
            return Recorded(outgoing, requeue, here, done)

        return await self._write(write)

    def _accepted_here(self, tx: Tx, job: Any, ex: Any, traceparent: str) -> Any:
        """Write this node's compute record of its own execution `ex`, running, and record it
        running (see `compute_here`); the record, or None if that is not done here."""
        here = self.compute_here
        if here is None or ex.node_id != self.node_id or E.of(ex.state) != E.BID_ACCEPTED:
            return None
        spec = job.spec
        if jobspec.is_sharded(job.spec):  # a shard runs its own spec, with its own files
            stored = tx.get_shard(job.id, ex.shard)
            if stored is None:
                return None
            spec = jobspec.shard_spec(job.spec, ex.shard, shard_count(job), stored.inputs)
        try:
            rec = here.accept(tx, job, ex, spec, traceparent)
        except BacalhauError:
            return None  # recorded there already: the decision is sent as to any node
        self._apply(tx, job, ex, self.node_id, here.update_of(rec))
        return rec

    def _decided_here(
        self, tx: Tx, job: Any, index: dict[str, Any], outgoing: list[tuple[str, Any]]
    ) -> list[Any]:
        """Write the decisions in `outgoing` on this node's own executions with its compute
        role's record (see `compute_here`); their records after it."""
        compute = self.compute_here
        if compute is None or job.spec.deal.result_replicas:
            return []
        here = []
        for node_id, d in outgoing:
            if node_id != self.node_id:
                continue
            try:
                rec = compute.decide(tx, d.execution_id, d.accepted, d.reason)
            except BacalhauError:
                continue  # not recorded here: the decision is sent as to any node
            here.append(rec)
            if d.accepted:  # published there: recorded as its report would be
                self._apply(tx, job, index[d.execution_id], node_id, compute.update_of(rec))
        return here

    def _apply(
        self, tx: Tx, job: Any, ex: Any, sender: str, u: Any
    ) -> tuple[list[tuple[str, Any]], bool, int | None, Any]:
        """One report on `ex`: (decisions to send again, whether the job changed, the shard
        whose results are to be verified or None, the job if it must be placed again)."""
        state = E.of(u.state)
        current = E.of(ex.state)
        if current == E.CANCELLED and state == E.CANCELLED:
            # Cancelled here first: the node now confirms the program stopped, with what it
            # wrote until then.
            ex.result_cid = u.result_cid or ex.result_cid
            tx.add_event(event(job, "ExecutionStopped", ex, f"{state.value}: {u.message}"))
            return [], bool(u.result_cid), None, None
        behind = state in _FLOW and current in _FLOW and _FLOW[state] < _FLOW[current]
        if current == state or behind:
            # A report repeated after a reconnect or restart; a proposal we already
            # decided gets its decision again.
            if state == E.RESULT_PROPOSED and current in (E.RESULT_ACCEPTED, E.PUBLISHED):
                again = peer_pb2.ResultDecision(job_id=job.id, execution_id=ex.id, accepted=True)
                return [(sender, again)], False, None, None
            return [], False, None, None
        if current.is_terminal:
            # A report that crossed a decision: keep it as an event.
            tx.add_event(event(job, "LateUpdate", ex, f"{state.value}: {u.message}"))
            return [], False, None, None
        if u.HasField("exit_code"):
            ex.exit_code = u.exit_code
        ex.result_cid = u.result_cid or ex.result_cid
        ex.stderr_tail = u.stderr_tail or ex.stderr_tail
        if state == E.PUBLISHED and u.replica_node_ids:  # set by this requester only
            del ex.replica_node_ids[:]
            ex.replica_node_ids.extend(u.replica_node_ids)
        if u.inputs:  # URL inputs as the node resolved them (their CIDs)
            del ex.inputs[:]
            ex.inputs.extend(u.inputs)
        if current == E.BID_ACCEPTED and state == E.RESULT_PROPOSED:
            # The "running" report was lost (this node restarted meanwhile).
            set_execution_state(ex, E.RUNNING)
            tx.add_event(event(job, "ExecutionRunning", ex))
        set_execution_state(ex, state, u.message)
        detail = u.result_cid if state == E.RESULT_PROPOSED else u.message
        tx.add_event(event(job, _EVENT_OF[state], ex, detail))
        # A proposal to decide; or the last execution the verifier waited for ended.
        verify = ex.shard if state in (E.RESULT_PROPOSED, E.FAILED, E.CANCELLED) else None
        requeue: Any = None
        if state == E.FAILED and current == E.BID_ACCEPTED and NO_RECORD in u.message:
            requeue = self._replace(tx, job, u.message, ex.node_id)
        elif state == E.FAILED and jobspec.is_sharded(job.spec):
            requeue = self._retry(tx, job, ex)
        return [], True, verify, requeue

    def _verify(
        self, tx: Tx, job: Any, shard: int, executions: list[Any] | None = None
    ) -> list[tuple[str, Any]]:
        """Verdicts on the shard's proposed results (`executions`: the shard's, if known),
        each recorded with its peer's reputation: an accepted result counts for its node; a
        result that lost to an agreeing group counts against it and keeps it from work here
        for the penalty time."""
        if executions is None:
            executions = [ex for ex in job.executions if ex.shard == shard]
        verdicts = get_verifier(job.spec.deal.verifier).verify(job.spec, executions)
        someone_won = any(v.accepted for v in verdicts)
        outgoing = []
        mine = {ex.id: ex for ex in executions}
        for verdict in verdicts:
            ex = mine[verdict.execution_id]
            accepted = verdict.accepted
            if accepted:
                set_execution_state(ex, E.RESULT_ACCEPTED)
            else:
                set_execution_state(ex, E.RESULT_REJECTED, verdict.reason)
            peer = tx.get_peer(ex.node_id)
            if peer is not None and accepted:  # work done: it keeps the peer in the table
                peer.results_accepted += 1
                tx.put_peer(peer)
            elif peer is not None and someone_won:  # it lost a verification: a lie
                peer.results_rejected += 1
                peer.penalized_until_unix_nano = now_ns() + self.penalty_ns
                tx.put_peer(peer)
            kind = "ResultAccepted" if accepted else "ResultRejected"
            tx.add_event(event(job, kind, ex, verdict.reason))
            decision = peer_pb2.ResultDecision(
                job_id=job.id, execution_id=ex.id, accepted=accepted, reason=verdict.reason
            )
            outgoing.append((ex.node_id, decision))
        return outgoing

    async def give_up_on(self, node_id: str) -> tuple[list[Any], list[tuple[str, Any]]]:
        """`node_id` stayed away too long: fail what it ran; return the jobs to place again,
        and the result decisions the verifier made once it no longer waits for that node."""
        message = f"node {short(node_id)} disconnected and {LOST}"

        def write(tx: Tx) -> tuple[list[Any], list[tuple[str, Any]]]:
            again: list[Any] = []
            decided: list[tuple[str, Any]] = []
            for job in tx.active_jobs():
                lost = [
                    ex
                    for ex in job.executions
                    if ex.node_id == node_id and E.of(ex.state).is_active
                ]
                if not lost:
                    continue
                for ex in lost:
                    set_execution_state(ex, E.FAILED, message)
                    tx.add_event(event(job, "ExecutionFailed", ex, message))
                for shard in sorted({ex.shard for ex in lost}):
                    decided.extend(self._verify(tx, job, shard))
                if self._replace(tx, job, message, node_id) is not None:
                    again.append(job)
                else:
                    self._settle(tx, job)
                tx.put_job(job)
            return again, decided

        return await self._write(write)

    def _replace(self, tx: Tx, job: Any, message: str, node_id: str) -> Any:
        """The job, if a shard of it has nothing placed and may be placed again (an event
        says so), else None."""
        shards = to_place(job)
        if not shards:
            return None
        tries = max(
            sum(ex.shard == s and (LOST in ex.message or NO_RECORD in ex.message)
                for ex in job.executions)
            for s in shards
        )  # fmt: skip
        which = "" if shard_count(job) == 1 else f" (shards {_ranges(shards)})"
        detail = f"{message}: asking the other nodes{which} (attempt {tries + 1})"
        tx.add_event(event(job, "JobRequeued", detail=detail, node_id=node_id))
        return job

    def _remember(self, tx: Tx, job: Any) -> None:
        """A completed memoizable job's verified result, by its memo key (the first kept)."""
        record = jobspec.memo_record(job.spec)
        if record is None or job.memoized_from:
            return
        key = jobspec.memo_key(record)
        if tx.get_memo(key) is not None:
            return
        good = [ex for ex in job.executions if ex.state == E.PUBLISHED.pb]
        tx.put_memo(
            records_pb2.MemoEntry(
                key=key,
                job_id=job.id,
                result_cid=good[0].result_cid,
                node_ids=sorted({ex.node_id for ex in good}),
                record=record,
                time_unix_nano=now_ns(),
                input_cids=sorted({i.cid for i in job.spec.inputs}),
            )
        )

    def _retry(self, tx: Tx, job: Any, ex: Any) -> Any:
        """The job, if the failed execution's shard may be tried again on another node (an
        event says so), else None."""
        shard = ex.shard
        if any(_placed(e) for e in job.executions if e.shard == shard):
            return None  # another execution of the shard is still on it
        failures = sum(e.shard == shard and e.state == E.FAILED.pb for e in job.executions)
        if failures > jobspec.retries(job.spec):
            return None
        detail = (
            f"shard {shard} failed on node {short(ex.node_id)}: trying another node "
            f"(retry {failures} of {jobspec.retries(job.spec)})"
        )
        tx.add_event(event(job, "ShardRequeued", ex, detail))
        return job

    def _settle(self, tx: Tx, job: Any) -> None:
        """Finish the job if none of its executions can change the outcome any more."""
        if JobState.of(job.state).is_terminal:
            return
        states = [E.of(ex.state) for ex in job.executions]
        if any(s.is_active or s == E.BID_PROPOSED for s in states):
            return
        published = {ex.shard for ex in job.executions if ex.state == E.PUBLISHED.pb}
        if jobspec.is_sharded(job.spec) and to_place(job):
            return  # a shard is waiting to be placed (again): its round has no bids yet
        if len(published) >= shard_count(job):
            set_job_state(job, JobState.COMPLETED)
            tx.add_event(event(job, "JobCompleted", node_id=self.node_id))
            self._remember(tx, job)
            return
        failed = [
            ex
            for ex in job.executions
            if E.of(ex.state) in (E.FAILED, E.CANCELLED, E.RESULT_REJECTED)
        ]
        if not failed:
            return
        lost = [ex for ex in failed if ex.shard not in published]
        ex = (lost or failed)[-1]
        message = ex.message or E.of(ex.state).value
        if ex.stderr_tail:
            message += f"; stderr: {ex.stderr_tail.splitlines()[-1][:300]}"
        if ex.state == E.RESULT_REJECTED.pb:
            message = f"its results were rejected: {message}"
        else:
            message = f"execution on node {short(ex.node_id)} failed: {message}"
        if shard_count(job) > 1:
            tries = sum(e.shard == ex.shard for e in failed)
            message = f"shard {ex.shard} of {shard_count(job)} failed ({tries} tries): {message}"
        set_job_state(job, JobState.FAILED, message)
        tx.add_event(event(job, "JobFailed", detail=message, node_id=self.node_id))


def _record_bids(tx: Tx, job: Any, bids: list[tuple[str, Any]]) -> bool:
    """Record bids on `job` (sender, Bid): an event each, and a proposed execution for each
    willing one; whether the job changed (it is to be written)."""
    changed = False
    for sender, bid in bids:
        if not bid.willing:
            tx.add_event(event(job, "BidDeclined", detail=bid.reason, node_id=sender))
            continue
        detail = f"queue length {bid.queued}"
        if bid.local_inputs:
            detail += f"; holds {bid.local_inputs} input(s), {bid.local_input_bytes} bytes"
        ex = _propose(job, sender, bid.shard)
        changed = True
        tx.add_event(event(job, "BidReceived", ex, detail))
    return changed


def _propose(job: Any, node_id: str, shard: int) -> Any:
    """A new execution of `job`: `node_id`'s bid for `shard`, proposed."""
    now = now_ns()
    return job.executions.add(
        id=new_id("e"),
        job_id=job.id,
        node_id=node_id,
        shard=shard,
        state=E.BID_PROPOSED.pb,
        create_time_unix_nano=now,
        update_time_unix_nano=now,
    )


def _placed(ex: Any) -> bool:
    state = E.of(ex.state)
    return state.is_active or state == E.PUBLISHED


# Where each state sits on the way to a published result (reports never go backwards).
_FLOW = {
    E.BID_PROPOSED: 0,
    E.BID_ACCEPTED: 1,
    E.RUNNING: 2,
    E.RESULT_PROPOSED: 3,
    E.RESULT_ACCEPTED: 4,
    E.PUBLISHED: 5,
}

_EVENT_OF = {
    E.RUNNING: "ExecutionRunning",
    E.PUBLISHED: "ResultPublished",
    E.FAILED: "ExecutionFailed",
    E.CANCELLED: "ExecutionCancelled",
    E.RESULT_REJECTED: "ResultRejected",
    E.BID_ACCEPTED: "BidAccepted",
    E.BID_REJECTED: "BidRejected",
    E.BID_PROPOSED: "BidReceived",
    E.RESULT_ACCEPTED: "ResultAccepted",
    E.RESULT_PROPOSED: "ResultProposed",
}
