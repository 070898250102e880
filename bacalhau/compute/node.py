"""The compute role of a node: bid on announced jobs, run the ones it is given, publish results.

The concerns live in their own modules: bidding (`bidding.py`), input preparation
(`prepare.py`), running on a bounded pool with resources lent by the allocator (`runner.py`,
`capacity.py`), result storage (`results.py`) and this node's records of its executions
(`records.py`). This class wires them to the network: it registers a handler for each message
kind it takes, with who may send it, and keeps the executions it accepted and not finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bacalhau._pb.bacalhau.v1 import peer_pb2
from bacalhau.blockstore import Blockstore
from bacalhau.compute.bidding import Bidder
from bacalhau.compute.capacity import Allocation, Allocator, Limits, Resources, detect
from bacalhau.compute.inputs import InputCache
from bacalhau.compute.prepare import LogForwarder, prepare_request
from bacalhau.compute.records import LocalRecords, accepted_record
from bacalhau.compute.results import INLINE_RESULT_BYTES, small_dag, tail
from bacalhau.compute.runner import Runner
from bacalhau.content.cid import CID
from bacalhau.datastore import Datastore
from bacalhau.errors import BacalhauError
from bacalhau.executor import Executor
from bacalhau.executor.base import DEFAULT_DISK_LIMIT
from bacalhau.models import ExecutionState, now_ns, pb
from bacalhau.network import Network, rpc_error_line
from bacalhau.network.dispatch import ANY_PEER, MayFrom
from bacalhau.observability.tracing import Tracing, parse_traceparent

log = logging.getLogger(__name__)
E = ExecutionState
_CLOSE_GRACE_S = 5.0


@dataclass
class ComputeConfig:
    labels: dict[str, str] = field(default_factory=dict)
    max_parallel: int = 4
    max_queue: int = 256
    allocator: Allocator | None = None  # None: the machine's detected resources, no limits
    default_timeout_s: float = 600.0
    memory_limit_bytes: int = 256 << 20
    stdout_limit_bytes: int = 1 << 20
    # what a job that asks for no disk may write and read by CID (0: the node's
    # --limit-job-disk, else DEFAULT_DISK_LIMIT)
    disk_limit_bytes: int = 0
    # after a restart, how long an unfinished execution waits for its requester to say it is
    # still wanted before it is failed here (never run blindly)
    resume_wait_s: float = 300.0
    bad_actor: bool = False  # devstack --bad-actors: every result wrong on purpose


@dataclass
class _Active:
    """An execution accepted here and not finished."""

    requester: str
    spec: Any
    cancel: threading.Event = field(default_factory=threading.Event)


class Compute:
    """Bids on, runs and publishes executions."""

    def __init__(
        self,
        *,
        network: Network,
        store: Datastore,
        blockstore: Blockstore,
        executors: dict[str, Executor],
        scratch_dir: Path,
        config: ComputeConfig,
        inputs: InputCache | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._net = network
        self.tracing = tracing or Tracing.off()
        self._blocks = blockstore
        self._executors = executors
        self._scratch = scratch_dir
        self.inputs = inputs or InputCache(network, blockstore, scratch_dir / "inputs")
        self.config = config
        self.allocator = config.allocator or Allocator(detect(scratch_dir), Limits())
        self.records = LocalRecords(store, network, self._small_result)
        self.bidder = Bidder(
            executors=executors,
            labels=config.labels,
            allocator=self.allocator,
            needs=self._needs,
            inputs=self.inputs,
            queued=lambda: self.queued,
            max_queue=config.max_queue,
        )
        self.runner = Runner(
            allocator=self.allocator,
            blockstore=blockstore,
            scratch=scratch_dir,
            max_parallel=config.max_parallel,
            bad_actor=config.bad_actor,
            tracing=self.tracing,
        )
        self._active: dict[str, _Active] = {}
        # unfinished at a restart, waiting for the requester to say they are still wanted
        self._unconfirmed: dict[str, tuple[Any, asyncio.TimerHandle]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        network.on_connect.append(self._ask_again)
        requester = MayFrom("the requester of this execution", self._from_requester)
        d = network.dispatcher
        d.register("announce", self._on_announce, ANY_PEER)
        d.register(
            "bid_decision",
            self._on_bid_decision,
            MayFrom("the requester of a bid this node made", self._from_bid_requester),
        )
        d.register("result_decision", self._on_result_decision, requester)
        d.register("cancel", self._on_cancel, requester)
        # Anyone may ask; only the executions the asker requested are answered.
        d.register("sync", self._on_sync, ANY_PEER)

    @property
    def engines(self) -> list[str]:
        return sorted(self._executors)

    @property
    def queued(self) -> int:
        return len(self._active)

    def status(self) -> Any:
        """What heartbeats say of this node: queue length and resources not lent."""
        free = self.allocator.free()
        with contextlib.suppress(OSError):
            st = os.statvfs(self._scratch)
            free = dataclasses.replace(free, disk_bytes=st.f_bavail * st.f_frsize)
        return peer_pb2.Heartbeat(
            queued=self.queued,
            free=pb.Resources(
                cpu=free.cpu,
                memory_bytes=free.memory_bytes,
                disk_bytes=free.disk_bytes,
                gpu=free.gpu,
            ),
        )

    def decline_reason(self, spec: Any) -> str:
        """Why this node will not run `spec`, or "" if it will."""
        return self.bidder.decline_reason(spec)

    def _needs(self, spec: Any) -> Resources:
        r = spec.resources
        return self.allocator.needs(
            r.cpu, r.memory_bytes or self.config.memory_limit_bytes, r.disk_bytes, r.gpu
        )

    # -- who may send what ---------------------------------------------------------------

    def requester_of(self, execution_id: str) -> str | None:
        """The node that gave this node `execution_id` to run, if it did."""
        active = self._active.get(execution_id)
        if active is not None:
            return active.requester
        rec = self.records.get(execution_id)
        return None if rec is None else rec.requester_node_id

    def _from_requester(self, sender: str, body: Any) -> bool:
        return self.requester_of(body.execution_id) == sender

    def _from_bid_requester(self, sender: str, d: Any) -> bool:
        if d.shards:  # decisions on many shards: each is checked again as it is taken
            return any(
                self.bidder.offered_to(sender, d.job_id, s.shard)
                or self.requester_of(s.execution_id) == sender
                for s in d.shards
            )
        return self.bidder.offered_to(sender, d.job_id, d.shard) or self._from_requester(sender, d)

    # -- messages from requesters --------------------------------------------------------

    def _on_announce(self, sender: str, a: Any) -> None:
        if not self.tracing.on:
            self._net.send(sender, bid=self.bidder.bid(sender, a))
            return
        shards = len(a.shards) or 1
        with self.tracing.span("bid", a.traceparent, job_id=a.job_id, shards=shards) as span:
            bid = self.bidder.bid(sender, a)
            span.set_attribute("bacalhau.willing", bid.willing)
            if bid.reason:
                span.set_attribute("bacalhau.reason", bid.reason)
        self._net.send(sender, bid=bid)

    def _on_bid_decision(self, sender: str, d: Any) -> None:
        # Only a well-formed traceparent is kept, and only to link this node's spans to it.
        tp = d.traceparent if parse_traceparent(d.traceparent) is not None else ""
        if not d.shards:
            self._decided(sender, d.job_id, d.shard, d.execution_id, d.accepted, tp)
            return
        for s in d.shards:
            if s.execution_id or not s.accepted:  # an accepted shard names its execution
                self._decided(sender, d.job_id, s.shard, s.execution_id, s.accepted, tp)

    def _decided(
        self,
        sender: str,
        job_id: str,
        shard: int,
        execution_id: str,
        accepted: bool,
        traceparent: str = "",
    ) -> None:
        """The requester's decision on this node's bid for a shard of a job."""
        offer = self.bidder.take(sender, job_id, shard)
        if not accepted or execution_id in self._active:  # declined, or being run
            return
        known = self.records.get(execution_id)
        if known is not None:  # a decision repeated after a restart: say where it stands
            self._resume_or_report(sender, known)
            return
        if offer is None:  # the offer is gone (this node restarted): the sync says so
            return
        spec = offer.spec
        record = accepted_record(
            execution_id, job_id, self._net.node_id, shard, sender, spec, traceparent
        )
        # Registered now, so a cancel that arrives before the record is written is not lost.
        self._active[execution_id] = _Active(sender, spec)
        self._spawn(self._accept(record))

    def accepted_here(self, record: Any) -> None:
        """This node's requester chose this node and wrote its record of the execution,
        running, with the choice (`Ledger.compute_here`): run it."""
        ex = record.execution
        self.bidder.take(record.requester_node_id, ex.job_id, ex.shard)
        if ex.id in self._active:
            return
        self._active[ex.id] = _Active(record.requester_node_id, record.spec)
        self._spawn(self._run(record, fresh=True))

    def _small_result(self, cid_text: str) -> list[tuple[bytes, bytes]]:
        """The whole DAG of a result of at most INLINE_RESULT_BYTES ([]: larger, or not all
        here), to send with its report."""
        return small_dag(self._blocks, cid_text, INLINE_RESULT_BYTES)

    async def _accept(self, record: Any) -> None:
        # Accepted and running in one commit (one report), unless cancelled meanwhile.
        active = self._active.get(record.execution.id)
        running = active is not None and not active.cancel.is_set()
        try:
            await self.records.create(record, running=running)
        except BaseException:
            self._active.pop(record.execution.id, None)
            raise
        await self._run(record, fresh=running)

    def _on_result_decision(self, sender: str, d: Any) -> None:
        async def decide() -> None:
            rec = await self.records.decide(d.execution_id, d.accepted, d.reason)
            await self._unpin_rejected(rec)
            self.records.report(rec)

        self._spawn(decide())

    def decided_here(self, rec: Any) -> None:
        """This node's requester wrote its decision on an execution of this node with this
        node's record of it (`Ledger.compute_here`): what is left of taking it."""
        self._spawn(self._unpin_rejected(rec))

    async def _unpin_rejected(self, rec: Any) -> None:
        ex = rec.execution
        if ex.state == E.RESULT_REJECTED.pb and ex.result_cid:
            await asyncio.to_thread(self._blocks.unpin, bytes(CID.parse(ex.result_cid)))

    def _on_cancel(self, sender: str, c: Any) -> None:
        active = self._active.get(c.execution_id)
        if active is not None:
            active.cancel.set()
            self.runner.wake()  # it may be waiting for resources
        if (waiting := self._confirmed(c.execution_id)) is not None:  # not wanted any more
            reason = c.reason or "cancelled by its requester"
            self._spawn(self.records.advance(waiting, E.CANCELLED, f"not run again: {reason}"))

    def _on_sync(self, sender: str, sync: Any) -> None:
        """A requester asks where executions stand (it restarted, or we reconnected)."""
        for ref in sync.executions:
            active = self._active.get(ref.execution_id)
            if active is not None and active.requester == sender:
                continue  # accepted and running: it reports by itself
            rec = self.records.get(ref.execution_id)
            if rec is not None and rec.requester_node_id == sender:
                self._resume_or_report(sender, rec)
                continue
            update = peer_pb2.ExecutionUpdate(
                job_id=ref.job_id,
                execution_id=ref.execution_id,
                state=E.FAILED.pb,
                message=f"node {self._net.node_id[-8:]} has no record of this execution",
            )
            self._net.send(sender, execution_update=update)

    def _resume_or_report(self, sender: str, rec: Any) -> None:
        if rec.requester_node_id != sender:
            return
        self._confirmed(rec.execution.id)  # the requester named it: it is still wanted
        state = E.of(rec.execution.state)
        if state in (E.BID_ACCEPTED, E.RUNNING) and rec.execution.id not in self._active:
            self._active[rec.execution.id] = _Active(sender, rec.spec)
            self._spawn(self._run(rec))  # it was cut short by a restart: run it again
        elif state == E.RESULT_ACCEPTED:
            d = peer_pb2.ResultDecision(
                job_id=rec.execution.job_id, execution_id=rec.execution.id, accepted=True
            )
            self._on_result_decision(sender, d)
        else:
            self.records.report(rec)

    async def recover(self) -> None:
        """Take up what a restart cut short: finish publishing accepted results; ask the
        requester of each unfinished execution whether it is still wanted (it may have
        failed it and placed it elsewhere meanwhile) and run it again only if it says so."""
        loop = asyncio.get_running_loop()
        for rec in await self.records.list():
            state = E.of(rec.execution.state)
            ex = rec.execution
            if state == E.RESULT_ACCEPTED:
                log.info("finishing execution %s (%s)", ex.id, state.value)
                self._resume_or_report(rec.requester_node_id, rec)
            elif state in (E.BID_ACCEPTED, E.RUNNING) and ex.id not in self._unconfirmed:
                log.info("asking whether execution %s (%s) is still wanted", ex.id, state.value)
                timer = loop.call_later(self.config.resume_wait_s, self._not_confirmed, ex.id)
                self._unconfirmed[ex.id] = (rec, timer)
                self._ask_still_wanted(rec)

    def _ask_still_wanted(self, rec: Any) -> None:
        ex = rec.execution
        q = peer_pb2.StillWanted(job_id=ex.job_id, execution_id=ex.id)
        self._net.send(rec.requester_node_id, still_wanted=q)

    def _ask_again(self, node_id: str) -> None:
        """A requester (re)connected: ask it about the executions waiting on it."""
        for rec, _ in list(self._unconfirmed.values()):
            if rec.requester_node_id == node_id:
                self._ask_still_wanted(rec)

    def _confirmed(self, execution_id: str) -> Any:
        """Stop waiting on the requester for `execution_id`; its record if it was waiting."""
        waiting = self._unconfirmed.pop(execution_id, None)
        if waiting is None:
            return None
        waiting[1].cancel()
        return waiting[0]

    def _not_confirmed(self, execution_id: str) -> None:
        rec = self._confirmed(execution_id)
        if rec is not None:
            why = (
                f"not run again: its requester did not say within "
                f"{self.config.resume_wait_s:g} s of a restart that it is still wanted"
            )
            self._spawn(self.records.advance(rec, E.FAILED, why))

    # -- running ------------------------------------------------------------------------

    async def _run(self, record: Any, *, fresh: bool = False) -> None:
        """Run an execution (`fresh`: its RUNNING record was just written and reported)."""
        if not self.tracing.on:
            await self._execute(record, fresh)
            return
        ex = record.execution
        with self.tracing.span(
            "execution",
            record.traceparent,
            job_id=ex.job_id,
            execution_id=ex.id,
            shard=ex.shard,
            engine=record.spec.engine,
        ) as span:
            await self._execute(record, fresh)
            span.set_attribute("bacalhau.state", E.of(ex.state).value)
            if ex.HasField("exit_code"):
                span.set_attribute("bacalhau.exit_code", ex.exit_code)

    async def _execute(self, record: Any, fresh: bool = False) -> None:
        ex = record.execution
        active = self._active.get(ex.id) or _Active(record.requester_node_id, record.spec)
        cancel = active.cancel
        try:
            if cancel.is_set():
                await self.records.advance(record, E.CANCELLED, "cancelled before it started")
                return
            if E.of(ex.state) == E.BID_ACCEPTED:
                await self.records.advance(record, E.RUNNING)
            elif not fresh:  # started before a restart: running again from the start
                self.records.report(record)
            held: list[Path] = []
            allocation: Allocation | None = None
            try:
                engine, timing = record.spec.engine, self.runner.on_timing
                request = await prepare_request(
                    record,
                    self.inputs,
                    held,
                    self._defaults(record),
                    on_fetch=lambda s: timing("input_fetch", engine, s),
                    tracing=self.tracing,
                )
                allocation = await self.runner.allocate(self._needs(record.spec), cancel)
                if allocation is None:
                    await self.records.advance(record, E.CANCELLED, "cancelled before it started")
                    return
                timing("queue_wait", engine, (now_ns() - ex.create_time_unix_nano) / 1e9)
                request["gpu_devices"] = [str(i) for i in allocation.gpu_indexes]
                executor = self._executors[record.spec.engine]
                result, cid = await self.runner.run(executor, request, cancel, ex.job_id)
            finally:
                if allocation is not None:
                    self.runner.release(allocation)
                for path in held:
                    self.inputs.release(path)
            if result.error == "cancelled":
                ex.result_cid = cid  # its stdout and stderr until then
                await self.records.advance(record, E.CANCELLED, "cancelled while running")
            elif result.ok:
                ex.exit_code = 0
                ex.result_cid = cid
                await self.records.advance(record, E.RESULT_PROPOSED)
            else:
                ex.exit_code = result.exit_code
                ex.result_cid = cid
                ex.stderr_tail = tail(result.stderr)
                message = result.error or f"exit code {result.exit_code}"
                await self.records.advance(record, E.FAILED, message)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not isinstance(e, BacalhauError):
                log.exception("execution %s failed", ex.id)
            with contextlib.suppress(Exception):
                await self.records.advance(record, E.FAILED, rpc_error_line(e))
        finally:
            self._active.pop(ex.id, None)

    def _defaults(self, record: Any) -> dict[str, Any]:
        cfg, ex = self.config, record.execution
        forward = LogForwarder(
            self._loop,
            self._net,
            record.requester_node_id,
            ex.job_id,
            ex.id,
            cfg.stdout_limit_bytes,
        )
        return {
            "on_log": forward,
            "timeout_s": cfg.default_timeout_s,
            "memory_limit_bytes": cfg.memory_limit_bytes,
            "stdout_limit_bytes": cfg.stdout_limit_bytes,
            "disk_limit_bytes": (
                cfg.disk_limit_bytes or self.allocator.job_limit.disk_bytes or DEFAULT_DISK_LIMIT
            ),
        }

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    async def close(self) -> None:
        """Stop running executions and wait (a few seconds) for them to record it.

        What is still waiting then (say, for a module from a requester that went away) is
        cancelled; its record stays as it was and a restart takes it up again.
        """
        for active in self._active.values():
            active.cancel.set()
        self.runner.wake()
        for _, timer in self._unconfirmed.values():
            timer.cancel()  # still unconfirmed: the next start asks again
        self._unconfirmed.clear()
        self.inputs.close()
        tasks: list[asyncio.Future[Any]] = [*self._tasks, *self.inputs.pending]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_CLOSE_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.runner.close()
        for executor in self._executors.values():
            close = getattr(executor, "close", None)
            if close is not None:
                await asyncio.to_thread(close)


def _log_failure(task: asyncio.Task[None]) -> None:
    """Refusals (BacalhauError: late, repeated or illegal changes) at debug; the rest loud."""
    if task.cancelled() or task.exception() is None:
        return
    exc = task.exception()
    if isinstance(exc, BacalhauError):
        log.debug("refused: %s", exc)
    else:
        log.error("compute task failed", exc_info=exc)
