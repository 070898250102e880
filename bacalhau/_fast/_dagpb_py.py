"""dag-pb and UnixFS node encoding and the balanced DAG layout, in pure Python.

This is the twin of the compiled ``_dagpb.pyx``: both export the same names and give
byte-identical results (the test suite checks this with hypothesis). Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

MAX_LINKS = 174

# UnixFS Data.Type values.
T_RAW = 0
T_DIRECTORY = 1
T_FILE = 2
T_METADATA = 3
T_SYMLINK = 4
T_HAMT_SHARD = 5

_SHA256_PREFIX = b"\x12\x20"


class DecodeError(ValueError):
    """The bytes are not a well-formed dag-pb node or UnixFS message."""


def varint(n: int) -> bytes:
    """Unsigned LEB128 varint of ``n`` (as protobuf and multiformats use)."""
    if n < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; returns (value, next position). Raises DecodeError."""
    result = 0
    shift = 0
    end = len(buf)
    if pos < 0:
        raise DecodeError("negative position")
    while True:
        if pos >= end:
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        # The tenth byte may add only the 64th bit: anything more overflows 64 bits.
        if shift == 63 and b > 1:
            raise DecodeError("varint longer than 64 bits")
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _bytes_field(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + varint(len(value)) + value


def leaf_envelope(size: int) -> tuple[bytes, bytes]:
    """Bytes before and after ``size`` chunk bytes that make a CIDv0 UnixFS file leaf."""
    if size == 0:
        # kubo writes no Data field at all for the empty file.
        unixfs = b"\x08\x02\x18\x00"
        return b"\x0a" + varint(len(unixfs)) + unixfs, b""
    vs = varint(size)
    inner_len = 2 + 1 + len(vs) + size + 1 + len(vs)
    prefix = b"\x0a" + varint(inner_len) + b"\x08\x02\x12" + vs
    return prefix, b"\x18" + vs


def _link(cid: bytes, name: bytes, tsize: int) -> bytes:
    body = _bytes_field(0x0A, cid) + _bytes_field(0x12, name) + b"\x18" + varint(tsize)
    return _bytes_field(0x12, body)


def file_node(links: Sequence[tuple[bytes, int, int]]) -> bytes:
    """Internal UnixFS file node over children given as (cid, tsize, filesize)."""
    parts = [_link(cid, b"", tsize) for cid, tsize, _ in links]
    total = 0
    sizes = []
    for _, _, filesize in links:
        total += filesize
        sizes.append(b"\x20" + varint(filesize))
    unixfs = b"\x08\x02\x18" + varint(total) + b"".join(sizes)
    parts.append(_bytes_field(0x0A, unixfs))
    return b"".join(parts)


def dir_node(entries: Sequence[tuple[bytes, bytes, int]]) -> bytes:
    """UnixFS directory node over (name, cid, tsize) entries, in the order given."""
    parts = [_link(cid, name, tsize) for name, cid, tsize in entries]
    parts.append(b"\x0a\x02\x08\x01")
    return b"".join(parts)


def symlink_node(target: bytes) -> bytes:
    """UnixFS symlink node pointing at ``target``."""
    return _bytes_field(0x0A, b"\x08\x04" + _bytes_field(0x12, target))


def _skip_field(buf: bytes, pos: int, wire: int) -> int:
    if wire == 0:
        return read_varint(buf, pos)[1]
    if wire == 2:
        n, pos = read_varint(buf, pos)
        if pos + n > len(buf):
            raise DecodeError("truncated field")
        return pos + n
    if wire in (1, 5):
        end = pos + (8 if wire == 1 else 4)
        if end > len(buf):
            raise DecodeError("truncated field")
        return end
    raise DecodeError(f"unsupported protobuf wire type {wire}")


def _len_delimited(buf: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = read_varint(buf, pos)
    end = pos + n
    if end > len(buf):
        raise DecodeError("truncated field")
    return bytes(buf[pos:end]), end


def decode_node(block: bytes) -> tuple[list[tuple[bytes, bytes, int]], bytes | None]:
    """Decode a dag-pb node into ([(cid, name, tsize)], data). Raises DecodeError."""
    links: list[tuple[bytes, bytes, int]] = []
    data: bytes | None = None
    pos = 0
    end = len(block)
    while pos < end:
        key, pos = read_varint(block, pos)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 2:
            data, pos = _len_delimited(block, pos)
        elif field == 2 and wire == 2:
            body, pos = _len_delimited(block, pos)
            links.append(_decode_link(body))
        else:
            raise DecodeError(f"unexpected field {field} (wire type {wire}) in dag-pb node")
    return links, data


def _decode_link(body: bytes) -> tuple[bytes, bytes, int]:
    cid = b""
    name = b""
    tsize = 0
    pos = 0
    end = len(body)
    while pos < end:
        key, pos = read_varint(body, pos)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 2:
            cid, pos = _len_delimited(body, pos)
        elif field == 2 and wire == 2:
            name, pos = _len_delimited(body, pos)
        elif field == 3 and wire == 0:
            tsize, pos = read_varint(body, pos)
        else:
            raise DecodeError(f"unexpected field {field} (wire type {wire}) in dag-pb link")
    if not cid:
        raise DecodeError("dag-pb link without a Hash")
    return cid, name, tsize


def decode_unixfs(data: bytes) -> tuple[int, bytes | None, int | None, list[int]]:
    """Decode a UnixFS Data message into (type, data, filesize, blocksizes)."""
    utype = -1  # any uint64 once read
    payload: bytes | None = None
    filesize: int | None = None
    blocksizes: list[int] = []
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if field == 1 and wire == 0:
            utype, pos = read_varint(data, pos)
        elif field == 2 and wire == 2:
            payload, pos = _len_delimited(data, pos)
        elif field == 3 and wire == 0:
            filesize, pos = read_varint(data, pos)
        elif field == 4 and wire == 0:
            v, pos = read_varint(data, pos)
            blocksizes.append(v)
        elif field == 4 and wire == 2:  # packed, as some encoders write it
            packed, pos = _len_delimited(data, pos)
            p = 0
            while p < len(packed):
                v, p = read_varint(packed, p)
                blocksizes.append(v)
        else:
            pos = _skip_field(data, pos, wire)
    if utype < 0:
        raise DecodeError("UnixFS message without a Type")
    return utype, payload, filesize, blocksizes


class BalancedLayout:
    """Builds kubo's balanced file DAG from leaves fed in order, in constant memory.

    Each level holds at most ``max_links`` pending nodes; a full level is closed into one
    node of the level above. ``finish`` closes the partial levels so that the right-most
    subtree keeps the full height of the tree, as go-unixfs does.
    """

    def __init__(
        self,
        cid_prefix: bytes,
        sink: Callable[[bytes, bytes], None] | None,
        max_links: int = MAX_LINKS,
    ) -> None:
        if max_links < 2:
            raise ValueError("max_links must be at least 2")
        self._prefix = cid_prefix + _SHA256_PREFIX
        self._sink = sink
        self._max = max_links
        self._levels: list[list[tuple[bytes, int, int]]] = [[]]

    def add(self, cid: bytes, tsize: int, filesize: int) -> None:
        """Append the next leaf, given by its CID bytes, Tsize and file bytes."""
        self._levels[0].append((cid, tsize, filesize))
        level = 0
        while len(self._levels[level]) >= self._max:
            self._close(level)
            level += 1

    def _close(self, level: int) -> None:
        children = self._levels[level]
        block = file_node(children)
        cid = self._prefix + hashlib.sha256(block).digest()
        tsize = len(block)
        filesize = 0
        for _, t, f in children:
            tsize += t
            filesize += f
        if self._sink is not None:
            self._sink(cid, block)
        self._levels[level] = []
        if level + 1 == len(self._levels):
            self._levels.append([])
        self._levels[level + 1].append((cid, tsize, filesize))

    def finish(self) -> tuple[bytes, int, int]:
        """Close all levels and return the root as (cid, tsize, filesize)."""
        top = len(self._levels) - 1
        for level in range(top):
            if self._levels[level]:
                self._close(level)
        if not self._levels[top]:
            raise ValueError("no leaves were added")
        if len(self._levels[top]) > 1:
            self._close(top)
            top += 1
        return self._levels[top][0]
