"""Block exchange: PeerService.GetBlocks on both ends, every block checked against its CID."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from bacalhau._fast import blockio, dagpb
from bacalhau._pb.bacalhau.v1 import peer_pb2, peer_pb2_grpc
from bacalhau.blockstore import FETCHED, REPAIR_HINT, Batch, Blockstore
from bacalhau.content import dag
from bacalhau.content.cid import CID, RAW
from bacalhau.content.errors import ContentError, CorruptData, NotFound, TooLarge
from bacalhau.errors import UsageError
from bacalhau.observability.tracing import annotate

if TYPE_CHECKING:
    from bacalhau.network.peers import Network

_BATCH_BYTES = 4 << 20  # blocks read from the store at a time, by a worker thread
BATCH_BYTES = 1 << 20  # blocks in one message to an asker that takes batches (a larger one alone)
WANT_BATCH = 32  # CIDs per GetBlocks request of a want-list (8 MiB of 256 KiB blocks)
MAX_WANT = 1024  # CIDs a node takes in one GetBlocks request (it sends at most WANT_BATCH)
COMMIT_BYTES = 32 << 20  # verified blocks stored (synced) together
IDLE_COMMIT_S = 0.05  # a fetch's open batch is committed when nothing came for this long


class WireBlock:
    """Blocks as GetBlocks sends them: `message` is a serialized `peer_pb2.Block` that the
    blocks' bytes were read straight into (a `peer_pb2.Block` would copy them twice more on
    the way out): one block (`cid`, `data`), or a batch of them for an asker that takes
    batches. `cid` and `data` read as a one-block `peer_pb2.Block`'s do; `encode_block` gives
    `message` to gRPC as it is."""

    __slots__ = ("cids", "message", "sizes")

    def __init__(self, cids: list[bytes], message: bytes, sizes: list[int]) -> None:
        self.cids = cids
        self.message = message
        self.sizes = sizes  # of the blocks, whose bytes end `message`, one after another

    @classmethod
    def of(cls, cid: bytes, data: bytes) -> WireBlock:
        """One block, as a `peer_pb2.Block` serializes it."""
        return cls([cid], _head([cid], [len(data)]) + data, [len(data)])

    @property
    def cid(self) -> bytes:
        return self.cids[0]

    @property
    def data(self) -> bytes:
        return self.message[len(self.message) - self.size :]

    @property
    def size(self) -> int:
        return sum(self.sizes)


def _head(cids: list[bytes], sizes: list[int]) -> bytes:
    """What precedes the blocks' bytes in their serialized `peer_pb2.Block`: for one block,
    `cid` and the start of `data` as protobuf writes them (fields in order, an empty one left
    out); for a batch, `cids`, `sizes` (packed) and the start of `data`."""
    varint = dagpb.varint
    total = sum(sizes)
    if len(cids) == 1:
        head: bytes = b"\x0a" + varint(len(cids[0])) + cids[0]
    else:
        packed = b"".join(map(varint, sizes))
        head = b"".join(b"\x1a" + varint(len(c)) + c for c in cids)
        head += b"\x22" + varint(len(packed)) + packed
    return head + b"\x12" + varint(total) if total else head


def _head_of_first(cids: list[bytes], sizes: list[int]) -> bytes:
    return _head(cids[: len(sizes)], sizes)


def encode_block(block: Any) -> bytes:
    """A GetBlocks answer as it goes on the wire: a WireBlock's message, or a serialized
    `peer_pb2.Block`."""
    if type(block) is WireBlock:
        return block.message
    encoded: bytes = block.SerializeToString()
    return encoded


# Whether the GetBlocks call being answered takes batches: set by the handler that
# `add_peer_service` registers (each call runs in a task of its own), read by `serve_blocks`.
_batched: contextvars.ContextVar[bool] = contextvars.ContextVar("batched", default=False)


class _Registry:
    """Takes what a generated `add_..._to_server` registers, instead of a server."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, dict(handlers)


