"""An asyncio client for a node's ClientService (grpc.aio), beside the sync `bacalhau.client`.

    async with bacalhau.aio.Client("127.0.0.1:1234") as c:
        job = (await c.submit(spec)).job
        async for event in c.events(job.id, follow=True):
            print(event.type)
        done = await c.wait(job.id)

Every call is signed with the user's key, as the sync client's are (docs/security.md); every
failure is a `bacalhau.client.ClientError` (its `reason` and `metadata` are the node's
google.rpc.ErrorInfo). Streams are async iterators. See docs/api.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc

from bacalhau._pb.bacalhau.v1 import client_pb2
from bacalhau.client import (
    _OPTIONS,
    UPLOAD_CHUNK,
    ClientError,
    ClientStub,
    client_error,
    default_api,
    load_user_key,
)
from bacalhau.content.cid import CID
from bacalhau.errors import BacalhauError
from bacalhau.identity import Identity

__all__ = ["Client", "ClientError"]


class Client:
    """Talks to one node from an event loop. Methods raise ClientError."""

    def __init__(
        self,
        api: str | None = None,
        *,
        timeout: float = 30.0,
        user_key: Identity | Path | None = None,
        tls: bool = False,
        tls_ca: bytes | None = None,
    ) -> None:
        """As `bacalhau.client.Client`: `user_key` signs every call (default: the user's key,
        made on first use); `tls`/`tls_ca` reach a node that serves TLS."""
        self.api = api or default_api()
        self.timeout = timeout
        self.key = user_key if isinstance(user_key, Identity) else load_user_key(user_key)
        self.user_id = self.key.node_id
        self.tls = tls or tls_ca is not None
        self._channel = (
            grpc.aio.secure_channel(
                self.api, grpc.ssl_channel_credentials(root_certificates=tls_ca), options=_OPTIONS
            )
            if self.tls
            else grpc.aio.insecure_channel(self.api, options=_OPTIONS)
        )
        self._stub = ClientStub(self._channel, self.key)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: str, request: Any, timeout: float | None = -1.0) -> Any:
        try:
            return await getattr(self._stub, method)(
                request, timeout=self.timeout if timeout == -1.0 else timeout
            )
        except grpc.RpcError as e:
            raise client_error(e, self.api, self.tls) from None

    async def _stream(self, method: str, request: Any, timeout: float | None) -> AsyncIterator[Any]:
        try:
            async for item in getattr(self._stub, method)(request, timeout=timeout):
                yield item
        except grpc.RpcError as e:
            raise client_error(e, self.api, self.tls) from None

    # -- calls ----------------------------------------------------------------------------

    async def node_info(self) -> Any:
        """NodeInfoResponse: the node's ID, version, address, engines, labels and peers."""
        return await self._call("NodeInfo", client_pb2.NodeInfoRequest())

    async def list_peers(self, *, alive_only: bool = False, limit: int = 0) -> Any:
        """ListPeersResponse: the peers the node knows, alive ones first."""
        req = client_pb2.ListPeersRequest(alive_only=alive_only, limit=limit)
        return await self._call("ListPeers", req)

    async def submit(self, spec: Any) -> Any:
        """SubmitResponse (job_id, job) once the node has stored the job."""
        return await self._call("Submit", client_pb2.SubmitRequest(spec=spec))

    async def get_job(self, job_id: str, *, wait: bool = False) -> Any:
        """GetJobResponse (job, events); with `wait`, once the job is final."""
        req = client_pb2.GetJobRequest(job_id=job_id, wait=wait)
        return await self._call("GetJob", req, None if wait else -1.0)

    async def wait(self, job_id: str) -> Any:
        """GetJobResponse once the job is completed, failed or cancelled."""
        return await self.get_job(job_id, wait=True)

    async def list_jobs(
        self, *, all: bool = False, limit: int = 0, all_users: bool = False, cursor: str = ""
    ) -> Any:
        """ListJobsResponse: a page of jobs, newest first (this user's unless `all_users`)."""
        req = client_pb2.ListJobsRequest(all=all, limit=limit, all_users=all_users, cursor=cursor)
        return await self._call("ListJobs", req)

    async def cancel(self, job_id: str, reason: str = "") -> Any:
        """The cancelled Job (only its owner or an admin key may)."""
        req = client_pb2.CancelRequest(job_id=job_id, reason=reason)
        return (await self._call("Cancel", req)).job

    def events(self, job_id: str, *, follow: bool, after_seq: int = 0) -> AsyncIterator[Any]:
        """The job's Events after `after_seq`; with `follow`, new ones until it is final."""
        req = client_pb2.WatchEventsRequest(job_id=job_id, follow=follow, after_seq=after_seq)
        return self._stream("WatchEvents", req, None if follow else self.timeout)

    def logs(
        self, job_id: str, *, follow: bool, shard: int | None = None, execution_id: str = ""
    ) -> AsyncIterator[Any]:
        """LogChunks: stdout and stderr of the job (or of one execution, from its result)."""
        req = client_pb2.LogsRequest(
            job_id=job_id, follow=follow, shard=shard, execution_id=execution_id
        )
        return self._stream("Logs", req, None if follow else self.timeout)

    def results(
        self, job_id: str = "", cid: str = "", have: Iterable[str] = ()
    ) -> AsyncIterator[Any]:
        """ResultsChunks: the root CID, then the DAG's blocks (`block_cid`, `data`), parents
        first, except the CIDs in `have`."""
        req = client_pb2.GetResultsRequest(job_id=job_id, cid=cid, have_cids=list(have))
        return self._stream("GetResults", req, None)

    async def read_file(self, job_id: str, path: str) -> bytes:
        """The bytes of the file at `path` in the job's result (e.g. "stdout",
        "outputs/x.txt"), every block checked against its CID. Raises ClientError, and
        BacalhauError for a path the result does not have."""
        from bacalhau.content import dag

        blocks: dict[bytes, bytes] = {}
        root = ""
        async for chunk in self.results(job_id=job_id):
            if chunk.root_cid:
                root = chunk.root_cid
                continue
            cid = bytes(CID.parse(chunk.block_cid))
            dag.check_block(cid, chunk.data)
            blocks[cid] = chunk.data
        node = bytes(CID.parse(root))
        for part in [p for p in path.split("/") if p]:
            links = dag.decode(node, blocks[node]).links
            found = next((link for link in links if link.name == part.encode()), None)
            if found is None:
                raise BacalhauError(f"the result of {job_id} has no {path}")
            node = bytes(found.cid)
        return b"".join(dag.cat(blocks.__getitem__, node))

    def cat(
        self,
        path: str = "",
        *,
        job_id: str = "",
        file: str = "",
        shard: int | None = None,
        chunk_size: int = 0,
    ) -> AsyncIterator[Any]:
        """CatChunks of one file, as the sync client's `cat`: by `path` (`CID[/a/b]`) or by
        `job_id` and `file` (a path in its result); the first carries `cid` and `size`."""
        req = client_pb2.CatRequest(
            path=path, job_id=job_id, file=file, shard=shard, chunk_size=chunk_size
        )
        return self._stream("Cat", req, None)

    async def lineage(self, cid: str, depth: int = 1) -> Any:
        """LineageResponse: which verified jobs made `cid` and its inputs."""
        return await self._call("Lineage", client_pb2.LineageRequest(cid=cid, depth=depth))

    async def list_uploads(self) -> Any:
        """ListUploadsResponse: this user's uploads to the node, newest first."""
        return await self._call("ListUploads", client_pb2.ListUploadsRequest())

    async def unpin(self, cid: str) -> Any:
        """UnpinResponse: this user's record of the upload removed."""
        return await self._call("Unpin", client_pb2.UnpinRequest(cid=cid))

    async def add_bytes(self, data: bytes, name: str = "data") -> Any:
        """Upload `data` as one file; AddDataResponse (cid, size)."""

        def requests() -> Iterator[Any]:
            yield client_pb2.AddDataRequest(header=client_pb2.AddDataHeader(name=name))
            for i in range(0, len(data), UPLOAD_CHUNK):
                yield client_pb2.AddDataRequest(chunk=data[i : i + UPLOAD_CHUNK])

        return await self._call("AddData", requests(), None)
