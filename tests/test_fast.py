"""The compiled hot path and its pure twin give identical results."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bacalhau import _fast
from bacalhau._fast import _dagpb_py
from bacalhau._pb.ipfs import merkledag_pb2, unixfs_pb2

try:
    from bacalhau._fast import _dagpb as _compiled  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only when built without Cython
    _compiled = None

needs_compiled = pytest.mark.skipif(_compiled is None, reason="compiled module not built")


class _Emitted(list[tuple[bytes, bytes]]):
    def append_pair(self, cid: bytes, block: bytes) -> None:
        self.append((cid, block))


cids = st.binary(min_size=34, max_size=38)
sizes = st.integers(min_value=0, max_value=2**63 - 1)


def test_import_point_honours_switch() -> None:
    pure = os.environ.get("BACALHAU_PUREPYTHON", "") not in ("", "0")
    if pure:
        assert _fast.dagpb is _dagpb_py and not _fast.COMPILED
    elif _compiled is not None:
        assert _fast.dagpb is _compiled and _fast.COMPILED
        assert _fast.dagpb.BalancedLayout.__module__ == "bacalhau._fast._dagpb"


def test_compiled_module_is_built_in_ci() -> None:
    if os.environ.get("BACALHAU_REQUIRE_CYTHON", "") not in ("", "0"):
        assert _compiled is not None, "the Cython extension was not built"


@needs_compiled
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_twins(n: int) -> None:
    assert _compiled.varint(n) == _dagpb_py.varint(n)
    enc = _dagpb_py.varint(n)
    assert _compiled.read_varint(enc, 0) == _dagpb_py.read_varint(enc, 0) == (n, len(enc))


@needs_compiled
@given(st.integers(min_value=0, max_value=1 << 20))
def test_leaf_envelope_twins(n: int) -> None:
    assert _compiled.leaf_envelope(n) == _dagpb_py.leaf_envelope(n)


@needs_compiled
@given(st.lists(st.tuples(cids, sizes, sizes), max_size=200))
def test_file_node_twins(links: list[tuple[bytes, int, int]]) -> None:
    links = [(c, t, f % (2**40)) for c, t, f in links]
    assert _compiled.file_node(links) == _dagpb_py.file_node(links)


@needs_compiled
@given(st.lists(st.tuples(st.binary(max_size=300), cids, sizes), max_size=100))
def test_dir_node_twins(entries: list[tuple[bytes, bytes, int]]) -> None:
    node = _compiled.dir_node(entries)
    assert node == _dagpb_py.dir_node(entries)
    links, data = _compiled.decode_node(node)
    assert (links, data) == _dagpb_py.decode_node(node)
    assert links == [(c, n, t) for n, c, t in entries]


@needs_compiled
@given(st.binary(max_size=600))
def test_decoders_agree_on_garbage(data: bytes) -> None:
    for fn in ("decode_node", "decode_unixfs"):
        outcomes = []
        for mod in (_compiled, _dagpb_py):
            try:
                outcomes.append(("ok", getattr(mod, fn)(data)))
            except mod.DecodeError:
                outcomes.append(("error", None))
        assert outcomes[0] == outcomes[1], fn


@needs_compiled
@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=1, max_value=2000),
    st.integers(min_value=2, max_value=12),
    st.sampled_from([b"", b"\x01\x70"]),
)
def test_layout_twins(leaves: int, max_links: int, prefix: bytes) -> None:
    results = []
    for mod in (_compiled, _dagpb_py):
        emitted = _Emitted()
        layout = mod.BalancedLayout(prefix, emitted.append_pair, max_links)
        for i in range(leaves):
            leaf = hashlib.sha256(i.to_bytes(4, "big")).digest()
            layout.add(b"\x12\x20" + leaf, 10 + i, i)
        results.append((layout.finish(), emitted))
    assert results[0] == results[1]


@given(st.lists(st.tuples(cids, st.integers(0, 2**40), st.integers(0, 2**40)), max_size=50))
def test_file_node_decodes_with_protobuf(links: list[tuple[bytes, int, int]]) -> None:
    node = merkledag_pb2.PBNode()
    node.ParseFromString(_fast.dagpb.file_node(links))
    assert [(lk.Hash, lk.Name, lk.Tsize) for lk in node.Links] == [(c, "", t) for c, t, _ in links]
    assert (node.Links and all(lk.HasField("Name") for lk in node.Links)) or not links
    data = unixfs_pb2.Data()
    data.ParseFromString(node.Data)
    assert data.Type == unixfs_pb2.Data.File
    assert data.filesize == sum(f for _, _, f in links)
    assert list(data.blocksizes) == [f for _, _, f in links]
    assert not data.HasField("Data")


@given(st.binary(max_size=2000))
def test_leaf_envelope_decodes_with_protobuf(chunk: bytes) -> None:
    pre, suf = _fast.dagpb.leaf_envelope(len(chunk))
    node = merkledag_pb2.PBNode()
    node.ParseFromString(pre + chunk + suf)
    data = unixfs_pb2.Data()
    data.ParseFromString(node.Data)
    assert data.Type == unixfs_pb2.Data.File
    assert data.filesize == len(chunk)
    assert data.Data == chunk
    assert data.HasField("Data") == bool(chunk)


def test_symlink_node_decodes_with_protobuf() -> None:
    node = merkledag_pb2.PBNode()
    node.ParseFromString(_fast.dagpb.symlink_node(b"../target"))
    data = unixfs_pb2.Data()
    data.ParseFromString(node.Data)
    assert (data.Type, data.Data) == (unixfs_pb2.Data.Symlink, b"../target")


def test_layout_needs_a_leaf() -> None:
    with pytest.raises(ValueError):
        _fast.dagpb.BalancedLayout(b"", None).finish()
