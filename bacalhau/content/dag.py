"""Reading UnixFS DAGs back: file bytes, directory listings and DAG walks."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bacalhau._fast import dagpb
from bacalhau.content.cid import CID, DAG_PB, RAW
from bacalhau.content.errors import ContentError, CorruptData, TooLarge, UnsupportedCID

DIRECTORY = dagpb.T_DIRECTORY  # UnixFS node types, as `UnixFSNode.type` gives them
SYMLINK = dagpb.T_SYMLINK
HAMT_SHARD = dagpb.T_HAMT_SHARD

GetBlock = Callable[[bytes], bytes]
ENTRY_BYTES = 512  # what `export` counts a file, folder or symlink as at least


class NotAFile(ContentError):
    """A CID names a directory or symlink where a file was expected."""


@dataclass(frozen=True)
class Link:
    """A named link of a dag-pb node."""

    cid: bytes
    name: bytes
    tsize: int


@dataclass(frozen=True)
class UnixFSNode:
    """A decoded block: its UnixFS type (None for raw blocks), links and payload."""

    type: int | None
    links: list[Link]
    data: bytes | None
    filesize: int | None


def decode(cid: bytes, block: bytes) -> UnixFSNode:
    """Decode a raw or dag-pb block. Raises CorruptData or UnsupportedCID."""
    c = CID.from_bytes(cid)
    if c.codec == RAW:
        return UnixFSNode(None, [], block, len(block))
    if c.codec != DAG_PB:
        raise UnsupportedCID(f"codec {c.codec_name} of {c} is not supported (dag-pb and raw are)")
    try:
        links, data = dagpb.decode_node(block)
        links_ = [Link(h, n, t) for h, n, t in links]
        if data is None:
            return UnixFSNode(None, links_, None, None)
        utype, payload, filesize, _ = dagpb.decode_unixfs(data)
    except dagpb.DecodeError as exc:
        raise CorruptData(f"block {c} is not valid dag-pb/UnixFS: {exc}") from None
    return UnixFSNode(utype, links_, payload, filesize)


def check_block(cid: bytes, data: bytes) -> None:
    """Raise CorruptData unless ``data`` hashes to ``cid`` (sha2-256, the only hash we use)."""
    c = CID.from_bytes(cid)
    mh = bytes(c.multihash)
    if mh[:2] != b"\x12\x20" or hashlib.sha256(data).digest() != mh[2:]:
        raise CorruptData(f"block {c} does not match its CID")


def cat(get: GetBlock, cid: bytes) -> Iterator[bytes]:
    """The bytes of the file at ``cid``, in order."""
    node = decode(cid, get(cid))
    if node.type in (dagpb.T_DIRECTORY, dagpb.T_HAMT_SHARD):
        raise NotAFile(f"{CID.from_bytes(cid)} is a directory", hint="use 'get' for directories")
    if node.type == dagpb.T_SYMLINK:
        raise NotAFile(f"{CID.from_bytes(cid)} is a symlink")
    yield from _file_bytes(get, node)


def _file_bytes(get: GetBlock, node: UnixFSNode) -> Iterator[bytes]:
    if node.data:
        yield node.data
    for link in node.links:
        child = decode(link.cid, get(link.cid))
        if child.type not in (None, dagpb.T_FILE, dagpb.T_RAW):
            raise CorruptData(f"file links to a non-file block {CID.from_bytes(link.cid)}")
        yield from _file_bytes(get, child)


def walk(get: GetBlock, root: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every block of the DAG under ``root`` once, depth first, parents before children."""
    seen: set[bytes] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        block = get(cid)
        yield cid, block
        node = decode(cid, block)
        stack.extend(link.cid for link in reversed(node.links))


def declared_size(cid: bytes, block: bytes) -> int:
    """The size the root block of a DAG says the DAG has: a file's UnixFS filesize, else the
    sum of its links' Tsizes (a folder). It can lie; `export` counts what is really written."""
    node = decode(cid, block)
    return node.filesize or sum(link.tsize for link in node.links) or len(block)


def export(get: GetBlock, root: bytes, dest: str | os.PathLike[str], *, max_bytes: int = 0) -> int:
    """Write the file, folder or symlink at ``root`` to ``dest`` (which must not exist);
    return the bytes written, each file, folder or symlink counting `ENTRY_BYTES` at least.

    With `max_bytes`, stops with TooLarge as soon as more would be written (what was written
    stays: the caller removes it). A DAG that names one block many times is written out that
    many times, so its size on disk can be far above the blocks it holds.
    Raises CorruptData if a name in the DAG could escape ``dest`` (``/``, ``.``, ``..``).
    """
    budget = _Budget(root, max_bytes)
    _export(get, root, os.fspath(dest), budget)
    return budget.used


class _Budget:
    def __init__(self, root: bytes, limit: int) -> None:
        self.root = root
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.limit and self.used > self.limit:
            raise TooLarge(
                f"{CID.from_bytes(self.root)} holds more than {self.limit} bytes "
                "(files count 512 bytes at least)"
            )


def _export(get: GetBlock, root: bytes, path: str, budget: _Budget) -> None:
    node = decode(root, get(root))
    budget.take(ENTRY_BYTES)
    if node.type in (dagpb.T_DIRECTORY,):
        os.mkdir(path)
        for link in node.links:
            name = link.name.decode("utf-8", "surrogateescape")
            if not name or "/" in name or name in (".", "..") or "\0" in name:
                raise CorruptData(f"unsafe name {name!r} in folder {CID.from_bytes(root)}")
            _export(get, link.cid, os.path.join(path, name), budget)
    elif node.type == dagpb.T_SYMLINK:
        os.symlink((node.data or b"").decode("utf-8", "surrogateescape"), path)
    else:
        with open(path, "xb") as f:
            credit = ENTRY_BYTES  # taken already
            for chunk in _file_bytes(get, node):
                covered = min(credit, len(chunk))
                credit -= covered
                budget.take(len(chunk) - covered)
                f.write(chunk)
