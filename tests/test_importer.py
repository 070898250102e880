"""The UnixFS importer reproduces kubo's CIDs."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from bacalhau._fast import dagpb
from bacalhau._pb.ipfs import merkledag_pb2, unixfs_pb2
from bacalhau.content import CID, Importer, ImportOptions, Node, PathImportError, importer
from bacalhau.content.importer import parse_chunker
from bacalhau.errors import UsageError
from tests.conftest import SHARED_VECTORS, VECTORS, pattern, vector_content


def cid_of(data: bytes, **opts: object) -> str:
    with Importer(ImportOptions(**opts)) as imp:  # type: ignore[arg-type]
        return str(CID.from_bytes(imp.add_bytes(data).cid))


def collect(options: ImportOptions | None = None) -> tuple[Importer, dict[bytes, bytes]]:
    blocks: dict[bytes, bytes] = {}

    class Sink:
        def put(self, cid: bytes, *parts: bytes) -> None:
            blocks[cid] = b"".join(bytes(p) for p in parts)

    return Importer(options, Sink()), blocks


def test_vectors_copy_is_current() -> None:
    shared = SHARED_VECTORS / "unixfs-cidv0.json"
    if not shared.exists():
        pytest.skip("no ../shared/test-vectors beside this checkout")
    assert (VECTORS / "unixfs-cidv0.json").read_bytes() == shared.read_bytes()


def test_file_vectors(unixfs_vectors: dict[str, object]) -> None:
    files = unixfs_vectors["files"]
    assert isinstance(files, list) and files
    for entry in files:
        data = vector_content(entry["name"], entry["size"])
        assert cid_of(data) == entry["cid"], entry["name"]


def test_file_vectors_from_disk_with_small_workers(
    unixfs_vectors: dict[str, object], tmp_path: Path
) -> None:
    # Through the file path (reads, batches, threads), not add_bytes.
    for entry in unixfs_vectors["files"]:  # type: ignore[attr-defined]
        path = tmp_path / entry["name"]
        path.write_bytes(vector_content(entry["name"], entry["size"]))
        for workers in (1, 3):
            with Importer(workers=workers) as imp:
                assert str(CID.from_bytes(imp.add_path(path).cid)) == entry["cid"]


def make_vector_tree(root: Path, layout: dict[str, str]) -> None:
    for rel, source in layout.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        size = (
            0
            if source == "pattern-0"
            else int(source.rsplit("-", 1)[1])
            if source.startswith("pattern-")
            else 11
        )
        path.write_bytes(vector_content(source, size))


def test_directory_vectors(unixfs_vectors: dict[str, object], tmp_path: Path) -> None:
    for i, vec in enumerate(unixfs_vectors["directories"]):  # type: ignore[attr-defined]
        root = tmp_path / f"d{i}"
        make_vector_tree(root, vec["layout"])
        seen: dict[str, str] = {}

        def record(p: str, n: Node, seen: dict[str, str] = seen) -> None:
            seen[p] = str(CID.from_bytes(n.cid))

        with Importer(on_entry=record) as imp:
            node = imp.add_path(root)
        assert str(CID.from_bytes(node.cid)) == vec["cid"]
        assert list(seen)[-1] == root.name  # root reported last
        for rel, cid in vec["subdirectories"].items():
            assert seen[f"{root.name}/{rel}"] == cid
        for rel, cid in vec["files"].items():
            assert seen[f"{root.name}/{rel}"] == cid


def tree_shape(cid: bytes, blocks: dict[bytes, bytes]) -> object:
    """Nested lists of leaf sizes, decoded with the generated protobuf classes."""
    node = merkledag_pb2.PBNode()
    node.ParseFromString(blocks[cid])
    data = unixfs_pb2.Data()
    data.ParseFromString(node.Data)
    if not node.Links:
        return len(data.Data)
    return [tree_shape(link.Hash, blocks) for link in node.Links]


def test_balanced_layout_depth_with_small_chunker() -> None:
    # 174 x 174 chunks of 64 bytes fill a 2-level tree; one byte more needs 3 levels, and
    # the right-most subtree keeps the full height (a chain down to the one new leaf).
    opts = ImportOptions(chunk_size=64)
    full = 174 * 174 * 64
    imp, blocks = collect(opts)
    shape = tree_shape(imp.add_bytes(pattern(full)).cid, blocks)
    assert isinstance(shape, list) and len(shape) == 174
    assert all(sub == [64] * 174 for sub in shape)

    imp, blocks = collect(opts)
    shape = tree_shape(imp.add_bytes(pattern(full + 1)).cid, blocks)
    assert isinstance(shape, list) and len(shape) == 2
    assert shape[1] == [[1]]


def test_internal_node_sizes() -> None:
    imp, blocks = collect(ImportOptions(chunk_size=100))
    root = imp.add_bytes(pattern(250))
    node = merkledag_pb2.PBNode()
    node.ParseFromString(blocks[root.cid])
    data = unixfs_pb2.Data()
    data.ParseFromString(node.Data)
    assert list(data.blocksizes) == [100, 100, 50] and data.filesize == 250
    # Tsize of a link: the child's whole encoded subtree.
    for link in node.Links:
        assert link.Tsize == len(blocks[link.Hash])
    assert root.tsize == len(blocks[root.cid]) + sum(lk.Tsize for lk in node.Links)


def test_cidv1_raw_leaves_single_chunk_is_the_raw_block() -> None:
    # With raw leaves a one-chunk file is its own raw block: the CID is sha2-256 of the bytes.
    for data in (b"", b"hello world", pattern(262144)):
        expect = CID(1, 0x55, hashlib.sha256(data).digest())
        assert cid_of(data, cid_version=1) == str(expect)
    # Well known: `ipfs add --cid-version 1` of "hello world" (no newline).
    assert cid_of(b"hello world", cid_version=1) == (
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    )


def test_cidv1_without_raw_leaves_keeps_the_v0_multihash_for_one_chunk() -> None:
    # A single dag-pb leaf is the same block under v0 and v1: only the CID prefix differs.
    for data in (b"", b"hello world"):
        v0 = CID.decode(cid_of(data))
        v1 = CID.decode(cid_of(data, cid_version=1, raw_leaves=False))
        assert (v1.version, v1.codec, v1.digest) == (1, 0x70, v0.digest)


def test_cidv1_raw_leaves_multi_chunk_structure() -> None:
    opts = ImportOptions(cid_version=1, chunk_size=1000)
    imp, blocks = collect(opts)
    data = pattern(2500)
    root = imp.add_bytes(data)
    root_cid = CID.from_bytes(root.cid)
    assert (root_cid.version, root_cid.codec) == (1, 0x70)
    node = merkledag_pb2.PBNode()
    node.ParseFromString(blocks[root.cid])
    leaves = [CID.from_bytes(link.Hash) for link in node.Links]
    assert [c.codec for c in leaves] == [0x55] * 3
    assert b"".join(blocks[bytes(c)] for c in leaves) == data
    assert [link.Tsize for link in node.Links] == [1000, 1000, 500]
    assert str(root_cid).startswith("bafybei")


def test_v0_with_raw_leaves_is_refused() -> None:
    with pytest.raises(UsageError, match="raw leaves need CIDv1"):
        ImportOptions(cid_version=0, raw_leaves=True)


def test_directory_features(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "empty-dir").mkdir(parents=True)
    (root / ".hidden").write_bytes(b"secret")
    (root / "B").write_bytes(b"upper sorts before lower")
    (root / "a").write_bytes(b"x")
    os.symlink("a", root / "link")
    imp, blocks = collect()
    seen: list[str] = []
    imp._on_entry = lambda p, n: seen.append(p)
    node = imp.add_path(root)
    names = [name for _, name, _ in dagpb.decode_node(blocks[node.cid])[0]]
    assert names == [b".hidden", b"B", b"a", b"empty-dir", b"link"]
    assert "tree/empty-dir" in seen and "tree/.hidden" in seen and seen[-1] == "tree"
    # The empty folder is the well-known empty UnixFS directory.
    empty = dict(zip(names, dagpb.decode_node(blocks[node.cid])[0], strict=True))[b"empty-dir"]
    assert str(CID.from_bytes(empty[0])) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
    link = dict(zip(names, dagpb.decode_node(blocks[node.cid])[0], strict=True))[b"link"]
    data = unixfs_pb2.Data()
    pb = merkledag_pb2.PBNode()
    pb.ParseFromString(blocks[link[0]])
    data.ParseFromString(pb.Data)
    assert (data.Type, data.Data) == (unixfs_pb2.Data.Symlink, b"a")


def test_same_tree_same_cid_whatever_the_creation_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "t", tmp_path / "b" / "t"
    for root, order in ((a, ["x", "y", "z"]), (b, ["z", "y", "x"])):
        root.mkdir(parents=True)
        for name in order:
            (root / name).write_bytes(name.encode() * 100)
    with Importer() as imp:
        assert imp.add_path(a).cid == imp.add_path(b).cid


def test_missing_path() -> None:
    with Importer() as imp, pytest.raises(PathImportError, match="no such file"):
        imp.add_path("/nonexistent/path")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"x")
    path.chmod(0)
    with Importer() as imp, pytest.raises(PathImportError, match="cannot read"):
        imp.add_path(path)


def test_special_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with Importer() as imp, pytest.raises(PathImportError, match="not a regular file"):
        imp.add_path(fifo)


@pytest.mark.parametrize("spec", ["size-0", "rabin", "size-", "size-99999999", "buzhash-1"])
def test_bad_chunker(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_chunker(spec)


def test_chunker_parse() -> None:
    assert parse_chunker("size-1024") == 1024


@pytest.mark.parametrize("cid_version", [0, 1])
def test_add_directory_matches_add_path(tmp_path: Path, cid_version: int) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "b.txt").write_bytes(b"bee\n")
    (tree / "a.bin").write_bytes(pattern(300_000))
    (tree / "sub" / "c").write_bytes(b"")
    with Importer(ImportOptions(cid_version=cid_version)) as imp:
        expected = imp.add_path(tree)
        built = imp.add_directory(
            {
                "sub": imp.add_path(tree / "sub"),
                "b.txt": imp.add_bytes(b"bee\n"),
                "a.bin": imp.add_bytes(pattern(300_000)),
            }
        )
    assert built == expected


@pytest.fixture
def small_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans of 3 chunks of 1000 bytes, handed over 2 at a time: a few KB cross many."""
    monkeypatch.setattr(importer, "_SPAN_BYTES", 3000)
    monkeypatch.setattr(importer, "_GROUP_BYTES", 7000)
    # With a sink: groups of 4, 2 and 1 spans for 1, 2 and 3 readers.
    monkeypatch.setattr(importer, "_SINK_INFLIGHT", 3000 * 2 * 3 * 2)


