"""Reading UnixFS DAGs back: file bytes, directory listings and DAG walks."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bacalhau._fast import dagpb
from bacalhau.content.cid import CID, DAG_PB, RAW
from bacalhau.content.errors import ContentError, CorruptData, UnsupportedCID

GetBlock = Callable[[bytes], bytes]


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

    @property
    def declared_size(self) -> int:
        """What the block says its DAG weighs: a file's size, else its links' sizes (not
        checked until the DAG is fetched)."""
        return self.filesize or sum(link.tsize for link in self.links)


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


def export(get: GetBlock, root: bytes, dest: str | os.PathLike[str]) -> None:
    """Write the file, folder or symlink at ``root`` to ``dest`` (which must not exist).

    Raises CorruptData if a name in the DAG could escape ``dest`` (``/``, ``.``, ``..``).
    """
    node = decode(root, get(root))
    path = os.fspath(dest)
    if node.type in (dagpb.T_DIRECTORY,):
        os.mkdir(path)
        for link in node.links:
            name = link.name.decode("utf-8", "surrogateescape")
            if not name or "/" in name or name in (".", "..") or "\0" in name:
                raise CorruptData(f"unsafe name {name!r} in folder {CID.from_bytes(root)}")
            export(get, link.cid, os.path.join(path, name))
    elif node.type == dagpb.T_SYMLINK:
        os.symlink((node.data or b"").decode("utf-8", "surrogateescape"), path)
    else:
        with open(path, "xb") as f:
            for chunk in _file_bytes(get, node):
                f.write(chunk)
