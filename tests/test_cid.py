"""CIDs, multibase and multihash."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bacalhau.content.cid import CID, DAG_PB, RAW, b58decode, b58encode
from bacalhau.content.errors import InvalidCID, UnsupportedCID

EMPTY_V0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


def test_v0_roundtrip() -> None:
    cid = CID.decode(EMPTY_V0)
    assert (cid.version, cid.codec) == (0, DAG_PB)
    assert cid.digest == hashlib.sha256(bytes.fromhex("0a0408021800")).digest()
    assert str(cid) == EMPTY_V0
    assert CID.from_bytes(bytes(cid)) == cid


def test_v1_forms_of_the_same_cid() -> None:
    # The CIDv1 of the empty raw block, as every IPFS implementation prints it.
    digest = hashlib.sha256(b"").digest()
    cid = CID(1, RAW, digest)
    b32 = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert str(cid) == b32
    assert CID.decode(b32) == cid
    assert CID.decode(cid.encode("z")) == cid
    assert CID.decode("f" + bytes(cid).hex()) == cid
    assert CID.decode(b32.upper().replace("B", "B", 1)) == cid


@given(st.binary(min_size=32, max_size=32), st.sampled_from([DAG_PB, RAW, 0x71, 0x300]))
def test_v1_roundtrip(digest: bytes, codec: int) -> None:
    cid = CID(1, codec, digest)
    assert CID.decode(str(cid)) == cid
    assert CID.decode(cid.encode("z")) == cid
    assert CID.from_bytes(bytes(cid)) == cid


@given(st.binary(max_size=64))
def test_base58_roundtrip(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data


@pytest.mark.parametrize(
    "text",
    [
        "",
        "xyz",
        "Qm" + "0" * 44,  # '0' is not base58
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQ",  # one character short
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk",  # truncated
        "b!!!!",
        "fzz",
    ],
)
def test_invalid_strings(text: str) -> None:
    with pytest.raises(InvalidCID):
        CID.parse(text)


def test_unsupported_hash_function() -> None:
    # CIDv1 raw with an identity multihash (code 0x00).
    raw = b"\x01\x55\x00\x05hello"
    with pytest.raises(UnsupportedCID, match="only sha2-256"):
        CID.from_bytes(raw)
