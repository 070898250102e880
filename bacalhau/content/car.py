"""CAR v1 archives: a dag-cbor header naming the roots, then (CID, block) sections.

Only what CAR v1 headers need of dag-cbor is decoded here: maps, arrays, text, integers,
byte strings and tag 42 (a CID).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from bacalhau._fast import dagpb
from bacalhau.content.cid import CID
from bacalhau.content.errors import ContentError, CorruptData

MAX_SECTION = 4 << 20  # blocks over 4 MiB are refused, as kubo does for bitswap


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major << 5 | n,))
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes((major << 5 | info,)) + n.to_bytes(size, "big")
    raise ValueError("integer too large for CBOR")


def encode_header(roots: list[CID]) -> bytes:
    """dag-cbor {"roots": [CID...], "version": 1} (keys in dag-cbor's canonical order)."""
    out = bytearray(_cbor_head(5, 2))
    out += _cbor_head(3, 5) + b"roots" + _cbor_head(4, len(roots))
    for root in roots:
        raw = b"\x00" + bytes(root)
        out += b"\xd8\x2a" + _cbor_head(2, len(raw)) + raw
    out += _cbor_head(3, 7) + b"version" + _cbor_head(0, 1)
    return bytes(out)


class _Cbor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise CorruptData("CAR header is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def item(self, depth: int = 0) -> object:
        if depth > 16:
            raise CorruptData("CAR header nests too deeply")
        first = self._take(1)[0]
        major, info = first >> 5, first & 31
        if info < 24:
            n = info
        elif info <= 27:
            n = int.from_bytes(self._take(1 << (info - 24)), "big")
        else:
            raise CorruptData("CAR header uses indefinite-length or reserved CBOR")
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2:
            return self._take(n)
        if major == 3:
            try:
                return self._take(n).decode("utf-8")
            except UnicodeDecodeError:
                raise CorruptData("CAR header has invalid UTF-8") from None
        if major == 4:
            return [self.item(depth + 1) for _ in range(n)]
        if major == 5:
            out: dict[str, object] = {}
            for _ in range(n):
                # dag-cbor keys are text; a list or map as a key cannot even be hashed.
                key = self.item(depth + 1)
                if not isinstance(key, str):
                    raise CorruptData("CAR header has a map key that is not a string")
                if key in out:
                    raise CorruptData(f"CAR header repeats the key {key[:40]!r}")
                out[key] = self.item(depth + 1)
            return out
        if major == 6 and n == 42:
            raw = self.item(depth + 1)
            if not isinstance(raw, bytes) or not raw.startswith(b"\x00"):
                raise CorruptData("CAR header has a malformed CID")
            return CID.from_bytes(raw[1:])
        if major == 7 and info in (20, 21, 22):
            return {20: False, 21: True, 22: None}[info]
        raise CorruptData(f"CAR header uses unsupported CBOR (major type {major})")


def decode_header(data: bytes) -> list[CID]:
    """Roots of a CAR v1 header. Raises CorruptData."""
    try:
        parser = _Cbor(data)
        header = parser.item()
    except ContentError as exc:
        raise CorruptData(f"not a CAR file: {exc.message}") from None
    version = header.get("version") if isinstance(header, dict) else None
    if type(version) is not int or version != 1:  # True == 1, but is not the integer 1
        raise CorruptData("not a CAR v1 file (header has no version 1)")
    assert isinstance(header, dict)
    roots = header.get("roots")
    if not isinstance(roots, list) or not all(isinstance(r, CID) for r in roots):
        raise CorruptData("CAR header has no valid roots")
    return list(roots)


def write_car(out: BinaryIO, roots: list[CID], blocks: Iterable[tuple[bytes, bytes]]) -> int:
    """Write a CAR v1 stream; returns how many blocks were written."""
    header = encode_header(roots)
    out.write(dagpb.varint(len(header)) + header)
    n = 0
    for cid, block in blocks:
        out.write(dagpb.varint(len(cid) + len(block)))
        out.write(cid)
        out.write(block)
        n += 1
    return n


def _read_varint(inp: BinaryIO) -> int | None:
    result = shift = 0
    for i in range(10):
        b = inp.read(1)
        if not b:
            if i == 0:
                return None
            raise CorruptData("CAR file is truncated (inside a length)")
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
    raise CorruptData("CAR file has a malformed length")


def read_car(inp: BinaryIO) -> tuple[list[CID], Iterator[tuple[bytes, bytes]]]:
    """Roots and an iterator of (binary CID, block), each block checked against its CID."""
    hlen = _read_varint(inp)
    if hlen is None:
        raise CorruptData("not a CAR file: it is empty")
    if hlen == 0 or hlen > MAX_SECTION:
        raise CorruptData("not a CAR file: bad header length")
    header = inp.read(hlen)
    if len(header) != hlen:
        raise CorruptData("CAR file is truncated (inside the header)")
    return decode_header(header), _sections(inp)


def _sections(inp: BinaryIO) -> Iterator[tuple[bytes, bytes]]:
    index = 0
    while True:
        n = _read_varint(inp)
        if n is None:
            return
        if n == 0 or n > MAX_SECTION:
            raise CorruptData(f"CAR section {index} has a bad length ({n})")
        section = inp.read(n)
        if len(section) != n:
            raise CorruptData(f"CAR file is truncated (inside section {index})")
        try:
            cid, used = CID.read(section, 0)
        except ContentError as exc:
            raise CorruptData(f"CAR section {index}: {exc.message}") from None
        block = section[used:]
        if hashlib.sha256(block).digest() != cid.digest:
            raise CorruptData(f"CAR section {index}: block does not match its CID {cid}")
        yield bytes(cid), block
        index += 1