def add_peer_service(servicer: Any, server: grpc.aio.Server) -> None:
    """Serve PeerService with `servicer` on `server`, as
    `peer_pb2_grpc.add_PeerServiceServicer_to_server` does, except that GetBlocks' answers are
    encoded by `encode_block` (so `serve_blocks` can yield WireBlocks), and `serve_blocks`
    sends batches when the request says the asker takes them."""
    reg = _Registry()
    peer_pb2_grpc.add_PeerServiceServicer_to_server(servicer, reg)
    handlers = reg.handlers
    inner = handlers["GetBlocks"].unary_stream

    async def get_blocks(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        _batched.set(bool(request.batched))
        async for answer in inner(request, context):
            yield answer

    handlers["GetBlocks"] = handlers["GetBlocks"]._replace(
        unary_stream=get_blocks, response_serializer=encode_block
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(reg.service, handlers),))
    server.add_registered_method_handlers(reg.service, handlers)


def _blocks(
    store: Blockstore, cids: list[bytes], recursive: bool, skip: frozenset[bytes], batched: bool
) -> Iterator[WireBlock]:
    # Read without hashing: the receiver checks every block against its CID anyway, and a
    # block that is corrupt on disk is refused there (and fetched from another peer).
    if recursive:
        get = functools.partial(store.get, verify=False)
        for cid in cids:
            for c, data in dag.walk(get, cid):
                if c not in skip:
                    yield WireBlock.of(c, data)
        return
    todo = [cid for cid in cids if cid not in skip]
    while todo:
        take = todo[:MAX_WANT] if batched else todo[:1]
        head = functools.partial(_head_of_first, take)
        message, sizes = store.get_framed(take, head, max_bytes=BATCH_BYTES)
        yield WireBlock(take[: len(sizes)], message, sizes)
        del todo[: len(sizes)]


async def serve_blocks(
    store: Blockstore,
    cids: list[bytes],
    *,
    recursive: bool,
    sent: Tally | None = None,
    skip: frozenset[bytes] = frozenset(),
    batched: bool | None = None,
) -> AsyncIterator[WireBlock]:
    """Yield the blocks of `cids` (with `recursive`, of their DAGs, parents first) as
    WireBlocks (`cid`, `data`, and the message GetBlocks sends); walking and reading happen in
    a worker thread; blocks in `skip` are walked, not sent. With `batched` (None: if the
    GetBlocks request being answered asks for it), a WireBlock holds up to BATCH_BYTES of
    blocks (a larger block goes alone), except with `recursive`. Raises NotFound for a missing
    block."""
    if batched is None:
        batched = _batched.get()
    it = _blocks(store, cids, recursive, skip, batched)

    def next_batch() -> list[WireBlock]:
        out, size = [], 0
        for block in it:
            out.append(block)
            size += block.size
            if size >= _BATCH_BYTES:
                break
        return out

    # The next batch is read while this one is sent.
    reading = asyncio.ensure_future(asyncio.to_thread(next_batch))
    try:
        while batch := await reading:
            reading = asyncio.ensure_future(asyncio.to_thread(next_batch))
            if sent is not None:
                sent.inc(sum(b.size for b in batch))
            for block in batch:
                yield block
    finally:
        reading.cancel()


def check_want(cids: list[bytes]) -> None:
    """Raise UsageError for a GetBlocks request a node will not serve: no CIDs, more than
    MAX_WANT, or one CID twice (a request must not make a node send a block twice)."""
    if not cids:
        raise UsageError("GetBlocks names no CID")
    if len(cids) > MAX_WANT:
        raise UsageError(f"GetBlocks names {len(cids)} CIDs, more than {MAX_WANT}")
    if len(set(cids)) != len(cids):
        raise UsageError("GetBlocks names a CID more than once")


_GET_BLOCKS = "/bacalhau.v1.PeerService/GetBlocks"
MAX_CID_BYTES = 128  # a sha2-256 CID is 34 to 38 bytes; a longer one in a Block is refused


