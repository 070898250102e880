"""Paths inside a UnixFS folder, as clients write them: `CID/a/b`, or `a/b` under a root."""

from __future__ import annotations

from bacalhau.errors import UsageError

MAX_PATH = 4096  # characters of a path a client may send
MAX_PARTS = 64  # names in it (folders walked: a block each)


def split_path(text: str) -> tuple[str, list[str]]:
    """`CID/a/b` (also `/ipfs/CID/a/b`, `ipfs://CID/a/b`) -> ("CID", ["a", "b"]). Raises
    UsageError for an overlong path or one with '.', '..' or empty parts (a trailing '/' is
    fine)."""
    _check_length(text)
    text = text.removeprefix("/ipfs/").removeprefix("ipfs://")
    root, _, rest = text.partition("/")
    return root, parts_of(rest)


def parts_of(path: str) -> list[str]:
    """The names of a '/'-separated path inside a folder (leading and trailing '/' taken).
    Raises UsageError for '.', '..' or empty parts, and overlong paths."""
    _check_length(path)
    inner = path.strip("/")
    if not inner:
        return []
    parts = inner.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"bad path {path[:200]!r}: no '.', '..' or empty parts")
    if len(parts) > MAX_PARTS:
        raise UsageError(f"a path has at most {MAX_PARTS} parts, not {len(parts)}")
    return parts


def _check_length(text: str) -> None:
    if len(text) > MAX_PATH:
        raise UsageError(f"a path is at most {MAX_PATH} characters, not {len(text)}")
