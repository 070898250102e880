"""The block I/O hot path (`bacalhau._fast.blockio`) and its pure twin give identical results,
and GetBlocks messages are written and read as protobuf writes and reads them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bacalhau import _fast
from bacalhau._fast import _blockio_py
from bacalhau._pb.bacalhau.v1 import peer_pb2
from bacalhau.content.errors import CorruptData
from bacalhau.network.blocks import (
    MAX_CID_BYTES,
    MAX_WANT,
    WireBlock,
    _head,
    encode_block,
    parse_block_message,
)

try:
    from bacalhau._fast import _blockio as _compiled  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only when built without Cython
    _compiled = None

TWINS = [m for m in (_blockio_py, _compiled) if m is not None]


def test_import_point_honours_switch() -> None:
    pure = os.environ.get("BACALHAU_PUREPYTHON", "") not in ("", "0")
    if pure or _compiled is None:
        assert _fast.blockio is _blockio_py
    else:
        assert _fast.blockio is _compiled


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception as exc:  # the error's type is part of the result
        return "error", type(exc).__name__


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.lists(st.binary(max_size=3000), max_size=12),
    flip=st.integers(min_value=-1, max_value=11),
)
def test_first_mismatch_twins_agree(blocks: list[bytes], flip: int) -> None:
    digests = [hashlib.sha256(b).digest() for b in blocks]
    if 0 <= flip < len(digests):
        digests[flip] = bytes(32 - 1) + b"\x01"
    expect = flip if 0 <= flip < len(blocks) else -1
    views = [memoryview(b) for b in blocks]
    for twin in TWINS:
        assert twin.first_mismatch(digests, blocks) == expect
        assert twin.first_mismatch(digests, views) == expect
        assert twin.first_mismatch(iter(digests), tuple(bytearray(b) for b in blocks)) == expect


def test_first_mismatch_finds_the_first_of_many_and_big_blocks() -> None:
    blocks = [os.urandom(256 << 10) for _ in range(8)] + [b""]
    digests = [hashlib.sha256(b).digest() for b in blocks]
    bad = list(digests)
    bad[3] = bad[5] = hashlib.sha256(b"other").digest()
    for twin in TWINS:
        assert twin.first_mismatch(digests, blocks) == -1
        assert twin.first_mismatch(bad, blocks) == 3


@pytest.mark.parametrize(
    ("digests", "blocks", "error"),
    [
        ([bytes(32)] * 2, [b"a"], "ValueError"),
        ([bytes(31)], [b"a"], "ValueError"),
        (["x" * 32], [b"a"], "TypeError"),
        ([bytearray(32)], [b"a"], "TypeError"),
        ([bytes(32)], ["a"], "TypeError"),
        ([bytes(32)], [None], "TypeError"),
        ([bytes(32)], [memoryview(b"abcd")[::2]], "BufferError"),
    ],
)
def test_first_mismatch_bad_arguments(digests: list[Any], blocks: list[Any], error: str) -> None:
    for twin in TWINS:
        assert _outcome(twin.first_mismatch, digests, blocks) == ("error", error)


def test_pread_many_twins_agree(tmp_path: Path) -> None:
    content = os.urandom(300_000)
    other = os.urandom(1000)
    (tmp_path / "a").write_bytes(content)
    (tmp_path / "b").write_bytes(other)
    fd = os.open(tmp_path / "a", os.O_RDONLY)
    fd2 = os.open(tmp_path / "b", os.O_RDONLY)
    try:
        cases: list[tuple[Any, Any, bytes | None]] = [
            (b"head", [(fd, 10, 5)], b"head" + content[10:15]),
            (b"", [(fd, 0, 300_000)], content),
            (b"\x1a", [(fd, 1000, 262_144), (fd2, 10, 20), (fd, 0, 0), (fd, 5, 1)],
             b"\x1a" + content[1000:263_144] + other[10:30] + content[5:6]),
            (b"h", [], b"h"),
            (b"x", [(fd, 299_995, 10)], None),  # the file ends first
            (b"x", [(fd2, 0, 10), (fd, 10**9, 1)], None),
            (b"", [(fd, 0, -1)], None),
            (b"", [(fd, -1, 1)], None),
            (b"", [(fd, 0)], None),
            (b"", [(fd, 0, 1, 2)], None),
            (b"", [(fd, 0.5, 1)], None),
            (b"", [5], None),
            ("s", [], None),
            (None, [], None),
            (bytearray(b"h"), [], None),
            (b"", [(987_654, 0, 1)], None),
        ]  # fmt: skip
        for head, reads, expect in cases:
            outcomes = {_outcome(t.pread_many, head, reads) for t in TWINS}
            assert len(outcomes) == 1, (head, reads, outcomes)
            kind, value = outcomes.pop()
            if kind == "ok":
                assert value == expect, (head, reads)
            else:
                assert expect is None
    finally:
        os.close(fd)
        os.close(fd2)


@settings(max_examples=100, deadline=None)
@given(cid=st.binary(min_size=1, max_size=MAX_CID_BYTES), data=st.binary(max_size=2000))
def test_wire_blocks_are_protobuf_blocks(cid: bytes, data: bytes) -> None:
    block = WireBlock.of(cid, data)
    assert (block.cid, block.data, block.size) == (cid, data, len(data))
    message = encode_block(block)
    assert message == peer_pb2.Block(cid=cid, data=data).SerializeToString()
    assert encode_block(peer_pb2.Block(cid=cid, data=data)) == message
    [(got_cid, view)] = parse_block_message(message)
    assert (got_cid, bytes(view)) == (cid, data)
    assert view.obj is message  # a view of the message, not a copy


@settings(max_examples=100, deadline=None)
@given(
    blocks=st.lists(
        st.tuples(st.binary(min_size=1, max_size=MAX_CID_BYTES), st.binary(max_size=700)),
        min_size=2,
        max_size=8,
    )
)
def test_batches_are_protobuf_blocks(blocks: list[tuple[bytes, bytes]]) -> None:
    cids = [c for c, _ in blocks]
    sizes = [len(d) for _, d in blocks]
    message = _head(cids, sizes) + b"".join(d for _, d in blocks)
    parsed = peer_pb2.Block.FromString(message)
    assert (list(parsed.cids), list(parsed.sizes)) == (cids, sizes)
    assert (parsed.cid, parsed.data) == (b"", b"".join(d for _, d in blocks))
    for encoded in (message, parsed.SerializeToString()):
        got = parse_block_message(encoded)
        assert [(c, bytes(v)) for c, v in got] == blocks
    assert all(v.obj is message for _, v in parse_block_message(message))


def test_parse_block_message_reads_as_protobuf_does() -> None:
    cid = b"\x12\x20" + bytes(range(32))
    unknown = b"\x28\x05" + b"\x31" + bytes(8) + b"\x3d" + bytes(4) + b"\x42\x01z"
    message = peer_pb2.Block(cid=b"old", data=b"x").SerializeToString()
    message += unknown + peer_pb2.Block(cid=cid, data=b"block").SerializeToString()
    parsed = peer_pb2.Block.FromString(message)
    [(got_cid, view)] = parse_block_message(message)
    assert (got_cid, bytes(view)) == (parsed.cid, parsed.data) == (cid, b"block")
    # sizes one by one (not packed), as an older protobuf may write them
    batch = b"\x1a\x01a\x1a\x01b\x20\x01\x20\x02\x12\x03xyz"
    parsed = peer_pb2.Block.FromString(batch)
    assert list(parsed.sizes) == [1, 2]
    assert [(c, bytes(v)) for c, v in parse_block_message(batch)] == [(b"a", b"x"), (b"b", b"yz")]


@pytest.mark.parametrize(
    ("message", "says"),
    [
        (b"", "a CID of 0 bytes"),
        (b"\x12\x03abc", "a CID of 0 bytes"),
        (b"\x0a\x81\x01" + bytes(129), "a CID of 129 bytes"),
        (b"\x0a\x05abc", "truncated"),
        (b"\x0a\x02ab\x12\xff\xff\xff\xff\x0fab", "truncated"),
        (b"\x0a", "malformed"),
        (b"\x0a\x02ab\x21\x00", "truncated"),
        (b"\x0a\x02ab\x0b", "wire type 3"),
        (b"\x0a\x02ab\x18\x80", "malformed"),
        (b"\x1a\x01a\x1a\x01b\x22\x02\x01\x01\x12\x03xyz", "does not add up"),
        (b"\x1a\x01a\x1a\x01b\x22\x01\x03\x12\x03xyz", "does not add up"),
        (b"\x1a\x01a\x22\x02\x01\x80\x12\x01x", "truncated"),
        (b"\x0a\x01a\x1a\x01b\x22\x01\x01\x12\x01x", "both cid and cids"),
        (b"\x22\x01\x01\x12\x01x", "sizes but no cids"),
        (b"\x1a\x00\x22\x01\x01\x12\x01x", "a CID of 0 bytes"),
        (b"\x1a\x01a" * 1025, "more than 1024 blocks"),
        (b"\x22\x82\x08" + b"\x00" * 1026, "more than 1024 blocks"),
        (b"\x20\x00" * 1025, "more than 1024 blocks"),
        (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "malformed"),
    ],
)
def test_malformed_block_messages_are_corrupt_data(message: bytes, says: str) -> None:
    assert (MAX_CID_BYTES, MAX_WANT) == (128, 1024)
    with pytest.raises(CorruptData, match=says):
        parse_block_message(message)
