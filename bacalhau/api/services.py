"""gRPC servicers: thin adapters from ClientService and PeerService onto a node's parts."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from bacalhau._pb.bacalhau.v1 import client_pb2, client_pb2_grpc, peer_pb2_grpc
from bacalhau.api.errors import streaming, unary
from bacalhau.api.validate import validate_spec
from bacalhau.content import Importer, ImportOptions, car, dag
from bacalhau.content.cid import CID
from bacalhau.content.errors import ContentError, NotFound
from bacalhau.datastore.base import ACTIVE_JOB_STATES, JobQuery
from bacalhau.errors import UsageError
from bacalhau.models import ExecutionState, JobState
from bacalhau.network import serve_blocks
from bacalhau.version import __version__

if TYPE_CHECKING:
    from bacalhau.node.node import Node

_RESULT_STATES = (ExecutionState.PUBLISHED, ExecutionState.RESULT_ACCEPTED)
_LOG_FILES = (
    ("stdout", client_pb2.LogChunk.STREAM_STDOUT),
    ("stderr", client_pb2.LogChunk.STREAM_STDERR),
)
_LOG_CHUNK = 64 << 10


class ClientServicer(client_pb2_grpc.ClientServiceServicer):  # type: ignore[misc]
    def __init__(self, node: Node) -> None:
        self.node = node

    @unary
    async def Submit(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await asyncio.to_thread(validate_spec, request.spec, self.node.blockstore)
        job = await self.node.requester.submit(request.spec, request.client_id[:256])
        self.node.submitted.inc()
        return client_pb2.SubmitResponse(job_id=job.id, job=job)

    @unary
    async def GetJob(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        job = self.node.store.get_job(request.job_id)
        if request.wait:
            job = await self.node.wait_final(job.id)
        return client_pb2.GetJobResponse(job=job, events=self.node.store.events(job.id))

    @unary
    async def ListJobs(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        states = frozenset(request.states) or (frozenset() if request.all else ACTIVE_JOB_STATES)
        try:
            query = JobQuery(
                states=states,
                client_id=request.client_id,
                labels=dict(request.labels),
                oldest_first=request.oldest_first,
                limit=request.limit,
                cursor=request.cursor,
            )
            bytes.fromhex(request.cursor)
        except ValueError:
            raise UsageError(f"bad cursor {request.cursor!r}") from None
        page = self.node.store.query_jobs(query)
        return client_pb2.ListJobsResponse(jobs=page.jobs, next_cursor=page.next_cursor)

    @streaming
    async def WatchEvents(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        job_id = self.node.store.get_job(request.job_id).id
        seq = request.after_seq
        while True:
            waiter = self.node.watch.waiter(job_id)
            try:
                events = self.node.store.events(job_id, seq)
                for ev in events:
                    yield ev
                    seq = ev.seq
                if not request.follow:
                    return
                if not events and JobState.of(self.node.store.get_job(job_id).state).is_terminal:
                    return
                if not events:
                    await waiter
            finally:
                self.node.watch.forget(job_id, waiter)

    @streaming
    async def Logs(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        job = self.node.store.get_job(request.job_id)
        sent: dict[Any, int] = {stream: 0 for _, stream in _LOG_FILES}  # bytes sent live
        live_id = ""
        if request.follow:
            async for chunk in self._follow(job.id, sent):
                live_id = chunk.execution_id
                yield chunk
            job = self.node.store.get_job(job.id)
        ex = _result_execution(job)
        if ex is None or (live_id and ex.id != live_id):
            return
        root = await self.node.ensure_dag(ex.result_cid, [ex.node_id])
        for name, stream in _LOG_FILES:
            cid = _child(self.node, root, name)
            if cid is None:
                continue
            skip = sent[stream]
            for chunk in dag.cat(self.node.blockstore.get, cid):
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                chunk, skip = chunk[skip:], 0
                for i in range(0, len(chunk), _LOG_CHUNK):
                    yield client_pb2.LogChunk(
                        stream=stream, data=chunk[i : i + _LOG_CHUNK], execution_id=ex.id
                    )

    async def _follow(self, job_id: str, sent: dict[Any, int]) -> AsyncIterator[Any]:
        """What the job's first execution writes, as it writes it, until the job is final."""
        logs = self.node.requester.logs
        live = None
        try:
            while True:
                waiter = self.node.watch.waiter(job_id)
                changed: asyncio.Future[Any] | None = None
                try:
                    final = JobState.of(self.node.store.get_job(job_id).state).is_terminal
                    event = None if final else logs.changed(job_id)
                    if event is not None:
                        event.clear()
                    live = live or logs.first(job_id)
                    if live is not None:
                        for (_, stream), buf in zip(
                            _LOG_FILES, live[1].streams.values(), strict=True
                        ):
                            data = bytes(buf[sent[stream] :])
                            sent[stream] += len(data)
                            for i in range(0, len(data), _LOG_CHUNK):
                                yield client_pb2.LogChunk(
                                    stream=stream,
                                    data=data[i : i + _LOG_CHUNK],
                                    execution_id=live[0],
                                )
                    if event is None:
                        return
                    changed = asyncio.ensure_future(event.wait())
                    await asyncio.wait({waiter, changed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if changed is not None:
                        changed.cancel()
                    self.node.watch.forget(job_id, waiter)
        finally:
            if JobState.of(self.node.store.get_job(job_id).state).is_terminal:
                logs.drop({job_id})

    @unary
    async def Cancel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        job = await self.node.requester.cancel(request.job_id, request.reason)
        return client_pb2.CancelResponse(job=job)

    @streaming
    async def GetResults(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        holders: list[str] = []
        if request.cid:
            cid_text = str(CID.parse(request.cid))
        else:
            job = self.node.store.get_job(request.job_id)
            ex = _result_execution(job)
            if ex is None:
                state = JobState.of(job.state).value
                raise NotFound(
                    f"job {job.id} has no result yet (it is {state})",
                    hint="wait for it: 'bacalhauctl describe' shows its progress",
                )
            cid_text, holders = ex.result_cid, [ex.node_id]
        root = await self.node.ensure_dag(cid_text, holders)
        yield client_pb2.ResultsChunk(root_cid=cid_text)
        async for block in serve_blocks(
            self.node.blockstore,
            [root],
            recursive=True,
            sent=self.node.block_bytes_sent,
            skip=frozenset(request.have),
        ):
            yield client_pb2.ResultsChunk(cid=block.cid, data=block.data)

    async def AddData(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await self._add_data(request_iterator)
        except (UsageError, ContentError) as exc:  # ContentError: a corrupt CAR
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except OSError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot store the upload: {exc}")

    async def _add_data(self, request_iterator: Any) -> Any:
        tmp_dir = self.node.data_dir / "tmp"
        tmp_dir.mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="upload-", dir=tmp_dir))
        try:
            header, target, size = await _receive_upload(request_iterator, work)
            if header.car:
                cid = await asyncio.to_thread(self._add_car, str(target))
                return client_pb2.AddDataResponse(cid=str(CID.from_bytes(cid)), size=size)
            options = ImportOptions(
                cid_version=header.cid_version, raw_leaves=header.raw_leaves or None
            )

            def add() -> bytes:
                with self.node.blockstore.batch() as batch:
                    with Importer(options, batch, workers=1) as importer:
                        root = importer.add_path(target)
                    batch.pin(root.cid)
                return root.cid

            cid = await asyncio.to_thread(add)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        return client_pb2.AddDataResponse(cid=str(CID.from_bytes(cid)), size=size)

    def _add_car(self, path: str) -> bytes:
        """Store the blocks of the CAR at `path`; pin its root once its DAG is all there."""
        store = self.node.blockstore
        with open(path, "rb") as f:
            roots, sections = car.read_car(f)
            if len(roots) != 1:
                raise UsageError(f"an uploaded CAR must have one root, not {len(roots)}")
            with store.batch() as batch:
                for block_cid, block in sections:
                    batch.put(block_cid, block)
        root = bytes(roots[0])
        try:
            for _ in dag.walk(store.get, root):
                pass
        except NotFound:
            raise UsageError(
                f"the uploaded CAR lacks blocks of the DAG under {roots[0]}",
                hint="export the whole DAG (bacalhauctl car export CID)",
            ) from None
        with store.batch() as batch:
            batch.pin(root)
        return root

    @unary
    async def NodeInfo(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = self.node
        peers = [
            client_pb2.PeerInfo(
                node_id=rec.node_id,
                address=rec.addresses[0] if rec.addresses else "",
                addresses=rec.addresses,
                connected=alive,
                alive=alive,
                last_seen_unix_nano=seen,
                engines=rec.engines,
                resources=rec.resources,
                labels=rec.labels,
                version=rec.version,
                free=status.free if status is not None else None,
                queued=status.queued if status is not None else 0,
            )
            for rec, alive, seen, status in node.peers.infos()
        ]
        return client_pb2.NodeInfoResponse(
            node_id=node.node_id,
            version=__version__,
            address=node.address,
            peers=peers,
            engines=node.compute.engines,
            labels=node.config.labels,
        )


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):  # type: ignore[misc]
    def __init__(self, node: Node) -> None:
        self.node = node

    async def Connect(
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for env in self.node.network.serve_stream(request_iterator):
            yield env

    @streaming
    async def GetBlocks(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for block in serve_blocks(
            self.node.blockstore,
            list(request.cids),
            recursive=request.recursive,
            sent=self.node.block_bytes_sent,
        ):
            yield block


async def _receive_upload(request_iterator: Any, work: Path) -> tuple[Any, Path, int]:
    """Write an AddData stream under `work`: (header, the file or folder, bytes received).

    Raises UsageError for a stream that does not start with a header, chunks of a folder
    before any file entry, or an entry path that is absolute or has '.', '..' or empty parts.
    """
    header = None
    target = work / "upload"
    f: Any = None
    size = 0
    try:
        async for item in request_iterator:
            kind = item.WhichOneof("item")
            if kind == "header":
                if header is not None:
                    raise UsageError("AddData sent a second header")
                header = item.header
                name = header.name if _safe_part(header.name) else "upload"
                target = work / name
                if header.folder:
                    target.mkdir()
                else:
                    f = open(target, "wb")  # noqa: SIM115 - closed below
            elif header is None:
                raise UsageError("AddData must start with a header message")
            elif kind == "entry":
                if not header.folder:
                    raise UsageError("AddData: entries are for folders (header.folder)")
                parts = item.entry.path.split("/")
                if not all(_safe_part(p) for p in parts):
                    raise UsageError(f"AddData: unsafe path {item.entry.path[:200]!r}")
                path = target.joinpath(*parts)
                if f is not None:
                    f.close()
                    f = None
                if item.entry.directory:
                    await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    f = open(path, "xb")  # noqa: SIM115 - closed below
            else:
                if f is None:
                    raise UsageError("AddData: file bytes before any file entry")
                f.write(item.chunk)
                size += len(item.chunk)
    except FileExistsError as e:
        raise UsageError(f"AddData: {Path(e.filename).name} was sent twice") from None
    finally:
        if f is not None:
            f.close()
    if header is None:
        raise UsageError("AddData received nothing")
    return header, target, size


def _safe_part(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _result_execution(job: Any) -> Any:
    """The execution whose result stands for the job: published first, else any with one."""
    with_result = [ex for ex in job.executions if ex.result_cid]
    for ex in with_result:
        if ExecutionState.of(ex.state) in _RESULT_STATES:
            return ex
    return with_result[0] if with_result else None


def _child(node: Node, root: bytes, name: str) -> bytes | None:
    for link in dag.decode(root, node.blockstore.get(root)).links:
        if link.name == name.encode():
            return bytes(link.cid)
    return None
