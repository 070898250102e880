"""Paths inside folders as clients write them (`content.paths`), the upload listing's bound and
Cat's chunking (pure parts of `service.data` and `service.files`)."""

from __future__ import annotations

import pytest

from bacalhau.content.cid import CID
from bacalhau.content.paths import MAX_PARTS, parts_of, split_path
from bacalhau.errors import UsageError
from bacalhau.service import data, files

ROOT = "QmNXf1GUdKG5SDunDet2ih7Po1C3BqhwJH82eAXcoJXsaC"


def test_split_path_forms() -> None:
    assert split_path(ROOT) == (ROOT, [])
    assert split_path(f"{ROOT}/a/b.txt") == (ROOT, ["a", "b.txt"])
    assert split_path(f"/ipfs/{ROOT}/a/") == (ROOT, ["a"])
    assert split_path(f"ipfs://{ROOT}/a") == (ROOT, ["a"])
    assert parts_of("/outputs/x.csv") == ["outputs", "x.csv"] and parts_of("") == []


@pytest.mark.parametrize(
    "bad", ["a/../b", "./a", "a//b", "x" * 4097, "/".join(["a"] * (MAX_PARTS + 1))]
)
def test_bad_paths_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        parts_of(bad)


class _Node:
    def __init__(self, i: int) -> None:
        self.cid = bytes(CID.parse(ROOT))[:-1] + bytes([i % 256])


def test_upload_listing_keeps_the_first_entries_and_the_root() -> None:
    listing = data._Listing(4)
    for i in range(10):
        listing.add(f"e{i}", _Node(i))
    assert [p for p, _ in listing.entries()] == ["e0", "e1", "e2", "e9"]
    assert listing.truncated
    small = data._Listing(4)
    for i in range(4):
        small.add(f"e{i}", _Node(i))
    assert [p for p, _ in small.entries()] == ["e0", "e1", "e2", "e3"] and not small.truncated


def test_rechunk_gives_chunks_of_the_size_asked() -> None:
    pieces = [b"a" * 300, b"b" * 50, b"c" * 700]
    out = list(files._rechunk(iter(pieces), 256))
    assert b"".join(out) == b"".join(pieces)
    assert [len(c) for c in out] == [256, 256, 256, 256, 26]
    assert list(files._rechunk(iter([]), 256)) == []
