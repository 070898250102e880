"""Running: wait for resources, run the executor on a bounded pool of threads, store the result.

`run` is blocking and runs in a pool thread: the executor runs the request in a fresh work
folder, and its outputs, stdout, stderr and exit code are added to the blockstore as one
pinned UnixFS folder (`results.publish_result`) whose CID the requester is then told.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bacalhau.blockstore import Blockstore
from bacalhau.compute.capacity import Allocation, Allocator, Resources
from bacalhau.compute.results import publish_result
from bacalhau.executor import Executor
from bacalhau.executor.base import RunRequest, RunResult

log = logging.getLogger(__name__)
_ALLOCATE_POLL_S = 0.5  # how often a job waiting for resources looks at its cancel event


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
    ) -> None:
        """`bad_actor` (devstack --bad-actors only): every result is made wrong on purpose."""
        self.allocator = allocator
        self.bad_actor = bad_actor
        # (what, engine, seconds) of each run and result stored, for the node's histograms
        self.on_timing: Callable[[str, str, float], None] = lambda what, engine, s: None
        self._blocks = blockstore
        self._scratch = scratch
        self._released = asyncio.Event()  # set whenever resources are given back
        self._pool = ThreadPoolExecutor(max_parallel, thread_name_prefix="execution")

    async def allocate(self, wants: Resources, cancel: threading.Event) -> Allocation | None:
        """Wait until `wants` is free and take it; None if cancelled meanwhile."""
        while (allocation := self.allocator.allocate(wants)) is None:
            if cancel.is_set():
                return None
            self._released.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), _ALLOCATE_POLL_S)
        return allocation

    def release(self, allocation: Allocation) -> None:
        self.allocator.release(allocation)
        self._released.set()

    async def run(
        self, executor: Executor, request: dict[str, Any], cancel: threading.Event
    ) -> tuple[RunResult, str]:
        """Run `request` in a pool thread; (the result, its CID; "" if cancelled)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run, executor, request, cancel)

    def _run(
        self, executor: Executor, request: dict[str, Any], cancel: threading.Event
    ) -> tuple[RunResult, str]:
        workdir = Path(tempfile.mkdtemp(prefix="exec-", dir=self._scratch))
        try:
            started = time.monotonic()
            result = executor.run(RunRequest(workdir=workdir, **request), cancel)
            self.on_timing("execution", executor.name, time.monotonic() - started)
            if result.error == "cancelled":
                return result, ""
            started = time.monotonic()
            stdout = result.stdout
            if self.bad_actor:  # a different lie every time: bad actors cannot agree either
                stdout += f"\nBAD ACTOR {os.urandom(8).hex()}\n".encode()
                log.warning("BAD ACTOR: returning a wrong result on purpose (devstack)")
            cid = publish_result(
                self._blocks, result.outputs_dir, stdout, result.stderr, result.exit_code
            )
            self.on_timing("result_storage", executor.name, time.monotonic() - started)
            return result, cid
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
