"""gRPC servicers: thin adapters from ClientService and PeerService onto the service layer.

Each method turns the request into a plain call on a collaborator it was given (jobs, results,
data, info, the network) and the answer into the reply; errors become statuses in `errors.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from bacalhau._pb.bacalhau.v1 import client_pb2, client_pb2_grpc, peer_pb2, peer_pb2_grpc
from bacalhau.api.auth import caller
from bacalhau.api.errors import BadField, MissingField, abort, streaming, unary
from bacalhau.api.relay import DEFAULT_NETWORK_LIMIT, MAX_NETWORK_LIMIT, Relay, raw_call
from bacalhau.content.cid import CID
from bacalhau.content.errors import ContentError
from bacalhau.content.paths import parts_of, split_path
from bacalhau.datastore import AmbiguousID, JobNotFound, order_key
from bacalhau.errors import BacalhauError, UsageError
from bacalhau.network import Network
from bacalhau.network.blocks import check_want
from bacalhau.service import DataService, InfoService, JobService, ResultService, TraceService
from bacalhau.service.files import DEFAULT_CHUNK, MAX_CHUNK, FileReader
from bacalhau.service.info import PeerView
from bacalhau.spec import SpecError

MAX_HAVE = 100_000  # CIDs a GetResults request may say the client has


def require(request: Any, *fields: str) -> None:
    """Raise MissingField for the first of `fields` that is unset or empty."""
    for field in fields:
        if not getattr(request, field):
            raise MissingField(field)


def traceparent(context: grpc.aio.ServicerContext) -> str:
    """The call's W3C `traceparent` metadata ("" if none; the tracer checks its form)."""
    for key, value in context.invocation_metadata() or ():
        if key == "traceparent" and isinstance(value, str):
            return value
    return ""


