"""One file's bytes, by `CID/path` or by a path inside a job's result (ClientService.Cat).

What a read costs the node, and its bounds:
- the path: at most `MAX_PATH` characters in `MAX_PARTS` parts (`content.paths`); each
  folder on the way is one block, read from the blockstore (verified) or, if missing, from
  peers (verified, not stored);
- the file: its DAG is fetched from peers (every block verified, stored, the root pinned as
  fetched, as `GetResults` does) if this node lacks it, only when its UnixFS size is at most
  `max_bytes` (the node's `--max-upload-size`: a read brings in no more than an upload may);
- the stream: chunks of at most `MAX_CHUNK` bytes, read from the blockstore in a thread, every
  block checked against its CID as it is read.
Who may call it: any signed caller (a CID, or a job ID, is the capability to read what it
names; see `callers.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from bacalhau.content import dag
from bacalhau.content.cid import CID
from bacalhau.content.errors import NotFound, TooLarge
from bacalhau.errors import UsageError
from bacalhau.service.results import ResultService

DEFAULT_CHUNK = 1 << 20
MAX_CHUNK = 4 << 20
SHOWN_ENTRIES = 5  # entries a "this is a folder" answer names


class NotAFile(UsageError):
    """The path names a folder (or a symlink), not a file."""


class PathNotFound(NotFound):
    """The folder has no entry of that name."""


class FileTooLarge(UsageError):
    """The file is larger than a read may fetch onto this node."""


@dataclass(frozen=True)
class FileRef:
    """A file found by `FileReader.find`: its CID and UnixFS size."""

    cid: bytes
    size: int

    @property
    def cid_text(self) -> str:
        return str(CID.from_bytes(self.cid))


class FileReader:
    """Finds a file under a root by path, fetching what is missing, and streams its bytes."""

    def __init__(self, results: ResultService, max_bytes: int = 0) -> None:
        self._results = results
        self._store = results.blockstore
        self.max_bytes = max_bytes

    async def find(
        self, root_text: str, parts: list[str], holders: list[str], label: str = ""
    ) -> FileRef:
        """The file at `parts` under `root_text`, its DAG made local (from `holders` first,
        then every peer); errors name the root as `label` (default: its CID).
        Raises InvalidCID, PathNotFound naming the path, NotFound when no
        one has a block, NotAFile (listing some entries of a folder), FileTooLarge,
        CorruptData."""
        cid = bytes(CID.parse(root_text))
        walked = label or root_text
        full = "/".join([walked, *parts])
        for part in parts:
            node = dag.decode(cid, await self._block(cid))
            if node.type == dag.HAMT_SHARD:
                raise UsageError(f"{walked} is a sharded (HAMT) folder: not supported yet")
            if node.type != dag.DIRECTORY:
                raise NotAFile(f"{walked} is a file, not a folder: it has no {part!r}")
            link = next((ln for ln in node.links if ln.name == part.encode()), None)
            if link is None:
                raise PathNotFound(f"{full} not found: {walked} has no {part!r}")
            cid = bytes(link.cid)
            walked = f"{walked}/{part}"
        node = dag.decode(cid, await self._block(cid))
        if node.type in (dag.DIRECTORY, dag.HAMT_SHARD):
            names = [ln.name.decode(errors="replace") for ln in node.links[:SHOWN_ENTRIES]]
            more = len(node.links) - len(names)
            listing = ", ".join(names) + (f" and {more} more" if more > 0 else "") or "nothing"
            raise NotAFile(f"{walked} is a folder (of {listing}); name a file in it")
        if node.type == dag.SYMLINK:
            raise NotAFile(f"{walked} is a symlink; name the file it points to")
        size = node.filesize if node.filesize is not None else len(node.data or b"")
        if self.max_bytes and size > self.max_bytes:
            raise FileTooLarge(
                f"{walked} is {size} bytes, more than this node reads for a client "
                f"({self.max_bytes} bytes)",
                hint="fetch it with GetResults, or ask the node's operator (serve "
                "--max-upload-size)",
            )
        try:
            await self._results.ensure_dag(str(CID.from_bytes(cid)), holders, self.max_bytes)
        except TooLarge:
            raise FileTooLarge(
                f"{walked} holds more blocks than its size says, past what this node reads "
                "for a client"
            ) from None
        return FileRef(cid, size)

    async def read(self, ref: FileRef, chunk_size: int) -> AsyncIterator[bytes]:
        """The file's bytes in chunks of `chunk_size` (the last one shorter), each block
        checked against its CID as it is read (CorruptData otherwise)."""
        chunks = _rechunk(dag.cat(self._store.get, ref.cid), chunk_size)
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield chunk

    async def _block(self, cid: bytes) -> bytes:
        """A block from this node (verified), else from a peer (verified, not stored)."""
        if await asyncio.to_thread(self._store.has, cid):
            return await asyncio.to_thread(self._store.get, cid)
        found = await self._results.peek([cid])
        if cid not in found:
            raise NotFound(
                f"{CID.from_bytes(cid)} is not on this node and no peer could send it",
            )
        return found[cid]


def _rechunk(pieces: Iterator[bytes], size: int) -> Iterator[bytes]:
    """The bytes of `pieces` again, in chunks of exactly `size` (the last one shorter)."""
    buf = bytearray()
    for piece in pieces:
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)
