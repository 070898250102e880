"""Content-addressed block storage under a node's data directory."""

from __future__ import annotations

from bacalhau.blockstore._packs import Batch, Blockstore, BlockstoreError

__all__ = ["Batch", "Blockstore", "BlockstoreError"]
