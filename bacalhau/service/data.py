"""Data ingest: an upload (a file, a folder entry by entry, or a CAR) into this node's
blockstore, pinned, as the CID kubo would give it.

An upload is at most `max_bytes` (`serve --max-upload-size`), counted as it streams in: file
bytes, and each entry (file or folder) as `ENTRY_BYTES` at least, so a million empty files
count too. One over it is refused at once (INVALID_ARGUMENT, one line) and what came of it
is removed."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bacalhau.blockstore import Blockstore
from bacalhau.content import Importer, ImportOptions, car, dag
from bacalhau.content.cid import CID
from bacalhau.content.errors import NotFound
from bacalhau.errors import UsageError

DEFAULT_MAX_UPLOAD = 10 << 30
ENTRY_BYTES = 512  # what an entry of a folder upload counts as at least


class DataService:
    """Stores what clients upload; scratch space under `tmp_dir`; at most `max_bytes` an
    upload (0: no limit)."""

    def __init__(
        self, blockstore: Blockstore, tmp_dir: Path, max_bytes: int = DEFAULT_MAX_UPLOAD
    ) -> None:
        self._blocks = blockstore
        self._tmp = tmp_dir
        self.max_bytes = max_bytes

    async def add(self, items: AsyncIterator[Any]) -> tuple[str, int]:
        """Store an AddData stream; (root CID, bytes received).

        Raises UsageError for a malformed stream (see `_receive`) or one over `max_bytes`,
        ContentError for a corrupt CAR, OSError when it cannot be stored.
        """
        self._tmp.mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="upload-", dir=self._tmp))
        try:
            header, target, size = await _receive(items, work, self.max_bytes)
            if header.car:
                cid = await asyncio.to_thread(self._add_car, str(target))
                return str(CID.from_bytes(cid)), size
            options = ImportOptions(
                cid_version=header.cid_version, raw_leaves=header.raw_leaves or None
            )

            def add() -> bytes:
                with self._blocks.batch() as batch:
                    with Importer(options, batch, workers=1) as importer:
                        root = importer.add_path(target)
                    batch.pin(root.cid)
                return root.cid

            cid = await asyncio.to_thread(add)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        return str(CID.from_bytes(cid)), size

    def _add_car(self, path: str) -> bytes:
        """Store the blocks of the CAR at `path`; pin its root once its DAG is all there."""
        store = self._blocks
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


async def _receive(
    items: AsyncIterator[Any], work: Path, max_bytes: int = 0
) -> tuple[Any, Path, int]:
    """Write an AddData stream under `work`: (header, the file or folder, bytes received).

    Raises UsageError for a stream that does not start with a header, chunks of a folder
    before any file entry, an entry path that is absolute or has '.', '..' or empty parts,
    or more than `max_bytes` (entries counting ENTRY_BYTES each; 0: no limit).
    """
    header = None
    target = work / "upload"
    f: Any = None
    size = counted = 0

    def count(n: int) -> None:
        nonlocal counted
        counted += n
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