async def fetch_blocks(
    channel: grpc.aio.Channel,
    cids: list[bytes],
    *,
    recursive: bool,
    timeout: float = 60.0,
    verify: bool = True,
) -> list[tuple[bytes, bytes]]:
    """Blocks from a peer, each verified (unless the caller does it: `verify=False`). Without
    `recursive`, exactly the blocks of `cids`, in that order (anything else is CorruptData).

    Raises CorruptData, NotFound, or grpc.RpcError."""
    blocks = await _receive(channel, cids, recursive=recursive, timeout=timeout)
    if verify:
        _check(blocks)
    return [(cid, bytes(data)) for cid, data in blocks]


async def _receive(
    channel: grpc.aio.Channel, cids: list[bytes], *, recursive: bool, timeout: float
) -> list[tuple[bytes, memoryview]]:
    """The blocks a peer sends for one GetBlocks request, not verified: their bytes are views
    of the messages as they came (nothing is copied). Without `recursive`, checks that they are
    exactly the blocks of `cids`, in order. Raises CorruptData, NotFound or grpc.RpcError."""
    # The raw messages, not Block objects: a Block's data would be copied twice on the way.
    get = channel.unary_stream(
        _GET_BLOCKS,
        request_serializer=peer_pb2.GetBlocksRequest.SerializeToString,
        response_deserializer=None,
        _registered_method=True,
    )
    request = peer_pb2.GetBlocksRequest(cids=cids, recursive=recursive, batched=True)
    call = get(request, timeout=timeout)
    out: list[tuple[bytes, memoryview]] = []
    try:
        async for msg in call:
            out.extend(parse_block_message(msg))
            if not recursive and len(out) > len(cids):
                raise CorruptData(f"the peer sent more than the {len(cids)} blocks asked for")
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            raise NotFound(e.details() or "block not found on the peer") from e
        raise
    finally:
        call.cancel()
    if not recursive:
        if len(out) != len(cids):
            raise CorruptData(f"the peer sent {len(out)} of the {len(cids)} blocks asked for")
        for (got, _), want in zip(out, cids, strict=True):
            if got != want:
                raise CorruptData(
                    f"the peer sent block {_cid_text(got)} where {CID.from_bytes(want)} "
                    "was asked for"
                )
    return out


def _cid_text(cid: bytes) -> str:
    try:
        return str(CID.from_bytes(cid))
    except ContentError:
        return "(not a CID)"


def parse_block_message(msg: bytes) -> list[tuple[bytes, memoryview]]:
    """The blocks of one serialized `peer_pb2.Block`, (CID, a view of the block's bytes in
    `msg`): one block (`cid`, `data`) or a batch (`cids`, `sizes`, `data`). Read as protobuf
    reads it (unknown fields skipped, the last of a repeated scalar kept), but without copying
    a block. Raises CorruptData for a malformed message: a truncated field, a wire type
    protobuf does not have, more than MAX_WANT blocks (a request names no more), a CID that
    is empty or over MAX_CID_BYTES, sizes that do not add up to `data`, both forms at once."""
    view = memoryview(msg)
    end = len(msg)
    pos = 0
    cid = b""
    data = view[0:0]
    cids: list[bytes] = []
    sizes: list[int] = []
    read = dagpb.read_varint
    try:
        while pos < end:
            key, pos = read(msg, pos)
            field, wire = key >> 3, key & 7
            if wire == 2:
                n, pos = read(msg, pos)
                stop = pos + n
                if stop > end:
                    raise CorruptData("a Block message from the peer is truncated")
                if field == 1:
                    cid = msg[pos:stop]
                elif field == 2:
                    data = view[pos:stop]
                elif field == 3:
                    cids.append(msg[pos:stop])
                    if len(cids) > MAX_WANT:
                        raise CorruptData(f"a batch from the peer has more than {MAX_WANT} blocks")
                elif field == 4:  # sizes, packed
                    while pos < stop:
                        size, pos = read(msg, pos)
                        sizes.append(size)
                        if len(sizes) > MAX_WANT:
                            raise CorruptData(
                                f"a batch from the peer has more than {MAX_WANT} blocks"
                            )
                    if pos != stop:
                        raise CorruptData("a Block message from the peer is truncated")
                pos = stop
            elif wire == 0:
                value, pos = read(msg, pos)
                if field == 4:  # sizes, one by one
                    sizes.append(value)
                    if len(sizes) > MAX_WANT:
                        raise CorruptData(f"a batch from the peer has more than {MAX_WANT} blocks")
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
                if pos > end:
                    raise CorruptData("a Block message from the peer is truncated")
            else:
                raise CorruptData(f"a Block message from the peer has wire type {wire}")
    except dagpb.DecodeError as exc:
        raise CorruptData(f"a Block message from the peer is malformed: {exc}") from None
    if not cids:
        if sizes:
            raise CorruptData("a Block message from the peer has sizes but no cids")
        cids, sizes = [cid], [len(data)]
    elif cid:
        raise CorruptData("a Block message from the peer has both cid and cids")
    elif len(sizes) != len(cids) or sum(sizes) != len(data):
        raise CorruptData("a batch of blocks from the peer does not add up")
    out = []
    at = 0
    for c, size in zip(cids, sizes, strict=True):
        if not 0 < len(c) <= MAX_CID_BYTES:
            raise CorruptData(f"a Block message from the peer has a CID of {len(c)} bytes")
        out.append((c, data[at : at + size]))
        at += size
    return out


