"""Data ingest: an upload (a file, a folder entry by entry, or a CAR) into this node's
blockstore, pinned, as the CID kubo would give it.

An upload is at most `max_bytes` (`serve --max-upload-size`), counted as it streams in: file
bytes, and each entry (file or folder) as `ENTRY_BYTES` at least, so a million empty files
count too. One over it is refused at once (INVALID_ARGUMENT, one line) and what came of it
is removed.

Each user's uploads are recorded in the datastore (user, root CID, bytes, when) and add up to
at most `quota` bytes (`serve --upload-quota`), counted as the upload streams in (with the
user's other uploads in flight): one that would go over it is refused (RESOURCE_EXHAUSTED, one
line naming what is used and the quota) and nothing of it is kept. The root is pinned (tag
UPLOAD) after the record is written, and stays pinned while any user's record holds it:
`unpin` removes the caller's record (an admin's: every user's) and then the pin.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bacalhau.blockstore import UPLOAD, Blockstore, GcReport
from bacalhau.content import Importer, ImportOptions, car, dag
from bacalhau.content.cid import CID
from bacalhau.content.errors import NotFound
from bacalhau.content.importer import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE
from bacalhau.datastore import Datastore, Tx
from bacalhau.errors import UsageError
from bacalhau.models import upload_record
from bacalhau.service.callers import Caller, Forbidden

DEFAULT_MAX_UPLOAD = 10 << 30
DEFAULT_UPLOAD_QUOTA = 100 << 30
ENTRY_BYTES = 512  # what an entry of a folder upload counts as at least
MAX_LISTED = 100_000  # entries an upload's answer lists at most (the root always among them)


@dataclass(frozen=True)
class Added:
    """What an upload stored: its root CID, the bytes received, and (when asked) each file
    and folder as (path, CID), root last; `truncated` if more were left out of that list."""

    cid: str
    size: int
    entries: list[tuple[str, str]] = field(default_factory=list)
    truncated: bool = False


class _Listing:
    """An import's entries as (path, CID), keeping at most `limit`: the first ones, and the
    last (the importer reports the root last)."""

    def __init__(self, limit: int = MAX_LISTED) -> None:
        self._limit = limit
        self._kept: list[tuple[str, str]] = []
        self._last: tuple[str, str] | None = None
        self.count = 0

    def add(self, path: str, node: Any) -> None:
        self.count += 1
        if self._last is not None and len(self._kept) < self._limit - 1:
            self._kept.append(self._last)
        self._last = (path, str(CID.from_bytes(node.cid)))

    def entries(self) -> list[tuple[str, str]]:
        return self._kept + ([self._last] if self._last is not None else [])

    @property
    def truncated(self) -> bool:
        return self.count > len(self._kept) + 1


class QuotaExceeded(UsageError):
    """An upload would take its user over the node's --upload-quota."""


def _over_quota(used: int, more: int, quota: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"upload refused: it would take your uploads on this node past its quota "
        f"({_mib(used)} used + {_mib(more)} of this upload > {_mib(quota)})",
        hint="unpin uploads you no longer need, or ask the node's operator (serve --upload-quota)",
    )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


