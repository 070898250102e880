"""Running: wait for resources, run the executor on a bounded pool of threads, store the result.

`run` is blocking and runs in a pool thread: the executor runs the request in a fresh work
folder, and its outputs, stdout, stderr and exit code are added to the blockstore as one
pinned UnixFS folder (`results.publish_result`) whose CID the requester is then told.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bacalhau.blockstore import Blockstore
from bacalhau.compute.capacity import Allocation, Allocator, Resources
from bacalhau.compute.results import publish_result
from bacalhau.executor import Executor
from bacalhau.executor.base import RunRequest, RunResult
from bacalhau.observability.tracing import Tracing

log = logging.getLogger(__name__)


class Runner:
    """Lends resources to executions and runs them, at most `max_parallel` at once."""

    def __init__(
        self,
        *,
        allocator: Allocator,
        blockstore: Blockstore,
        scratch: Path,
        max_parallel: int,
        bad_actor: bool = False,
        tracing: Tracing | None = None,
    ) -> None:
        """`bad_actor` (devstack --bad-actors only): every result is made wrong on purpose."""
        self.allocator = allocator
        self.tracing = tracing or Tracing.off()
        self.bad_actor = bad_actor
        # (what, engine, seconds) of each run and result stored, for the node's histograms
        self.on_timing: Callable[[str, str, float], None] = lambda what, engine, s: None
        self._blocks = blockstore
        self._scratch = scratch
        # executions waiting for resources, served in the order they came (one wakes when
        # what it wants is free, not every one of them at each release)
        self._waiters: deque[tuple[Resources, asyncio.Future[Any], threading.Event]] = deque()
        self._pool = ThreadPoolExecutor(max_parallel, thread_name_prefix="execution")

    async def allocate(self, wants: Resources, cancel: threading.Event) -> Allocation | None:
        """Wait until `wants` is free and take it; None if cancelled meanwhile. Waiting
        executions get their resources first come, first served."""
        if cancel.is_set():
            return None
        if not self._waiters and (allocation := self.allocator.allocate(wants)) is not None:
            return allocation
        # Woken by `wake` (a release, or a cancel: whoever sets `cancel` calls it), not polled.
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append((wants, fut, cancel))
        try:
            result: Allocation | None = await asyncio.shield(fut)
        except asyncio.CancelledError:
            if fut.done() and fut.result() is not None:
                self.release(fut.result())
            fut.cancel()
            raise
        return result

    def wake(self) -> None:
        """Give waiting executions what is free, in the order they came; those cancelled
        meanwhile stop waiting. Call it after setting an execution's cancel event."""
        while self._waiters:
            wants, fut, cancel = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
            elif cancel.is_set():
                self._waiters.popleft()
                fut.set_result(None)
            elif (allocation := self.allocator.allocate(wants)) is not None:
                self._waiters.popleft()
                fut.set_result(allocation)
            else:
                break

    def release(self, allocation: Allocation) -> None:
        self.allocator.release(allocation)
        self.wake()

    async def run(
        self, executor: Executor, request: dict[str, Any], cancel: threading.Event, job_id: str = ""
    ) -> tuple[RunResult, str]:
        """Run `request` in a pool thread; (the result, its CID: of stdout and stderr only if
        it was cancelled)."""
        loop = asyncio.get_running_loop()
        run = contextvars.copy_context().run  # the caller's span is the parent of ours
        return await loop.run_in_executor(
            self._pool, run, self._run, executor, request, cancel, job_id
        )

    def _run(
        self, executor: Executor, request: dict[str, Any], cancel: threading.Event, job_id: str
    ) -> tuple[RunResult, str]:
        workdir = Path(tempfile.mkdtemp(prefix="exec-", dir=self._scratch))
        try:
            started = time.monotonic()
            with self.tracing.span("run", job_id=job_id, engine=executor.name) as span:
                result = executor.run(RunRequest(workdir=workdir, **request), cancel)
                if self.tracing.on:
                    span.set_attribute("bacalhau.exit_code", result.exit_code)
                    span.set_attribute("bacalhau.error", result.error or "")
            self.on_timing("execution", executor.name, time.monotonic() - started)
            if result.error == "cancelled":  # what it wrote until then, kept for its logs
                return result, publish_result(
                    self._blocks, None, result.stdout, result.stderr, result.exit_code
                )
            started = time.monotonic()
            stdout = result.stdout
            if self.bad_actor:  # a different lie every time: bad actors cannot agree either
                stdout += f"\nBAD ACTOR {os.urandom(8).hex()}\n".encode()
                log.warning("BAD ACTOR: returning a wrong result on purpose (devstack)")
            with self.tracing.span("result_storage", job_id=job_id) as span:
                cid = publish_result(
                    self._blocks, result.outputs_dir, stdout, result.stderr, result.exit_code
                )
                span.set_attribute("bacalhau.result_cid", cid)
            self.on_timing("result_storage", executor.name, time.monotonic() - started)
            return result, cid
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