@pytest.mark.usefixtures("small_spans")
@pytest.mark.parametrize("cid_version", [0, 1])
def test_file_read_in_spans_matches_add_bytes(tmp_path: Path, cid_version: int) -> None:
    rng = random.Random(5)
    opts = ImportOptions(cid_version=cid_version, chunk_size=1000)
    path = tmp_path / "f"
    for size in (1000, 1001, 2999, 3000, 3001, 6000, 6001, 12_000, 60_999, 61_000):
        data = rng.randbytes(size)
        path.write_bytes(data)
        imp, want_blocks = collect(opts)
        want = imp.add_bytes(data)
        for workers in (1, 2, 3):
            with Importer(opts, workers=workers) as only_hash:
                assert only_hash.add_path(path) == want, (size, workers)
            imp, blocks = collect(opts)
            imp._workers = workers
            assert imp.add_path(path) == want, (size, workers)
            assert blocks == want_blocks, (size, workers)


@pytest.mark.usefixtures("small_spans")
def test_file_that_changed_size_since_it_was_listed(tmp_path: Path) -> None:
    # The size from the listing is only a hint: what is read up to the end counts.
    opts = ImportOptions(chunk_size=1000)
    path = tmp_path / "f"
    for size in (0, 2500, 9000, 9001):
        data = random.Random(size).randbytes(size)
        path.write_bytes(data)
        want = cid_of(data, chunk_size=1000)
        for hint in (0, 999, 1000, size // 2, size, size * 3 + 5000):
            fd = os.open(path, os.O_RDONLY)
            try:
                with Importer(opts) as imp:
                    assert str(CID.from_bytes(imp._add_fd(fd, hint).cid)) == want, (size, hint)
            finally:
                os.close(fd)


@pytest.mark.usefixtures("small_spans")
def test_errors_while_reading_or_storing_stop_the_readers(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(pattern(100_000))

    class Full(Exception):
        pass

    class FullSink:
        def __init__(self) -> None:
            self.stored = 0

        def put(self, cid: bytes, *parts: bytes) -> None:
            if self.stored == 7:
                raise Full("no room")
            self.stored += 1

    for workers in (1, 2, 3):
        sink = FullSink()
        with Importer(ImportOptions(chunk_size=1000), sink, workers=workers) as imp:
            with pytest.raises(Full):
                imp.add_path(path)
            assert sink.stored == 7
            # The importer is still usable: its threads were not left blocked.
            imp._sink = None
            want = cid_of(pattern(100_000), chunk_size=1000)
            assert str(CID.from_bytes(imp.add_path(path).cid)) == want
    # A read that fails in a reader thread is raised here (a directory cannot be read).
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        with Importer(workers=2) as imp, pytest.raises(IsADirectoryError):
            imp._add_fd(fd, 10_000_000)
    finally:
        os.close(fd)
