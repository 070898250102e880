"""Content addressing: CIDs, UnixFS import and read-back, CAR archives."""

from __future__ import annotations

from bacalhau.content.cid import CID
from bacalhau.content.errors import (
    ContentError,
    CorruptData,
    InvalidCID,
    NotFound,
    PathImportError,
    TooLarge,
    UnsupportedCID,
)
from bacalhau.content.importer import BlockSink, Importer, ImportOptions, Node, parse_chunker

__all__ = [
    "CID",
    "BlockSink",
    "ContentError",
    "CorruptData",
    "ImportOptions",
    "Importer",
    "InvalidCID",
    "Node",
    "NotFound",
    "PathImportError",
    "TooLarge",
    "UnsupportedCID",
    "parse_chunker",
]