def missing(store: Blockstore, root: bytes) -> bool:
    """True if any block of the DAG under `root` is not stored locally (or is corrupt)."""
    return _local_state(store, root)[0]


def _local_state(store: Blockstore, root: bytes) -> tuple[bool, bytes | None]:
    """(whether a block of the DAG under `root` is missing or corrupt here, the first block
    found corrupt on this node's disk, if one is)."""
    corrupt: list[bytes] = []

    def get(cid: bytes) -> bytes:
        try:
            return store.get(cid)
        except CorruptData:
            corrupt.append(cid)
            raise

    try:
        for _ in dag.walk(get, root):
            pass
    except (NotFound, ContentError):
        return True, corrupt[0] if corrupt else None
    return False, None


def rpc_error_line(e: BaseException) -> str:
    """A gRPC or other error as one line."""
    if isinstance(e, grpc.aio.AioRpcError):
        details = (e.details() or "").splitlines()
        return f"{e.code().name.lower()}: {details[0] if details else 'no details'}"
    lines = str(e).splitlines()
    return lines[0] if lines else type(e).__name__


class Tally(Protocol):
    """Something that counts (a Prometheus counter): bytes sent or received."""

    def inc(self, n: float = 1) -> None: ...


async def fetch_dag(
    net: Network,
    store: Blockstore,
    root: bytes,
    holders: list[str],
    *,
    patience_s: float = 0.0,
    received: Tally | None = None,
    max_bytes: int = 0,
) -> None:
    """Make the DAG under `root` local, from `holders` and every connected peer.

    With `max_bytes`, the root's declared size (`dag.declared_size`) is checked as soon as
    the root is here, before anything below it is asked for, and the fetch stops once more
    block bytes than that came: both raise TooLarge (what came stays stored, unpinned).

    Every candidate is asked for the root block at once; those that have it become sources.
    The DAG is then fetched level by level: the blocks of a level that are not stored yet
    form a want-list, cut into batches that the sources serve in parallel (a batch a source
    fails is handed to another). Each batch is verified block by block against its CID and
    stored (synced) as soon as it arrives, so an interrupted fetch resumes where it stopped.

    Keeps trying (backing off) for `patience_s` seconds while no peer has the root, so a
    holder that restarts or reconnects meanwhile still serves it; stops at once when every
    holder answered "not here". Raises NotFound naming the CID (with each peer's answer), or
    CorruptData naming a block whose copy on this node is corrupt when no peer could send it.
    """
    incomplete, corrupt = await asyncio.to_thread(_local_state, store, root)
    if not incomplete:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience_s
    backoff = 0.1
    while True:
        sources, errors, holders_answered = await _find_sources(net, root, holders, received)
        if sources:
            try:
                await _fetch_levels(store, root, sources, received, errors, max_bytes)
                return
            except NotFound as e:
                if loop.time() >= deadline:
                    raise
                errors.append(str(e))
                holders_answered = False
        if loop.time() >= deadline or holders_answered:
            if corrupt is not None:
                raise CorruptData(
                    f"block {CID.from_bytes(corrupt)} is corrupt on this node and no peer "
                    "could send it",
                    hint=REPAIR_HINT,
                )
            raise NotFound(
                f"{CID.from_bytes(root)} is not on this node and no peer could send it",
                hint="; ".join(errors) or "no peer is connected",
            )
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 2.0)


