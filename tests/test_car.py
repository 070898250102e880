"""CAR v1 export and import."""

from __future__ import annotations

import io

import pytest

from bacalhau.content import CID, CorruptData, Importer, ImportOptions, dag
from bacalhau.content import car as carfile
from tests.conftest import pattern


def build() -> tuple[CID, dict[bytes, bytes]]:
    blocks: dict[bytes, bytes] = {}

    class Sink:
        def put(self, cid: bytes, *parts: bytes) -> None:
            blocks[cid] = b"".join(bytes(p) for p in parts)

    with Importer(ImportOptions(chunk_size=1000), Sink()) as imp:
        root = imp.add_bytes(pattern(5000))
    return CID.from_bytes(root.cid), blocks


def export(root: CID, blocks: dict[bytes, bytes]) -> bytes:
    out = io.BytesIO()
    carfile.write_car(out, [root], dag.walk(blocks.__getitem__, bytes(root)))
    return out.getvalue()


def test_header_matches_known_bytes() -> None:
    # go-car's header for one CIDv0 root: {"roots": [tag42(0x00 + cid)], "version": 1}.
    root = CID.decode("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH")
    header = carfile.encode_header([root])
    expect = bytes.fromhex("a265726f6f747381d82a5823") + b"\x00" + bytes(root)
    expect += bytes.fromhex("6776657273696f6e01")
    assert header == expect
    assert carfile.decode_header(header) == [root]


def test_roundtrip() -> None:
    root, blocks = build()
    data = export(root, blocks)
    roots, sections = carfile.read_car(io.BytesIO(data))
    got = dict(sections)
    assert roots == [root]
    assert got == blocks
    assert b"".join(dag.cat(got.__getitem__, bytes(root))) == pattern(5000)
    # Parents come before their children (root first), as go-car writes them.
    first = next(iter(carfile.read_car(io.BytesIO(data))[1]))
    assert first[0] == bytes(root)


@pytest.mark.parametrize("cut", [0, 1, 5, 40, 60, -1, -500])
def test_truncated(cut: int) -> None:
    root, blocks = build()
    data = export(root, blocks)[:cut]
    with pytest.raises(CorruptData):
        _, sections = carfile.read_car(io.BytesIO(data))
        list(sections)


def test_corrupt_block() -> None:
    root, blocks = build()
    data = bytearray(export(root, blocks))
    data[-10] ^= 0xFF
    with pytest.raises(CorruptData, match="does not match its CID"):
        list(carfile.read_car(io.BytesIO(bytes(data)))[1])


def test_not_a_car() -> None:
    with pytest.raises(CorruptData, match="not a CAR"):
        carfile.read_car(io.BytesIO(b"\x05hello world"))
