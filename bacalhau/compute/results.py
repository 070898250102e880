"""An execution's result: its outputs plus stdout, stderr and exitCode, as one UnixFS folder."""

from __future__ import annotations

from pathlib import Path

from bacalhau.blockstore import Blockstore
from bacalhau.content import Importer, ImportOptions
from bacalhau.content.cid import CID

RESERVED_NAMES = frozenset({"stdout", "stderr", "exitCode"})
TAIL_LINES, TAIL_CHARS = 10, 2000


def publish_result(
    store: Blockstore, outputs: Path | None, stdout: bytes, stderr: bytes, exit_code: int
) -> str:
    """Add `stdout`, `stderr`, `exitCode` and each folder in `outputs` (one per output
    volume; None: none) to `store` as one UnixFS folder, in one synced batch; pin it; return
    its CID.

    Raises BlockstoreError or PathImportError if a folder cannot be read or stored.
    """
    with store.batch() as batch, Importer(ImportOptions(), batch, workers=1) as importer:
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


def tail(data: bytes) -> str:
    """The last lines of a program's output, for error messages."""
    text = data.decode("utf-8", "replace").rstrip("\n")
    lines = text.splitlines()[-TAIL_LINES:]
    return "\n".join(lines)[-TAIL_CHARS:]
