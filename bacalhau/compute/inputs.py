"""The node's input cache: the files and folders jobs read, written out once per node.

Jobs name their inputs (and wasm modules, and Python contexts) by CID, or by URL; a storage
provider per source (`bacalhau/data`) brings the content into the blockstore. The first job
that needs a CID has it fetched (`ipfs`: from the requester first, then any peer) and written
out under `root/<cid>` atomically (temp + rename); jobs needing the same CID meanwhile wait
on that one fetch (single flight). URLs are downloaded by the `url` provider, and the files of
the URLs that share a mount folder become one UnixFS folder, which is then an input by CID
like any other.

`acquire` returns the local path and counts a reference; `release` drops it. Entries no job
holds are evicted, least recently used first, once the cache is over its size cap.

An input's root is pinned in the blockstore with the tag INPUT while it is in the cache (and
held, `Blockstore.hold`, while it is fetched). Evicting it removes that tag, so its blocks
become garbage unless something else pins them (an upload, a result). Once the entries
evicted since the last collection add up to `gc_after` bytes, the blockstore's garbage is
collected in a thread (`Blockstore.gc`), one collection at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bacalhau import spec as jobspec
from bacalhau._pb.bacalhau.v1 import types_pb2 as pb
from bacalhau.blockstore import INPUT, Blockstore
from bacalhau.content import Importer, dag
from bacalhau.content.cid import CID
from bacalhau.content.errors import NotFound, TooLarge
from bacalhau.content.importer import Node as ImportedNode
from bacalhau.data import (
    InputRequest,
    IpfsProvider,
    Resolved,
    StorageProvider,
    UrlFetcher,
    UrlProvider,
    nobody_has,
)
from bacalhau.errors import BacalhauError
from bacalhau.network import DagFetcher, Network
from bacalhau.network.blocks import Tally
from bacalhau.spec import size_text

log = logging.getLogger(__name__)

FETCH_PATIENCE_S = 30.0
URL_PARALLEL = 8  # downloads at once per node
GC_AFTER_MAX = 1 << 30  # collect garbage after this much was evicted (or a quarter of the cap)


@dataclass
class _Entry:
    cid: str
    path: Path
    size: int
    refs: int = 0
    used: int = 0  # tick of the last acquire or release (LRU order)


@dataclass(frozen=True)
class UrlInput:
    """A URL input as resolved on this node: its file's CID and where it is mounted."""

    url: str
    cid: str
    mount_path: str
    size: int


class _Count:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, n: float = 1) -> None:
        self.value += n


