"""UnixFS importer: files, directories and symlinks into a kubo-compatible DAG.

Reading and threads live here; node encoding, the balanced layout and CID assembly come
from ``bacalhau._fast``. Large files are read and hashed on all cores: one reader thread per
core reads every n-th span of the file with pread and hashes its chunks (hashlib releases the
GIL), while the calling thread takes their digests in order to the sink and the layout (see
`Importer._add_fd`). Bytes given as a stream are cut here and hashed in the same threads.
A file of any size is imported in constant memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import stat
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bacalhau._fast import _dagpb_py, dagpb
from bacalhau.content.cid import PREFIX_V0, PREFIX_V1_DAG_PB, PREFIX_V1_RAW
from bacalhau.content.errors import PathImportError
from bacalhau.errors import UsageError

DEFAULT_CHUNK_SIZE = 262144
MAX_CHUNK_SIZE = 1 << 20  # kubo refuses chunks over 1 MiB: blocks must fit its bitswap limits
# kubo turns a directory into a HAMT shard once its links add up to this many bytes
# (names plus CIDs); we do not build HAMT shards yet, so we refuse such directories.
HAMT_THRESHOLD = 262144
_BATCH_CHUNKS = 32
_SPAN_BYTES = 1 << 20  # what a reader reads and hashes at a time (it stays in the CPU cache)
_GROUP_BYTES = 16 << 20  # spans a reader hashes before handing their digests over
_QUEUED_GROUPS = 2  # groups a reader may have handed over and not yet taken
_SINK_INFLIGHT = 24 << 20  # file bytes read and not yet taken, all readers, when there's a sink

Buffer = bytes | memoryview
# A hashed leaf: digest, Tsize, and the block's bytes in parts (no copy of the chunk).
_Leaf = tuple[bytes, int, tuple[Buffer, ...]]
_Layout = _dagpb_py.BalancedLayout


class BlockSink(Protocol):
    """Where imported blocks go: ``put`` gets a block's binary CID and its bytes in parts."""

    def put(self, cid: bytes, *parts: Buffer) -> None: ...


@dataclass(frozen=True)
class ImportOptions:
    """How to chunk and address: kubo's ``ipfs add`` defaults unless changed."""

    cid_version: int = 0
    raw_leaves: bool | None = None  # None: raw leaves exactly when cid_version is 1
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_links: int = dagpb.MAX_LINKS

    def __post_init__(self) -> None:
        if self.cid_version not in (0, 1):
            raise UsageError(f"--cid-version must be 0 or 1, not {self.cid_version}")
        if self.cid_version == 0 and self.raw_leaves:
            raise UsageError(
                "raw leaves need CIDv1", hint="add --cid-version 1 or drop --raw-leaves"
            )
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise UsageError(f"chunk size must be between 1 and {MAX_CHUNK_SIZE} bytes")

    @property
    def use_raw_leaves(self) -> bool:
        return self.cid_version == 1 if self.raw_leaves is None else self.raw_leaves

    @property
    def node_prefix(self) -> bytes:
        """CID prefix (before the multihash) of dag-pb nodes."""
        return b"" if self.cid_version == 0 else b"\x01\x70"


def parse_chunker(spec: str) -> int:
    """Chunk size from a kubo-style chunker string, ``size-N``."""
    name, _, value = spec.partition("-")
    if name != "size" or not value.isdigit():
        raise UsageError(
            f"unsupported chunker {spec!r}", hint="use size-N, e.g. size-262144 (the default)"
        )
    size = int(value)
    if not 1 <= size <= MAX_CHUNK_SIZE:
        raise UsageError(f"chunker size must be between 1 and {MAX_CHUNK_SIZE} bytes")
    return size


@dataclass(frozen=True)
class Node:
    """An imported file, directory or symlink: binary CID, Tsize and file bytes."""

    cid: bytes
    tsize: int
    size: int