async def peek_blocks(net: Network, cids: list[bytes]) -> dict[bytes, bytes]:
    """Blocks from connected peers, each verified, kept in memory only (not stored): to read
    a DAG's structure without holding its data. Asks the peers in turn for what is still
    missing, at most MAX_WANT CIDs a request; what nobody has is left out."""
    found: dict[bytes, bytes] = {}
    want = list(dict.fromkeys(cids))
    for node_id in net.connected():
        channel = net.channel_to(node_id)
        if channel is None or not want:
            continue
        for i in range(0, len(want), MAX_WANT):
            try:
                for cid, data in await fetch_blocks(
                    channel, want[i : i + MAX_WANT], recursive=False, timeout=30.0
                ):
                    found[bytes(cid)] = data
            except (NotFound, ContentError, grpc.RpcError):
                continue
        want = [c for c in want if c not in found]
    return found


class DagFetcher:
    """`fetch_dag` for one node, single flight: while a root is being fetched, callers that
    want it too wait for that fetch (with its patience) instead of starting their own."""

    def __init__(self, net: Network, store: Blockstore, received: Tally | None = None) -> None:
        self.net = net
        self._net = net
        self._store = store
        self._received = received
        self._inflight: dict[bytes, asyncio.Future[None]] = {}

    @property
    def pending(self) -> list[asyncio.Future[None]]:
        return list(self._inflight.values())

    async def fetch(
        self, root: bytes, holders: list[str], *, patience_s: float = 0.0, max_bytes: int = 0
    ) -> None:
        """See `fetch_dag`; raises what it raises. A caller joining a fetch in flight gets
        that fetch's `max_bytes`: check the size again if it needs a lower one."""
        fut = self._inflight.get(root)
        if fut is None:
            fut = asyncio.ensure_future(
                fetch_dag(
                    self._net,
                    self._store,
                    root,
                    holders,
                    patience_s=patience_s,
                    received=self._received,
                    max_bytes=max_bytes,
                )
            )
            self._inflight[root] = fut
            fut.add_done_callback(lambda _: self._inflight.pop(root, None))
        await asyncio.shield(fut)


async def _find_sources(
    net: Network, root: bytes, holders: list[str], received: Tally | None
) -> tuple[list[tuple[str, grpc.aio.Channel]], list[str], bool]:
    """Ask every candidate for the root block at once: (sources, errors, holders answered)."""
    errors: list[str] = []
    # Waiting only helps while a holder is away; if they all answered "not here", stop.
    holders_answered = True
    asked: list[tuple[str, grpc.aio.Channel]] = []
    for node_id in dict.fromkeys([*holders, *net.connected()]):
        if node_id == net.node_id:  # this node: what it has, fetch_dag has looked at
            continue
        channel = net.channel_to(node_id) if net.is_connected(node_id) else None
        if channel is None:
            errors.append(f"{node_id[-8:]}: not connected")
            holders_answered = holders_answered and node_id not in holders
            continue
        asked.append((node_id, channel))
    answers = await asyncio.gather(
        *(fetch_blocks(ch, [root], recursive=False, timeout=10.0) for _, ch in asked),
        return_exceptions=True,
    )
    sources = []
    for (node_id, channel), answer in zip(asked, answers, strict=True):
        if isinstance(answer, NotFound):
            errors.append(f"{node_id[-8:]}: {rpc_error_line(answer)}")
        elif isinstance(answer, (grpc.RpcError, ContentError)):
            errors.append(f"{node_id[-8:]}: {rpc_error_line(answer)}")
            holders_answered = holders_answered and node_id not in holders
        elif isinstance(answer, BaseException):
            raise answer
        else:
            if received is not None:
                received.inc(sum(len(d) for _, d in answer))
            sources.append((node_id, channel))
    # the input fetch's span (if this runs under one) says where the blocks came from
    annotate(sources=",".join(n for n, _ in sources[:16]), source_errors=len(errors))
    return sources, errors, holders_answered


