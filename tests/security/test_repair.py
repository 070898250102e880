"""A block whose bytes on disk no longer match its CID: found, named, dropped and repaired.

Blocks are corrupted the way a disk does it: one bit flipped in the pack file, in a real data
directory, under a real blockstore, `bacalhauctl` and `bacalhaud`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bacalhau.blockstore import Blockstore
from bacalhau.cli._common import cli_hint
from bacalhau.client import Client, ClientError
from bacalhau.content import CID, CorruptData, Importer, NotFound
from bacalhau.content.car import write_car
from tests.conftest import CliResult, assert_one_line_error, pattern
from tests.integration.conftest import ECHO_WASM, Ctl, NodeProc, start_node, wait_connected

FILE_SIZE = 700_000  # three 256 KiB chunks under a root
Run = Callable[..., CliResult]  # the real bacalhauctl with its own data directory (`ctl`)


def cid_v0(block: bytes) -> bytes:
    return b"\x12\x20" + hashlib.sha256(block).digest()


def flip(blocks_dir: Path, cid: bytes, at: int = 10) -> None:
    """Flip one bit of the stored block `cid`, in its pack file."""
    with Blockstore(blocks_dir) as store:
        where = store.locate(cid)
        assert where is not None, "the block is not stored"
        pack, offset, length = where
        path = store.pack_path(pack)
    with open(path, "r+b") as f:
        f.seek(offset + at % length)
        byte = f.read(1)
        f.seek(offset + at % length)
        f.write(bytes([byte[0] ^ 0x01]))


def dag_of(path: Path) -> tuple[bytes, list[bytes]]:
    """(root CID, the CIDs of its leaves) of what `add` makes of `path`, nothing stored."""
    blocks: list[bytes] = []

    class Sink:
        def put(self, cid: bytes, *parts: bytes | memoryview) -> None:
            blocks.append(cid)

    with Importer(sink=Sink()) as imp:
        root = imp.add_path(path).cid
    return root, [c for c in blocks if c != root]


# -- the blockstore --------------------------------------------------------------------------


def test_putting_a_corrupt_block_again_rewrites_it(tmp_path: Path) -> None:
    good, bad = b"G" * 1000, b"B" * 1000
    with Blockstore(tmp_path) as store:
        store.put(cid_v0(good), good)
        store.put(cid_v0(bad), bad)
    flip(tmp_path, cid_v0(bad))
    pack = tmp_path / "packs" / "000001.pack"
    with Blockstore(tmp_path) as store:
        with pytest.raises(CorruptData, match=r"corrupt on this node.*repo verify --repair"):
            store.get(cid_v0(bad))
        assert store.is_corrupt(cid_v0(bad)) and not store.is_corrupt(cid_v0(good))
        with store.batch() as batch:
            batch.put(cid_v0(good), good)  # intact: nothing written
            batch.put(cid_v0(bad), bad)  # corrupt: written again
            batch.put(cid_v0(bad), bad)  # and the new copy is this batch's own
        assert (batch.blocks_repaired, batch.blocks_written) == (1, 1)
        assert store.get(cid_v0(bad)) == bad and store.get(cid_v0(good)) == good
        assert pack.stat().st_size == 3000  # the bad copy stays, unreachable
        assert store.count() == 2
        assert store.verify().corrupt == []


def test_verify_names_each_corrupt_block_and_drop_removes_it(tmp_path: Path) -> None:
    blocks = [bytes([i]) * (100 + i) for i in range(20)]
    with Blockstore(tmp_path) as store, store.batch() as batch:
        for block in blocks:
            batch.put(cid_v0(block), block)
        batch.pin(cid_v0(blocks[3]))
    for i in (3, 7, 19):
        flip(tmp_path, cid_v0(blocks[i]), at=i)
    with Blockstore(tmp_path) as store:
        report = store.verify(workers=2)
        assert (report.blocks, report.bytes) == (20, sum(map(len, blocks)))
        assert sorted(b.multihash for b in report.corrupt) == sorted(
            cid_v0(blocks[i]) for i in (3, 7, 19)
        )
        assert {b.reason for b in report.corrupt} == {"hash mismatch"}
        # One of them is rewritten between the check and the drop: it is not dropped.
        store.put(cid_v0(blocks[7]), blocks[7])
        assert store.drop(report.corrupt) == 2
        assert store.count() == 18 and store.verify().corrupt == []
        with pytest.raises(NotFound):
            store.get(cid_v0(blocks[3]))
        assert store.get(cid_v0(blocks[7])) == blocks[7]
        assert store.is_pinned(cid_v0(blocks[3]))  # the pin stays; the data can come back
        store.put(cid_v0(blocks[3]), blocks[3])
        assert store.get(cid_v0(blocks[3])) == blocks[3]


def test_a_truncated_or_missing_pack_is_corrupt_not_a_crash(tmp_path: Path) -> None:
    with Blockstore(tmp_path) as store:
        store.put(cid_v0(b"a" * 50), b"a" * 50)
        store.put(cid_v0(b"b" * 50), b"b" * 50)
    pack = tmp_path / "packs" / "000001.pack"
    os.truncate(pack, 75)
    with Blockstore(tmp_path) as store:
        assert [b.reason for b in store.verify().corrupt] == ["truncated"]
    pack.unlink()
    with Blockstore(tmp_path) as store:
        assert [b.reason for b in store.verify().corrupt] == ["pack missing"] * 2
        with pytest.raises(CorruptData, match="corrupt on this node"):
            store.get(cid_v0(b"a" * 50))
        store.put(cid_v0(b"a" * 50), b"a" * 50)  # repaired into a new pack file
        assert store.get(cid_v0(b"a" * 50)) == b"a" * 50


# -- bacalhauctl on a local data directory ---------------------------------------------------


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(pattern(FILE_SIZE))
    return path


def verify(ctl: Run, *args: str) -> CliResult:
    return ctl("repo", "verify", *args)


def test_add_repairs_a_corrupt_block(ctl: Run, data: Path, tmp_path: Path) -> None:
    root_text = ctl("add", "--local", "-q", str(data)).stdout.strip()
    root, leaves = dag_of(data)
    assert root_text == str(CID.from_bytes(root))
    flip(tmp_path / "node" / "blocks", leaves[1])
    res = ctl("cat", "--local", root_text)
    assert_one_line_error(res, str(CID.from_bytes(leaves[1])), "is corrupt on this node",
                          "bacalhauctl repo verify --repair")  # fmt: skip
    res = verify(ctl)
    assert res.returncode == 1
    assert res.stdout.splitlines() == [str(CID.from_bytes(leaves[1]))]
    assert "4 blocks" in res.stderr and "1 corrupt" in res.stderr
    # Adding the same file again rewrites the bad block (before: "already have it").
    assert ctl("add", "--local", "-q", str(data)).stdout.strip() == root_text
    assert ctl("cat", "--local", root_text).stdout_bytes == data.read_bytes()
    res = verify(ctl)
    assert (res.returncode, res.stdout) == (0, "") and "none is corrupt" in res.stderr


def test_car_import_repairs_a_corrupt_block(ctl: Run, data: Path, tmp_path: Path) -> None:
    root_text = ctl("add", "--local", "-q", str(data)).stdout.strip()
    car = tmp_path / "data.car"
    assert ctl("car", "export", root_text, "-o", str(car)).returncode == 0
    root, _ = dag_of(data)
    flip(tmp_path / "node" / "blocks", root)
    assert verify(ctl).returncode == 1
    res = ctl("car", "import", str(car))
    assert res.returncode == 0, res.stderr
    assert ctl("cat", "--local", root_text).stdout_bytes == data.read_bytes()
    assert verify(ctl).returncode == 0


def test_verify_repair_drops_corrupt_blocks(ctl: Run, data: Path, tmp_path: Path) -> None:
    root_text = ctl("add", "--local", "-q", str(data)).stdout.strip()
    _, leaves = dag_of(data)
    for leaf in leaves[:2]:
        flip(tmp_path / "node" / "blocks", leaf)
    res = ctl("--output", "json", "repo", "verify")
    doc = json.loads(res.stdout)
    assert res.returncode == 1 and doc["blocks"] == 4 and doc["dropped"] == 0
    assert sorted(c["cid"] for c in doc["corrupt"]) == sorted(
        str(CID.from_bytes(c)) for c in leaves[:2]
    )
    assert {c["reason"] for c in doc["corrupt"]} == {"hash mismatch"}
    res = verify(ctl, "--repair")
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 2
    assert "dropped 2 corrupt" in res.stderr
    res = verify(ctl, "--output", "json")
    assert json.loads(res.stdout) == {"blocks": 2, "bytes": json.loads(res.stdout)["bytes"],
                                      "corrupt": [], "dropped": 0}  # fmt: skip
    assert "is not in the local blockstore" in ctl("cat", "--local", root_text).stderr
    assert ctl("add", "--local", "-q", str(data)).returncode == 0
    assert ctl("cat", "--local", root_text).stdout_bytes == data.read_bytes()


def test_verify_without_a_blockstore_is_one_line(ctl: Run, tmp_path: Path) -> None:
    res = verify(ctl, "--data-dir", str(tmp_path / "nothing-here"))
    assert_one_line_error(res, "no blockstore at", "--data-dir")
    assert not (tmp_path / "nothing-here").exists()


# -- a node ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    n = start_node(tmp_path_factory.mktemp("repair"))
    yield n
    n.stop()


def test_node_names_its_own_corrupt_block_and_an_upload_repairs_it(
    node: NodeProc, data: Path, tmp_path: Path
) -> None:
    data.write_bytes(b"node copy " + pattern(FILE_SIZE))
    root, leaves = dag_of(data)
    with Client(node.address) as c:
        assert c.add_file(data).cid == str(CID.from_bytes(root))
    flip(node.data_dir / "blocks", leaves[0])
    with Client(node.address) as c, pytest.raises(ClientError) as err:
        list(c.results(cid=str(CID.from_bytes(root))))
    message = str(err.value)
    assert f"block {CID.from_bytes(leaves[0])} is corrupt on this node" in message, message
    assert "not connected" not in message and "bacalhauctl" not in message
    assert err.value.reason == "DATA_CORRUPT"  # bacalhauctl adds the operator's fix
    assert "bacalhauctl repo verify --repair" in (cli_hint(err.value) or "")
    # repo verify runs beside the live node, on its data directory.
    ctl = Ctl(node.address, tmp_path)
    res = ctl("--data-dir", str(node.data_dir), "repo", "verify")
    assert res.returncode == 1 and str(CID.from_bytes(leaves[0])) in res.stdout.splitlines()
    # The node's upload path rewrites it: a file ...
    with Client(node.address) as c:
        c.add_file(data)
        chunks = list(c.results(cid=str(CID.from_bytes(root))))
    blocks = {bytes(ch.cid): ch.data for ch in chunks if ch.cid}
    assert set(blocks) == {root, *leaves}
    assert all(cid_v0(block) == cid for cid, block in blocks.items())
    # ... and a CAR.
    flip(node.data_dir / "blocks", root)
    car = tmp_path / "up.car"
    with open(car, "wb") as f:
        write_car(f, [CID.from_bytes(root)], blocks.items())
    with Client(node.address) as c, open(car, "rb") as f:
        assert c.add_stream(f, "up.car", car=True).cid == str(CID.from_bytes(root))
    res = ctl("--data-dir", str(node.data_dir), "repo", "verify")
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_job_input_corrupt_on_the_node_fails_naming_it(node: NodeProc, tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_bytes(b"an input that rots on disk\n")
    root, _ = dag_of(data)
    with Client(node.address) as c:
        c.add_file(data)
    flip(node.data_dir / "blocks", root)
    ctl = Ctl(node.address, tmp_path)
    res = ctl("wasm", "run", "-v", f"{CID.from_bytes(root)}:/in/x.txt", str(ECHO_WASM),
              "cat", "x.txt", timeout=120)  # fmt: skip
    line = res.one_line_error()
    assert f"block {CID.from_bytes(root)} is corrupt on this node" in line, line
    assert "not connected" not in line


def test_a_node_fetches_its_corrupt_block_again_from_a_peer(node: NodeProc, tmp_path: Path) -> None:
    data = tmp_path / "shared.bin"
    data.write_bytes(b"held by both " + pattern(FILE_SIZE))
    root, leaves = dag_of(data)
    other = start_node(tmp_path / "other", name="other", peers=(node.address,))
    try:
        wait_connected([node, other])
        for n in (node, other):
            with Client(n.address) as c:
                c.add_file(data)
        flip(other.data_dir / "blocks", leaves[2])
        with Client(other.address) as c:
            chunks = list(c.results(cid=str(CID.from_bytes(root))))
        blocks = {bytes(ch.cid): ch.data for ch in chunks if ch.cid}
        assert set(blocks) == {root, *leaves}
        assert all(cid_v0(block) == cid for cid, block in blocks.items())
        res = Ctl(other.address, tmp_path)("--data-dir", str(other.data_dir), "repo", "verify")
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        other.stop()
