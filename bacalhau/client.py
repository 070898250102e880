"""A Python client for a node's ClientService (what bacalhauctl uses).

Every call is signed with the user's key (`bacalhau.callsign`; the key is created on first use
at $BACALHAU_USER_KEY or ~/.bacalhau/user.key). Every gRPC failure becomes a `ClientError` with
one line saying what went wrong and what to do.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import grpc
from google.protobuf.message_factory import GetMessageClass

from bacalhau import callsign
from bacalhau._pb.bacalhau.v1 import client_pb2
from bacalhau.errors import BacalhauError
from bacalhau.identity import Identity

DEFAULT_API = "127.0.0.1:1234"
UPLOAD_CHUNK = 1 << 20
_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.enable_http_proxy", 0),
    # A node that was down must be usable as soon as it is back: short reconnect backoff, and
    # no sharing of a failing connection's backoff between clients in one process.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class ClientError(BacalhauError):
    """A request to the node failed; `code` is the gRPC status, `reason` and `metadata` the
    node's google.rpc.ErrorInfo ("" and {} when it sent none; docs/api.md lists them)."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode,
        hint: str | None = None,
        reason: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.reason = reason
        self.metadata = metadata or {}


def error_info(e: grpc.RpcError) -> tuple[str, dict[str, str]]:
    """(reason, metadata) of the google.rpc.ErrorInfo a failed call carries, or ("", {})."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    try:
        status = rpc_status.from_call(e) if hasattr(e, "trailing_metadata") else None
    except (ValueError, AttributeError):  # details that do not match the status
        return "", {}
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason, dict(info.metadata)
    return "", {}


def default_api() -> str:
    return os.environ.get("BACALHAU_API") or DEFAULT_API


def default_user_key() -> Path:
    """``$BACALHAU_USER_KEY``, else ``~/.bacalhau/user.key``."""
    env = os.environ.get("BACALHAU_USER_KEY")
    return Path(env) if env else Path.home() / ".bacalhau" / "user.key"


def load_user_key(path: Path | None = None) -> Identity:
    """The user's key, created (mode 0600) on first use. Raises IdentityError."""
    return Identity.load_or_create_file(path or default_user_key(), "user key")