def _links(cid: bytes, data: bytes | memoryview) -> list[bytes]:
    """CIDs a block links to. A dag-pb block that is one Data field and nothing else (a
    file's leaf) is recognised without decoding (and copying) its payload."""
    if (cid[0] == 1 and CID.from_bytes(cid).codec == RAW) or _only_data(data):
        return []
    return [link.cid for link in dag.decode(cid, bytes(data)).links]


def _only_data(block: bytes | memoryview) -> bool:
    if block[:1] != b"\x0a":  # field 1 (Data), length-delimited
        return False
    size, shift, i = 0, 0, 1
    while i < len(block) and i < 11:
        byte = block[i]
        size |= (byte & 0x7F) << shift
        shift += 7
        i += 1
        if not byte & 0x80:
            return i + size == len(block)
    return False


def _plan(store: Blockstore, level: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split a level into (blocks to fetch, links of the blocks already stored). A block
    stored corrupt here is fetched again (storing it rewrites the bad copy)."""
    need, below = [], []
    for cid in level:
        if not store.has(cid):  # most often, when a DAG comes for the first time
            need.append(cid)
            continue
        if CID.from_bytes(cid).codec == RAW:
            if store.is_corrupt(cid):
                need.append(cid)
            continue
        try:
            block = store.get(cid)
        except (NotFound, CorruptData):
            need.append(cid)
            continue
        below.extend(_links(cid, block))
    return need, below


def _check(blocks: list[tuple[bytes, memoryview]]) -> list[bytes]:
    """Check each block against its CID (CorruptData naming the first that does not match);
    returns the links under them. Hashes the whole batch in one call (compiled: without the
    GIL), so run it in a worker thread."""
    digests = []
    for cid, _ in blocks:
        if len(cid) == 34 and cid[:2] == b"\x12\x20":  # CIDv0: the multihash itself
            digests.append(cid[2:])
        else:
            digests.append(CID.from_bytes(cid).digest)  # sha2-256 only, or ContentError
    bad = blockio.first_mismatch(digests, [data for _, data in blocks])
    if bad >= 0:
        raise CorruptData(f"block {CID.from_bytes(blocks[bad][0])} does not match its CID")
    below = []
    for cid, data in blocks:
        below.extend(_links(cid, data))
    return below


class _Sink:
    """Verified blocks, stored by a thread of their own as they come: a batch is opened for
    the first of them and committed (synced) once COMMIT_BYTES went into it, once nothing came
    for IDLE_COMMIT_S (a batch holds the blockstore's write lock: a stalled fetch must not keep
    others from writing), or at `flush`. So writing a group overlaps receiving it, and a fetch
    that stops keeps what was committed. At most 2 x COMMIT_BYTES are taken and not committed
    yet (`add` waits). `flush` commits what was added and waits for it; it raises what storing
    raised (a full disk). `close` ends the thread."""

    def __init__(self, store: Blockstore, root: bytes = b"", max_bytes: int = 0) -> None:
        self.store = store
        self.root = root
        self.max_bytes = max_bytes
        self.total = 0  # block bytes added, for `max_bytes`
        self.unsaved = 0  # bytes added and not committed yet
        self.saved = asyncio.Event()  # set when a commit makes room
        self.error: BaseException | None = None
        self.loop = asyncio.get_running_loop()
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None

    async def add(self, blocks: Sequence[tuple[bytes, bytes | memoryview]]) -> None:
        """Raises TooLarge once more than `max_bytes` came (0: no limit)."""
        added = sum(len(d) for _, d in blocks)
        self.total += added
        if self.max_bytes and self.total > self.max_bytes:
            raise TooLarge(
                f"{CID.from_bytes(self.root)} is larger than its root says: more than "
                f"{self.max_bytes} bytes of blocks came"
            )
        while self.unsaved >= 2 * COMMIT_BYTES and self.error is None:
            self.saved.clear()
            await self.saved.wait()
        if self.error is not None:
            raise self.error
        self.unsaved += added
        self._put(list(blocks))

    async def flush(self, pin: bytes | None = None) -> None:
        done: asyncio.Future[None] = self.loop.create_future()
        self._put(_Flush(pin, done))
        await done

    def close(self) -> None:
        if self.thread is not None:
            self.queue.put(None)

    def _put(self, item: Any) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="bacalhau-fetch", daemon=True)
            self.thread.start()
        self.queue.put(item)

    def _run(self) -> None:
        batch: Batch | None = None
        size = 0  # bytes put in `batch`

        def commit(pin: bytes | None) -> None:
            nonlocal batch, size
            if batch is None and pin is None:
                return
            if batch is None:
                batch = self.store.batch().__enter__()
            if pin is not None:
                batch.pin(pin, FETCHED)
            done, batch, committed = batch, None, size
            size = 0
            try:
                done.__exit__(None, None, None)
            finally:
                self._tell(self._saved, committed)

        while True:
            try:
                item = self.queue.get(timeout=IDLE_COMMIT_S if batch is not None else None)
            except queue.Empty:
                item = _Flush(None, None)  # nothing came for a while: let others write
            try:
                if item is None:
                    commit(None)
                    return
                if isinstance(item, _Flush):
                    if self.error is None:  # after a failed write, nothing more is stored
                        commit(item.pin)
                    if item.done is not None:  # and every later flush fails
                        self._tell(_settle, item.done, self.error)
                    continue
                if self.error is not None:
                    continue  # the blocks are dropped: the fetch fails at its next step
                if batch is None:
                    batch = self.store.batch().__enter__()
                for cid, data in item:
                    batch.put(cid, data)
                    size += len(data)
                if size >= COMMIT_BYTES:
                    commit(None)
            except BaseException as exc:  # a full disk: it is raised where the fetch is
                error = exc
                if batch is not None:
                    aborted, batch = batch, None
                    try:  # aborts; says BlockstoreError for a failed write, as `with` would
                        aborted.__exit__(type(exc), exc, exc.__traceback__)
                    except BaseException as said:
                        error = said
                self.error = self.error or error
                self._tell(self._saved, 0)
                if isinstance(item, _Flush) and item.done is not None:
                    self._tell(_settle, item.done, self.error)
                if item is None:
                    return

    def _tell(self, fn: Any, *args: Any) -> None:
        """Run `fn(*args)` on the fetch's event loop (not if it is closed: nobody waits)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(fn, *args)

    def _saved(self, committed: int) -> None:
        self.unsaved -= committed
        self.saved.set()


class _Flush:
    """Commit what was added (pinning `pin`), then settle `done`."""

    def __init__(self, pin: bytes | None, done: asyncio.Future[None] | None) -> None:
        self.pin = pin
        self.done = done


def _settle(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


async def _fetch_levels(
    store: Blockstore,
    root: bytes,
    sources: list[tuple[str, grpc.aio.Channel]],
    received: Tally | None,
    errors: list[str],
    max_bytes: int = 0,
) -> None:
    sink = _Sink(store, root, max_bytes)
    level = [root]
    try:
        try:
            while level:
                need, below = await asyncio.to_thread(_plan, store, list(dict.fromkeys(level)))
                if need:
                    below += await _fetch_spread(sink, need, sources, received, errors)
                    await sink.flush()
                if level == [root] and max_bytes:  # the root is here: what does it say?
                    _check_declared(store, root, max_bytes)
                level = below
        finally:
            await sink.flush()  # what was verified stays: a later fetch resumes from there
        await sink.flush(pin=root)
    finally:
        sink.close()


def _check_declared(store: Blockstore, root: bytes, max_bytes: int) -> None:
    size = dag.declared_size(root, store.get(root, verify=False))
    if size > max_bytes:
        raise TooLarge(
            f"{CID.from_bytes(root)} is {size} bytes by its root, above the {max_bytes} "
            "bytes it may take",
            size=size,
        )


async def _fetch_spread(
    sink: _Sink,
    need: list[bytes],
    sources: list[tuple[str, grpc.aio.Channel]],
    received: Tally | None,
    errors: list[str],
) -> list[bytes]:
    """Fetch `need` from `sources` in parallel, WANT_BATCH CIDs per request, two requests in
    flight per source; a batch a source fails (or sends corrupt) goes back to the queue for
    the others, and that source is asked no more. A worker stops when the queue is empty and
    no batch is in flight (asked for, or verified, and not stored yet). Returns the links
    below the fetched blocks."""
    queue: list[list[bytes]] = [need[i : i + WANT_BATCH] for i in range(0, len(need), WANT_BATCH)]
    below: list[bytes] = []
    inflight = 0
    wakeup = asyncio.Event()
    Checking = tuple[list[bytes], list[tuple[bytes, memoryview]], asyncio.Future[list[bytes]]]

    def requeue(batch: list[bytes]) -> None:
        nonlocal inflight
        queue.append(batch)
        inflight -= 1
        wakeup.set()

    async def settle(node_id: str, checking: Checking) -> bool:
        nonlocal inflight
        batch, blocks, fut = checking
        try:
            below.extend(await fut)
        except ContentError as e:  # a corrupt block: the batch goes to another source
            requeue(batch)
            errors.append(f"{node_id[-8:]}: {e}")
            return False
        try:
            await sink.add(blocks)
        finally:
            inflight -= 1
            wakeup.set()
        return True

    async def worker(node_id: str, channel: grpc.aio.Channel) -> None:
        nonlocal inflight
        checking: Checking | None = None
        try:
            while True:
                if not queue:
                    if checking is not None:
                        ok = await settle(node_id, checking)
                        checking = None
                        if not ok:
                            return
                        continue
                    if inflight == 0:
                        return
                    wakeup.clear()
                    await wakeup.wait()
                    continue
                batch = queue.pop()
                inflight += 1  # until it is stored, or back in the queue
                try:
                    blocks = await _receive(channel, batch, recursive=False, timeout=60.0)
                except (grpc.RpcError, ContentError) as e:
                    requeue(batch)
                    errors.append(f"{node_id[-8:]}: {rpc_error_line(e)}")
                    return
                if received is not None:
                    received.inc(sum(len(d) for _, d in blocks))
                # One batch is hashed in a thread while the next one arrives.
                if checking is not None:
                    ok = await settle(node_id, checking)
                    checking = None
                    if not ok:
                        requeue(batch)
                        return
                hashing = asyncio.ensure_future(asyncio.to_thread(_check, blocks))
                checking = (batch, blocks, hashing)
        finally:
            if checking is not None:
                await settle(node_id, checking)
            wakeup.set()

    # Two requests in flight per source, so a sender reads the next batch while one is sent.
    tasks = [asyncio.ensure_future(worker(n, ch)) for _ in range(2) for n, ch in sources]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
    if queue:
        first = CID.from_bytes(queue[0][0])
        raise NotFound(
            f"block {first} of the DAG is on none of the peers that have its root",
            hint="; ".join(errors[-3:]),
        )
    return below


def store_blocks(
    store: Blockstore, blocks: Sequence[tuple[bytes, bytes | memoryview]], pin: bytes | None
) -> None:
    """Write `blocks` in one batch (pinning `pin`); blocking, run it in a thread."""
    with store.batch() as batch:
        for cid, data in blocks:
            batch.put(cid, data)
        if pin is not None:
            batch.pin(pin, FETCHED)
