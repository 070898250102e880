"""CIDs (v0 and v1), multihash (sha2-256) and multibase (base58btc, base32, base16)."""

from __future__ import annotations

import base64
import binascii
from typing import Final

from bacalhau._fast import dagpb
from bacalhau.content.errors import InvalidCID, UnsupportedCID

DAG_PB: Final = 0x70
RAW: Final = 0x55
DAG_CBOR: Final = 0x71
SHA2_256: Final = 0x12
SHA256_LEN: Final = 32
# The longest CID string there can be (base16 of a CIDv1 with a 10-byte codec varint is 91
# characters), with room to spare; longer text is refused before it is decoded (base58 decoding
# is quadratic: a megabyte of it would take minutes).
MAX_CID_TEXT: Final = 128

CODEC_NAMES: Final = {DAG_PB: "dag-pb", RAW: "raw", DAG_CBOR: "dag-cbor"}

# Bytes that start a CID's binary form, by (version, codec), before the 32-byte digest.
PREFIX_V0: Final = b"\x12\x20"
PREFIX_V1_DAG_PB: Final = b"\x01\x70\x12\x20"
PREFIX_V1_RAW: Final = b"\x01\x55\x12\x20"

_B58 = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def b58encode(data: bytes) -> str:
    """Base58btc (Bitcoin alphabet)."""
    n = int.from_bytes(data, "big")
    out = bytearray()
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return (b"1" * pad + bytes(reversed(out))).decode("ascii")


def b58decode(text: str) -> bytes:
    """Inverse of b58encode; raises InvalidCID on a character outside the alphabet."""
    n = 0
    for ch in text.encode("ascii", "replace"):
        try:
            n = n * 58 + _B58_INDEX[ch]
        except KeyError:
            raise InvalidCID(f"{chr(ch)!r} is not a base58btc character") from None
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def _b32decode(text: str) -> bytes:
    upper = text.upper()
    try:
        return base64.b32decode(upper + "=" * (-len(upper) % 8))
    except (binascii.Error, ValueError):
        raise InvalidCID("not valid base32") from None


def _read_minimal(data: bytes, pos: int) -> tuple[int, int]:
    """A varint that is minimally encoded, as multiformats requires: otherwise one CID would
    have several binary forms. Raises dagpb.DecodeError."""
    value, end = dagpb.read_varint(data, pos)
    if end - pos > 1 and data[end - 1] == 0:
        raise dagpb.DecodeError("varint is not minimally encoded")
    return value, end


class CID:
    """A content identifier: version, codec and a sha2-256 multihash."""

    __slots__ = ("_bytes", "codec", "digest", "version")

    def __init__(self, version: int, codec: int, digest: bytes) -> None:
        if version == 0 and codec != DAG_PB:
            raise InvalidCID("a CIDv0 is always dag-pb")
        if version not in (0, 1):
            raise UnsupportedCID(f"CID version {version} is not supported")
        if len(digest) != SHA256_LEN:
            raise InvalidCID("a sha2-256 digest is 32 bytes")
        self.version = version
        self.codec = codec
        self.digest = digest
        if version == 0:
            self._bytes = PREFIX_V0 + digest
        else:
            self._bytes = b"\x01" + dagpb.varint(codec) + PREFIX_V0 + digest

    @classmethod
    def from_bytes(cls, data: bytes) -> CID:
        """Parse a binary CID; the whole input must be one CID."""
        cid, used = cls.read(data, 0)
        if used != len(data):
            raise InvalidCID("trailing bytes after the CID")
        return cid

    @classmethod
    def read(cls, data: bytes, pos: int) -> tuple[CID, int]:
        """Parse a binary CID at ``pos``; returns (cid, next position)."""
        try:
            if data[pos : pos + 2] == PREFIX_V0:
                end = pos + 2 + SHA256_LEN
                if end > len(data):
                    raise InvalidCID("truncated CIDv0")
                return cls(0, DAG_PB, bytes(data[pos + 2 : end])), end
            version, pos = _read_minimal(data, pos)
            if version != 1:
                raise UnsupportedCID(f"CID version {version} is not supported")
            codec, pos = _read_minimal(data, pos)
            mh_code, pos = _read_minimal(data, pos)
            mh_len, pos = _read_minimal(data, pos)
        except dagpb.DecodeError as exc:
            raise InvalidCID(f"malformed CID: {exc}") from None
        if mh_code != SHA2_256:
            raise UnsupportedCID(f"hash function 0x{mh_code:x} is not supported (only sha2-256)")
        if mh_len != SHA256_LEN or pos + mh_len > len(data):
            raise InvalidCID("truncated or malformed sha2-256 multihash")
        return cls(1, codec, bytes(data[pos : pos + mh_len])), pos + mh_len

    @classmethod
    def decode(cls, text: str) -> CID:
        """Parse a CID string (CIDv0 base58, or multibase base58btc/base32/base16 CIDv1)."""
        text = text.strip()
        if not text:
            raise InvalidCID("empty CID")
        if len(text) > MAX_CID_TEXT:
            raise InvalidCID(f"{len(text)} characters is too long for a CID")
        if len(text) == 46 and text.startswith("Qm"):
            raw = b58decode(text)
            if len(raw) != 34 or raw[:2] != PREFIX_V0:
                raise InvalidCID(f"{text!r} is not a valid CIDv0")
            return cls(0, DAG_PB, raw[2:])
        base, body = text[0], text[1:]
        if base == "z":
            raw = b58decode(body)
        elif base in "bB":
            raw = _b32decode(body)
        elif base in "fF":
            try:
                raw = bytes.fromhex(body)
            except ValueError:
                raise InvalidCID("not valid base16") from None
        else:
            raise InvalidCID(f"{text!r} is not a CID (unknown multibase prefix {base!r})")
        return cls.from_bytes(raw)

    @classmethod
    def parse(cls, text: str) -> CID:
        """Like decode, with a message that names the input."""
        try:
            return cls.decode(text)
        except InvalidCID as exc:
            raise InvalidCID(
                f"invalid CID {text!r}: {exc.message}",
                hint="give a CID as printed by 'bacalhauctl add' or 'ipfs add'",
            ) from None

    def __bytes__(self) -> bytes:
        return self._bytes

    @property
    def multihash(self) -> bytes:
        """The sha2-256 multihash: code, length, digest."""
        return PREFIX_V0 + self.digest

    def encode(self, base: str = "") -> str:
        """String form: base58 for v0; base32 (default) or base58btc ('z') for v1."""
        if self.version == 0:
            return b58encode(self._bytes)
        if base == "z":
            return "z" + b58encode(self._bytes)
        return "b" + base64.b32encode(self._bytes).decode("ascii").lower().rstrip("=")

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"CID({self.encode()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CID) and other._bytes == self._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES.get(self.codec, f"0x{self.codec:x}")