class DataService:
    """Stores what clients upload; scratch space under `tmp_dir`; at most `max_bytes` an
    upload and `quota` bytes a user (0: no limit); uploads recorded in `store`."""

    def __init__(
        self,
        blockstore: Blockstore,
        tmp_dir: Path,
        max_bytes: int = DEFAULT_MAX_UPLOAD,
        *,
        store: Datastore,
        quota: int = DEFAULT_UPLOAD_QUOTA,
    ) -> None:
        self._blocks = blockstore
        self._tmp = tmp_dir
        self.max_bytes = max_bytes
        self.quota = quota
        self._store = store
        self._streaming: dict[str, int] = {}  # user -> bytes of uploads still streaming in

    async def add(self, items: AsyncIterator[Any], caller: Caller) -> Added:
        """Store an AddData stream for `caller`: its root CID, bytes received, and with the
        header's `list_entries` each file and folder's CID.

        Raises UsageError for a malformed stream (see `_receive`) or one over `max_bytes`,
        QuotaExceeded for one that would take the caller past `quota`, ContentError for a
        corrupt CAR, OSError when it cannot be stored, DatastoreError when it cannot be
        recorded. Nothing of a refused upload stays pinned.
        """
        user = caller.user_id
        used = await asyncio.to_thread(self._store.uploaded_bytes, user) if self.quota else 0
        mine = 0

        def count(n: int) -> None:
            nonlocal mine
            mine += n
            self._streaming[user] = self._streaming.get(user, 0) + n
            if self.quota and used + self._streaming[user] > self.quota:
                raise _over_quota(used, mine, self.quota)

        self._tmp.mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="upload-", dir=self._tmp))
        listing: _Listing | None = None
        try:
            header, target, size = await _receive(items, work, self.max_bytes, count)
            with contextlib.ExitStack() as held:
                # Stored unpinned but held (so no garbage collection takes it) until the
                # record is written; then pinned.
                if header.car:
                    cid = await asyncio.to_thread(self._add_car, str(target), held)
                else:
                    options = ImportOptions(
                        cid_version=header.cid_version,
                        raw_leaves=header.raw_leaves if header.HasField("raw_leaves") else None,
                        chunk_size=header.chunk_size or DEFAULT_CHUNK_SIZE,
                    )
                    listing = _Listing() if header.list_entries else None
                    cid = await asyncio.to_thread(self._add_files, target, options, held, listing)
                cid_text = str(CID.from_bytes(cid))
                await self._record(user, cid_text, mine)
                await asyncio.to_thread(self._blocks.pin, cid, UPLOAD)
        finally:
            left = self._streaming.get(user, 0) - mine
            if left > 0:
                self._streaming[user] = left
            else:
                self._streaming.pop(user, None)
            await asyncio.to_thread(shutil.rmtree, work, True)
        if listing is None:
            return Added(cid_text, size)
        return Added(cid_text, size, listing.entries(), listing.truncated)

    def uploaded_bytes(self, user: str) -> int:
        """What `user`'s recorded uploads here add up to."""
        return self._store.uploaded_bytes(user)

    async def record(self, user: str, cid: str, size: int) -> None:
        """Record `cid` (`size` bytes, stored here) as `user`'s upload. Raises QuotaExceeded
        if it would take `user` past the quota."""
        await self._record(user, cid, size)

    async def _record(self, user: str, cid: str, size: int) -> None:
        """Write the upload record, checking the quota against what is recorded now."""
        record = upload_record(user, cid, size)
        quota = self.quota

        def write(tx: Tx) -> None:
            if quota:
                old = tx.get_upload(user, cid)
                used = tx.uploaded_bytes(user) - (old.bytes if old is not None else 0)
                if used + size > quota:
                    raise _over_quota(used, size, quota)
            tx.put_upload(record)

        await asyncio.wrap_future(self._store.submit(write))

    def _add_files(
        self,
        target: Path,
        options: ImportOptions,
        held: contextlib.ExitStack,
        listing: _Listing | None = None,
    ) -> bytes:
        record = listing.add if listing is not None else None
        with self._blocks.batch() as batch:
            with Importer(options, batch, record, workers=1) as importer:
                root = importer.add_path(target)
            # Held before the batch commits: a collection sweeps only under the batch lock.
            held.enter_context(self._blocks.hold(root.cid))
        return root.cid

    def _add_car(self, path: str, held: contextlib.ExitStack) -> bytes:
        """Store the blocks of the CAR at `path` (held); check its DAG is all there."""
        store = self._blocks
        with open(path, "rb") as f:
            roots, sections = car.read_car(f)
            if len(roots) != 1:
                raise UsageError(f"an uploaded CAR must have one root, not {len(roots)}")
            root = bytes(roots[0])
            with store.batch() as batch:
                for block_cid, block in sections:
                    batch.put(block_cid, block)
                held.enter_context(store.hold(root))
        try:
            for _ in dag.walk(store.get, root):
                pass
        except NotFound:
            raise UsageError(
                f"the uploaded CAR lacks blocks of the DAG under {roots[0]}",
                hint="put every block of the DAG in the CAR",
            ) from None
        return root

    def uploads(self, caller: Caller) -> tuple[list[Any], int]:
        """The caller's upload records, newest first, and what they add up to."""
        records = self._store.list_uploads(caller.user_id)
        records.sort(key=lambda r: (-r.create_time_unix_nano, r.cid))
        return records, sum(r.bytes for r in records)

    async def unpin(self, cid_text: str, caller: Caller) -> tuple[bool, list[Any]]:
        """Remove the caller's record of the upload `cid_text` (an admin's: every user's);
        unpin its root once no user's record holds it. (unpinned, records removed).

        Raises InvalidCID, Forbidden for another user's upload, NotFound when nobody
        uploaded it here."""
        cid_text = str(CID.parse(cid_text))

        def remove(tx: Tx) -> tuple[list[Any], list[str]]:
            holders = tx.upload_holders(cid_text)
            if not holders:
                raise NotFound(
                    f"{cid_text} is not an upload on this node",
                )
            mine = holders if caller.admin else [u for u in holders if u == caller.user_id]
            if not mine:
                raise Forbidden(
                    f"{cid_text} was uploaded by another user; only they or an admin may unpin it",
                    hint="sign with the key that uploaded it",
                )
            removed = []
            for user in mine:
                rec = tx.get_upload(user, cid_text)
                if rec is not None:
                    removed.append(rec)
                tx.delete_upload(user, cid_text)
            return removed, tx.upload_holders(cid_text)

        removed, left = await asyncio.wrap_future(self._store.submit(remove))
        if left:
            return False, removed
        await asyncio.to_thread(self._blocks.unpin, bytes(CID.parse(cid_text)), UPLOAD)
        return True, removed

    async def collect_garbage(self, caller: Caller) -> GcReport:
        """Run the blockstore's garbage collection now (one at a time), off the event loop.

        Raises Forbidden unless the caller is an admin; BlockstoreError."""
        if not caller.admin:
            raise Forbidden(
                f"user {caller.user_id} may not collect garbage on this node; only admin keys may",
                hint="use a key in the node's --admin-keys file",
            )
        return await asyncio.to_thread(self._blocks.gc)  # one at a time: gc takes a lock


