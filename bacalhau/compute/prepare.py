"""Input preparation: what an executor is given for an execution, its data fetched first.

Inputs by CID and the engine's own data (a module, a context folder) come through the input
cache, held until the execution releases them; URL inputs are downloaded and recorded in the
execution (`Execution.inputs`). Output a running program writes goes to its requester as
`ExecutionLog` messages (`LogForwarder`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bacalhau._pb.bacalhau.v1 import peer_pb2
from bacalhau.compute.inputs import InputCache
from bacalhau.engines import get as get_engine
from bacalhau.models import pb
from bacalhau.network import Network
from bacalhau.observability.tracing import Tracing


async def prepare_request(
    record: Any,
    inputs: InputCache,
    held: list[Path],
    defaults: dict[str, Any],
    on_fetch: Callable[[float], None] = lambda seconds: None,
    tracing: Tracing | None = None,
) -> dict[str, Any]:
    """The RunRequest fields for `record` (all but workdir, cpu share and GPU devices).
    `on_fetch(seconds)` is told how long each input by CID took to have (a job's URL inputs,
    downloaded together, count as one).

    Everything fetched is appended to `held` (release it when the run ends), also when this
    raises: the first failure (NotFound, UrlError, ...) once every fetch settled.
    """
    spec, requester, ex = record.spec, record.requester_node_id, record.execution
    fetch = _Fetch(inputs, requester, held, on_fetch, tracing or Tracing.off(), ex.job_id)
    engine = get_engine(spec.engine)
    wanted = engine.data_cids(spec)
    disk = spec.resources.disk_bytes or defaults["disk_limit_bytes"]
    got = await asyncio.gather(
        _mounts(record, inputs, held, disk, on_fetch, fetch),
        *(fetch.hold(c, disk) for c in wanted.values()),
        return_exceptions=True,
    )
    for g in got:
        if isinstance(g, BaseException):
            raise g
    fetched: dict[str, Path] = dict(zip(wanted, got[1:], strict=True))  # type: ignore[arg-type]
    return {
        **defaults,
        "inputs": got[0],
        "outputs": [(o.name, o.path) for o in spec.outputs],
        "timeout_s": spec.timeout_seconds or defaults["timeout_s"],
        "memory_limit_bytes": spec.resources.memory_bytes or defaults["memory_limit_bytes"],
        "disk_limit_bytes": disk,
        "cpu": spec.resources.cpu,
        **engine.to_request(spec, fetched, ex.job_id, ex.id),
    }


async def _mounts(
    record: Any,
    inputs: InputCache,
    held: list[Path],
    disk: int,
    on_fetch: Callable[[float], None],
    fetch: _Fetch,
) -> list[tuple[Path, str]]:
    """The job's inputs as (local path, guest path); each input by CID at most `disk` bytes.

    URL inputs that share a mount folder are mounted as one folder, in the place of the
    first of them; their CIDs are recorded in the execution's `inputs`.
    """
    spec = record.spec

    async def by_url() -> dict[str, Path]:
        urls = [(i.url, i.mount_path) for i in spec.inputs if i.source == "url"]
        folders = {}
        del record.execution.inputs[:]  # run again after a restart: resolved afresh
        started = time.monotonic()
        with fetch.tracing.span("input_fetch", job_id=fetch.job_id, source="url", urls=len(urls)):
            got = await inputs.acquire_urls(urls)
        on_fetch(time.monotonic() - started)
        for path, folder, resolved in got:
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
        *(fetch.hold(i.cid, disk) for i in cids),
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


@dataclass
class _Fetch:
    """Fetches a job's inputs by CID through the cache: timed, traced, held."""

    inputs: InputCache
    requester: str
    held: list[Path]
    on_fetch: Callable[[float], None]
    tracing: Tracing
    job_id: str

    async def hold(self, cid_text: str, disk: int) -> Path:
        started = time.monotonic()
        with self.tracing.span("input_fetch", job_id=self.job_id, cid=cid_text) as span:
            if self.tracing.on:
                span.set_attribute("bacalhau.cached", self.inputs.cached(cid_text))
            path = await self.inputs.acquire(cid_text, self.requester, disk)
            if self.tracing.on:
                span.set_attribute("bacalhau.bytes", self.inputs.size_of(path))
        self.on_fetch(time.monotonic() - started)
        self.held.append(path)
        return path


class LogForwarder:
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
