"""Errors of the content-addressing layer."""

from __future__ import annotations

from bacalhau.errors import BacalhauError


class ContentError(BacalhauError):
    """Base of content-addressing errors."""


class InvalidCID(ContentError):
    """A string or byte sequence is not a valid CID."""


class UnsupportedCID(ContentError):
    """A valid CID that this implementation cannot handle (codec or hash function)."""


class PathImportError(ContentError):
    """A path could not be imported (missing, unreadable, unsupported file type)."""


class CorruptData(ContentError):
    """Bytes do not match their CID, or a block or archive is malformed or truncated."""


class NotFound(ContentError):
    """A block is not in the blockstore."""


class TooLarge(ContentError):
    """A DAG is, or turns out to be, larger than the room it may take. `size` is what its root
    declares when that is the reason (0 when the DAG turned out larger than declared)."""

    def __init__(self, message: str, *, hint: str | None = None, size: int = 0) -> None:
        super().__init__(message, hint=hint)
        self.size = size
