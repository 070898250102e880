"""The requester role of a node: it owns the jobs submitted to it, as orchestration only.

A job is announced to this node's own compute role and to every connected peer; bids are
collected in rounds (`bidding.py`) and the chosen nodes told; executions report back; the
verifier (`bacalhau.verifier`) decides proposed results. Every change is a named transition of
the ledger (`ledger.py`), written with its events in one transaction before anything is sent
about it. Executions are kept per shard.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bacalhau import spec as jobspec
from bacalhau._fast import planner
from bacalhau._pb.bacalhau.v1 import peer_pb2
from bacalhau.datastore import Datastore, Tx
from bacalhau.datastore.base import ACTIVE_JOB_STATES, JobQuery
from bacalhau.errors import BacalhauError, JobStateError
from bacalhau.models import ExecutionState, JobState
from bacalhau.network import Network
from bacalhau.network.dispatch import MayFrom
from bacalhau.observability.tracing import JOB_ID, Tracing, traceparent_of
from bacalhau.requester.bidding import LOCAL_BONUS, Round, WillingBid
from bacalhau.requester.ledger import (
    Decision,
    Ledger,
    Pick,
    failed_nodes,
    shard_count,
    short,
    to_place,
)
from bacalhau.requester.logs import LiveLogs

log = logging.getLogger(__name__)
E = ExecutionState
T = TypeVar("T")

__all__ = ["JobStateError", "Requester"]

_FINAL_JOB_STATES = frozenset(s.pb for s in JobState if s.is_terminal)
TRUSTED_AFTER = 20  # accepted results (none lost) after which a node may run verified jobs alone
SPOT_CHECK_RATE = 0.1  # the share of those it still runs among others, to check it
MARKED_S = 3600.0  # how long the bids of a node that made an impossible claim are refused
SHARDS_PER_MESSAGE = 1000  # shards asked about (or decided) in one peer message
WINDOW_PER_SHARD_S = 0.5e-3  # a bid window's extra length per shard asked about
COALESCE_PER_EXECUTION_S = 20e-6  # how long reports on a job wait to be written together,
COALESCE_MAX_S = 0.2  # per execution it has, and at most
COPY_RETRY_S = (0.1, 0.3, 1.0, 2.0)  # pauses between tries to copy a result from a connected node
COPIES_AT_ONCE = 16  # results being copied here at once
MAX_INLINE_HELD = 64 << 20  # small results' blocks held from their reports until kept
REPLICA_TIMEOUT_S = 300.0  # how long a node asked to keep a copy of a result may take


class Requester:
    """Accepts, announces, places and finishes jobs."""

    def __init__(
        self,
        *,
        network: Network,
        store: Datastore,
        bid_window_s: float = 0.5,
        node_lost_s: float = 10.0,
        queue_timeout_s: float = 300.0,
        penalty_s: float = 3600.0,
        input_size: Callable[[str], int | None] = lambda cid: None,
        on_bid_refused: Callable[[str], None] = lambda node_id: None,
        tracing: Tracing | None = None,
        keep_result: Callable[[str, str], Awaitable[None]] | None = None,
        keep_blocks: Callable[[str, list[tuple[bytes, bytes]]], Awaitable[bool]] | None = None,
    ) -> None:
        """`input_size(cid)`: what the DAG under `cid` weighs, as far as this node can tell
        (None: unknown); it bounds the locality bidders claim. `on_bid_refused(node_id)` is
        called for each bid refused for an impossible claim. `keep_result(cid, holder)`
        copies a result DAG onto this node from the node that made it, and pins it (raises
        if it cannot): a job completes only once its results are kept here.
        `keep_blocks(cid, blocks)` does the same with a small result's blocks sent with its
        report (False: they are not its whole DAG, or one does not match its CID: fetch it;
        raises as `keep_result` for a result too large)."""
        self._net = network
        self._store = store
        self.tracing = tracing or Tracing.off()
        # job -> the traceparent of its root span (Job.trace_parent), for the jobs in flight
        self._trace: dict[str, str] = {}
        self._job_spans: dict[str, Any] = {}  # job -> its root span, ended when it ends
        self.ledger = Ledger(store, network.node_id, penalty_s)
        # Called with this node's compute record of each choice of it and each decision on
        # its result that the ledger wrote with that record (`Ledger.compute_here`), once
        # committed (nothing is sent for them).
        self.accepted_here: Callable[[Any], None] = lambda rec: None
        self.decided_here: Callable[[Any], None] = lambda rec: None
        self._penalty_s = penalty_s
        known = store.list_peers()
        # node -> time.time() until which it gets no work here (a result of its lost)
        self._penalized: dict[str, float] = {
            p.node_id: p.penalized_until_unix_nano / 1e9
            for p in known
            if p.penalized_until_unix_nano / 1e9 > time.time()
        }
        # node -> (its results that agreed with others' here, its results that lost here); a
        # restart starts the first count again (the peer table counts every accepted result)
        self._record = {p.node_id: (0, p.results_rejected) for p in known}
        self._bid_window_s = bid_window_s
        self._node_lost_s = node_lost_s
        self._queue_timeout_s = queue_timeout_s
        self._rounds: dict[tuple[str, int], Round] = {}
        self._open: dict[str, dict[int, Round]] = {}  # job -> shard -> its open round
        self._lost: dict[str, asyncio.TimerHandle] = {}  # disconnected nodes, until given up
        self._tasks: set[asyncio.Task[Any]] = set()
        self._input_size = input_size
        self._on_bid_refused = on_bid_refused
        self._marked: dict[str, float] = {}  # node -> until when its bids are refused
        self._placed: dict[str, int] = {}  # node -> executions placed there, not done yet
        self._planning: dict[str, list[Round]] = {}  # job -> shard rounds closed this tick
        self._picks: dict[str, list[Pick]] = {}  # job -> choices to record in one transaction
        # job -> bids (sender, Bid) not recorded yet: written together, with the selection
        # when one is due
        self._bids: dict[str, list[tuple[str, Any]]] = {}
        # job -> reports not recorded yet; the jobs whose reports are being recorded
        self._reports: dict[str, list[tuple[str, Any]]] = {}
        # job -> id(report) -> this node's compute record of it, to write with it
        self._own_reports: dict[str, dict[int, _OwnWrite]] = {}
        self._recording: set[str] = set()
        # job -> execution -> its node, for the jobs placed here and not final: who may report
        # on an execution, without reading the job
        self._where: dict[str, dict[str, str]] = {}
        self._keep_result = keep_result
        self._keep_blocks = keep_blocks
        # job -> execution -> a small result's blocks, sent with its report, until kept here
        self._inline: dict[str, dict[str, list[tuple[bytes, bytes]]]] = {}
        self._inline_bytes = 0
        # job -> execution -> the result CID it proposed (until the job ends), and the copies
        # of accepted results being made here: execution -> the task copying it
        self._proposed: dict[str, dict[str, str]] = {}
        self._keeping: dict[str, asyncio.Task[None]] = {}
        self._copy_gate = asyncio.Semaphore(COPIES_AT_ONCE)
        # job -> the result replicas it asks for (Deal.result_replicas), for the jobs in flight;
        # (execution, node) -> the answer awaited from a node asked to keep a copy
        self._replica_count: dict[str, int] = {}
        self._replica_waits: dict[tuple[str, str], asyncio.Future[tuple[bool, str]]] = {}
        # (what, engine, seconds) of each job and bid round, for the node's histograms
        self.on_timing: Callable[[str, str, float], None] = lambda what, engine, s: None
        network.on_connect.append(self._on_peer_connected)
        network.on_disconnect.append(self._on_peer_disconnected)
        self.logs = LiveLogs()
        d = network.dispatcher
        d.register("bid", self._on_bid, MayFrom("a bidder on a job of this node", self._ours))
        d.register(
            "execution_update",
            self._on_update,
            MayFrom("the compute node of this execution", self._from_compute_node),
        )
        d.register(
            "still_wanted",
            self._on_still_wanted,
            MayFrom("the compute node of this execution", self._from_compute_node),
        )
        d.register(
            "result_replicated",
            self._on_replicated,
            MayFrom(
                "a node asked to keep a copy of this result",
                lambda sender, r: (r.execution_id, sender) in self._replica_waits,
            ),
        )
        d.register(
            "log",
            self._on_log,
            MayFrom("the compute node of this execution, while the job runs", self._live_log),
            relayable=False,
        )
        loop = asyncio.get_running_loop()

        def committed(events: Any) -> None:  # the datastore's writer thread
            final = {ev.job_id for ev in events if ev.job_state in _FINAL_JOB_STATES}
            if final and not loop.is_closed():
                loop.call_soon_threadsafe(self._ended, final)

        store.add_listener(committed)

    def _ended(self, job_ids: set[str]) -> None:
        """Forget the jobs that just ended; time them, submit to final (`on_timing("job",
        engine, s)`)."""
        self.logs.drop(job_ids)
        for job_id in job_ids:
            for ex_id in self._proposed.pop(job_id, {}):
                self._keeping.pop(ex_id, None)
            self._replica_count.pop(job_id, None)
            self._drop_inline(job_id)
            self._where.pop(job_id, None)
            self._trace.pop(job_id, None)
            root = self._job_spans.pop(job_id, None)
            job = self._job(job_id)
            if job is not None and JobState.of(job.state).is_terminal:
                took = (job.update_time_unix_nano - job.create_time_unix_nano) / 1e9
                self.on_timing("job", job.spec.engine or "?", took)
                state = JobState.of(job.state).value
                why = f": {job.message}" if job.message else ""
                if root is not None:
                    root.set_attribute("bacalhau.state", state)
                    root.end()
                log.info("job %s %s after %.3f s%s", job.id, state, took, why)

    # -- who may send what ---------------------------------------------------------------

    def _job(self, job_id: str) -> Any:
        """The job called exactly `job_id` (no prefix), or None."""
        try:
            job = self._store.get_job(job_id) if job_id else None
        except BacalhauError:
            return None
        return job if job is not None and job.id == job_id else None

    def _ours(self, sender: str, body: Any) -> bool:
        # A job being placed or run here is ours, without reading its record.
        job_id = body.job_id
        return job_id in self._open or job_id in self._where or self._job(job_id) is not None

    def _from_compute_node(self, sender: str, body: Any, job: Any = None) -> bool:
        node = self._where.get(body.job_id, {}).get(body.execution_id)
        if node is not None:
            return node == sender
        job = job or self._job(body.job_id)
        return job is not None and any(
            ex.id == body.execution_id and ex.node_id == sender for ex in job.executions
        )

    def _live_log(self, sender: str, body: Any) -> bool:
        node = self._where.get(body.job_id, {}).get(body.execution_id)
        if node is not None:  # placed here, and the job is not final
            return node == sender
        job = self._job(body.job_id)
        if job is None or JobState.of(job.state).is_terminal:
            return False  # a final job's result holds its output
        return self._from_compute_node(sender, body, job)

    # -- client requests ----------------------------------------------------------------

    async def submit(
        self,
        spec: Any,
        client_id: str = "",
        shards: list[list[Any]] | None = None,
        traceparent: str = "",
    ) -> Any:
        """Store a new job (pending; with its shards' inputs if sharded) and announce it;
        return it once it is durable. `traceparent`: the caller's span, the parent of the
        job's root span (the job's trace is its)."""
        if not self.tracing.on:
            job = await self.ledger.create(spec, client_id, shards)
        else:
            root = self.tracing.start("job", traceparent, engine=spec.engine)
            tp = traceparent_of(root)
            with self.tracing.span("submit", tp, engine=spec.engine) as sub:
                try:
                    job = await self.ledger.create(spec, client_id, shards, trace_parent=tp)
                except BaseException:
                    root.end()
                    raise
                sub.set_attribute(JOB_ID, job.id)
            root.set_attribute(JOB_ID, job.id)
            root.set_attribute("bacalhau.shards", shard_count(job))
            self._job_spans[job.id] = root
        log.info("job %s submitted (%s, %d shard(s))", job.id, spec.engine, shard_count(job))
        self._announce(job)
        return job

    async def submit_memoized(self, spec: Any, client_id: str, memo: Any) -> Any:
        """Store a job answered with an equal job's verified result (nothing is run)."""
        return await self.ledger.create_memoized(spec, client_id, memo)

    async def cancel(self, job_id: str, reason: str) -> Any:
        """Cancel a job that is not final; tell the nodes running it. Raises JobStateError."""
        job_id = self._store.get_job(job_id).id
        reason = reason or "cancelled by the user"
        job, stopped = await self.ledger.cancel(job_id, reason)
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
        unplaced = await self.ledger.recover()
        for job in self._store.query_jobs(JobQuery(states=ACTIVE_JOB_STATES)).jobs:
            self._where[job.id] = {ex.id: ex.node_id for ex in job.executions}
        for job in unplaced:
            self._announce(job)
        if unplaced:
            log.info("recovered %d job(s) to place again", len(unplaced))
        self.sync(self._net.node_id)

    def sync(self, node_id: str) -> None:
        """Bring `node_id` up to date on the executions this node waits on it for.

        An accepted bid gets its decision again (it may not have arrived); every execution
        is named in a SyncExecutions, which the node answers with where each stands.
        """
        refs = []
        for job in self._store.query_jobs(JobQuery(states=ACTIVE_JOB_STATES)).jobs:
            for ex in job.executions:
                if ex.node_id != node_id:
                    continue
                state = E.of(ex.state)
                if state == E.BID_ACCEPTED:
                    decision = peer_pb2.BidDecision(
                        job_id=job.id,
                        shard=ex.shard,
                        execution_id=ex.id,
                        accepted=True,
                        traceparent=job.trace_parent,
                    )
                    self._net.send(node_id, bid_decision=decision)
                if state.is_active:
                    refs.append(peer_pb2.ExecutionRef(job_id=job.id, execution_id=ex.id))
        if refs:
            self._net.send(node_id, sync=peer_pb2.SyncExecutions(executions=refs))

    # -- bidding ------------------------------------------------------------------------

    def _announce(self, job: Any) -> None:
        """Ask for bids on every shard of the job that has nothing placed and tries left;
        nodes a shard failed on are not asked again for it. The shards of a sharded job are
        asked about together (a few messages per node, not one per shard)."""
        self._replica_count[job.id] = job.spec.deal.result_replicas
        shards = to_place(job)
        if not shards:
            return
        if job.trace_parent:
            self._trace[job.id] = job.trace_parent
        batched = jobspec.is_sharded(job.spec)
        failed = failed_nodes(job)
        outside = jobspec.sharded_inputs(job.spec)[1] if batched else []
        rounds = []
        for shard in shards:
            rnd = Round(
                job_id=job.id,
                shard=shard,
                spec=job.spec,
                exclude=failed.get(shard, set()),
                batched=batched,
                count=shard_count(job),
            )
            if batched:
                stored = self._store.get_shard(job.id, shard)
                rnd.inputs = list(stored.inputs) if stored is not None else []
                every = [*outside, *rnd.inputs]  # as in jobspec.shard_spec: the same order
                cids = [i.cid for i in every if i.source in ("", "ipfs")]
                rnd.cids = cids[: jobspec.LOCALITY_CHECKS]
            else:
                rnd.cids = jobspec.locality_cids(job.spec)
            self._close_round(rnd.key)  # a round still open from before: its timers go too
            self._rounds[rnd.key] = rnd
            self._open.setdefault(job.id, {})[shard] = rnd
            rnd.own_first = self._may_take_own(rnd)
            rounds.append(rnd)
        for rnd in rounds:
            rnd.deadline = self._loop.call_later(
                self._queue_timeout_s, self._queue_timed_out, rnd.key
            )
        self._ask(rounds, self._net.node_id)
        # A round this node may take alone asks the others only if its own bid is beatable.
        self._ask_others([r for r in rounds if not r.own_first])

    def _ask_others(self, rounds: list[Round]) -> None:
        """Ask the other nodes to bid in these rounds (connected ones directly, the rest
        through gossip), and open the rounds' bid window."""
        if not rounds:
            return
        for node_id in self._net.connected():
            self._ask(rounds, node_id)
        gossiped = False
        for announce, _ in self._announcements(rounds):
            gossiped = self._net.broadcast(announce=announce) or gossiped
        # The window opens once everything is sent, and grows with the shards asked about:
        # bids on many shards take their time to be made and read, and a window that closed
        # on the first (this node's own) would place every shard there.
        batched = sum(r.batched for r in rounds)
        window = self._bid_window_s + batched * WINDOW_PER_SHARD_S
        for rnd in rounds:
            rnd.gossiped = gossiped
            rnd.timer = self._loop.call_later(window, self._window_closed, rnd.key)

    def _may_take_own(self, rnd: Round) -> bool:
        """Whether this node's own bid, if willing with an empty queue, could not be beaten:
        one node is to be chosen, no bid can claim the job's data (it has no CID inputs), and
        nothing placed here is still running. Such a round asks this node first, and the
        others only if its bid is not that good."""
        deal = rnd.spec.deal
        return (
            not rnd.cids
            and not rnd.batched
            and max(1, deal.min_bids) == 1
            and max(1, deal.concurrency) == 1
            and self._net.node_id not in rnd.exclude
            and not self._placed.get(self._net.node_id, 0)
        )

    def _announcements(self, rounds: list[Round]) -> list[tuple[Any, list[Round]]]:
        """The announcements asking about these rounds, each with the rounds it asks about:
        one per round of an unsharded job, one per SHARDS_PER_MESSAGE shards of a sharded
        one."""
        out = []
        batches: dict[str, list[Round]] = {}
        for rnd in rounds:
            if rnd.batched:
                batches.setdefault(rnd.job_id, []).append(rnd)
            else:
                announce = peer_pb2.JobAnnouncement(
                    job_id=rnd.job_id,
                    shard=rnd.shard,
                    spec=rnd.spec,
                    traceparent=self._trace.get(rnd.job_id, ""),
                )
                out.append((announce, [rnd]))
        for job_id, rs in batches.items():
            for at in range(0, len(rs), SHARDS_PER_MESSAGE):
                chunk = rs[at : at + SHARDS_PER_MESSAGE]
                announce = peer_pb2.JobAnnouncement(
                    job_id=job_id,
                    spec=chunk[0].spec,
                    shard_count=chunk[0].count,
                    shards=[peer_pb2.ShardAsk(index=r.shard, inputs=r.inputs) for r in chunk],
                    traceparent=self._trace.get(job_id, ""),
                )
                out.append((announce, chunk))
        return out

    def _ask(self, rounds: list[Round], node_id: str) -> None:
        """Ask `node_id` to bid in the rounds it was not asked in yet."""
        rounds = [r for r in rounds if node_id not in r.asked]
        for announce, asked in self._announcements(rounds):
            if self._net.send(node_id, announce=announce):
                for r in asked:
                    r.asked.add(node_id)

    def _on_bid(self, sender: str, bid: Any) -> None:
        if bid.shards:
            self._on_shard_bids(sender, bid)
            return
        rnd = self._rounds.get((bid.job_id, bid.shard))
        if rnd is not None and rnd.gossiped and sender not in rnd.asked:
            rnd.asked.add(sender)  # a node reached through gossip
        if rnd is not None and sender in rnd.answered:
            return  # the same bid again (the announcement reached it twice): one decision
        if rnd is None or sender not in rnd.asked:
            if bid.willing:  # too late: free the bidder's offer
                decision = peer_pb2.BidDecision(
                    job_id=bid.job_id, shard=bid.shard, accepted=False, reason="bidding closed"
                )
                self._net.send(sender, bid_decision=decision)
            return
        rnd.answered.add(sender)
        if bid.willing and (lie := self._impossible(sender, rnd.cids, bid)):
            log.warning("refused a bid from %s on %s: %s", sender, bid.job_id, lie)
            self._on_bid_refused(sender)
            decision = peer_pb2.BidDecision(
                job_id=bid.job_id, shard=bid.shard, accepted=False, reason=f"bid refused: {lie}"
            )
            self._net.send(sender, bid_decision=decision)
            refused = peer_pb2.Bid()
            refused.CopyFrom(bid)
            refused.willing, refused.reason = False, f"bid refused: {lie}"
            bid = refused
        until = self._penalized.get(sender, 0.0)
        if bid.willing and until > time.time():
            stamp = time.strftime("%H:%M:%S", time.gmtime(until))
            declined = peer_pb2.Bid()
            declined.CopyFrom(bid)
            declined.willing = False
            declined.reason = f"penalised until {stamp} UTC: a result of its lost a verification"
            no = peer_pb2.BidDecision(
                job_id=bid.job_id, shard=bid.shard, accepted=False, reason=declined.reason
            )
            self._net.send(sender, bid_decision=no)
            bid = declined
        if bid.willing and sender in rnd.exclude:
            decision = peer_pb2.BidDecision(
                job_id=bid.job_id, shard=bid.shard, accepted=False,
                reason=f"shard {bid.shard} failed on this node before",
            )  # fmt: skip
            self._net.send(sender, bid_decision=decision)
            declined = peer_pb2.Bid()
            declined.CopyFrom(bid)
            declined.willing, declined.reason = False, f"shard {bid.shard} failed there before"
            bid = declined
        if bid.willing:
            rnd.willing.append(WillingBid(sender, bid.queued, bid.local_input_bytes))
        else:
            rnd.declines.append(f"{short(sender)}: {bid.reason}")
        self._record_bid(sender, bid)
        if rnd.own_first and sender == self._net.node_id:
            rnd.own_first = False
            if bid.willing and bid.queued == 0 and self._may_take_own(rnd):
                self._select(rnd.key)  # none could beat it: the others are not asked
            else:
                self._ask_others([rnd])
                if rnd.complete:  # nobody else to ask
                    self._select(rnd.key)
            return
        # Every node asked answered; or a willing bid came after the window closed empty.
        if rnd.complete or (bid.willing and rnd.timer is None and rnd.enough):
            self._select(rnd.key)

    def _record_bid(self, sender: str, bid: Any) -> None:
        """Record a bid with the others that came this tick, or with the job's selection if
        one is due by then (one transaction)."""
        pending = self._bids.setdefault(bid.job_id, [])
        if not pending:
            self._loop.call_soon(self._flush_bids, bid.job_id)
        pending.append((sender, bid))

    def _flush_bids(self, job_id: str) -> None:
        if job_id in self._picks:
            return  # a selection is due: it records them
        bids = self._bids.pop(job_id, None)
        if bids:
            self._spawn(self.ledger.record_bids(job_id, bids), "recording bids")

    def _on_shard_bids(self, sender: str, bid: Any) -> None:
        """A node's answer to an announcement of many shards of a job: it takes the shards
        asked about (`bid.shards`, each with its locality) or none, and says why. Each open
        round it was asked in takes its part; the offers not taken here are declined in one
        message, and the answer is one event."""
        rounds = self._open.get(bid.job_id, {})
        offered = {b.shard: b for b in bid.shards} if bid.willing else {}
        answered = [rounds[b.shard] for b in bid.shards if b.shard in rounds]
        refusal = ""
        until = self._penalized.get(sender, 0.0)
        if offered and until > time.time():
            stamp = time.strftime("%H:%M:%S", time.gmtime(until))
            refusal = f"penalised until {stamp} UTC: a result of its lost a verification"
        for b in bid.shards if offered and not refusal else ():
            rnd = rounds.get(b.shard)
            if rnd is not None and (lie := self._impossible(sender, rnd.cids, b)):
                log.warning("refused a bid from %s on %s: %s", sender, bid.job_id, lie)
                self._on_bid_refused(sender)
                refusal = f"bid refused: {lie}"
                break
        ready, declined, took, held = [], [], 0, 0
        for rnd in answered:
            shard = rnd.shard
            if rnd.gossiped:
                rnd.asked.add(sender)  # a node reached through gossip
            if sender not in rnd.asked or sender in rnd.answered:
                continue
            rnd.answered.add(sender)
            b = offered.pop(shard, None)
            if b is None:
                rnd.declines.append(f"{short(sender)}: {bid.reason or 'did not offer'}")
            elif refusal or sender in rnd.exclude:
                rnd.declines.append(
                    f"{short(sender)}: {refusal or f'shard {shard} failed there before'}"
                )
                declined.append(shard)
            else:
                rnd.willing.append(WillingBid(sender, bid.queued, b.local_input_bytes))
                took += 1
                held += bool(b.local_input_bytes)
            if rnd.complete or (b is not None and rnd.timer is None and rnd.enough):
                ready.append(rnd.key)
        declined.extend(offered)  # offers for shards no round waits for here (any more)
        if declined:
            why = refusal or "bidding closed, or the shard failed on this node before"
            self._send_decisions(
                sender, bid.job_id, [Decision(sender, "", s, False) for s in declined], why
            )
        if took or not bid.willing or refusal:
            if took:
                detail = f"willing to run {took} shard(s), queue length {bid.queued}"
                detail += f"; holds the data of {held}" if held else ""
            else:
                detail = refusal or bid.reason or "offered none of the shards asked"
            self._spawn(
                self.ledger.record_shard_bids(sender, bid.job_id, detail, bool(took)),
                "recording a bid",
            )
        for key in ready:
            if key in self._rounds:
                self._select(key)

    def _send_decisions(
        self,
        node_id: str,
        job_id: str,
        decisions: list[Decision],
        reason: str,
        traceparent: str = "",
    ) -> None:
        """Tell a bidder the decisions on its bids for a job: one message, or for many
        shards one per SHARDS_PER_MESSAGE (`reason` is why a bid was declined)."""
        if len(decisions) == 1:
            d = decisions[0]
            msg = peer_pb2.BidDecision(
                job_id=job_id,
                shard=d.shard,
                execution_id=d.execution_id,
                accepted=d.accepted,
                reason="" if d.accepted else reason,
                traceparent=traceparent,
            )
            self._net.send(node_id, bid_decision=msg)
            return
        for at in range(0, len(decisions), SHARDS_PER_MESSAGE):
            chunk = decisions[at : at + SHARDS_PER_MESSAGE]
            shards = [
                peer_pb2.ShardDecision(
                    shard=d.shard, execution_id=d.execution_id, accepted=d.accepted
                )
                for d in chunk
            ]
            msg = peer_pb2.BidDecision(
                job_id=job_id, reason=reason, shards=shards, traceparent=traceparent
            )
            self._net.send(node_id, bid_decision=msg)

    def _impossible(self, sender: str, cids: list[str], bid: Any) -> str:
        """Why a willing bid cannot be true, or ""; a node that lied is marked for a while.

        A bid says how much of the job's data its node holds (`local_inputs` CIDs,
        `local_input_bytes`), and the most local node wins. The claim cannot exceed the job's
        CID inputs, nor what they weigh as far as this node can tell (the roots it holds say;
        an input it cannot size counts as the most a spec allows)."""
        now = time.monotonic()
        if self._marked.get(sender, 0.0) > now:
            return "this node made an impossible claim before; its bids are refused for now"
        lie = ""
        if bid.local_inputs > len(cids):
            lie = f"it claims to hold {bid.local_inputs} of the job's {len(cids)} CID inputs"
        elif bid.local_input_bytes and not bid.local_inputs:
            lie = f"it claims {bid.local_input_bytes} bytes of inputs in none of them"
        elif bid.local_input_bytes:
            sizes = [self._input_size(cid) for cid in cids]
            most = sum(jobspec.MAX_BYTES if n is None else n for n in sizes)
            if bid.local_input_bytes > most:
                lie = (
                    f"it claims to hold {bid.local_input_bytes} bytes of inputs that weigh at "
                    f"most {most}"
                )
        if lie:
            self._marked[sender] = now + MARKED_S
            if len(self._marked) > 10_000:
                self._marked = {n: t for n, t in self._marked.items() if t > now}
        return lie

    def trusts(self, node_id: str) -> bool:
        """Whether the node is not penalised here (a result of its lost a verification)."""
        return self._penalized.get(node_id, 0.0) <= time.time()

    def _penalize(self, decisions: list[tuple[str, Any]]) -> None:
        """Each node's record, as the ledger keeps it; the nodes whose results lost to an
        accepted one get no work from here for the penalty time."""
        if sum(d.accepted for _, d in decisions) >= 2:  # results that agreed across nodes
            for node_id, d in decisions:
                if d.accepted:
                    accepted, rejected = self._record.get(node_id, (0, 0))
                    self._record[node_id] = (accepted + 1, rejected)
        if not any(d.accepted for _, d in decisions):
            return
        until = time.time() + self._penalty_s
        for node_id, d in decisions:
            if not d.accepted:
                accepted, rejected = self._record.get(node_id, (0, 0))
                self._record[node_id] = (accepted, rejected + 1)
                log.warning("node %s returned a result that lost a verification", node_id)
                self._penalized[node_id] = until

    def _window_closed(self, key: tuple[str, int]) -> None:
        rnd = self._rounds.get(key)
        if rnd is None:
            return
        rnd.timer = None
        if rnd.willing and rnd.enough:
            self._select(key)
        # else: keep waiting for a willing bid, from the nodes asked or from new peers

    def _queue_timed_out(self, key: tuple[str, int]) -> None:
        """Nobody was willing within --queue-timeout: the job fails with every reason."""
        rnd = self._rounds.get(key)
        if rnd is None:
            return
        rnd.deadline = None
        for node_id in sorted(rnd.asked - rnd.answered):
            rnd.declines.append(f"{short(node_id)}: did not answer")
        self._select(key, f"within {self._queue_timeout_s:g} s ")

    def _close_round(self, key: tuple[str, int]) -> Round | None:
        rnd = self._rounds.pop(key, None)
        if rnd is not None:
            open_ = self._open.get(rnd.job_id, {})
            open_.pop(rnd.shard, None)
            if not open_:
                self._open.pop(rnd.job_id, None)
            for timer in (rnd.timer, rnd.deadline):
                if timer is not None:
                    timer.cancel()
        return rnd

    def _select(self, key: tuple[str, int], waited: str = "") -> None:
        rnd = self._close_round(key)
        assert rnd is not None
        took = time.monotonic() - rnd.opened
        self.on_timing("bid_round", rnd.spec.engine or "?", took)
        if self.tracing.on:
            self.tracing.record(
                "bid_round",
                time.time_ns() - int(took * 1e9),
                parent=self._trace.get(rnd.job_id, ""),
                job_id=rnd.job_id,
                shard=rnd.shard,
                asked=len(rnd.asked),
                willing=len(rnd.willing),
                declined=len(rnd.declines),
            )
        if rnd.willing and not rnd.enough:
            n, want = len(rnd.willing), rnd.spec.deal.min_bids
            rnd.declines.insert(
                0, f"{n} node{'s' * (n != 1)} willing, the job asks for {want} bids"
            )
            rnd.willing.clear()
        if not rnd.willing:
            reasons = "; ".join(rnd.declines) or "no node answered"
            what = f"shard {rnd.shard} of this job" if jobspec.is_sharded(rnd.spec) else "this job"
            message = f"no node can run {what} {waited}({reasons})"
            for other in list(self._open.get(rnd.job_id, {}).values()):
                self._close_round(other.key)  # the job fails: its other rounds end too
            self._planning.pop(rnd.job_id, None)
            self._spawn(self.ledger.fail(rnd.job_id, message), "failing a job")
            return
        want = max(1, rnd.spec.deal.concurrency)
        if jobspec.is_sharded(rnd.spec) and want == 1:
            # Shards whose rounds close together are placed together, by the planner.
            batch = self._planning.setdefault(rnd.job_id, [])
            if not batch:
                self._loop.call_soon(self._plan, rnd.job_id)
            batch.append(rnd)
            return
        if want > 1 and rnd.spec.deal.verifier == "deterministic" and rnd.spec.deal.confidence <= 1:
            # Adaptive replication: a node with a long verified record runs it alone, but for
            # a random spot check now and then; a new or penalised one runs among others. A
            # job that asks for a confidence of 2 or more always gets it.
            best = rnd.choose(1, self._placed)
            if self._proven(next(iter(best))) and random.random() >= SPOT_CHECK_RATE:
                self._place(rnd, best, trusted=True)
                return
        self._place(rnd, rnd.choose(want, self._placed))

    def _proven(self, node_id: str) -> bool:
        """A long verified record here: TRUSTED_AFTER accepted results, none that lost."""
        accepted, rejected = self._record.get(node_id, (0, 0))
        return accepted >= TRUSTED_AFTER and not rejected and self.trusts(node_id)

    def _plan(self, job_id: str) -> None:
        """Place the shards of a job whose rounds closed in one go (`bacalhau._fast.planner`):
        each to a willing bidder, up to each node's fair share of the work (plus
        LOCAL_BONUS), a node holding its data first, spreading the load (each node's queue
        plus what this requester placed there); any the plan leaves out by `Round.choose`."""
        rounds = self._planning.pop(job_id, [])
        nodes = sorted({b.node_id for r in rounds for b in r.willing})
        index = {n: i for i, n in enumerate(nodes)}
        queued: dict[str, int] = {}
        holders: list[list[int]] = []
        others: list[list[int]] = []
        for r in rounds:
            willing = {b.node_id for b in r.willing}
            for b in r.willing:
                queued[b.node_id] = min(queued.get(b.node_id, b.queued), b.queued)
            holders.append([index[b.node_id] for b in r.willing if b.local_input_bytes])
            others.append([i for n, i in index.items() if n not in willing])
        load = [min(queued[n] + self._placed.get(n, 0), 1 << 40) for n in nodes]
        # Each node's fair share of the work (what is queued and these shards), and a little
        # more where a shard's data is: locality first, but not all on one holder.
        fair = -(-(len(rounds) + sum(load)) // len(nodes)) + LOCAL_BONUS
        placed = planner.plan(
            array("q", [1] * len(rounds)),
            *_csr(holders),
            array("q", [max(fair - n, 0) for n in load]),
            array("q", [1 << 62] * len(nodes)),
            array("q", load),
            None,
            *_csr(others),
        )
        for r, at in zip(rounds, placed, strict=True):
            self._place(r, {nodes[at]} if at >= 0 else r.choose(1, self._placed))

    def _place(self, rnd: Round, chosen: set[str], *, trusted: bool = False) -> None:
        """Tell the ledger (then the bidders) whom the round chose; the choices of one job
        made in one go are recorded in one transaction."""
        for node_id in chosen:
            self._placed[node_id] = self._placed.get(node_id, 0) + 1
        willing = frozenset(b.node_id for b in rnd.willing) if rnd.batched else frozenset()
        picks = self._picks.setdefault(rnd.job_id, [])
        if not picks:
            self._loop.call_soon(self._decide, rnd.job_id)
        picks.append(Pick(rnd.shard, frozenset(chosen), willing, trusted))

    def _decide(self, job_id: str) -> None:
        picks = self._picks.pop(job_id, [])
        bids = self._bids.pop(job_id, None)

        async def select() -> tuple[list[Decision], str]:
            parent = self._trace.get(job_id, "")
            with self.tracing.span("selection", parent, job_id=job_id, shards=len(picks)) as s:
                tp = traceparent_of(s)
                decisions = await self.ledger.select(job_id, picks, bids, tp)
                if self.tracing.on:
                    chosen = sorted({d.node_id for d in decisions if d.accepted})
                    s.set_attribute("bacalhau.nodes", ",".join(n[-8:] for n in chosen[:32]))
                    s.set_attribute("bacalhau.accepted", sum(d.accepted for d in decisions))
                return decisions, tp

        def send(selected: tuple[list[Decision], str]) -> None:
            decisions, traceparent = selected
            where = self._where.setdefault(job_id, {})
            by_node: dict[str, list[Decision]] = {}
            for d in decisions:
                if d.accepted:
                    where[d.execution_id] = d.node_id
                if d.here is not None:
                    self.accepted_here(d.here)  # written running with the choice
                    continue
                by_node.setdefault(d.node_id, []).append(d)
            for node_id, mine in by_node.items():
                why = "enough nodes were selected"
                self._send_decisions(node_id, job_id, mine, why, traceparent)

        self._spawn(select(), "selecting bids", send)

    # -- execution progress ----------------------------------------------------------------

    def _on_update(self, sender: str, u: Any) -> None:
        if E.of(u.state) in (E.RESULT_PROPOSED, E.FAILED, E.CANCELLED) and self._placed.get(sender):
            self._placed[sender] -= 1  # done computing: no longer in its queue
        if u.result_cid:
            self._proposed.setdefault(u.job_id, {})[u.execution_id] = u.result_cid
        del u.replica_node_ids[:]  # the requester's to say, not the compute node's
        if u.result_blocks:
            size = sum(len(b.data) for b in u.result_blocks)
            held = self._inline.setdefault(u.job_id, {})
            if u.execution_id not in held and self._inline_bytes + size <= MAX_INLINE_HELD:
                held[u.execution_id] = [(b.cid, b.data) for b in u.result_blocks]
                self._inline_bytes += size
            del u.result_blocks[:]
        self._reports.setdefault(u.job_id, []).append((sender, u))
        if u.job_id not in self._recording:
            self._recording.add(u.job_id)
            self._spawn(self._record_reports(u.job_id), "recording execution updates")

    def report_here(self, u: Any, write: Callable[[Tx], Any]) -> asyncio.Future[Any]:
        """A report `u` from this node's compute role on an execution placed here, whose own
        record `write` writes: both are written in one transaction (one commit instead of
        two, and nothing sent). The future resolves to what `write` returned, once it is
        committed, or to its exception."""
        if not self._from_compute_node(self._net.node_id, u):  # not placed here (any more)
            return asyncio.wrap_future(self._store.submit(write))
        done: asyncio.Future[Any] = self._loop.create_future()
        self._own_reports.setdefault(u.job_id, {})[id(u)] = _OwnWrite(u, write, done)
        self._on_update(self._net.node_id, u)
        return done

    async def _record_reports(self, job_id: str) -> None:
        """Record the reports on a job's executions: what came in while the last ones were
        being written goes in the next transaction, so a busy job's reports are recorded
        many at a time."""
        try:
            while True:
                # Wait for more reports first: none (but the rest of this packet) for a small
                # job, up to COALESCE_MAX_S for a large one, whose every write costs the
                # more the more executions it has.
                placed = len(self._where.get(job_id, ()))
                await asyncio.sleep(min(COALESCE_MAX_S, placed * COALESCE_PER_EXECUTION_S))
                reports = self._reports.pop(job_id, None)
                own = self._own_reports.pop(job_id, {})
                if not reports:
                    await _write_alone(self._store, list(own.values()))  # none: defensive
                    break
                if self._keep_result is not None:
                    reports = await self._kept(job_id, reports)
                writes = [own.pop(id(u)) for _, u in reports if id(u) in own]
                await _write_alone(self._store, list(own.values()))  # not recorded now
                started = time.time_ns()
                try:
                    result = await self.ledger.update_many(
                        job_id, reports, [w.write for w in writes]
                    )
                except BacalhauError:  # one was refused: each on its own
                    results = []
                    for sender, u in reports:
                        mine = [w for w in writes if w.report is u]
                        if mine and not await _write_alone(self._store, mine):
                            continue  # its node's own record was not written: nor is it here
                        try:
                            results.append(await self.ledger.update(sender, u))
                        except BacalhauError as e:
                            log.debug("recording an execution update refused: %s", e)
                except Exception:
                    log.exception("recording %d update(s) of job %s failed", len(reports), job_id)
                    await _write_alone(self._store, writes)
                    continue
                else:
                    results = [result]
                    for w, value in zip(writes, result.first, strict=True):
                        if not w.done.done():
                            w.done.set_result(value)
                if self.tracing.on:
                    self._trace_verdicts(job_id, started, [r.outgoing for r in results])
                for r in results:
                    self._penalize(r.outgoing)
                    here = {rec.execution.id for rec in r.here}
                    for node_id, decision in r.outgoing:
                        if decision.execution_id in here:
                            continue  # written with this node's own record of it
                        self._net.send(node_id, result_decision=decision)
                        if decision.accepted:  # copy it while the node publishes it
                            self._keep(job_id, decision.execution_id, node_id)
                    for rec in r.here:
                        self.decided_here(rec)
                    if r.requeue is not None:
                        self._announce(r.requeue)
        finally:
            self._recording.discard(job_id)

    def _keep(self, job_id: str, execution_id: str, holder: str) -> asyncio.Task[None] | None:
        """Start copying an execution's result here (once); the task, None if no result is
        known or it is this node's own."""
        task = self._keeping.get(execution_id)
        cid = self._proposed.get(job_id, {}).get(execution_id, "")
        if task is not None or not cid or holder == self._net.node_id:
            return task
        if self._keep_result is None:
            return None
        blocks = self._inline.get(job_id, {}).pop(execution_id, None)
        if blocks is not None:
            self._inline_bytes -= sum(len(data) for _, data in blocks)
        task = asyncio.ensure_future(self._copy_result(cid, holder, blocks))
        task.add_done_callback(_observed)
        self._keeping[execution_id] = task
        return task

    def _drop_inline(self, job_id: str) -> None:
        for blocks in self._inline.pop(job_id, {}).values():
            self._inline_bytes -= sum(len(data) for _, data in blocks)

    async def _copy_result(
        self, cid: str, holder: str, blocks: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        if blocks and self._keep_blocks is not None and await self._keep_blocks(cid, blocks):
            return  # sent whole with its report: nothing to fetch
        keep = self._keep_result
        async with self._copy_gate:  # a large job's copies, a few at a time
            if keep is not None:
                await keep(cid, holder)

    async def _kept(self, job_id: str, reports: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """`reports`, once the results they end with are kept here: an accepted result
        being published, and what a failed or cancelled run wrote. A report whose node went
        away before its result was copied is not recorded now: the node reports again when
        it is back (`sync`), or its executions fail once it is given up on. A published
        result that its node, still here, does not send is reported as a failure (nothing
        would keep it once that node is gone). One from a node this one has no stream to
        (heard of through gossip only) is recorded as it is, saying it was not kept here."""
        copies: dict[int, Awaitable[BaseException | None]] = {}
        for i, (sender, u) in enumerate(reports):
            if E.of(u.state) not in (E.PUBLISHED, E.FAILED, E.CANCELLED):
                continue
            self._result_cid(job_id, u.execution_id)  # known before a restart only: read it
            if self._keep(job_id, u.execution_id, sender) is not None:
                copies[i] = self._copied(job_id, u.execution_id, sender)
        errors = dict(zip(copies, await asyncio.gather(*copies.values()), strict=True))
        out = []
        for i, (sender, u) in enumerate(reports):
            error = errors.get(i)
            if error is None:
                out.append((sender, u))
                continue
            cid = self._proposed.get(job_id, {}).get(u.execution_id, "")
            why = getattr(error, "message", None) or str(error) or type(error).__name__
            if sender in self._lost:
                log.info("result %s of job %s: its node %s went away; asked again when it is "
                         "back", cid, job_id, short(sender))  # fmt: skip
                continue
            log.warning("could not copy result %s of job %s from %s: %s", cid, job_id, sender, why)
            if not self._net.is_connected(sender):  # never had a stream to it: it stays there
                u = _copy(u)
                u.message = (
                    f"its result is not kept on the requester (no stream to its node): {why}"
                )
            elif E.of(u.state) == E.PUBLISHED:
                u = peer_pb2.ExecutionUpdate(
                    job_id=job_id,
                    execution_id=u.execution_id,
                    state=E.FAILED.pb,
                    message=f"its result {cid} could not be copied to the requester: {why}",
                )
            out.append((sender, u))
        want = self._replicas_wanted(job_id)
        published = [i for i, (_, u) in enumerate(out) if E.of(u.state) == E.PUBLISHED]
        if want and published:
            kept = await asyncio.gather(*(self._replicate(*out[i], want) for i in published))
            for i, nodes in zip(published, kept, strict=True):
                sender, u = out[i]
                u = _copy(u)
                u.replica_node_ids.extend(nodes)
                out[i] = (sender, u)
        if job_id not in self._where:  # it ended meanwhile (a cancel): forget its copies
            for ex_id in self._proposed.pop(job_id, {}):
                self._keeping.pop(ex_id, None)
            self._drop_inline(job_id)
            self._replica_count.pop(job_id, None)
        return out

    def _result_cid(self, job_id: str, execution_id: str) -> str:
        """The result CID an execution reported ("" if none): remembered from its report,
        else read from the job's record (after a restart) and remembered."""
        cid = self._proposed.get(job_id, {}).get(execution_id, "")
        if not cid:
            job = self._job(job_id)
            found = [ex.result_cid for ex in job.executions if ex.id == execution_id] if job else []
            if found and found[0]:
                cid = self._proposed.setdefault(job_id, {})[execution_id] = found[0]
        return cid

    def _replicas_wanted(self, job_id: str) -> int:
        """The result replicas the job asks for (read once after a restart)."""
        count = self._replica_count.get(job_id)
        if count is None:
            job = self._job(job_id)
            count = job.spec.deal.result_replicas if job is not None else 0
            self._replica_count[job_id] = count
        return count

    async def _replicate(self, holder: str, u: Any, want: int) -> list[str]:
        """Have `want` connected peers (not the node that made the result, not one
        penalised here) copy and pin the execution's result; the nodes that did. A node
        that refuses or does not answer within REPLICA_TIMEOUT_S is replaced by another."""
        cid = self._result_cid(u.job_id, u.execution_id)
        me = self._net.node_id
        skip = {me, holder}
        candidates = [
            n for n in self._net.connected() if n not in skip and n not in self._penalized
        ]
        random.shuffle(candidates)
        ask = peer_pb2.ReplicateResult(
            job_id=u.job_id,
            execution_id=u.execution_id,
            result_cid=cid,
            holders=list(dict.fromkeys([me, holder])),
        )
        loop = asyncio.get_running_loop()

        async def one(node_id: str) -> tuple[str, bool, str]:
            key = (u.execution_id, node_id)
            self._replica_waits[key] = answer = loop.create_future()
            self._net.send(node_id, replicate_result=ask)
            try:
                ok, why = await asyncio.wait_for(answer, REPLICA_TIMEOUT_S)
            except TimeoutError:
                ok, why = False, f"no answer within {REPLICA_TIMEOUT_S:g} s"
            finally:
                self._replica_waits.pop(key, None)
            return node_id, ok, why

        kept: list[str] = []
        while cid and len(kept) < want and candidates:
            batch, candidates = candidates[: want - len(kept)], candidates[want - len(kept) :]
            for node_id, ok, why in await asyncio.gather(*map(one, batch)):
                if ok:
                    kept.append(node_id)
                else:
                    log.info("node %s did not keep result %s: %s", short(node_id), cid, why)
        if len(kept) < want:
            log.warning(
                "result %s of job %s is kept on %d of the %d other nodes it asks for",
                cid, u.job_id, len(kept), want,
            )  # fmt: skip
        return kept

    def _on_replicated(self, sender: str, r: Any) -> None:
        answer = self._replica_waits.get((r.execution_id, sender))
        if answer is not None and not answer.done():
            answer.set_result((r.ok, r.message))

    async def _copied(self, job_id: str, execution_id: str, holder: str) -> BaseException | None:
        """Wait for the copy of an execution's result; what went wrong, or None. A copy that
        failed while its node is still connected is tried again, a little later each time
        (a node that just died may still look connected for a moment)."""
        error: BaseException | None = None
        for pause in (*COPY_RETRY_S, None):
            task = self._keep(job_id, execution_id, holder)
            if task is None:
                return None
            try:
                await task
                return None
            except Exception as e:
                error = e
                self._keeping.pop(execution_id, None)  # the next try starts afresh
            if pause is None or not self._net.is_connected(holder):
                break
            await asyncio.sleep(pause)
        return error

    def _trace_verdicts(self, job_id: str, started: int, verdicts: list[Any]) -> None:
        """A `verification` span for reports that got results decided (accepted or not)."""
        decided = [d for outgoing in verdicts for _, d in outgoing]
        if not decided:
            return
        parent = self._trace.get(job_id) or str(getattr(self._job(job_id), "trace_parent", ""))
        accepted = sum(d.accepted for d in decided)
        self.tracing.record(
            "verification",
            started,
            parent=parent,
            job_id=job_id,
            accepted=accepted,
            rejected=len(decided) - accepted,
        )

    def _on_still_wanted(self, sender: str, q: Any) -> None:
        """A restarted compute node asks before running an execution again: the decision
        again if this node still waits on it there, else a cancel saying where it stands."""
        job = self._job(q.job_id)
        ex = next((e for e in job.executions if e.id == q.execution_id), None) if job else None
        if ex is None:
            return
        state = E.of(ex.state)
        if not JobState.of(job.state).is_terminal and state in (E.BID_ACCEPTED, E.RUNNING):
            decision = peer_pb2.BidDecision(
                job_id=job.id,
                shard=ex.shard,
                execution_id=ex.id,
                accepted=True,
                traceparent=job.trace_parent,
            )
            self._net.send(sender, bid_decision=decision)
            return
        reason = f"the execution is {state.value} at its requester"
        msg = peer_pb2.CancelExecution(job_id=job.id, execution_id=ex.id, reason=reason)
        self._net.send(sender, cancel=msg)

    def _on_log(self, sender: str, msg: Any) -> None:
        self.logs.add(msg.job_id, msg.execution_id, msg.stream, msg.offset, msg.data)

    # -- peers --------------------------------------------------------------------------

    def _on_peer_connected(self, node_id: str) -> None:
        timer = self._lost.pop(node_id, None)
        if timer is not None:
            timer.cancel()
        self._ask(list(self._rounds.values()), node_id)
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
        self._placed.pop(node_id, None)

        def replace(result: tuple[list[Any], list[tuple[str, Any]]]) -> None:
            jobs, decided = result
            self._penalize(decided)
            for target, decision in decided:
                self._net.send(target, result_decision=decision)
            for job in jobs:
                self._announce(job)

        self._spawn(self.ledger.give_up_on(node_id), "handing back a lost node's work", replace)

    # -- plumbing -------------------------------------------------------------------------

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _spawn(self, work: Awaitable[T], what: str, then: Callable[[T], Any] | None = None) -> None:
        """Run a ledger transition, then `then(result)`; refusals (BacalhauError: a change
        that came too late or twice) are logged at debug level, other failures loudly."""

        async def run() -> None:
            try:
                result = await work
            except BacalhauError as e:
                log.debug("%s refused: %s", what, e)
                return
            except Exception:
                log.exception("%s failed", what)
                return
            if then is not None:
                then(result)

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        for key in list(self._rounds):
            self._close_round(key)
        for timer in self._lost.values():
            timer.cancel()
        self._lost.clear()


@dataclass
class _OwnWrite:
    """A report of this node's compute role and the write of its own record of it."""

    report: Any
    write: Callable[[Tx], Any]
    done: asyncio.Future[Any]


async def _write_alone(store: Datastore, writes: list[_OwnWrite]) -> bool:
    """Write these compute records each on its own (their reports are not recorded with
    them); whether all were written."""
    ok = True
    for w in writes:
        try:
            value = await asyncio.wrap_future(store.submit(w.write))
        except Exception as e:
            ok = False
            if not w.done.done():
                w.done.set_exception(e)
        else:
            if not w.done.done():
                w.done.set_result(value)
    return ok


def _copy(u: Any) -> Any:
    out = peer_pb2.ExecutionUpdate()
    out.CopyFrom(u)
    return out


def _observed(task: asyncio.Task[None]) -> None:
    """Mark a copy's failure as seen (the report waiting for it says why)."""
    if not task.cancelled():
        task.exception()


def _csr(rows: list[list[int]]) -> tuple[array[int], array[int]]:
    """Lists of node indices as the planner's (offsets, nodes)."""
    offsets = array("q", [0])
    flat = array("i")
    for row in rows:
        flat.extend(row)
        offsets.append(len(flat))
    return offsets, flat
