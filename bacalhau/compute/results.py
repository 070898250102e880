"""An execution's result: its outputs plus stdout, stderr and exitCode, as one UnixFS folder."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

from bacalhau.blockstore import Blockstore
from bacalhau.content import Importer, ImportOptions, dag
from bacalhau.content.cid import CID
from bacalhau.errors import BacalhauError

RESERVED_NAMES = frozenset({"stdout", "stderr", "exitCode"})
TAIL_LINES, TAIL_CHARS = 10, 2000
INLINE_RESULT_BYTES = 64 << 10  # a result this small goes to its requester with its report


def small_dag(store: Blockstore, cid_text: str, limit: int) -> list[tuple[bytes, bytes]]:
    """Every block of the DAG under `cid_text`, parents first, if all are here and add up
    to at most `limit` bytes; else []."""
    try:
        root = bytes(CID.parse(cid_text))
        if not store.has(root) or dag.declared_size(root, store.get(root)) > limit:
            return []
        out, total = [], 0
        for cid, block in dag.walk(store.get, root):
            total += len(block)
            if total > limit:
                return []
            out.append((cid, block))
        return out
    except BacalhauError:  # a block missing or corrupt here: the requester fetches it
        return []


def publish_result(
    store: Blockstore, outputs: Path | None, stdout: bytes, stderr: bytes, exit_code: int
) -> str:
    """Add `stdout`, `stderr`, `exitCode` and each folder in `outputs` (one per output
    volume; None: none) to `store` as one UnixFS folder, in one synced batch; pin it; return
    its CID.

    Raises BlockstoreError or PathImportError if a folder cannot be read or stored.
    """
    with store.batch() as batch, _InlineImporter(ImportOptions(), batch, workers=1) as importer:
        entries = {
            "stdout": importer.add_bytes(stdout),
            "stderr": importer.add_bytes(stderr),
            "exitCode": importer.add_bytes(f"{exit_code}\n".encode()),
        }
        for folder in outputs.iterdir() if outputs is not None else ():
            entries[folder.name] = importer.add_path(folder)
        root = importer.add_directory(entries)
        batch.pin(root.cid)
    return str(CID.from_bytes(root.cid))


INLINE_HASH_BYTES = 1 << 20  # a batch of chunks smaller than this is hashed in place


class _InlineImporter(Importer):
    """An Importer that hashes small batches in the calling thread (already a pool thread of
    the runner's): a result is mostly a few small files, and a hashing thread started for
    each one cost more than the hashing. Larger batches are hashed in the Importer's thread,
    overlapping their storing, as before. The same blocks and CIDs as `Importer`."""

    def _submit(self, batch: list[Any]) -> list[Future[list[Any]]]:
        if sum(len(chunk) for chunk in batch) >= INLINE_HASH_BYTES:
            return super()._submit(batch)
        done: Future[list[Any]] = Future()
        done.set_result([self._hash_leaf(chunk) for chunk in batch])
        return [done]


def tail(data: bytes) -> str:
    """The last lines of a program's output, for error messages."""
    text = data.decode("utf-8", "replace").rstrip("\n")
    lines = text.splitlines()[-TAIL_LINES:]
    return "\n".join(lines)[-TAIL_CHARS:]
