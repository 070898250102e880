"""The compute role of a node.

It answers job announcements with bids, runs the executions it is given on a bounded pool of
threads, adds each result to the blockstore and proposes its CID, and publishes it (keeps it
pinned and serves it to peers) once the requester accepts it. Its own records of executions
live in the datastore (`local`), each state change written before it is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bacalhau._aio import then
from bacalhau._pb.bacalhau.v1 import peer_pb2, records_pb2
from bacalhau.blockstore import Blockstore
from bacalhau.compute.capacity import Allocation, Allocator, Limits, detect
from bacalhau.compute.inputs import InputCache
from bacalhau.compute.results import publish_result, tail
from bacalhau.content.cid import CID
from bacalhau.datastore import Datastore, Tx
from bacalhau.errors import BacalhauError
from bacalhau.executor import Executor
from bacalhau.executor.base import RunRequest, RunResult
from bacalhau.models import ExecutionState, now_ns, pb, set_execution_state
from bacalhau.network import Network, rpc_error_line

log = logging.getLogger(__name__)
E = ExecutionState
_OFFER_TTL_S = 300.0
_CLOSE_GRACE_S = 5.0
_ALLOCATE_POLL_S = 0.5  # how often a job waiting for resources looks at its cancel event
_PRUNE_AT = 1024


@dataclass
class ComputeConfig:
    labels: dict[str, str] = field(default_factory=dict)
    max_parallel: int = 4
    max_queue: int = 256
    allocator: Allocator | None = None  # None: the machine's detected resources, no limits
    default_timeout_s: float = 600.0
    memory_limit_bytes: int = 256 << 20
    stdout_limit_bytes: int = 1 << 20


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
    ) -> None:
        self._net = network
        self._store = store
        self._blocks = blockstore
        self._executors = executors
        self._scratch = scratch_dir
        self.inputs = inputs or InputCache(network, blockstore, scratch_dir / "inputs")
        self.config = config
        self.allocator = config.allocator or Allocator(detect(scratch_dir), Limits())
        self._released = asyncio.Event()  # set whenever resources are given back
        self._pool = ThreadPoolExecutor(config.max_parallel, thread_name_prefix="execution")
        # offered and not yet decided: (job, shard) -> (requester, spec, when offered)
        self._bids: dict[tuple[str, int], tuple[str, Any, float]] = {}
        self._cancels: dict[str, threading.Event] = {}  # accepted, not finished
        self._specs: dict[str, Any] = {}  # their specs, for what they take
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def engines(self) -> list[str]:
        return sorted(self._executors)

    @property
    def queued(self) -> int:
        return len(self._cancels)

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

    def _needs(self, spec: Any) -> Any:
        r = spec.resources
        return self.allocator.needs(
            r.cpu, r.memory_bytes or self.config.memory_limit_bytes, r.disk_bytes, r.gpu
        )

    # -- messages from requesters --------------------------------------------------------

    def handle(self, sender: str, msg: Any) -> None:
        kind = msg.WhichOneof("body")
        if kind == "announce":
            self._on_announce(sender, msg.announce)
        elif kind == "bid_decision":
            self._on_bid_decision(sender, msg.bid_decision)
        elif kind == "result_decision":
            self._on_result_decision(sender, msg.result_decision)
        elif kind == "cancel":
            self._on_cancel(msg.cancel)
        elif kind == "sync":
            self._on_sync(sender, msg.sync)

    def decline_reason(self, spec: Any) -> str:
        """Why this node will not run `spec`, or "" if it will."""
        if spec.engine not in self._executors:
            have = ", ".join(self.engines) or "none"
            return f"engine {spec.engine!r} is not enabled here (engines: {have})"
        for key, value in spec.node_selector.items():
            if self.config.labels.get(key) != value:
                return f"label {key}={value} does not match"
        reason = self.allocator.reason(self._needs(spec))
        if reason:
            return reason
        if spec.engine == "docker":
            executor = self._executors["docker"]
            reason = getattr(executor, "can_run", lambda _: "")(spec.docker.image)
            if reason:
                return reason
        if self.queued >= self.config.max_queue:
            return f"queue full ({self.queued} executions)"
        return ""

    def _on_announce(self, sender: str, a: Any) -> None:
        reason = self.decline_reason(a.spec)
        now = self._loop.time()
        if not reason:
            self._bids[(a.job_id, a.shard)] = (sender, a.spec, now)
        if len(self._bids) > _PRUNE_AT:  # offers a requester never answered (it went away)
            self._bids = {k: v for k, v in self._bids.items() if now - v[2] < _OFFER_TTL_S}
        bid = peer_pb2.Bid(
            job_id=a.job_id, shard=a.shard, willing=not reason, reason=reason, queued=self.queued
        )
        if not reason:  # data locality: what of the job's inputs this node holds already
            bid.local_input_bytes, bid.local_inputs = self.inputs.local_share(
                [i.cid for i in a.spec.inputs if i.source in ("", "ipfs")]
            )
        self._net.send(sender, bid=bid)

    def _on_bid_decision(self, sender: str, d: Any) -> None:
        offered = self._bids.pop((d.job_id, d.shard), None)
        if not d.accepted or d.execution_id in self._cancels:  # declined, or being run
            return
        known = self._store.get_local(d.execution_id)
        if known is not None:  # a decision repeated after a restart: say where it stands
            self._resume_or_report(sender, known)
            return
        if offered is not None and offered[0] == sender:
            spec = offered[1]
        elif d.HasField("spec"):  # the offer was forgotten (this node restarted)
            spec = d.spec
        else:
            return
        now = now_ns()
        record = records_pb2.LocalExecution(
            execution=pb.Execution(
                id=d.execution_id,
                job_id=d.job_id,
                node_id=self._net.node_id,
                shard=d.shard,
                state=E.BID_ACCEPTED.pb,
                create_time_unix_nano=now,
                update_time_unix_nano=now,
            ),
            requester_node_id=sender,
            spec=spec,
        )
        # Registered now, so a cancel that arrives before the record is written is not lost.
        self._cancels[d.execution_id] = threading.Event()
        self._specs[d.execution_id] = spec

        def put(tx: Tx) -> None:
            if tx.get_local(d.execution_id) is not None:
                raise BacalhauError(f"execution {d.execution_id} already accepted")
            tx.put_local(record)

        then(
            self._loop,
            self._store.submit(put),
            lambda _: self._spawn(self._run(record)),
            "accepting a bid",
        )

    def _on_result_decision(self, sender: str, d: Any) -> None:
        state = E.PUBLISHED if d.accepted else E.RESULT_REJECTED

        def decide(tx: Tx) -> Any:
            rec = tx.get_local(d.execution_id)
            if rec is None or rec.requester_node_id != sender:
                raise BacalhauError(f"no execution {d.execution_id} from {sender}")
            if E.of(rec.execution.state) == state:  # a repeated decision: report again
                return rec
            if d.accepted and E.of(rec.execution.state) == E.RESULT_PROPOSED:
                set_execution_state(rec.execution, E.RESULT_ACCEPTED)
            set_execution_state(rec.execution, state, d.reason)
            tx.put_local(rec)
            return rec

        def report(rec: Any) -> None:
            if not d.accepted:
                self._spawn(self._unpin(rec.execution.result_cid))
            self._report(rec)

        then(self._loop, self._store.submit(decide), report, "publishing a result")

    def _on_cancel(self, c: Any) -> None:
        event = self._cancels.get(c.execution_id)
        if event is not None:
            event.set()

    def _on_sync(self, sender: str, sync: Any) -> None:
        """A requester asks where executions stand (it restarted, or we reconnected)."""
        for ref in sync.executions:
            rec = self._store.get_local(ref.execution_id)
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
        state = E.of(rec.execution.state)
        if state in (E.BID_ACCEPTED, E.RUNNING) and rec.execution.id not in self._cancels:
            self._start(rec)  # it was cut short by a restart: run it again
        elif state == E.RESULT_ACCEPTED:
            self._on_result_decision(
                sender,
                peer_pb2.ResultDecision(
                    job_id=rec.execution.job_id, execution_id=rec.execution.id, accepted=True
                ),
            )
        else:
            self._report(rec)

    def _start(self, rec: Any) -> None:
        self._cancels[rec.execution.id] = threading.Event()
        self._specs[rec.execution.id] = rec.spec
        self._spawn(self._run(rec))

    async def recover(self) -> None:
        """Run again what a restart cut short; finish publishing accepted results."""
        for rec in await asyncio.to_thread(self._store.list_local):
            state = E.of(rec.execution.state)
            if state in (E.BID_ACCEPTED, E.RUNNING, E.RESULT_ACCEPTED):
                log.info("resuming execution %s (%s)", rec.execution.id, state.value)
                self._resume_or_report(rec.requester_node_id, rec)

    # -- running ------------------------------------------------------------------------

    async def _run(self, record: Any) -> None:
        ex = record.execution
        cancel = self._cancels.get(ex.id) or threading.Event()
        try:
            if cancel.is_set():
                await self._advance(record, E.CANCELLED, message="cancelled before it started")
                return
            if E.of(ex.state) == E.BID_ACCEPTED:
                await self._advance(record, E.RUNNING)
            else:  # started before a restart: running again from the start
                self._report(record)
            held: list[Path] = []
            allocation: Allocation | None = None
            try:
                request = await self._request(record, held)
                allocation = await self._allocate(record.spec, cancel)
                if allocation is None:
                    await self._advance(record, E.CANCELLED, message="cancelled before it started")
                    return
                request["gpu_devices"] = [str(i) for i in allocation.gpu_indexes]
                loop = asyncio.get_running_loop()
                result, cid = await loop.run_in_executor(
                    self._pool, self._execute, record, request, cancel
                )
            finally:
                if allocation is not None:
                    self.allocator.release(allocation)
                    self._released.set()
                for path in held:
                    self.inputs.release(path)
            if result.error == "cancelled":
                await self._advance(record, E.CANCELLED, message="cancelled while running")
            elif result.ok:
                ex.exit_code = 0
                ex.result_cid = cid
                await self._advance(record, E.RESULT_PROPOSED)
            else:
                ex.exit_code = result.exit_code
                ex.result_cid = cid
                ex.stderr_tail = tail(result.stderr)
                message = result.error or f"exit code {result.exit_code}"
                await self._advance(record, E.FAILED, message=message)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not isinstance(e, BacalhauError):
                log.exception("execution %s failed", ex.id)
            with contextlib.suppress(Exception):
                await self._advance(record, E.FAILED, message=rpc_error_line(e))
        finally:
            self._cancels.pop(ex.id, None)
            self._specs.pop(ex.id, None)

    async def _allocate(self, spec: Any, cancel: threading.Event) -> Allocation | None:
        """Wait until what the job needs is free and take it; None if cancelled meanwhile."""
        wants = self._needs(spec)
        while (allocation := self.allocator.allocate(wants)) is None:
            if cancel.is_set():
                return None
            self._released.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), _ALLOCATE_POLL_S)
        return allocation

    async def _request(self, record: Any, held: list[Path]) -> dict[str, Any]:
        """What the executor is given for `record`, its data fetched (held until released)."""
        spec, requester = record.spec, record.requester_node_id

        async def local(cid_text: str) -> Path:
            path = await self.inputs.acquire(cid_text, requester)
            held.append(path)
            return path

        cfg = self.config
        ex = record.execution
        req: dict[str, Any] = {
            "on_log": _LogForwarder(
                self._loop, self._net, requester, ex.job_id, ex.id, cfg.stdout_limit_bytes
            ),
            "inputs": await self._inputs(record, requester, held),
            "outputs": [(o.name, o.path) for o in spec.outputs],
            "timeout_s": spec.timeout_seconds or cfg.default_timeout_s,
            "memory_limit_bytes": spec.resources.memory_bytes or cfg.memory_limit_bytes,
            "stdout_limit_bytes": cfg.stdout_limit_bytes,
            "cpu": spec.resources.cpu,
        }
        if spec.engine == "wasm":
            req.update(
                module=await local(spec.wasm.module_cid),
                args=list(spec.wasm.args),
                env=dict(spec.wasm.env),
            )
        elif spec.engine == "docker":
            d = spec.docker
            req.update(
                image=d.image,
                entrypoint=list(d.entrypoint),
                args=list(d.args),
                env=dict(d.env),
                working_dir=d.working_dir,
                labels={"bacalhau.job": ex.job_id, "bacalhau.execution": ex.id},
            )
        elif spec.engine == "python":
            p = spec.python
            req.update(
                context=await local(p.context_cid) if p.context_cid else None,
                program=p.program,
                code=p.code,
                deterministic=p.deterministic,
                args=list(p.args),
                env=dict(p.env),
            )
        return req

    async def _inputs(
        self, record: Any, requester: str, held: list[Path]
    ) -> list[tuple[Path, str]]:
        """The job's inputs as (local path, guest path), fetched at once (held until released).

        URL inputs that share a mount folder are mounted as one folder, in the place of the
        first of them; their CIDs are recorded in the execution's `inputs`. Raises the first
        failure (NotFound, UrlError, ...) once all settled.
        """
        spec = record.spec

        async def by_cid(cid_text: str) -> Path:
            path = await self.inputs.acquire(cid_text, requester)
            held.append(path)
            return path

        async def by_url() -> dict[str, Path]:
            urls = [(i.url, i.mount_path) for i in spec.inputs if i.source == "url"]
            folders = {}
            del record.execution.inputs[:]  # run again after a restart: resolved afresh
            for path, folder, resolved in await self.inputs.acquire_urls(urls):
                held.append(path)
                folders[folder] = path
                record.execution.inputs.extend(
                    pb.InputSpec(source="url", url=r.url, cid=r.cid, mount_path=r.mount_path)
                    for r in resolved
                )
            return folders

        cids = [i for i in spec.inputs if i.source != "url"]
        has_urls = len(cids) < len(spec.inputs)
        got = await asyncio.gather(
            *(by_cid(i.cid) for i in cids),
            *([by_url()] if has_urls else []),
            return_exceptions=True,
        )
        for g in got:
            if isinstance(g, BaseException):
                raise g
        paths = iter(got[: len(cids)])
        folders: dict[str, Path] = got[-1] if has_urls else {}  # type: ignore[assignment]
        out: list[tuple[Path, str]] = []
        for i in spec.inputs:
            if i.source != "url":
                out.append((next(paths), i.mount_path))  # type: ignore[arg-type]
                continue
            folder = str(PurePosixPath(i.mount_path).parent)
            if folder in folders:
                out.append((folders.pop(folder), folder))
        return out

    def _execute(
        self, record: Any, request: dict[str, Any], cancel: threading.Event
    ) -> tuple[RunResult, str]:
        """Run the execution and publish its result; blocking (a pool thread)."""
        executor = self._executors[record.spec.engine]
        workdir = Path(tempfile.mkdtemp(prefix="exec-", dir=self._scratch))
        try:
            result = executor.run(RunRequest(workdir=workdir, **request), cancel)
            if result.error == "cancelled":
                return result, ""
            cid = publish_result(
                self._blocks, result.outputs_dir, result.stdout, result.stderr, result.exit_code
            )
            return result, cid
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _unpin(self, cid_text: str) -> None:
        if cid_text:
            await asyncio.to_thread(self._blocks.unpin, bytes(CID.parse(cid_text)))

    # -- state changes ------------------------------------------------------------------

    async def _advance(self, record: Any, state: ExecutionState, message: str = "") -> None:
        """Write `state` (with the record's result fields), then report it to the requester."""
        ex = record.execution
        snapshot = pb.Execution()
        snapshot.CopyFrom(ex)

        def write(tx: Tx) -> Any:
            rec = tx.get_local(ex.id)
            if rec is None:
                raise BacalhauError(f"execution {ex.id} is not known here")
            stored_state = rec.execution.state
            rec.execution.CopyFrom(snapshot)
            rec.execution.state = stored_state
            set_execution_state(rec.execution, state, message)
            tx.put_local(rec)
            return rec

        rec = await asyncio.wrap_future(self._store.submit(write))
        ex.CopyFrom(rec.execution)
        self._report(rec)

    def _report(self, rec: Any) -> None:
        ex = rec.execution
        update = peer_pb2.ExecutionUpdate(
            job_id=ex.job_id,
            execution_id=ex.id,
            state=ex.state,
            result_cid=ex.result_cid,
            stderr_tail=ex.stderr_tail,
            message=ex.message,
            inputs=ex.inputs,
        )
        if ex.HasField("exit_code"):
            update.exit_code = ex.exit_code
        if not self._net.send(rec.requester_node_id, execution_update=update):
            log.warning("requester %s of %s is not connected", rec.requester_node_id, ex.job_id)

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop running executions and wait (a few seconds) for them to record it.

        What is still waiting then (say, for a module from a requester that went away) is
        cancelled; its record stays as it was and a restart takes it up again.
        """
        for event in self._cancels.values():
            event.set()
        self.inputs.close()
        tasks: list[asyncio.Future[Any]] = [*self._tasks, *self.inputs.pending]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_CLOSE_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._pool.shutdown(wait=True)
        for executor in self._executors.values():
            close = getattr(executor, "close", None)
            if close is not None:
                await asyncio.to_thread(close)


class _LogForwarder:
    """Sends a running program's output to its requester (from the executor's threads)."""

    CHUNK = 64 << 10

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        net: Network,
        requester: str,
        job_id: str,
        execution_id: str,
        cap: int,
    ) -> None:
        self._loop = loop
        self._net = net
        self._requester = requester
        self._job_id = job_id
        self._execution_id = execution_id
        self._cap = cap
        self._sent = {1: 0, 2: 0}

    def __call__(self, stream: int, data: bytes) -> None:
        offset = self._sent.get(stream)
        if offset is None or offset >= self._cap:
            return
        data = data[: self._cap - offset]
        self._sent[stream] = offset + len(data)
        for i in range(0, len(data), self.CHUNK):
            msg = peer_pb2.ExecutionLog(
                job_id=self._job_id,
                execution_id=self._execution_id,
                stream=stream,
                offset=offset + i,
                data=data[i : i + self.CHUNK],
            )
            with contextlib.suppress(RuntimeError):  # the loop closed: the node is stopping
                self._loop.call_soon_threadsafe(self._send, msg)

    def _send(self, msg: Any) -> None:
        self._net.send(self._requester, log=msg)