def client_error(e: grpc.RpcError, api: str, tls: bool) -> ClientError:
    """A failed call (sync or asyncio) as one ClientError line, with the node's ErrorInfo."""
    has_status = hasattr(e, "code") and hasattr(e, "details")
    code = e.code() if has_status else grpc.StatusCode.UNKNOWN
    details = (e.details() if has_status else str(e)) or code.name.lower()
    if code == grpc.StatusCode.UNAVAILABLE and (
        "connect" in details.lower() or "dns" in details.lower()
    ):
        return ClientError(
            f"cannot reach a node at {api}",
            code=code,
            hint="start one with 'bacalhaud serve', or point --api / BACALHAU_API at one"
            + ("" if tls else "; if it serves TLS, pass --tls-ca (or --tls)"),
        )
    if code == grpc.StatusCode.UNAVAILABLE and ("ssl" in details.lower() or "tls" in
                                                details.lower() or "handshake" in
                                                details.lower()):  # fmt: skip
        return ClientError(
            f"no TLS connection to {api}: {details.splitlines()[0][:200]}",
            code=code,
            hint="does the node serve TLS, and does --tls-ca hold the CA of its certificate?",
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ClientError(
            f"the node at {api} did not answer in time",
            code=code,
            hint="is it overloaded or stuck? try again",
        )
    reason, metadata = error_info(e)
    return ClientError(
        details.splitlines()[0] if details else code.name,
        code=code,
        reason=reason,
        metadata=metadata,
    )


class ClientStub:
    """ClientService calls, each signed with `key`: the same call signatures as the generated
    stub (`stub.Submit(request, timeout=...)`), for any channel."""

    def __init__(self, channel: grpc.Channel, key: Identity) -> None:
        service = client_pb2.DESCRIPTOR.services_by_name["ClientService"]
        for m in service.methods:
            path = f"/{service.full_name}/{m.name}"
            reply = GetMessageClass(m.output_type).FromString
            call: Callable[..., Any]
            if m.client_streaming:
                streaming = channel.stream_unary(
                    path, request_serializer=_serialize, response_deserializer=reply
                )
                call = _signed_stream(streaming, key, path)
            elif m.server_streaming:
                call = _signed(channel.unary_stream(path, None, reply), key, path)
            else:
                call = _signed(channel.unary_unary(path, None, reply), key, path)
            setattr(self, m.name, call)

    def __getattr__(self, name: str) -> Any:  # the methods are set in __init__
        raise AttributeError(name)


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def _signed(multi_callable: Any, key: Identity, path: str) -> Callable[..., Any]:
    def call(
        request: Any, timeout: float | None = None, metadata: Iterable[tuple[str, str]] = ()
    ) -> Any:
        body = _serialize(request)  # signed and sent as these very bytes
        signed = [*callsign.sign(key, path, body), *metadata]
        return multi_callable(body, timeout=timeout, metadata=signed)

    return call


def _signed_stream(multi_callable: Any, key: Identity, path: str) -> Callable[..., Any]:
    def call(requests: Iterator[Any], timeout: float | None = None) -> Any:
        return multi_callable(requests, timeout=timeout, metadata=callsign.sign(key, path, None))

    return call


class Client:
    """Talks to one node. Methods raise ClientError."""

    def __init__(
        self,
        api: str | None = None,
        *,
        timeout: float = 30.0,
        user_key: Identity | Path | None = None,
        tls: bool = False,
        tls_ca: bytes | None = None,
    ) -> None:
        """`user_key`: the key that signs every call (an Identity, or a key file created on
        first use); default: `default_user_key()`. With `tls` (or `tls_ca`, PEM roots; default
        the system's) the node is reached over TLS. Raises IdentityError for an unreadable
        key file."""
        self.api = api or default_api()
        self.timeout = timeout
        self.key = user_key if isinstance(user_key, Identity) else load_user_key(user_key)
        self.user_id = self.key.node_id
        self.tls = tls or tls_ca is not None
        self._channel = (
            grpc.secure_channel(
                self.api, grpc.ssl_channel_credentials(root_certificates=tls_ca), options=_OPTIONS
            )
            if self.tls
            else grpc.insecure_channel(self.api, options=_OPTIONS)
        )
        self._stub = ClientStub(self._channel, self.key)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _error(self, e: grpc.RpcError) -> ClientError:
        return client_error(e, self.api, self.tls)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def _stream(self, method: Any, request: Any, timeout: float | None) -> Iterator[Any]:
        try:
            yield from method(request, timeout=timeout)
        except grpc.RpcError as e:
            raise self._error(e) from None

    # -- calls --------------------------------------------------------------------------

    def node_info(self) -> Any:
        return self._call(self._stub.NodeInfo, client_pb2.NodeInfoRequest())

    def list_peers(self, *, alive_only: bool = False, limit: int = 0) -> Any:
        """ListPeersResponse: the peers the node knows, alive ones first."""
        req = client_pb2.ListPeersRequest(alive_only=alive_only, limit=limit)
        return self._call(self._stub.ListPeers, req)

    def submit(self, spec: Any, *, traceparent: str | None = None) -> Any:
        """SubmitResponse. `traceparent` (W3C): the span the job's trace continues; default:
        the current OpenTelemetry span if this program traces, else $TRACEPARENT if set."""
        req = client_pb2.SubmitRequest(spec=spec)
        tp = _current_traceparent() if traceparent is None else traceparent
        try:
            return self._stub.Submit(
                req, timeout=self.timeout, metadata=[("traceparent", tp)] if tp else []
            )
        except grpc.RpcError as e:
            raise self._error(e) from None

    def get_job(self, job_id: str, *, wait: bool = False) -> Any:
        """GetJobResponse; with `wait`, once the job is completed, failed or cancelled."""
        req = client_pb2.GetJobRequest(job_id=job_id, wait=wait)
        try:
            return self._stub.GetJob(req, timeout=None if wait else self.timeout)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def list_jobs(
        self,
        *,
        all: bool = False,
        limit: int = 0,
        states: list[Any] | None = None,
        client_id: str = "",
        all_users: bool = False,
        cursor: str = "",
        network: bool = False,
    ) -> Any:
        """ListJobsResponse: a page of jobs (newest first) and the cursor of the next: this
        user's, or `client_id`'s, or with `all_users` everyone's; with `network`, of every
        node the node can reach (`limit` at most 500; 0: 100)."""
        req = client_pb2.ListJobsRequest(
            all=all,
            limit=limit,
            states=states or [],
            client_id=client_id,
            all_users=all_users,
            cursor=cursor,
            network=network,
        )
        return self._call(self._stub.ListJobs, req)

    def lineage(self, cid: str, depth: int = 1) -> Any:
        """LineageResponse: which verified jobs made `cid` and its inputs, `depth` steps back."""
        return self._call(self._stub.Lineage, client_pb2.LineageRequest(cid=cid, depth=depth))

    def cancel(self, job_id: str, reason: str = "") -> Any:
        req = client_pb2.CancelRequest(job_id=job_id, reason=reason)
        return self._call(self._stub.Cancel, req).job

    def events(self, job_id: str, *, follow: bool, after_seq: int = 0) -> Iterator[Any]:
        req = client_pb2.WatchEventsRequest(job_id=job_id, follow=follow, after_seq=after_seq)
        return self._stream(self._stub.WatchEvents, req, None if follow else self.timeout)

    def logs(
        self, job_id: str, *, follow: bool, shard: int | None = None, execution_id: str = ""
    ) -> Iterator[Any]:
        """LogChunks: the job's stdout and stderr (or one execution's, from its result)."""
        req = client_pb2.LogsRequest(
            job_id=job_id, follow=follow, shard=shard, execution_id=execution_id
        )
        return self._stream(self._stub.Logs, req, None if follow else self.timeout)

    def results(self, job_id: str = "", cid: str = "", have: Iterable[bytes] = ()) -> Iterator[Any]:
        """ResultsChunks: the root CID, then the DAG's blocks (`block_cid`, `data`), parents
        first, except those of `have` (binary CIDs)."""
        from bacalhau.content.cid import CID

        have_cids = [str(CID.from_bytes(h)) for h in have]
        req = client_pb2.GetResultsRequest(job_id=job_id, cid=cid, have_cids=have_cids)
        return self._stream(self._stub.GetResults, req, None)

    def cat(
        self,
        path: str = "",
        *,
        job_id: str = "",
        file: str = "",
        shard: int | None = None,
        chunk_size: int = 0,
    ) -> Iterator[Any]:
        """CatChunks of one file: by `path` (`CID` or `CID/a/b`), or by `job_id` and `file`
        (a path in its result: "stdout", "outputs/x.csv"; `shard` of a sharded job, default
        0). The first chunk carries the file's `cid` and `size`; the node checked every block
        against its CID. Raises ClientError (NOT_FOUND naming a missing path,
        INVALID_ARGUMENT for a folder)."""
        req = client_pb2.CatRequest(
            path=path, job_id=job_id, file=file, shard=shard, chunk_size=chunk_size
        )
        return self._stream(self._stub.Cat, req, None)

    def list_uploads(self) -> Any:
        """ListUploadsResponse: this user's uploads to the node, newest first."""
        return self._call(self._stub.ListUploads, client_pb2.ListUploadsRequest())

    def unpin(self, cid: str) -> Any:
        """UnpinResponse: this user's record of the upload removed (an admin's: everyone's)."""
        return self._call(self._stub.Unpin, client_pb2.UnpinRequest(cid=cid))

    def get_trace(self, job_id: str) -> Any:
        """GetTraceResponse: the spans of the job's trace, from every node that answered."""
        return self._call(self._stub.GetTrace, client_pb2.GetTraceRequest(job_id=job_id))

    def collect_garbage(self) -> Any:
        """CollectGarbageResponse (admin keys only); waits as long as the collection takes."""
        try:
            return self._stub.CollectGarbage(client_pb2.CollectGarbageRequest(), timeout=None)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def add_file(
        self,
        path: Path,
        header: Any = None,
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        """Upload one file; returns AddDataResponse (cid, size). `header`: an AddDataHeader
        with import options (its name is set here); `progress(n)` is told of each n bytes
        sent."""
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the generator
        except OSError as e:
            raise BacalhauError(f"cannot read {path}: {e.strerror}") from None
        return self.add_stream(f, path.name, header=header, progress=progress)

    def add_directory(
        self,
        path: Path,
        header: Any = None,
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        """Upload a folder (files, subfolders, hidden ones too) in one AddData stream; returns
        AddDataResponse (cid: the folder's, as `ipfs add -r --hidden` gives it; size: bytes).
        `header` and `progress` as for `add_file`.

        Raises BacalhauError for a path that is not a readable folder or holds something other
        than files and folders (a symlink, a socket), before anything is sent; ClientError."""
        root = Path(path)
        if not root.is_dir():
            raise BacalhauError(f"{root} is not a folder")
        entries = _folder_entries(root)
        first = client_pb2.AddDataHeader()
        if header is not None:
            first.CopyFrom(header)
        first.name = root.resolve().name or "upload"
        first.folder = True
        told = progress or (lambda n: None)

        def requests() -> Iterator[Any]:
            yield client_pb2.AddDataRequest(header=first)
            for rel, is_dir in entries:
                entry = client_pb2.AddDataEntry(path=rel, directory=is_dir)
                yield client_pb2.AddDataRequest(entry=entry)
                if is_dir:
                    continue
                try:
                    with open(root / rel, "rb") as f:
                        while chunk := f.read(UPLOAD_CHUNK):
                            yield client_pb2.AddDataRequest(chunk=chunk)
                            told(len(chunk))
                except OSError as e:
                    raise BacalhauError(f"cannot read {root / rel}: {e.strerror}") from None

        try:
            return self._stub.AddData(requests(), timeout=None)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def add_stream(
        self,
        f: BinaryIO,
        name: str,
        *,
        car: bool = False,
        header: Any = None,
        progress: Callable[[int], None] | None = None,
    ) -> Any:
        """Upload a stream (a file's bytes, or with `car` a CAR v1 archive); AddDataResponse.
        `header` and `progress` as for `add_file`."""
        first = client_pb2.AddDataHeader()
        if header is not None:
            first.CopyFrom(header)
        first.name = name
        first.car = car
        told = progress or (lambda n: None)

        def requests() -> Iterator[Any]:
            with f:
                yield client_pb2.AddDataRequest(header=first)
                while chunk := f.read(UPLOAD_CHUNK):
                    yield client_pb2.AddDataRequest(chunk=chunk)
                    told(len(chunk))

        try:
            return self._stub.AddData(requests(), timeout=None)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def wait(self, job_id: str) -> Any:
        """GetJobResponse once the job is completed, failed or cancelled."""
        return self.get_job(job_id, wait=True)


def _folder_entries(root: Path) -> list[tuple[str, bool]]:
    """(relative path, is a folder) of everything under `root`, parents first, sorted."""
    out: list[tuple[str, bool]] = []

    def fail(e: OSError) -> None:
        raise BacalhauError(f"cannot read {e.filename}: {e.strerror}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        dirnames.sort()
        base = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                raise BacalhauError(
                    f"{p} is not a regular file or folder",
                    hint="folders are uploaded with their files and subfolders only",
                )
            out.append(((base / name).as_posix(), False))
        for name in dirnames:
            p = Path(dirpath) / name
            if p.is_symlink():
                raise BacalhauError(
                    f"{p} is a symlink",
                    hint="folders are uploaded with their files and subfolders only",
                )
            out.append(((base / name).as_posix(), True))
    return out


def _current_traceparent() -> str:
    """The current OpenTelemetry span as a traceparent, if the program loaded OpenTelemetry
    (bacalhauctl does not: it costs it nothing), else $TRACEPARENT; "" if neither."""
    otel = sys.modules.get("opentelemetry.trace")
    if otel is not None:
        sc = otel.get_current_span().get_span_context()
        if sc.is_valid:
            return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
    return os.environ.get("TRACEPARENT", "").strip()[:55]