class ClientServicer(client_pb2_grpc.ClientServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        jobs: JobService,
        results: ResultService,
        data: DataService,
        info: InfoService,
        traces: TraceService | None = None,
        relay: Relay | None = None,
    ) -> None:
        self.jobs = jobs
        self.results = results
        self.data = data
        self.info = info
        self.traces = traces
        self.relay = relay
        # A read fetches onto this node no more than an upload may put there.
        self.files = FileReader(results, data.max_bytes)

    @unary
    async def Submit(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not request.HasField("spec"):
            raise MissingField("spec")
        job = await self.jobs.submit(request.spec, caller(), traceparent(context))
        return client_pb2.SubmitResponse(job_id=job.id, job=job)

    @unary
    async def GetTrace(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        require(request, "job_id")
        if self.traces is None:
            raise BacalhauError("this node keeps no traces")
        job_id, spans, missing = await self.traces.trace(request.job_id, caller())
        return client_pb2.GetTraceResponse(job_id=job_id, spans=spans, missing_nodes=missing)

    @unary
    async def GetJob(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        require(request, "job_id")
        who = caller()
        job = self.jobs.describe(request.job_id, who)
        if request.wait:
            await self.jobs.wait_final(job.id)
            job = self.jobs.describe(job.id, who)
        return client_pb2.GetJobResponse(job=job, events=self.jobs.events(job.id))

    @unary
    async def ListJobs(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        limit = request.limit
        if request.network:
            if limit > MAX_NETWORK_LIMIT:
                raise BadField("limit", f"a network-wide list takes at most {MAX_NETWORK_LIMIT}")
            limit = limit or DEFAULT_NETWORK_LIMIT
        page = self.jobs.list(
            caller(),
            all_users=request.all_users,
            states=frozenset(request.states),
            all=request.all,
            client_id=request.client_id,
            labels=dict(request.labels),
            oldest_first=request.oldest_first,
            limit=limit,
            cursor=request.cursor,
        )
        call = raw_call()
        if not request.network or self.relay is None or call is None or call.relayed:
            return client_pb2.ListJobsResponse(jobs=page.jobs, next_cursor=page.next_cursor)
        theirs, more, missing = await self.relay.list_network(call)
        return _merged(page, theirs, more, missing, limit, request.oldest_first)

    @streaming
    async def WatchEvents(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        require(request, "job_id")
        async for ev in self.jobs.watch_events(request.job_id, request.after_seq, request.follow):
            yield ev

    @streaming
    async def Logs(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        require(request, "job_id")
        shard = request.shard if request.HasField("shard") else None
        logs = self.jobs.logs(
            request.job_id, follow=request.follow, shard=shard, execution_id=request.execution_id
        )
        async for c in logs:
            stream: Any = c.stream  # 1 stdout, 2 stderr: the proto enum's values
            yield client_pb2.LogChunk(stream=stream, data=c.data, execution_id=c.execution_id)

    @unary
    async def Cancel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        require(request, "job_id")
        job = await self.jobs.cancel(request.job_id, caller(), request.reason)
        return client_pb2.CancelResponse(job=job)

    @streaming
    async def GetResults(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        holders: list[str] = []
        if bool(request.cid) == bool(request.job_id):
            if request.cid:
                raise BadField("cid", "give job_id or cid, not both")
            raise MissingField("job_id", "give job_id, or cid")
        have = _have(request)
        if request.cid:
            cid_text = str(_cid(request.cid, "cid"))
        else:
            job = self.jobs.get(request.job_id)
            cid_text, holders = self.results.job_result(job)
            if self.traces is not None:
                with self.traces.span("get", job, result_cid=cid_text) as span:
                    async for chunk in self._results(cid_text, holders, have):
                        yield chunk
                    if span is not None:
                        span.set_attribute("bacalhau.holders", len(holders))
                return
        async for chunk in self._results(cid_text, holders, have):
            yield chunk

    async def _results(
        self, cid_text: str, holders: list[str], have: frozenset[bytes]
    ) -> AsyncIterator[Any]:
        root = await self.results.ensure_dag(cid_text, holders)
        yield client_pb2.ResultsChunk(root_cid=cid_text)
        async for block in self.results.blocks([root], recursive=True, skip=have):
            yield client_pb2.ResultsChunk(
                cid=block.cid, data=block.data, block_cid=str(CID.from_bytes(block.cid))
            )

    @streaming
    async def Cat(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        # Any signed caller, as GetResults: a CID or a job ID is the capability to read.
        if bool(request.path) == bool(request.job_id):
            if request.path:
                raise BadField("job_id", "give path (CID/path) or job_id (with file), not both")
            raise MissingField("path", "give path (CID or CID/path), or job_id and file")
        if request.chunk_size > MAX_CHUNK:
            raise BadField("chunk_size", f"chunk_size is at most {MAX_CHUNK}")
        holders: list[str] = []
        label = ""
        if request.path:
            if request.file:
                raise BadField("file", "file goes with job_id; with path, write CID/path")
            root, parts = split_path(request.path)
            root = str(_cid(root, "path"))
        else:
            require(request, "file")
            parts = parts_of(request.file)
            job = self.jobs.get(request.job_id)
            shard = request.shard if request.HasField("shard") else 0
            if shard >= max(job.shard_count, 1):
                raise BadField("shard", f"job {job.id} has no shard {shard}")
            root, holders = self.results.job_result(job, shard)
            label = f"the result of {job.id}" + (f" shard {shard}" if job.shard_count > 1 else "")
        ref = await self.files.find(root, parts, holders, label)
        first: Any = client_pb2.CatChunk(cid=ref.cid_text, size=ref.size)
        async for data in self.files.read(ref, request.chunk_size or DEFAULT_CHUNK):
            if first is not None:
                first.data = data
                yield first
                first = None
            else:
                yield client_pb2.CatChunk(data=data)
        if first is not None:  # an empty file: one message, no bytes
            yield first

    async def AddData(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            who = caller()
            self.jobs.access.check_submit(who, "upload data")
            added = await self.data.add(request_iterator, who)
        except ContentError as exc:  # a corrupt or incomplete CAR
            await abort(context, UsageError(exc.message, hint=exc.hint))
        except OSError as exc:
            await abort(context, BacalhauError(f"cannot store the upload: {exc}"))
        except BacalhauError as exc:  # refused; or the blockstore or the datastore failed
            await abort(context, exc)
        return client_pb2.AddDataResponse(
            cid=added.cid,
            size=added.size,
            entries=[client_pb2.AddedEntry(path=p, cid=c) for p, c in added.entries],
            entries_truncated=added.truncated,
        )

    @unary
    async def Lineage(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        require(request, "cid")
        nodes = self.jobs.lineage(request.cid, request.depth)
        return client_pb2.LineageResponse(nodes=[client_pb2.LineageNode(**n) for n in nodes])

    @unary
    async def ListUploads(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        records, used = await asyncio.to_thread(self.data.uploads, caller())
        return client_pb2.ListUploadsResponse(
            uploads=[_upload(r) for r in records], used_bytes=used, quota_bytes=self.data.quota
        )

    @unary
    async def Unpin(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        require(request, "cid")
        unpinned, removed = await self.data.unpin(request.cid, caller())
        return client_pb2.UnpinResponse(unpinned=unpinned, removed=[_upload(r) for r in removed])

    @unary
    async def CollectGarbage(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        r = await self.data.collect_garbage(caller())
        return client_pb2.CollectGarbageResponse(
            blocks_removed=r.blocks_removed,
            bytes_removed=r.bytes_removed,
            bytes_reclaimed=r.bytes_reclaimed,
            packs_rewritten=r.packs_rewritten,
            live_blocks=r.live_blocks,
            corrupt_blocks=len(r.corrupt),
            seconds=r.seconds,
        )

    @unary
    async def NodeInfo(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        node = self.info.node()
        return client_pb2.NodeInfoResponse(
            node_id=node.node_id,
            version=node.version,
            address=node.address,
            peers=[_peer(p) for p in node.peers],
            engines=node.engines,
            labels=node.labels,
            resources=node.resources,
            nvidia_container_runtime=node.nvidia_container_runtime,
        )

    @unary
    async def ListPeers(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        # Any signed caller: the peer table is bounded (10 x --max-peers records) and kept in
        # memory, so an answer costs a copy of it and nothing else.
        peers = sorted(self.info.node().peers, key=lambda p: (not p.alive, p.record.node_id))
        if request.alive_only:
            peers = [p for p in peers if p.alive]
        if request.limit:
            peers = peers[: request.limit]
        return client_pb2.ListPeersResponse(peers=[_peer(p) for p in peers])


def _merged(
    page: Any, theirs: list[Any], more: list[str], missing: list[str], limit: int, oldest: bool
) -> Any:
    """One page of the network's jobs: this node's page and its peers', in time order. Every
    node's cursor is the key of the last job sent (create time, ID), so the next page starts
    after it on each node alike."""
    jobs = {job.id: job for job in [*page.jobs, *theirs]}
    ordered = sorted(jobs.values(), key=order_key, reverse=not oldest)
    shown = ordered[:limit]
    cut = len(ordered) > limit or bool(more) or bool(page.next_cursor)
    cursor = order_key(shown[-1]).hex() if cut and shown else ""
    return client_pb2.ListJobsResponse(jobs=shown, next_cursor=cursor, missing_nodes=missing)


def _peer(p: PeerView) -> Any:
    return client_pb2.PeerInfo(
        node_id=p.record.node_id,
        address=p.record.addresses[0] if p.record.addresses else "",  # deprecated
        addresses=p.record.addresses,
        connected=p.alive,  # deprecated
        alive=p.alive,
        last_seen_unix_nano=p.last_seen_unix_nano,
        engines=p.record.engines,
        resources=p.record.resources,
        labels=p.record.labels,
        version=p.record.version,
        free=p.status.free if p.status is not None else None,
        queued=p.status.queued if p.status is not None else 0,
        results_accepted=p.record.results_accepted,
        results_rejected=p.record.results_rejected,
        penalized_until_unix_nano=p.record.penalized_until_unix_nano,
    )


def _cid(text: str, field: str) -> CID:
    try:
        return CID.parse(text)
    except BacalhauError as e:
        raise BadField(field, f"{field}: {e.message}") from None


def _have(request: Any) -> frozenset[bytes]:
    """The blocks a GetResults caller has: have_cids (strings), and the deprecated `have`."""
    if len(request.have_cids) + len(request.have) > MAX_HAVE:
        raise BadField("have_cids", f"have_cids holds more than {MAX_HAVE} CIDs")
    have = {bytes(_cid(c, f"have_cids[{i}]")) for i, c in enumerate(request.have_cids)}
    return frozenset(have | set(request.have))


def _upload(record: Any) -> Any:
    return client_pb2.Upload(
        cid=record.cid,
        bytes=record.bytes,
        create_time_unix_nano=record.create_time_unix_nano,
        user_id=record.user_id,
    )


def _no_job(job_id: str) -> str:
    raise JobNotFound(f"job {job_id} not found on this node")


class PeerServicer(peer_pb2_grpc.PeerServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        *,
        network: Network,
        results: ResultService,
        memo: Callable[[str], Any] = lambda key: None,
        traces: TraceService | None = None,
        find_job: Callable[[str], str] | None = None,
    ) -> None:
        self.network = network
        self.results = results
        self.memo = memo
        self.traces = traces
        self.find_job = find_job or _no_job

    @unary
    async def FindJob(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        # Open to any peer: it says no more than ListJobs(all_users) says to any signed user.
        if not 0 < len(request.job_id) <= 128:
            raise UsageError("a job ID is 1 to 128 characters")
        try:
            return peer_pb2.FindJobResponse(job_id=self.find_job(request.job_id))
        except AmbiguousID:
            return peer_pb2.FindJobResponse(ambiguous=True)
        except (JobNotFound, SpecError):
            return peer_pb2.FindJobResponse()

    @unary
    async def GetSpans(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        # Open to any peer, as GetBlocks is: the job ID is the capability (as for logs).
        if not 0 < len(request.job_id) <= 128:
            raise UsageError("a job ID is 1 to 128 characters")
        spans = self.traces.local(request.job_id) if self.traces is not None else []
        return peer_pb2.GetSpansResponse(spans=spans)

    async def Connect(
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for env in self.network.serve_stream(request_iterator, source=context.peer()):
            yield env

    @unary
    async def LookupMemo(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not 0 < len(request.key) <= 128:
            raise UsageError("a memo key is a CID of at most 128 characters")
        entry = self.memo(request.key)
        if entry is None:
            return peer_pb2.MemoAnswer(found=False)
        return peer_pb2.MemoAnswer(
            found=True, job_id=entry.job_id, result_cid=entry.result_cid, node_ids=entry.node_ids
        )

    @streaming
    async def GetBlocks(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        cids = list(request.cids)
        check_want(cids)
        async for block in self.results.blocks(cids, recursive=request.recursive):
            yield block
