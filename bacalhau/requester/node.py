"""The requester role of a node: it owns the jobs submitted to it.

A job is announced to this node's own compute role and to every connected peer. Bids are
collected until every asked node has answered or the bid window closes; then willing nodes
are selected, up to the job's concurrency: those holding most of the job's inputs first, then
the least busy. Executions report back; a proposed
result is accepted (the no-op verifier), and the job completes once its selected executions
are published. Every change is written, with its events, in one datastore transaction before
anything is sent about it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from bacalhau._aio import then
from bacalhau._pb.bacalhau.v1 import peer_pb2
from bacalhau.datastore import Datastore, Tx
from bacalhau.datastore.base import ACTIVE_JOB_STATES, JobQuery
from bacalhau.errors import BacalhauError
from bacalhau.models import (
    ExecutionState,
    JobState,
    new_id,
    now_ns,
    pb,
    set_execution_state,
    set_job_state,
)
from bacalhau.network import Network
from bacalhau.requester.logs import LiveLogs

log = logging.getLogger(__name__)
E = ExecutionState


class JobStateError(BacalhauError):
    """The job is not in a state that allows the request."""


@dataclass
class _Round:
    """Bidding for one shard of a job."""

    job_id: str
    shard: int
    spec: Any
    asked: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    # (node ID, queue length, bytes of the job's inputs it holds)
    willing: list[tuple[str, int, int]] = field(default_factory=list)
    declines: list[str] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    gossiped: bool = False  # also sent to nodes without a stream to us: bids from anyone


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


def _find(job: Any, execution_id: str) -> Any:
    for ex in job.executions:
        if ex.id == execution_id:
            return ex
    raise BacalhauError(f"job {job.id} has no execution {execution_id}")


_FINAL_JOB_STATES = frozenset(s.pb for s in JobState if s.is_terminal)


class Requester:
    """Accepts, announces, places and finishes jobs."""

    def __init__(
        self,
        *,
        network: Network,
        store: Datastore,
        bid_window_s: float = 0.5,
        node_lost_s: float = 10.0,
    ) -> None:
        self._net = network
        self._store = store
        self._bid_window_s = bid_window_s
        self._node_lost_s = node_lost_s
        self._rounds: dict[tuple[str, int], _Round] = {}
        self._lost: dict[str, asyncio.TimerHandle] = {}  # disconnected nodes, until given up
        network.on_connect.append(self._on_peer_connected)
        network.on_disconnect.append(self._on_peer_disconnected)
        self.logs = LiveLogs()
        loop = asyncio.get_running_loop()

        def committed(events: Any) -> None:  # the datastore's writer thread
            final = {ev.job_id for ev in events if ev.job_state in _FINAL_JOB_STATES}
            if final and not loop.is_closed():
                loop.call_soon_threadsafe(self.logs.drop, final)

        store.add_listener(committed)

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    # -- client requests ----------------------------------------------------------------

    async def submit(self, spec: Any, client_id: str = "") -> Any:
        """Store a new job (pending) and announce it; return it once it is durable."""
        now = now_ns()
        job = pb.Job(
            id=new_id("j"),
            spec=spec,
            client_id=client_id,
            state=JobState.PENDING.pb,
            requester_node_id=self._net.node_id,
            create_time_unix_nano=now,
            update_time_unix_nano=now,
        )

        def create(tx: Tx) -> Any:
            tx.put_job(job)
            tx.add_event(event(job, "JobCreated", node_id=self._net.node_id))
            return job

        stored = await asyncio.wrap_future(self._store.submit(create))
        self._announce(stored)
        return stored

    async def cancel(self, job_id: str, reason: str) -> Any:
        """Cancel a job that is not final; tell the nodes running it. Raises JobStateError."""
        job_id = self._store.get_job(job_id).id
        reason = reason or "cancelled by the user"

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
            tx.add_event(event(job, "JobCancelled", detail=reason, node_id=self._net.node_id))
            return job, stopped

        job, stopped = await asyncio.wrap_future(self._store.submit(write))
        for key in [k for k in self._rounds if k[0] == job_id]:
            self._close_round(key)
        for node_id, execution_id in stopped:
            msg = peer_pb2.CancelExecution(job_id=job_id, execution_id=execution_id, reason=reason)
            self._net.send(node_id, cancel=msg)
        return job

    # -- restart ------------------------------------------------------------------------

    async def recover(self) -> None:
        """Take up the jobs that were in flight when this node stopped.

        Bids that were never decided are dropped and the job is announced again; executions
        placed on nodes are synced with each node as it connects (this one included).
        """
        reason = "the requester restarted before deciding"

        def write(tx: Tx) -> list[Any]:
            unplaced = []
            for job in tx.active_jobs():
                for ex in job.executions:
                    if E.of(ex.state) == E.BID_PROPOSED:
                        set_execution_state(ex, E.BID_REJECTED, reason)
                        tx.add_event(event(job, "BidRejected", ex, reason))
                if not any(E.of(ex.state).is_active or ex.state == E.PUBLISHED.pb
                           for ex in job.executions):  # fmt: skip
                    unplaced.append(job)
                tx.put_job(job)
            return unplaced

        unplaced = await asyncio.wrap_future(self._store.submit(write))
        for job in unplaced:
            self._announce(job)
        if unplaced:
            log.info("recovered %d job(s) to place again", len(unplaced))
        self.sync(self._net.node_id)

    def sync(self, node_id: str) -> None:
        """Bring `node_id` up to date on the executions this node waits on it for."""
        refs = []
        for job in self._store.query_jobs(JobQuery(states=ACTIVE_JOB_STATES)).jobs:
            for ex in job.executions:
                if ex.node_id != node_id:
                    continue
                state = E.of(ex.state)
                if state == E.BID_ACCEPTED:  # the decision may not have arrived
                    decision = peer_pb2.BidDecision(
                        job_id=job.id,
                        shard=ex.shard,
                        execution_id=ex.id,
                        accepted=True,
                        spec=job.spec,
                    )
                    self._net.send(node_id, bid_decision=decision)
                elif state == E.RESULT_ACCEPTED:  # nor this one
                    rd = peer_pb2.ResultDecision(job_id=job.id, execution_id=ex.id, accepted=True)
                    self._net.send(node_id, result_decision=rd)
                elif state.is_active:
                    refs.append(peer_pb2.ExecutionRef(job_id=job.id, execution_id=ex.id))
        if refs:
            self._net.send(node_id, sync=peer_pb2.SyncExecutions(executions=refs))

    # -- bidding ------------------------------------------------------------------------

    def _announce(self, job: Any) -> None:
        key = (job.id, 0)
        rnd = _Round(job_id=job.id, shard=0, spec=job.spec)
        self._rounds[key] = rnd
        for node_id in [self._net.node_id, *self._net.connected()]:
            self._ask(rnd, node_id)
        announce = peer_pb2.JobAnnouncement(job_id=rnd.job_id, shard=rnd.shard, spec=rnd.spec)
        rnd.gossiped = self._net.broadcast(announce=announce)
        rnd.timer = self._loop.call_later(self._bid_window_s, self._window_closed, key)

    def _ask(self, rnd: _Round, node_id: str) -> None:
        announce = peer_pb2.JobAnnouncement(job_id=rnd.job_id, shard=rnd.shard, spec=rnd.spec)
        if self._net.send(node_id, announce=announce):
            rnd.asked.add(node_id)

    def handle(self, sender: str, msg: Any) -> None:
        kind = msg.WhichOneof("body")
        if kind == "bid":
            self._on_bid(sender, msg.bid)
        elif kind == "execution_update":
            self._on_update(sender, msg.execution_update)
        elif kind == "log":
            self._on_log(sender, msg.log)

    def _on_log(self, sender: str, log: Any) -> None:
        try:
            job = self._store.get_job(log.job_id)
        except BacalhauError:
            return
        if JobState.of(job.state).is_terminal:
            return
        if any(ex.id == log.execution_id and ex.node_id == sender for ex in job.executions):
            self.logs.add(job.id, log.execution_id, log.stream, log.offset, log.data)

    def _on_bid(self, sender: str, bid: Any) -> None:
        key = (bid.job_id, bid.shard)
        rnd = self._rounds.get(key)
        if rnd is not None and rnd.gossiped and sender not in rnd.asked:
            rnd.asked.add(sender)  # a node reached through gossip
        if rnd is None or sender not in rnd.asked or sender in rnd.answered:
            if bid.willing:  # too late: free the bidder's offer
                decision = peer_pb2.BidDecision(
                    job_id=bid.job_id, shard=bid.shard, accepted=False, reason="bidding closed"
                )
                self._net.send(sender, bid_decision=decision)
            return
        rnd.answered.add(sender)
        if bid.willing:
            rnd.willing.append((sender, bid.queued, bid.local_input_bytes))
        else:
            rnd.declines.append(f"{short(sender)}: {bid.reason}")

        def record(tx: Tx) -> None:
            job = tx.get_job(bid.job_id)
            if not bid.willing:
                tx.add_event(event(job, "BidDeclined", detail=bid.reason, node_id=sender))
                return
            now = now_ns()
            ex = job.executions.add(
                id=new_id("e"),
                job_id=job.id,
                node_id=sender,
                shard=bid.shard,
                state=E.BID_PROPOSED.pb,
                create_time_unix_nano=now,
                update_time_unix_nano=now,
            )
            tx.put_job(job)
            detail = f"queue length {bid.queued}"
            if bid.local_inputs:
                detail += f"; holds {bid.local_inputs} input(s), {bid.local_input_bytes} bytes"
            tx.add_event(event(job, "BidReceived", ex, detail))

        then(self._loop, self._store.submit(record), what="recording a bid")
        if rnd.answered >= rnd.asked and not rnd.gossiped:
            self._select(key)

    def _window_closed(self, key: tuple[str, int]) -> None:
        rnd = self._rounds.get(key)
        if rnd is None:
            return
        rnd.timer = None
        if rnd.willing:
            self._select(key)
        # else: keep waiting for a willing bid, from the nodes asked or from new peers

    def _close_round(self, key: tuple[str, int]) -> _Round | None:
        rnd = self._rounds.pop(key, None)
        if rnd is not None and rnd.timer is not None:
            rnd.timer.cancel()
        return rnd

    def _select(self, key: tuple[str, int]) -> None:
        rnd = self._close_round(key)
        assert rnd is not None
        if not rnd.willing:
            self._fail_unplaced(rnd)
            return
        want = max(1, rnd.spec.deal.concurrency)
        random.shuffle(rnd.willing)
        # Data locality first (nodes holding more of the inputs need not fetch them), then
        # the shortest queue; ties are broken at random.
        ranked = sorted(rnd.willing, key=lambda b: (-b[2], b[1]))
        chosen = {node for node, _, _ in ranked[:want]}

        def write(tx: Tx) -> list[tuple[str, str, bool]]:
            job = tx.get_job(rnd.job_id)
            if JobState.of(job.state).is_terminal:
                decisions = []
                for ex in job.executions:
                    if ex.shard == rnd.shard and E.of(ex.state) == E.BID_PROPOSED:
                        decisions.append((ex.node_id, ex.id, False))
                return decisions
            decisions = []
            for ex in job.executions:
                if ex.shard != rnd.shard or E.of(ex.state) != E.BID_PROPOSED:
                    continue
                accepted = ex.node_id in chosen
                set_execution_state(ex, E.BID_ACCEPTED if accepted else E.BID_REJECTED)
                kind = "BidAccepted" if accepted else "BidRejected"
                tx.add_event(event(job, kind, ex))
                decisions.append((ex.node_id, ex.id, accepted))
            if JobState.of(job.state) == JobState.PENDING:
                set_job_state(job, JobState.RUNNING)
                tx.add_event(event(job, "JobRunning", node_id=self._net.node_id))
            tx.put_job(job)
            return decisions

        def send(decisions: list[tuple[str, str, bool]]) -> None:
            for node_id, execution_id, accepted in decisions:
                d = peer_pb2.BidDecision(
                    job_id=rnd.job_id,
                    shard=rnd.shard,
                    execution_id=execution_id,
                    accepted=accepted,
                    reason="" if accepted else "enough nodes were selected",
                )
                if accepted:
                    d.spec.CopyFrom(rnd.spec)
                self._net.send(node_id, bid_decision=d)

        then(self._loop, self._store.submit(write), send, "selecting bids")

    def _fail_unplaced(self, rnd: _Round) -> None:
        reasons = "; ".join(rnd.declines) or "no node answered"
        self._fail_job(rnd.job_id, f"no node can run this job ({reasons})")

    def _fail_job(self, job_id: str, message: str) -> None:
        def write(tx: Tx) -> None:
            job = tx.get_job(job_id)
            if JobState.of(job.state).is_terminal:
                return
            set_job_state(job, JobState.FAILED, message)
            tx.put_job(job)
            tx.add_event(event(job, "JobFailed", detail=message, node_id=self._net.node_id))

        then(self._loop, self._store.submit(write), what="failing a job")

    # -- execution progress ----------------------------------------------------------------

    def _on_update(self, sender: str, u: Any) -> None:
        state = E.of(u.state)

        def write(tx: Tx) -> list[tuple[str, Any]]:
            job = tx.get_job(u.job_id)
            ex = _find(job, u.execution_id)
            if ex.node_id != sender:
                raise BacalhauError(f"{sender} reported on another node's execution {ex.id}")
            current = E.of(ex.state)
            if current == E.CANCELLED and state == E.CANCELLED:
                # Cancelled here first: the node now confirms the program stopped.
                tx.add_event(event(job, "ExecutionStopped", ex, f"{state.value}: {u.message}"))
                return []
            behind = state in _FLOW and current in _FLOW and _FLOW[state] < _FLOW[current]
            if current == state or behind:
                # A report repeated after a reconnect or restart; a proposal we already
                # accepted gets its decision again.
                if state == E.RESULT_PROPOSED and current == E.RESULT_ACCEPTED:
                    decision = peer_pb2.ResultDecision(
                        job_id=job.id, execution_id=ex.id, accepted=True
                    )
                    return [(sender, decision)]
                return []
            if current.is_terminal:
                # A report that crossed a decision: keep it as an event.
                tx.add_event(event(job, "LateUpdate", ex, f"{state.value}: {u.message}"))
                return []
            if u.HasField("exit_code"):
                ex.exit_code = u.exit_code
            ex.result_cid = u.result_cid or ex.result_cid
            ex.stderr_tail = u.stderr_tail or ex.stderr_tail
            if u.inputs:  # URL inputs as the node resolved them (their CIDs)
                del ex.inputs[:]
                ex.inputs.extend(u.inputs)
            outgoing: list[tuple[str, Any]] = []
            if current == E.BID_ACCEPTED and state == E.RESULT_PROPOSED:
                # The "running" report was lost (this node restarted meanwhile).
                set_execution_state(ex, E.RUNNING)
                tx.add_event(event(job, "ExecutionRunning", ex))
            if state == E.RESULT_PROPOSED:
                set_execution_state(ex, E.RESULT_PROPOSED)
                tx.add_event(event(job, "ResultProposed", ex, u.result_cid))
                # The no-op verifier: every result is accepted.
                set_execution_state(ex, E.RESULT_ACCEPTED)
                tx.add_event(event(job, "ResultAccepted", ex))
                decision = peer_pb2.ResultDecision(job_id=job.id, execution_id=ex.id, accepted=True)
                outgoing.append((sender, decision))
            else:
                set_execution_state(ex, state, u.message)
                tx.add_event(event(job, _EVENT_OF[state], ex, u.message))
            self._settle(tx, job)
            tx.put_job(job)
            return outgoing

        def send(outgoing: list[tuple[str, Any]]) -> None:
            for node_id, decision in outgoing:
                self._net.send(node_id, result_decision=decision)

        then(self._loop, self._store.submit(write), send, "recording an execution update")

    def _settle(self, tx: Tx, job: Any) -> None:
        """Finish the job if none of its executions can change the outcome any more."""
        if JobState.of(job.state).is_terminal:
            return
        states = [E.of(ex.state) for ex in job.executions]
        if any(s.is_active or s == E.BID_PROPOSED for s in states):
            return
        if E.PUBLISHED in states:
            set_job_state(job, JobState.COMPLETED)
            tx.add_event(event(job, "JobCompleted", node_id=self._net.node_id))
            return
        failed = [ex for ex in job.executions if E.of(ex.state) in (E.FAILED, E.CANCELLED)]
        if not failed:
            return
        ex = failed[-1]
        message = ex.message or E.of(ex.state).value
        if ex.stderr_tail:
            message += f"; stderr: {ex.stderr_tail.splitlines()[-1][:300]}"
        message = f"execution on node {short(ex.node_id)} failed: {message}"
        set_job_state(job, JobState.FAILED, message)
        tx.add_event(event(job, "JobFailed", detail=message, node_id=self._net.node_id))

    # -- peers --------------------------------------------------------------------------

    def _on_peer_connected(self, node_id: str) -> None:
        timer = self._lost.pop(node_id, None)
        if timer is not None:
            timer.cancel()
        for rnd in self._rounds.values():
            if node_id not in rnd.asked:
                self._ask(rnd, node_id)
        self.sync(node_id)

    def _on_peer_disconnected(self, node_id: str) -> None:
        for key, rnd in list(self._rounds.items()):
            if node_id in rnd.asked and node_id not in rnd.answered:
                rnd.answered.add(node_id)
                rnd.declines.append(f"{short(node_id)}: disconnected")
                if rnd.answered >= rnd.asked:
                    self._select(key)
        if node_id not in self._lost:
            self._lost[node_id] = self._loop.call_later(
                self._node_lost_s, self._give_up_on, node_id
            )

    def _give_up_on(self, node_id: str) -> None:
        """`node_id` stayed away too long: fail what it was running and place it again."""
        self._lost.pop(node_id, None)
        message = f"node {short(node_id)} disconnected and did not come back"

        def write(tx: Tx) -> list[Any]:
            again = []
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
                states = [E.of(ex.state) for ex in job.executions]
                placed = any(s.is_active or s == E.PUBLISHED for s in states)
                tries = sum(ex.message.endswith(_LOST) for ex in job.executions)
                if not placed and tries <= MAX_REPLACEMENTS:
                    detail = f"{message}: asking the other nodes (attempt {tries + 1})"
                    tx.add_event(event(job, "JobRequeued", detail=detail, node_id=node_id))
                    again.append(job)
                else:
                    self._settle(tx, job)
                tx.put_job(job)
            return again

        def replace(jobs: list[Any]) -> None:
            for job in jobs:
                self._announce(job)

        then(self._loop, self._store.submit(write), replace, "handing back a lost node's work")

    def close(self) -> None:
        for key in list(self._rounds):
            self._close_round(key)
        for timer in self._lost.values():
            timer.cancel()
        self._lost.clear()


_LOST = "did not come back"
MAX_REPLACEMENTS = 3  # placements of a job after the first, when nodes are lost

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
