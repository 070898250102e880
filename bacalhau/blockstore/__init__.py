"""Content-addressed block storage under a node's data directory."""

from __future__ import annotations

from bacalhau.blockstore._packs import (
    REPAIR_HINT,
    Batch,
    Blockstore,
    BlockstoreError,
    CorruptBlock,
    VerifyReport,
)

__all__ = [
    "REPAIR_HINT",
    "Batch",
    "Blockstore",
    "BlockstoreError",
    "CorruptBlock",
    "VerifyReport",
]
