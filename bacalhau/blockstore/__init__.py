"""Content-addressed block storage under a node's data directory."""

from __future__ import annotations

from bacalhau.blockstore._packs import (
    FETCHED,
    GC_MIN_GARBAGE,
    INPUT,
    PIN,
    REPAIR_HINT,
    UPLOAD,
    Batch,
    Blockstore,
    BlockstoreError,
    CorruptBlock,
    GcReport,
    VerifyReport,
)

__all__ = [
    "FETCHED",
    "GC_MIN_GARBAGE",
    "INPUT",
    "PIN",
    "REPAIR_HINT",
    "UPLOAD",
    "Batch",
    "Blockstore",
    "BlockstoreError",
    "CorruptBlock",
    "GcReport",
    "VerifyReport",
]