class Importer:
    """Imports paths or bytes; reports each file and folder to ``on_entry`` as it finishes."""

    def __init__(
        self,
        options: ImportOptions | None = None,
        sink: BlockSink | None = None,
        on_entry: Callable[[str, Node], None] | None = None,
        workers: int | None = None,
    ) -> None:
        self.options = options or ImportOptions()
        self._sink = sink
        self._on_entry = on_entry
        self._workers = max(1, workers or os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        raw = self.options.use_raw_leaves
        self._leaf_prefix = (
            (PREFIX_V1_RAW if raw else PREFIX_V1_DAG_PB) if self.options.cid_version else PREFIX_V0
        )
        self._node_prefix = PREFIX_V0 if self.options.cid_version == 0 else PREFIX_V1_DAG_PB
        self._hash_leaf = self._hash_raw if raw else self._hash_pb

    def __enter__(self) -> Importer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- public entry points -------------------------------------------------------------

    def add_path(self, path: str | os.PathLike[str]) -> Node:
        """Import a file, directory (recursively, hidden files included) or symlink."""
        p = os.fspath(path)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            raise PathImportError(f"{p}: no such file or directory") from None
        except OSError as exc:
            raise PathImportError(f"{p}: {exc.strerror}") from None
        name = Path(p).name or Path(os.path.abspath(p)).name
        if stat.S_ISDIR(st.st_mode):
            return self._add_dir(p, name)
        return self._add_entry(p, name, st)

    def add_bytes(self, data: Buffer) -> Node:
        """Import one file given as bytes."""
        return self._add_stream(iter([data]))

    def add_directory(self, entries: dict[str, Node]) -> Node:
        """A directory of already imported entries (as `add_path` would build it)."""
        links = sorted((os.fsencode(name), n.cid, n.tsize) for name, n in entries.items())
        estimate = sum(len(name) + len(cid) for name, cid, _ in links)
        return self._dir_node(links, estimate, "directory")

    # -- files ---------------------------------------------------------------------------

    def _add_entry(self, path: str, display: str, st: os.stat_result) -> Node:
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            node = self._add_symlink(path)
        elif stat.S_ISREG(mode):
            node = self._add_file(path, st.st_size)
        else:
            raise PathImportError(
                f"{path}: not a regular file, directory or symlink",
                hint="remove it or add the files around it one by one",
            )
        if self._on_entry is not None:
            self._on_entry(display, node)
        return node

    def _add_file(self, path: str, size_hint: int) -> Node:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise PathImportError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            size = self.options.chunk_size
            try:
                if size_hint < size:
                    # Ask for one byte more than the file should hold, so that a short read
                    # says "end of file". Not asking for a whole chunk matters: a 256 KiB
                    # read buffer is an mmap and munmap per small file in glibc.
                    want = size_hint + 1
                    first = os.read(fd, want)
                    if len(first) < want:
                        return self._single_leaf(first)
                    # It grew since it was listed: read it all, from the start.
                return self._add_fd(fd, size_hint)
            except OSError as exc:
                raise PathImportError(f"{path}: cannot read: {exc.strerror}") from None
        finally:
            os.close(fd)

    def _add_fd(self, fd: int, size_hint: int) -> Node:
        """Import a regular file (``size_hint`` bytes when it was listed) from all cores.

        The file is cut in spans of whole chunks, dealt round-robin to one `_SpanReader` per
        worker thread: each reads its spans with pread and hashes their chunks (hashlib
        releases the GIL), and hands the digests over a group of spans at a time, so the
        threads seldom wait on each other. This thread only takes the digests in file order
        to the sink and the layout. Memory stays bounded: each reader keeps a few groups.
        """
        size = self.options.chunk_size
        # Spans of up to _SPAN_BYTES, fewer chunks when that gives every worker some of a
        # smaller file, and no more readers than spans (one past the end reads nothing).
        chunks = size_hint // size + 1
        span = size * max(1, min(_SPAN_BYTES // size, -(-chunks // self._workers)))
        workers = max(1, min(self._workers, size_hint // span + 1))
        sink = self._sink
        raw = self.options.use_raw_leaves
        pre, suf = (b"", b"") if raw else dagpb.leaf_envelope(size)
        full_tsize = len(pre) + size + len(suf)
        prefix = self._leaf_prefix
        layout = dagpb.BalancedLayout(
            self.options.node_prefix, sink.put if sink is not None else None, self.options.max_links
        )
        with contextlib.suppress(OSError):  # only a hint
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        if sink is None:
            group = max(1, _GROUP_BYTES // span)
        else:
            # The spans' bytes travel with their digests: each reader fills a group while
            # _QUEUED_GROUPS wait, and all of that together stays about _SINK_INFLIGHT.
            group = max(1, _SINK_INFLIGHT // (span * workers * (_QUEUED_GROUPS + 1)))
        readers = [
            _SpanReader(fd, k, workers, span, size, group, pre, suf, sink is not None)
            for k in range(workers)
        ]
        pool = self._get_pool()
        futures = [pool.submit(r.run) for r in readers]
        leaves = 0
        try:
            j = 0
            while True:
                n, digests, data = readers[j % workers].next()
                last = len(digests) - 1
                for i, digest in enumerate(digests):
                    cid = prefix + digest
                    start = i * size
                    if i < last or n - start == size:
                        length, tsize = size, full_tsize
                        envelope = pre, suf
                    else:  # the file's last, short chunk
                        length = n - start
                        envelope = (b"", b"") if raw else dagpb.leaf_envelope(length)
                        tsize = len(envelope[0]) + length + len(envelope[1])
                    if sink is not None:
                        assert data is not None
                        chunk = data[start : start + length]
                        if raw:
                            sink.put(cid, chunk)
                        else:
                            sink.put(cid, envelope[0], chunk, envelope[1])
                    layout.add(cid, tsize, length)
                leaves += len(digests)
                if n < span:
                    break
                j += 1
        finally:
            # The readers stop at the end of the file, or here on an error; none may still
            # be reading when the caller closes the file.
            for r in readers:
                r.stop()
            for f in futures:
                f.result()
        if leaves == 0:  # it was emptied while we read it
            return self._single_leaf(b"")
        cid, tsize, filesize = layout.finish()
        return Node(cid, tsize, filesize)

    def _single_leaf(self, chunk: Buffer) -> Node:
        digest, tsize, parts = self._hash_leaf(chunk)
        cid = self._leaf_prefix + digest
        if self._sink is not None:
            self._sink.put(cid, *parts)
        return Node(cid, tsize, len(chunk))

    def _add_stream(self, chunks: Iterator[Buffer]) -> Node:
        """Import a file given as an iterator of byte strings of any sizes."""
        sink = self._sink
        layout = dagpb.BalancedLayout(
            self.options.node_prefix, sink.put if sink is not None else None, self.options.max_links
        )
        leaves = 0
        pending: deque[tuple[list[Future[list[_Leaf]]], list[Buffer]]] = deque()
        for batch in _batches(_rechunk(chunks, self.options.chunk_size), _BATCH_CHUNKS):
            # Hash this batch in the pool while the previous one is handed on.
            pending.append((self._submit(batch), batch))
            if len(pending) > 1:
                leaves += self._drain(*pending.popleft(), layout)
        while pending:
            leaves += self._drain(*pending.popleft(), layout)
        if leaves == 0:
            return self._single_leaf(b"")
        # A one-chunk file is its own root: the layout then emits no node.
        cid, tsize, filesize = layout.finish()
        return Node(cid, tsize, filesize)

    def _get_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="bacalhau-hash")
        return self._pool

    def _submit(self, batch: list[Buffer]) -> list[Future[list[_Leaf]]]:
        pool = self._get_pool()
        hash_leaf = self._hash_leaf
        step = -(-len(batch) // self._workers)
        return [
            pool.submit(lambda s: [hash_leaf(c) for c in s], batch[i : i + step])
            for i in range(0, len(batch), step)
        ]

    def _drain(
        self, futures: list[Future[list[_Leaf]]], batch: list[Buffer], layout: _Layout
    ) -> int:
        prefix = self._leaf_prefix
        sink = self._sink
        hashed = [leaf for f in futures for leaf in f.result()]
        for (digest, tsize, parts), chunk in zip(hashed, batch, strict=True):
            cid = prefix + digest
            if sink is not None:
                sink.put(cid, *parts)
            layout.add(cid, tsize, len(chunk))
        return len(hashed)

    @staticmethod
    def _hash_pb(chunk: Buffer) -> _Leaf:
        pre, suf = dagpb.leaf_envelope(len(chunk))
        h = hashlib.sha256(pre)
        h.update(chunk)
        h.update(suf)
        return h.digest(), len(pre) + len(chunk) + len(suf), (pre, chunk, suf)

    @staticmethod
    def _hash_raw(chunk: Buffer) -> _Leaf:
        return hashlib.sha256(chunk).digest(), len(chunk), (chunk,)

    # -- symlinks and directories -------------------------------------------------------

    def _add_symlink(self, path: str) -> Node:
        try:
            target = os.readlink(os.fsencode(path))
        except OSError as exc:
            raise PathImportError(f"{path}: cannot read link: {exc.strerror}") from None
        block = dagpb.symlink_node(target)
        cid = self._node_prefix + hashlib.sha256(block).digest()
        if self._sink is not None:
            self._sink.put(cid, block)
        return Node(cid, len(block), 0)

    def _add_dir(self, path: str, display: str) -> Node:
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            raise PathImportError(f"{path}: cannot list directory: {exc.strerror}") from None
        links: list[tuple[bytes, bytes, int]] = []
        estimate = 0
        for entry in entries:
            child_display = f"{display}/{entry.name}"
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                st = None if is_dir else entry.stat(follow_symlinks=False)
            except OSError as exc:
                raise PathImportError(f"{entry.path}: {exc.strerror}") from None
            if st is None:
                node = self._add_dir(entry.path, child_display)
            else:
                node = self._add_entry(entry.path, child_display, st)
            name = os.fsencode(entry.name)
            links.append((name, node.cid, node.tsize))
            estimate += len(name) + len(node.cid)
        node = self._dir_node(links, estimate, path)
        if self._on_entry is not None:
            self._on_entry(display, node)
        return node

    def _dir_node(self, links: list[tuple[bytes, bytes, int]], estimate: int, path: str) -> Node:
        if estimate >= HAMT_THRESHOLD:
            raise PathImportError(
                f"{path}: directory has too many entries ({len(links)}) for one block",
                hint="kubo would shard it (HAMT), which is not supported yet; split it into "
                "subfolders",
            )
        block = dagpb.dir_node(links)
        cid = self._node_prefix + hashlib.sha256(block).digest()
        if self._sink is not None:
            self._sink.put(cid, block)
        return Node(cid, len(block) + sum(t for _, _, t in links), 0)


_Span = tuple[int, list[bytes], memoryview | None]  # bytes read, chunk digests, the bytes


class _SpanReader:
    """Reads and hashes spans ``first``, ``first + step``, ... of a file, in a pool thread.

    ``run`` stops after the first short span (the end of the file) or when told to `stop`;
    ``next`` gives the spans in order to the importing thread, re-raising any error.
    Without ``keep``, one preallocated buffer is read into again and again (it stays in
    the CPU's cache); with it, each span is a fresh bytes object that a sink may hold on to.
    """

    def __init__(
        self,
        fd: int,
        first: int,
        step: int,
        span: int,
        size: int,
        group: int,
        pre: bytes,
        suf: bytes,
        keep: bool,
    ) -> None:
        self._fd, self._first, self._step, self._span = fd, first, step, span
        self._size, self._group, self._pre, self._suf, self._keep = size, group, pre, suf, keep
        self._queue: queue.Queue[list[_Span] | BaseException] = queue.Queue(_QUEUED_GROUPS)
        self._stopped = False
        self._taken: list[_Span] = []
        self._pos = 0

    def stop(self) -> None:
        self._stopped = True

    def next(self) -> _Span:
        if self._pos == len(self._taken):
            got = self._queue.get()
            if isinstance(got, BaseException):
                raise got
            self._taken, self._pos = got, 0
        self._pos += 1
        return self._taken[self._pos - 1]

    def _hand_over(self, item: list[_Span] | BaseException) -> None:
        while not self._stopped:
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # handed to the importing thread
            self._hand_over(exc)

    def _run(self) -> None:
        fd, span, size, suf = self._fd, self._span, self._size, self._suf
        offset = self._first * span
        stride = self._step * span
        buf = None if self._keep else memoryview(bytearray(span))
        sha256 = hashlib.sha256
        base = sha256(self._pre) if self._pre else None
        spans: list[_Span] = []
        while not self._stopped:
            data = _pread(fd, offset, span, buf)
            n = len(data)
            full = n - n % size
            if base is None:
                digests = [sha256(data[i : i + size]).digest() for i in range(0, n, size)]
            else:
                digests = []
                for i in range(0, full, size):
                    h = base.copy()
                    h.update(data[i : i + size])
                    h.update(suf)
                    digests.append(h.digest())
                if full < n:
                    digests.append(Importer._hash_pb(data[full:])[0])
            spans.append((n, digests, data if self._keep else None))
            if n < span or len(spans) == self._group:
                self._hand_over(spans)
                spans = []
            if n < span:
                return
            offset += stride


def _pread(fd: int, offset: int, span: int, buf: memoryview | None) -> memoryview:
    """Up to ``span`` bytes at ``offset`` (into ``buf`` when given): fewer only at the end
    of the file."""
    if buf is None:
        data = os.pread(fd, span, offset)
        while 0 < len(data) < span:  # a short read before the end (a signal): go on
            more = os.pread(fd, span - len(data), offset + len(data))
            if not more:
                break
            data += more
        return memoryview(data)
    got = 0
    while got < span:
        n = os.preadv(fd, [buf[got:]], offset + got)
        if n == 0:
            break
        got += n
    return buf[:got]


def _rechunk(pieces: Iterator[Buffer], size: int) -> Iterator[Buffer]:
    """Cut a stream of byte strings of any sizes into chunks of exactly ``size`` bytes.

    Chunks are memoryview slices of what was read: no chunk is copied.
    """
    buf = b""
    for piece in pieces:
        if buf:
            piece = buf + bytes(piece)
        n = len(piece)
        full = n - n % size
        mv = memoryview(piece)
        for i in range(0, full, size):
            yield mv[i : i + size]
        buf = bytes(mv[full:])
    if buf:
        yield buf


def _batches(items: Iterator[Buffer], n: int) -> Iterator[list[Buffer]]:
    batch: list[Buffer] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
