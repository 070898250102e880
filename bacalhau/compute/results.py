"""An execution's result: its outputs plus stdout, stderr and exitCode, as one UnixFS folder."""

from __future__ import annotations

from pathlib import Path

from bacalhau.blockstore import Blockstore
from bacalhau.content import Importer, ImportOptions
from bacalhau.content.cid import CID

RESERVED_NAMES = frozenset({"stdout", "stderr", "exitCode"})
TAIL_LINES, TAIL_CHARS = 10, 2000


def publish_result(
    store: Blockstore, folder: Path, stdout: bytes, stderr: bytes, exit_code: int
) -> str:
    """Write stdout, stderr and exitCode into `folder` (which holds one folder per output),
    add it all to `store` in one synced batch, pin it, and return the root CID.

    Raises BlockstoreError or PathImportError if the folder cannot be read or stored.
    """
    (folder / "stdout").write_bytes(stdout)
    (folder / "stderr").write_bytes(stderr)
    (folder / "exitCode").write_text(f"{exit_code}\n")
    with store.batch() as batch, Importer(ImportOptions(), batch, workers=1) as importer:
        root = importer.add_path(folder)
        batch.pin(root.cid)
    return str(CID.from_bytes(root.cid))


def tail(data: bytes) -> str:
    """The last lines of a program's output, for error messages."""
    text = data.decode("utf-8", "replace").rstrip("\n")
    lines = text.splitlines()[-TAIL_LINES:]
    return "\n".join(lines)[-TAIL_CHARS:]