async def _receive(
    items: AsyncIterator[Any],
    work: Path,
    max_bytes: int = 0,
    on_count: Callable[[int], None] = lambda n: None,
) -> tuple[Any, Path, int]:
    """Write an AddData stream under `work`: (header, the file or folder, bytes received).

    Raises UsageError for a stream that does not start with a header, chunks of a folder
    before any file entry, an entry path that is absolute or has '.', '..' or empty parts,
    or more than `max_bytes` (entries counting ENTRY_BYTES each; 0: no limit); what
    `on_count` raises as it is told each count.
    """
    header = None
    target = work / "upload"
    f: Any = None
    size = counted = 0

    def count(n: int) -> None:
        nonlocal counted
        counted += n
        on_count(n)
        if max_bytes and counted > max_bytes:
            raise UsageError(
                f"upload refused: more than this node's limit of {max_bytes} bytes "
                "(files, and each file or folder 512 bytes at least)",
                hint="ask the node's operator (serve --max-upload-size), or send less",
            )

    try:
        async for item in items:
            kind = item.WhichOneof("item")
            if kind == "header":
                if header is not None:
                    raise UsageError("AddData sent a second header")
                header = item.header
                if header.chunk_size and not 1024 <= header.chunk_size <= MAX_CHUNK_SIZE:
                    raise UsageError(
                        f"AddData: chunk_size must be 1024 to {MAX_CHUNK_SIZE}, not "
                        f"{header.chunk_size}"
                    )
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
                count(ENTRY_BYTES)
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
                count(len(item.chunk))
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
