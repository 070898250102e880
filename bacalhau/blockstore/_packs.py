"""A durable blockstore: blocks appended to pack files, located by an LMDB index.

Layout under the store's folder::

    index/           LMDB: multihash -> (pack, offset, length); pins; committed pack ends
    packs/NNNNNN.pack
    lock             flock'd by the one writer at a time (processes and threads)

A batch appends its blocks to the current pack, fsyncs the pack (in the background as it
grows, and once more at the end), and only then commits the index in one synced LMDB
transaction. A block is therefore visible only once its bytes are on disk: after a crash or
``kill -9``, bytes past the last committed end of a pack are cut off when the next writer
starts, and no reader ever sees a partial block. Every read is checked against its CID.

A block that is already stored is checked when it is put again: if its bytes on disk no longer
hash to its CID, the new copy is appended and indexed instead (so adding the data again
repairs it). `verify` checks every block; `drop` removes corrupt ones from the index.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import lmdb

from bacalhau._fast import blockio
from bacalhau.content.cid import CID
from bacalhau.content.errors import ContentError, CorruptData, NotFound

PACK_LIMIT = 1 << 32  # start a new pack once the current one is past 4 GiB
SYNC_EVERY = 64 << 20  # start a background fdatasync every 64 MiB written
_WRITE_BUFFER = 4 << 20
_MAX_IOV = 512
_MAX_INFLIGHT = 8
_LOC = struct.Struct("<IQI")  # pack id, offset, length
_END = struct.Struct("<Q")
_CURRENT = b"current-pack"
MAP_SIZE = 1 << 36  # address space only: LMDB's file grows with what is stored
_VERIFY_CHUNK = 1024  # index entries read per read transaction by `verify`
REPAIR_HINT = "run 'bacalhauctl repo verify --repair' or add the data again"
GC_MIN_GARBAGE = 0.25  # rewrite a pack once this much of it is garbage

# Pin tags: why a root is pinned. A pin holds until its last tag is removed.
PIN = b"recursive"  # kept until unpinned by hand: local add/import, results, older pins
UPLOAD = b"upload"  # an upload to a node, held by its users' upload records
INPUT = b"input"  # a job input in the node's input cache, unpinned when it is evicted
FETCHED = b"fetched"  # a DAG fetched from peers (adopted as INPUT by the input cache)


@dataclass
class _Reader:
    fd: int
    users: int = 0
    retired: bool = False


def _tags(raw: bytes | None) -> frozenset[bytes]:
    return frozenset(bytes(raw).split(b",")) if raw else frozenset()


def _write_all(fd: int, parts: list[bytes | memoryview]) -> None:
    while parts:
        n = os.writev(fd, parts)
        # Drop what was written; a short write leaves the rest of one part.
        while parts and n >= len(parts[0]):
            n -= len(parts[0])
            parts = parts[1:]
        if n:
            parts = [memoryview(parts[0])[n:], *parts[1:]]


def _not_here(cid: bytes) -> NotFound:
    return NotFound(
        f"block {CID.from_bytes(cid)} is not in the local blockstore",
        hint="add the data first, or fetch it from a node that has it",
    )


def _corrupt_here(cid: bytes, pack: int, offset: int) -> CorruptData:
    return CorruptData(
        f"block {CID.from_bytes(cid)} is corrupt on this node (pack {pack}, offset {offset})",
        hint=REPAIR_HINT,
    )


class BlockstoreError(ContentError):
    """The blockstore cannot be opened or written."""


@dataclass(frozen=True)
class CorruptBlock:
    """A stored block whose bytes do not hash to its CID (or cannot be read back whole)."""

    multihash: bytes
    pack: int
    offset: int
    length: int
    reason: str  # "hash mismatch", "truncated" or "pack missing"

    @property
    def cid(self) -> CID:
        """The block as a CIDv0 (blocks are stored by multihash, whatever their codec)."""
        return CID.from_bytes(self.multihash)


@dataclass
class GcReport:
    """What `Blockstore.gc` did."""

    blocks_removed: int = 0  # unreachable blocks taken out of the index
    bytes_removed: int = 0  # their bytes
    bytes_reclaimed: int = 0  # pack bytes freed on disk (garbage of rewritten packs)
    bytes_moved: int = 0  # live bytes copied out of rewritten packs
    packs_rewritten: int = 0
    packs_deleted: int = 0
    live_blocks: int = 0
    corrupt: list[CorruptBlock] = field(default_factory=list)  # live but unreadable: dropped
    seconds: float = 0.0


@dataclass
class VerifyReport:
    """What `Blockstore.verify` found."""

    blocks: int = 0
    bytes: int = 0
    corrupt: list[CorruptBlock] = field(default_factory=list)


def _multihash(cid: bytes) -> bytes:
    # Blocks are keyed by multihash, as kubo does: the same bytes under a v0 and a v1 CID
    # (or dag-pb and raw codecs) are stored once.
    if cid[:2] == b"\x12\x20":
        return cid
    return bytes(CID.from_bytes(cid).multihash)


class Blockstore:
    """Content-addressed blocks on disk, written atomically, verified on read, with pins."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        try:
            (self.root / "packs").mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(
                str(self.root / "index"),
                map_size=MAP_SIZE,
                max_dbs=4,
                subdir=True,
                sync=True,
                metasync=True,
                readahead=False,
            )
        except (OSError, lmdb.Error) as exc:
            raise BlockstoreError(
                f"cannot open blockstore at {self.root}: {exc}",
                hint="check that the data directory exists, is writable and is not corrupt",
            ) from None
        self._blocks = self._env.open_db(b"blocks")
        self._pins = self._env.open_db(b"pins")
        self._meta = self._env.open_db(b"meta")
        self._readers: dict[int, _Reader] = {}
        self._readers_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._holds: dict[bytes, int] = {}  # roots in use by this process (see `hold`)
        self._holds_lock = threading.Lock()
        self._gc_lock = threading.Lock()  # one collection at a time in this process
        self._closing = threading.Event()  # a collection stops at its next step

    def close(self) -> None:
        """Close the store; a collection running in this process stops at its next step
        (between blocks while marking, between packs while sweeping) first."""
        self._closing.set()
        with self._gc_lock:
            pass
        with self._readers_lock:
            for reader in self._readers.values():
                os.close(reader.fd)
            self._readers.clear()
        self._env.close()

    def __enter__(self) -> Blockstore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------

    def has(self, cid: bytes) -> bool:
        """True if the block is stored."""
        with self._env.begin(db=self._blocks) as txn:
            return txn.get(_multihash(cid)) is not None

    def get(self, cid: bytes, *, verify: bool = True) -> bytes:
        """The block's bytes, checked against its CID (unless `verify` is False: for sending
        to a peer, which checks every block itself). Raises NotFound or CorruptData."""
        mh = _multihash(cid)
        loc = self._loc(mh)
        while True:
            if loc is None:
                raise _not_here(cid)
            pack, offset, length = _LOC.unpack(loc)
            data = self._pread(pack, length, offset)
            if len(data) == length and (not verify or hashlib.sha256(data).digest() == mh[2:]):
                return data
            # Garbage collection may have moved the block (and deleted its old pack) since
            # it was looked up: read it where the index says it is now.
            moved = self._loc(mh)
            if moved == loc:
                raise _corrupt_here(cid, pack, offset)
            loc = moved

    def get_framed(
        self, cids: list[bytes], head: Callable[[list[int]], bytes], *, max_bytes: int = 0
    ) -> tuple[bytes, list[int]]:
        """(`head(sizes)` followed by the blocks' bytes one after another, as one bytes object
        that the blocks are read straight into; the blocks' sizes) for the first blocks of
        `cids` that together hold at most `max_bytes` (0: all of them; always at least one).
        Not checked against their CIDs: for sending to a peer, which checks every block
        itself. Raises NotFound, or CorruptData if a pack is cut short."""
        where: list[tuple[int, int, int]] = []
        total = 0
        with self._env.begin(db=self._blocks) as txn:
            for cid in cids:
                loc = txn.get(_multihash(cid))
                if loc is None:
                    raise _not_here(cid)
                pack, offset, length = _LOC.unpack(loc)
                if where and max_bytes and total + length > max_bytes:
                    break
                where.append((pack, offset, length))
                total += length
        cids = cids[: len(where)]
        sizes = [length for _, _, length in where]
        first = head(sizes)
        try:
            with self._reading({pack for pack, _, _ in where}) as fds:
                reads = [(fds[pack], offset, length) for pack, offset, length in where]
                framed: bytes | None = blockio.pread_many(first, reads)
        except FileNotFoundError:
            framed = None
        if framed is not None:
            return framed, sizes
        # A pack was cut short or is gone, or garbage collection moved a block meanwhile:
        # read them one by one, as `get` does (which says which block is corrupt).
        blocks = [self.get(cid, verify=False) for cid in cids]
        sizes = [len(b) for b in blocks]
        return b"".join([head(sizes), *blocks]), sizes

    def _loc(self, mh: bytes) -> bytes | None:
        with self._env.begin(db=self._blocks) as txn:
            loc = txn.get(mh)
        return None if loc is None else bytes(loc)

    def locate(self, cid: bytes) -> tuple[int, int, int] | None:
        """Where the block is stored: (pack, offset, length), or None if it is not."""
        with self._env.begin(db=self._blocks) as txn:
            loc = txn.get(_multihash(cid))
        return None if loc is None else _LOC.unpack(loc)

    def pack_path(self, pack: int) -> Path:
        """The file of pack number `pack`."""
        return self._pack_path(pack)

    def is_corrupt(self, cid: bytes) -> bool:
        """True if the block is stored but its bytes do not hash to its CID."""
        mh = _multihash(cid)
        with self._env.begin(db=self._blocks) as txn:
            loc = txn.get(mh)
        return loc is not None and self._check(mh, bytes(loc)) is not None

    def _check(self, mh: bytes, loc: bytes) -> CorruptBlock | None:
        """None if the block at `loc` hashes to `mh`, else what is wrong with it (as it is
        now: a block that garbage collection moved meanwhile is checked where it went)."""
        while True:
            bad = self._check_at(mh, loc)
            if bad is None:
                return None
            moved = self._loc(mh)
            if moved is None or moved == loc:
                return bad
            loc = moved

    def _check_at(self, mh: bytes, loc: bytes) -> CorruptBlock | None:
        pack, offset, length = _LOC.unpack(loc)
        try:
            data = self._pread(pack, length, offset, missing_ok=False)
        except FileNotFoundError:
            return CorruptBlock(mh, pack, offset, length, "pack missing")
        if len(data) != length:
            return CorruptBlock(mh, pack, offset, length, "truncated")
        if hashlib.sha256(data).digest() != mh[2:]:
            return CorruptBlock(mh, pack, offset, length, "hash mismatch")
        return None

    def verify(self, *, workers: int | None = None) -> VerifyReport:
        """Read every stored block and check it against its CID.

        Reads committed blocks only, a chunk of the index per read transaction, so it is safe
        while a node or another writer uses the store. Raises BlockstoreError if a pack
        cannot be read (other than missing: that makes its blocks corrupt).
        """
        report = VerifyReport()
        pool = ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1))
        try:
            after = b""
            while True:
                with self._env.begin(db=self._blocks) as txn:
                    cur = txn.cursor()
                    entries: list[tuple[bytes, bytes]] = []
                    if cur.set_range(after) if after else cur.first():
                        for key, value in cur:
                            if key == after:
                                continue
                            entries.append((bytes(key), bytes(value)))
                            if len(entries) >= _VERIFY_CHUNK:
                                break
                if not entries:
                    return report
                after = entries[-1][0]
                # In pack order, so the reads are mostly sequential; hashlib frees the GIL.
                entries.sort(key=lambda e: _LOC.unpack(e[1])[:2])
                for (_, loc), bad in zip(
                    entries, pool.map(lambda e: self._check(*e), entries), strict=True
                ):
                    report.blocks += 1
                    report.bytes += _LOC.unpack(loc)[2]
                    if bad is not None:
                        report.corrupt.append(bad)
        except OSError as exc:
            raise BlockstoreError(
                f"cannot read the blockstore at {self.root}: {exc.strerror or exc}",
                hint="check the data directory's permissions and the disk",
            ) from None
        finally:
            pool.shutdown()

    def drop(self, blocks: list[CorruptBlock]) -> int:
        """Remove corrupt blocks from the index (their bytes stay in the packs, unreachable),
        so they can be fetched or added again; pins are kept. A block that was rewritten
        since it was found corrupt is left alone. Returns how many were removed."""
        with self.batch() as batch:
            return sum(batch.drop_at(b.multihash, b.pack, b.offset) for b in blocks)

    def _pread(self, pack: int, length: int, offset: int, *, missing_ok: bool = True) -> bytes:
        """Bytes of a pack; b"" if the pack file is gone (unless not `missing_ok`).

        The pack's descriptor is counted in use while it is read, as `_reading` does (inline
        here: this is every block read)."""
        with self._readers_lock:
            reader = self._readers.get(pack)
            if reader is None:
                try:
                    fd = os.open(self._pack_path(pack), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    if missing_ok:
                        return b""
                    raise
                reader = self._readers[pack] = _Reader(fd)
            reader.users += 1
        try:
            return os.pread(reader.fd, length, offset)
        finally:
            with self._readers_lock:
                reader.users -= 1
                if reader.retired and not reader.users:
                    os.close(reader.fd)

    @contextlib.contextmanager
    def _reading(self, packs: Iterable[int]) -> Iterator[dict[int, int]]:
        """Descriptors of `packs` ({pack: fd}), counted in use while the block is entered, so
        `_retire` (garbage collection deleting a pack) closes one only after the last reader is
        done. Raises FileNotFoundError if a pack file is gone."""
        taken: list[_Reader] = []
        fds = {}
        try:
            with self._readers_lock:
                for pack in packs:
                    reader = self._readers.get(pack)
                    if reader is None:
                        fd = os.open(self._pack_path(pack), os.O_RDONLY | os.O_CLOEXEC)
                        reader = self._readers[pack] = _Reader(fd)
                    reader.users += 1
                    taken.append(reader)
                    fds[pack] = reader.fd
            yield fds
        finally:
            with self._readers_lock:
                for reader in taken:
                    reader.users -= 1
                    if reader.retired and not reader.users:
                        os.close(reader.fd)

    def _retire(self, pack: int) -> None:
        """Forget this process's descriptor of a deleted pack (closed once no read uses it)."""
        with self._readers_lock:
            reader = self._readers.pop(pack, None)
            if reader is not None:
                reader.retired = True
                if not reader.users:
                    os.close(reader.fd)

    def _pack_path(self, pack: int) -> Path:
        return self.root / "packs" / f"{pack:06d}.pack"

    def pins(self) -> list[bytes]:
        """Binary CIDs of the pinned roots."""
        with self._env.begin(db=self._pins) as txn:
            return [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]

    def is_pinned(self, cid: bytes) -> bool:
        with self._env.begin(db=self._pins) as txn:
            return txn.get(cid) is not None

    def pin_tags(self, cid: bytes) -> frozenset[bytes]:
        """Why the root is pinned (empty: it is not): PIN, UPLOAD, INPUT, FETCHED."""
        with self._env.begin(db=self._pins) as txn:
            raw = txn.get(cid)
        return _tags(raw)

    @contextlib.contextmanager
    def hold(self, *cids: bytes) -> Iterator[None]:
        """Keep the DAGs under `cids` (what of them is stored) from garbage collection in
        this process while the block is entered: for data being fetched or stored in more
        than one batch, before its root is pinned."""
        with self._holds_lock:
            for cid in cids:
                self._holds[cid] = self._holds.get(cid, 0) + 1
        try:
            yield
        finally:
            with self._holds_lock:
                for cid in cids:
                    n = self._holds[cid] - 1
                    if n:
                        self._holds[cid] = n
                    else:
                        del self._holds[cid]

    def held(self) -> list[bytes]:
        """Roots held by `hold` in this process now."""
        with self._holds_lock:
            return list(self._holds)

    def count(self) -> int:
        """How many blocks are stored."""
        with self._env.begin(db=self._blocks) as txn:
            return int(txn.stat(self._blocks)["entries"])

    def iter_cids(self) -> Iterator[bytes]:
        """Multihashes of all stored blocks (as CIDv0 bytes)."""
        with self._env.begin(db=self._blocks) as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                yield bytes(key)

    # -- writing ---------------------------------------------------------------------

    def batch(self) -> Batch:
        """A write batch: blocks become visible together, after they are synced."""
        return Batch(self)

    def put(self, cid: bytes, *parts: bytes | memoryview) -> None:
        """Store one block durably (a batch of one)."""
        with self.batch() as b:
            b.put(cid, *parts)

    def pin(self, cid: bytes, tag: bytes = PIN) -> None:
        """Pin a root (for the reason `tag`): it and what it links to must stay."""
        with self.batch() as b:
            b.pin(cid, tag)

    def unpin(self, cid: bytes, tag: bytes | None = None) -> bool:
        """Remove the pin's `tag` (None: the whole pin); False if it was not there. The root
        stays pinned while it has other tags."""
        with self.batch() as batch:
            return batch.unpin(cid, tag)

    def gc(self, *, min_garbage: float = GC_MIN_GARBAGE) -> GcReport:
        """Remove every block not reachable from a pin or a hold; rewrite the packs whose
        garbage is at least `min_garbage` of their size (0: every pack with any). See
        `bacalhau.blockstore._gc`. Raises BlockstoreError (nothing lost) if a pinned DAG's
        node is corrupt or the store cannot be written."""
        from bacalhau.blockstore._gc import collect

        with self._gc_lock:
            return collect(self, min_garbage)


class Batch:
    """Blocks and pins written together; see the module docstring for the protocol."""

    def __init__(self, store: Blockstore) -> None:
        self._store = store
        self._txn: Any = None
        self._lock_fd = -1
        self._pack = 0
        self._fd = -1
        self._offset = 0
        self._start = 0
        self._parts: list[bytes | memoryview] = []
        self._buffered = 0
        self._synced_at = 0
        self._touched: dict[int, int] = {}  # pack id -> fd, for the final sync
        self._writer: ThreadPoolExecutor | None = None
        self._inflight: deque[Future[None]] = deque()
        self._blocks = store._blocks
        self._first = 0  # the pack this batch started in (at offset `_start`)
        self.blocks_written = 0
        self.bytes_written = 0
        self.blocks_repaired = 0

    def __enter__(self) -> Batch:
        store = self._store
        store._write_lock.acquire()
        try:
            self._lock_fd = os.open(store.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._txn = store._env.begin(write=True)
            current = self._txn.get(_CURRENT, db=store._meta)
            self._open_pack(int(current) if current else 1)
        except BaseException:
            self._release()
            raise
        return self

    def _open_pack(self, pack: int) -> None:
        store = self._store
        end_raw = self._txn.get(b"end:%d" % pack, db=store._meta)
        end = _END.unpack(end_raw)[0] if end_raw else 0
        fd = os.open(store._pack_path(pack), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        # Whatever lies past the committed end was written by a batch that never committed
        # (a crash, or an abort): nothing indexes it, so cut it off.
        if os.fstat(fd).st_size != end:
            os.ftruncate(fd, end)
        os.lseek(fd, end, os.SEEK_SET)
        if not self._touched:
            self._first, self._start = pack, end
        self._pack, self._fd, self._offset = pack, fd, end
        self._touched[pack] = fd
        self._txn.put(_CURRENT, b"%d" % pack, db=store._meta)

    def put(self, cid: bytes, *parts: bytes | memoryview) -> None:
        """Add a block whose bytes are the concatenation of ``parts``; stored once."""
        mh = cid if cid[:2] == b"\x12\x20" else _multihash(cid)
        txn = self._txn
        # The write transaction sees this batch's own puts too: one lookup dedupes both.
        loc = txn.get(mh, db=self._blocks)
        if loc is not None:
            # A block stored before is read back and hashed (the only cost over a plain
            # lookup, paid only for blocks already present): if it is corrupt on disk, the
            # new copy is written and indexed in its place. This batch's own blocks are
            # taken as they are (their bytes may not be written yet).
            if self._ours(loc) or self._store._check(mh, bytes(loc)) is None:
                return
            self.blocks_repaired += 1
        length = len(parts[0]) if len(parts) == 1 else sum(map(len, parts))
        if self._offset + length > PACK_LIMIT and self._offset > 0:
            self._finish_pack()
            self._open_pack(self._pack + 1)
        txn.put(mh, _LOC.pack(self._pack, self._offset, length), db=self._blocks)
        self._parts.extend(parts)
        self._buffered += length
        self._offset += length
        self.blocks_written += 1
        self.bytes_written += length
        if self._buffered >= _WRITE_BUFFER or len(self._parts) >= _MAX_IOV:
            self._flush()
        if self.bytes_written - self._synced_at >= SYNC_EVERY:
            # Let the disk catch up while hashing goes on, so the final sync is short.
            self._synced_at = self.bytes_written
            self._submit(os.fdatasync, self._fd)

    def _ours(self, loc: bytes) -> bool:
        pack: int
        offset: int
        pack, offset, _ = _LOC.unpack(loc)
        return pack > self._first or (pack == self._first and offset >= self._start)

    def drop_at(self, mh: bytes, pack: int, offset: int) -> bool:
        """Remove block `mh` from the index if it is still the copy at (pack, offset)."""
        loc = self._txn.get(mh, db=self._blocks)
        if loc is None or _LOC.unpack(loc)[:2] != (pack, offset):
            return False
        return bool(self._txn.delete(mh, db=self._blocks))

    def pin(self, cid: bytes, tag: bytes = PIN) -> None:
        """Pin a root in this batch (for the reason `tag`)."""
        db = self._store._pins
        tags = _tags(self._txn.get(cid, db=db))
        if tag not in tags:
            self._txn.put(cid, b",".join(sorted(tags | {tag})), db=db)

    def unpin(self, cid: bytes, tag: bytes | None = None) -> bool:
        """Remove the pin's `tag` (None: the whole pin) in this batch; False if it was not
        there."""
        db = self._store._pins
        if tag is None:
            return bool(self._txn.delete(cid, db=db))
        tags = _tags(self._txn.get(cid, db=db))
        if tag not in tags:
            return False
        if tags == {tag}:
            self._txn.delete(cid, db=db)
        else:
            self._txn.put(cid, b",".join(sorted(tags - {tag})), db=db)
        return True

    # -- for garbage collection (`_gc`) ------------------------------------------------

    def seal(self) -> None:
        """Write the rest of this batch to a new pack (the current one is to be rewritten)."""
        self._finish_pack()
        self._open_pack(self._pack + 1)

    @property
    def pack(self) -> int:
        """The pack this batch appends to now."""
        return self._pack

    def move(self, mh: bytes, data: bytes) -> None:
        """Append a stored block's bytes again and index it there (its old copy is freed)."""
        if self._offset + len(data) > PACK_LIMIT and self._offset > 0:
            self.seal()
        self._txn.put(mh, _LOC.pack(self._pack, self._offset, len(data)), db=self._blocks)
        self._parts.append(data)
        self._buffered += len(data)
        self._offset += len(data)
        self.bytes_written += len(data)
        if self._buffered >= _WRITE_BUFFER or len(self._parts) >= _MAX_IOV:
            self._flush()
        if self.bytes_written - self._synced_at >= SYNC_EVERY:
            self._synced_at = self.bytes_written
            self._submit(os.fdatasync, self._fd)

    def forget(self, mh: bytes) -> None:
        """Remove a block from the index."""
        self._txn.delete(mh, db=self._blocks)

    def entries(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (multihash, location) of the index as this batch sees it."""
        cur = self._txn.cursor(db=self._blocks)
        for key, value in cur:
            yield bytes(key), bytes(value)

    def pack_ends(self) -> dict[int, int]:
        """Each committed pack's end, as this batch sees them."""
        ends = {}
        cur = self._txn.cursor(db=self._store._meta)
        if cur.set_range(b"end:"):
            for key, value in cur:
                if not bytes(key).startswith(b"end:"):
                    break
                ends[int(bytes(key)[4:])] = _END.unpack(value)[0]
        return ends

    def drop_pack(self, pack: int) -> None:
        """Forget a pack that no block is in any more (its file is deleted after commit)."""
        self._txn.delete(b"end:%d" % pack, db=self._store._meta)

    def pins(self) -> list[bytes]:
        """The pinned roots as this batch sees them."""
        cur = self._txn.cursor(db=self._store._pins)
        return [bytes(k) for k in cur.iternext(keys=True, values=False)]

    def _flush(self) -> None:
        if self._parts:
            self._submit(_write_all, self._fd, self._parts)
            self._parts = []
            self._buffered = 0

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        # One writer thread: writes and syncs happen in order, off the importing thread,
        # with a bounded number in flight so memory stays bounded.
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="bacalhau-write")
        while len(self._inflight) >= _MAX_INFLIGHT:
            self._inflight.popleft().result()
        self._inflight.append(self._writer.submit(fn, *args))

    def _drain(self) -> None:
        while self._inflight:
            self._inflight.popleft().result()

    def _finish_pack(self) -> None:
        self._flush()
        self._txn.put(b"end:%d" % self._pack, _END.pack(self._offset), db=self._store._meta)

    def commit(self) -> None:
        """Sync the packs, then commit the index: only now are the blocks visible."""
        self._finish_pack()
        self._drain()
        for fd in self._touched.values():
            os.fdatasync(fd)
        self._txn.commit()
        self._txn = None

    def abort(self) -> None:
        """Forget everything in the batch; the packs are cut back to where they were."""
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        for fut in self._inflight:
            fut.exception()
        self._inflight.clear()
        first = min(self._touched, default=0)
        for pack, fd in self._touched.items():
            os.ftruncate(fd, self._start if pack == first else 0)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                try:
                    self.commit()
                except (OSError, lmdb.Error) as err:
                    self.abort()
                    raise self._write_error(err) from None
            else:
                self.abort()
                if isinstance(exc, OSError | lmdb.Error):
                    raise self._write_error(exc) from None
        finally:
            self._release()

    def _write_error(self, err: BaseException) -> BlockstoreError:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        return BlockstoreError(
            f"cannot write to the blockstore at {self._store.root}: {reason}; nothing was stored",
            hint="check free disk space and permissions",
        )

    def _release(self) -> None:
        if self._txn is not None:  # failed before commit or abort could run
            self._txn.abort()
            self._txn = None
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        for fd in self._touched.values():
            os.close(fd)
        self._touched.clear()
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1
        self._store._write_lock.release()