class InputCache:
    """CID -> local file or folder, fetched once per node, reference counted, LRU-evicted.

    `max_bytes` caps what entries no job holds may take (0: no cap); once `gc_after` bytes
    were evicted (default: a quarter of the cap, at most 1 GiB), garbage is collected in the
    background. `dags` is the node's
    DAG fetch (shared with other users of it; one is made, counting into `received`, if not
    given); `fetcher` downloads URLs. `hits` and `misses` count acquires (a hit: the CID was
    written out already, or a fetch of it was in flight; a miss: this acquire started it).
    """

    def __init__(
        self,
        network: Network,
        blocks: Blockstore,
        root: Path,
        *,
        max_bytes: int = 0,
        fetcher: UrlFetcher | None = None,
        received: Tally | None = None,
        dags: DagFetcher | None = None,
        hits: Tally | None = None,
        misses: Tally | None = None,
        gc_after: int | None = None,
    ) -> None:
        self._net = network
        self._blocks = blocks
        self._root = root
        self.max_bytes = max_bytes
        self._hits: Tally = hits or _Count()
        self._misses: Tally = misses or _Count()
        self._fetches: dict[str, asyncio.Future[_Entry]] = {}
        self._entries: dict[str, _Entry] = {}
        self._by_path: dict[Path, str] = {}
        self._tick = itertools.count(1)
        self._evicting: set[asyncio.Future[None]] = set()
        self._unpinning: dict[str, asyncio.Future[None]] = {}  # CID -> its eviction's unpin
        self.gc_after = min(GC_AFTER_MAX, max_bytes // 4) if gc_after is None else gc_after
        self._evicted = 0  # bytes evicted since the last collection started
        self._collecting: asyncio.Future[Any] | None = None
        self.collections = 0
        root.mkdir(parents=True, exist_ok=True)
        self._tmp = root / ".tmp"
        shutil.rmtree(self._tmp, ignore_errors=True)  # half-written leftovers of a crash
        self._tmp.mkdir()

        self.dags = dags or DagFetcher(network, blocks, received)

        async def fetch(root: bytes, holders: list[str]) -> None:
            # The requester may be restarting: give it the time a lost node gets to come back.
            await self.dags.fetch(root, holders, patience_s=FETCH_PATIENCE_S)

        self.urls = UrlProvider(blocks, fetcher or UrlFetcher(), self._tmp, parallel=URL_PARALLEL)
        self.providers: dict[str, StorageProvider] = {
            "ipfs": IpfsProvider(blocks, fetch),
            "url": self.urls,
        }
        for path in root.iterdir():
            if path.name.startswith("."):
                continue
            entry = _Entry(path.name, path, _size(path), used=next(self._tick))
            self._entries[path.name] = entry
            self._by_path[path] = path.name

    def close(self) -> None:
        """Stop URL downloads in progress (the node is stopping)."""
        self.urls.fetcher.stop()

    @property
    def pending(self) -> list[asyncio.Future[Any]]:
        """Fetches in flight (for shutdown)."""
        return [
            *self._fetches.values(),
            *self.urls.pending,
            *self.dags.pending,
            *self._evicting,
            *([self._collecting] if self._collecting is not None else []),
        ]

    @property
    def size(self) -> int:
        """Bytes the cache's entries take."""
        return sum(e.size for e in self._entries.values())

    def holds(self, cid_text: str) -> bool:
        """True if the CID is written out here (a job using it would not fetch it)."""
        return cid_text in self._entries

    def local_share(self, cids: list[str]) -> tuple[int, int]:
        """(bytes, count) of these inputs this node holds already: written out in the cache,
        or in the blockstore (going by the root block, sized from the root's links). A hint
        for bid selection, kept cheap: at most spec.LOCALITY_CHECKS CIDs, one LMDB read each, no
        hashing; bad CIDs count as not held."""
        size = count = 0
        for text in cids[: jobspec.LOCALITY_CHECKS]:
            # The root's declared size, as the requester reckons it (it bounds the claim by
            # the same rule); the written-out size only when the root is not here.
            entry = self._entries.get(text)
            try:
                root = bytes(CID.parse(text))
                if self._blocks.has(root):
                    size += dag.declared_size(root, self._blocks.get(root, verify=False))
                    count += 1
                    continue
            except BacalhauError:
                continue
            if entry is not None:
                size += entry.size
                count += 1
        return size, count

    def refs(self, cid_text: str) -> int:
        """How many acquires of the CID are not released yet."""
        entry = self._entries.get(cid_text)
        return entry.refs if entry is not None else 0

    async def acquire(self, cid_text: str, requester: str, max_bytes: int = 0) -> Path:
        """The CID's content as a local path, held until `release(path)`.

        Fetched from `requester` or peers if needed. With `max_bytes` (a job's disk limit),
        the root's declared size is checked before anything below it is fetched, and the
        bytes fetched and written out are counted as they come, so a root that lies cannot
        take more either. Raises TooLarge (naming the CID and both sizes), NotFound (naming
        the CID) when no peer can send it, CorruptData if a peer sends bad blocks,
        InvalidCID.
        """
        cid_text = str(CID.parse(cid_text))
        entry = self._entries.get(cid_text)
        if entry is None:
            fut = self._fetches.get(cid_text)
            if fut is None:
                self._misses.inc()
                fut = asyncio.ensure_future(self._fetch_to(cid_text, requester, max_bytes))
                self._fetches[cid_text] = fut
                fut.add_done_callback(lambda _: self._fetches.pop(cid_text, None))
            else:
                self._hits.inc()
            entry = await asyncio.shield(fut)
        else:
            self._hits.inc()
        if max_bytes and entry.size > max_bytes:  # written out for a job allowed more
            raise _too_large(cid_text, entry.size, max_bytes)
        entry.refs += 1
        entry.used = next(self._tick)
        return entry.path

    def size_of(self, path: Path) -> int:
        """The bytes written out at `path` (from `acquire`); 0 if it is not in the cache."""
        cid_text = self._by_path.get(path)
        entry = self._entries.get(cid_text) if cid_text is not None else None
        return entry.size if entry is not None else 0

    def cached(self, cid_text: str) -> bool:
        """Whether the CID's content is written out here already."""
        return cid_text in self._entries

    def release(self, path: Path) -> None:
        """A job is done with `path` (from `acquire`); it may be evicted once no job holds it."""
        cid_text = self._by_path.get(path)
        entry = self._entries.get(cid_text) if cid_text is not None else None
        if entry is None or entry.refs == 0:
            return
        entry.refs -= 1
        entry.used = next(self._tick)
        self._evict()

    async def acquire_urls(
        self, urls: list[tuple[str, str]]
    ) -> list[tuple[Path, str, list[UrlInput]]]:
        """Download URL inputs, given as (url, mount path); returns one folder per mount
        folder: (local path, held until released; guest folder; what each URL resolved to).

        Raises UrlError (naming the URL) if any download fails; nothing half-written stays.
        """
        provider = self.providers["url"]
        results = await asyncio.gather(
            *(
                provider.resolve(InputRequest(pb.InputSpec(source="url", url=url)))
                for url, _ in urls
            )
        )
        groups: dict[str, dict[str, tuple[str, Resolved]]] = {}
        for (url, mount), resolved in zip(urls, results, strict=True):
            guest = PurePosixPath(mount)
            groups.setdefault(str(guest.parent), {})[guest.name] = (url, resolved)
        out = []
        for folder, files in groups.items():
            # The folder's pin holds the files now; their own pins (from the download) go,
            # unless the cache holds a file as an input of its own.
            loose = [
                bytes(CID.parse(r.cid))
                for _, r in files.values()
                if r.cid not in self._entries and r.cid not in self._fetches
            ]

            def build(
                files: dict[str, tuple[str, Resolved]] = files, loose: list[bytes] = loose
            ) -> bytes:
                entries = {name: self._imported(r.cid) for name, (_, r) in files.items()}
                with self._blocks.batch() as batch:
                    with Importer(sink=batch, workers=1) as imp:
                        root = imp.add_directory(entries)
                    batch.pin(root.cid, INPUT)
                    for cid in loose:
                        batch.unpin(cid, INPUT)
                return root.cid

            with self._blocks.hold(*(bytes(CID.parse(r.cid)) for _, r in files.values())):
                root = await asyncio.to_thread(build)
            path = await self.acquire(str(CID.from_bytes(root)), self._net.node_id)
            inputs = [
                UrlInput(url, r.cid, f"{folder.rstrip('/')}/{name}", r.size)
                for name, (url, r) in files.items()
            ]
            out.append((path, folder, inputs))
        return out

    def _imported(self, cid_text: str) -> ImportedNode:
        """A stored file as the importer describes it (CID, Tsize, size), for a folder link."""
        cid = bytes(CID.parse(cid_text))
        block = self._blocks.get(cid, verify=False)
        node = dag.decode(cid, block)
        tsize = len(block) + sum(link.tsize for link in node.links)
        return ImportedNode(cid, tsize, node.filesize or 0)

    async def _fetch_to(self, cid_text: str, requester: str, max_bytes: int) -> _Entry:
        """Fetch the DAG (from the requester first), then write it out atomically."""
        root = bytes(CID.parse(cid_text))
        spec = pb.InputSpec(source="ipfs", cid=cid_text)
        unpinning = self._unpinning.get(cid_text)
        if unpinning is not None:  # evicted a moment ago: its unpin must not undo our pin
            await asyncio.shield(unpinning)
        try:
            # Held while it comes: a collection now keeps what of it is here (the provider
            # pins it once it is all here).
            with self._blocks.hold(root):
                if max_bytes:
                    await self.dags.fetch(
                        root, [requester], patience_s=FETCH_PATIENCE_S, max_bytes=max_bytes
                    )
                resolved = await self.providers["ipfs"].resolve(InputRequest(spec, requester))
            declared = resolved.size
        except NotFound as e:  # nobody has it: said at once, in words (the provider's)
            if await asyncio.to_thread(self._blocks.has, root):
                raise
            raise nobody_has(cid_text, e) from None
        except TooLarge as e:
            declared = e.size or await asyncio.to_thread(self._declared, root)
            raise _too_large(cid_text, e.size, max_bytes, declared) from None
        if max_bytes and declared > max_bytes:  # it was here already: checked now
            raise _too_large(cid_text, declared, max_bytes)
        path = self._root / cid_text

        def write() -> int:
            tmp = self._tmp / f"{cid_text}.{threading.get_ident()}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                dag.export(self._blocks.get, root, tmp, max_bytes=max_bytes)
                size = _size(tmp)
                tmp.replace(path)
            except TooLarge:
                _remove(tmp)
                raise _too_large(cid_text, 0, max_bytes, declared) from None
            except BaseException:
                _remove(tmp)
                raise
            return size

        size = await asyncio.to_thread(write)
        entry = _Entry(cid_text, path, size, used=next(self._tick))
        self._entries[cid_text] = entry
        self._by_path[path] = cid_text
        self._evict(keep=(cid_text,))
        return entry

    def _declared(self, root: bytes) -> int:
        with contextlib.suppress(BacalhauError):
            return dag.declared_size(root, self._blocks.get(root, verify=False))
        return 0

    def _evict(self, keep: Iterable[str] = ()) -> None:
        """Remove unheld entries, least recently used first, until under the cap."""
        if not self.max_bytes:
            return
        total = self.size
        if total <= self.max_bytes:
            return
        kept = set(keep)
        for entry in sorted(self._entries.values(), key=lambda e: e.used):
            if total <= self.max_bytes:
                break
            if entry.refs or entry.cid in kept:
                continue
            del self._entries[entry.cid]
            self._by_path.pop(entry.path, None)
            total -= entry.size
            # Renamed away at once (so a new acquire fetches afresh), deleted in a thread.
            doomed = self._tmp / f"evicted-{entry.cid}-{next(self._tick)}"
            try:
                entry.path.replace(doomed)
            except OSError as e:
                log.warning("cannot evict %s: %s", entry.path, e)
                continue
            log.info("evicted %s (%d bytes) from the input cache", entry.cid, entry.size)
            fut = asyncio.ensure_future(asyncio.to_thread(self._drop, entry.cid, doomed))
            self._evicting.add(fut)
            self._unpinning[entry.cid] = fut
            fut.add_done_callback(self._evicting.discard)
            fut.add_done_callback(functools.partial(self._unpinned, entry.cid))
            self._evicted += entry.size
        if self.gc_after and self._evicted >= self.gc_after and self._collecting is None:
            self._evicted = 0
            self._collecting = asyncio.ensure_future(self._collect(list(self._evicting)))

    def _unpinned(self, cid_text: str, fut: asyncio.Future[None]) -> None:
        if self._unpinning.get(cid_text) is fut:
            del self._unpinning[cid_text]

    def _drop(self, cid_text: str, doomed: Path) -> None:
        """An evicted entry: its files deleted, its root's INPUT pin removed."""
        _remove(doomed)
        with contextlib.suppress(BacalhauError):  # a bad name left on disk: no pin to drop
            self._blocks.unpin(bytes(CID.parse(cid_text)), INPUT)

    async def _collect(self, evictions: list[asyncio.Future[None]]) -> None:
        """Collect the blockstore's garbage in a thread, once the evictions' unpins are done."""
        try:
            await asyncio.gather(*evictions, return_exceptions=True)
            report = await asyncio.to_thread(self._blocks.gc)
            self.collections += 1
            log.info(
                "collected garbage after evictions: %d blocks, %d bytes of packs freed",
                report.blocks_removed,
                report.bytes_reclaimed,
            )
        except BacalhauError as e:
            log.warning("garbage collection after evictions failed: %s", e)
        finally:
            self._collecting = None


def _too_large(cid: str, size: int, limit: int, declared: int = 0) -> TooLarge:
    """The one line a job fails with when an input does not fit its disk limit."""
    if size:
        what = f"is {size_text(size)}"
    else:
        what = f"expands to more than that (its root says {size_text(declared)})"
    return TooLarge(
        f"input {cid} {what}, above the job's disk limit of {size_text(limit)}",
        hint="ask for more disk (resources.disk), up to the node's --limit-job-disk",
    )


def _size(path: Path) -> int:
    """Bytes of a file, or of the files under a folder."""
    if not path.is_dir():
        with contextlib.suppress(OSError):
            return path.lstat().st_size
        return 0
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
