"""The blockstore: stored once, atomic, verified on read, pinned; survives kill -9."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bacalhau.blockstore import Blockstore, BlockstoreError
from bacalhau.content import CID, CorruptData, Importer, NotFound
from tests.conftest import pattern


def cid_v0(block: bytes) -> bytes:
    return b"\x12\x20" + hashlib.sha256(block).digest()


def test_put_get_and_dedupe(tmp_path: Path) -> None:
    with Blockstore(tmp_path) as store:
        block = b"some block"
        with store.batch() as batch:
            batch.put(cid_v0(block), b"some ", b"block")
            batch.put(cid_v0(block), block)  # again in the same batch
        store.put(cid_v0(block), block)  # again in another batch
        assert store.get(cid_v0(block)) == block
        assert store.count() == 1
        assert (tmp_path / "packs" / "000001.pack").stat().st_size == len(block)
        # The same bytes under a CIDv1 (raw) are the same block.
        v1 = bytes(CID(1, 0x55, hashlib.sha256(block).digest()))
        assert store.has(v1) and store.get(v1) == block


def test_missing_block(tmp_path: Path) -> None:
    with Blockstore(tmp_path) as store, pytest.raises(NotFound, match="not in the local"):
        store.get(cid_v0(b"absent"))


def test_corruption_is_detected_on_read(tmp_path: Path) -> None:
    with Blockstore(tmp_path) as store:
        store.put(cid_v0(b"A" * 100), b"A" * 100)
    pack = tmp_path / "packs" / "000001.pack"
    data = bytearray(pack.read_bytes())
    data[50] ^= 1
    pack.write_bytes(bytes(data))
    with Blockstore(tmp_path) as store, pytest.raises(CorruptData, match="corrupt on this node"):
        store.get(cid_v0(b"A" * 100))


def test_aborted_batch_leaves_nothing(tmp_path: Path) -> None:
    with Blockstore(tmp_path) as store:
        store.put(cid_v0(b"kept"), b"kept")
        with pytest.raises(RuntimeError), store.batch() as batch:
            batch.put(cid_v0(b"lost"), b"lost")
            batch.pin(cid_v0(b"lost"))
            raise RuntimeError("abort")
        assert not store.has(cid_v0(b"lost"))
        assert store.pins() == []
        assert store.get(cid_v0(b"kept")) == b"kept"
        assert (tmp_path / "packs" / "000001.pack").stat().st_size == 4


def test_pins(tmp_path: Path) -> None:
    with Blockstore(tmp_path) as store:
        cid = cid_v0(b"root")
        with store.batch() as batch:
            batch.put(cid, b"root")
            batch.pin(cid)
        assert store.pins() == [cid] and store.is_pinned(cid)
        assert store.unpin(cid) and not store.is_pinned(cid)
        assert not store.unpin(cid)


def test_pack_rollover(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bacalhau.blockstore import _packs

    monkeypatch.setattr(_packs, "PACK_LIMIT", 1000)
    blocks = [bytes([i]) * 400 for i in range(7)]
    with Blockstore(tmp_path) as store:
        with store.batch() as batch:
            for b in blocks:
                batch.put(cid_v0(b), b)
        assert all(store.get(cid_v0(b)) == b for b in blocks)
    assert len(list((tmp_path / "packs").iterdir())) >= 3
    with Blockstore(tmp_path) as store:
        store.put(cid_v0(b"later"), b"later")
        assert all(store.get(cid_v0(b)) == b for b in [*blocks, b"later"])


def test_full_disk_is_a_clear_error_and_keeps_committed_data(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=False)
    if res.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with Blockstore(mnt / "bs") as store:
            store.put(cid_v0(b"committed"), b"committed")
            big = pattern(8 << 20)
            with (
                pytest.raises(BlockstoreError, match="nothing was stored"),
                store.batch() as b,
                Importer(sink=b) as imp,
            ):
                imp.add_bytes(big)
            assert store.get(cid_v0(b"committed")) == b"committed"
            store.put(cid_v0(b"after"), b"after")
            assert store.get(cid_v0(b"after")) == b"after"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _verify_all(root: Path) -> int:
    with Blockstore(root) as store:
        n = 0
        for mh in store.iter_cids():
            store.get(mh)  # raises if any indexed block is partial or wrong
            n += 1
        return n


@pytest.mark.parametrize("delay_mib", [1, 24, 60])
def test_kill_9_during_add_loses_nothing_committed(tmp_path: Path, delay_mib: int) -> None:
    data_dir = tmp_path / "node"
    first = tmp_path / "first.bin"
    first.write_bytes(pattern(3 << 20))
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for i in range(96):
            f.write(hashlib.sha256(i.to_bytes(4, "big")).digest() * 32768)  # 1 MiB each
    env = dict(os.environ, BACALHAU_DATA_DIR=str(data_dir))
    cmd = [sys.executable, "-m", "bacalhau.cli.ctl", "add", "--local", "-q"]
    done = subprocess.run([*cmd, str(first)], env=env, capture_output=True, check=True)
    first_cid = done.stdout.decode().strip()

    hashed = subprocess.run([*cmd, "-n", str(big)], env=env, capture_output=True, check=True)
    big_cid = hashed.stdout.decode().strip()

    proc = subprocess.Popen([*cmd, str(big)], env=env, stdout=subprocess.PIPE)
    pack = data_dir / "blocks" / "packs" / "000001.pack"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if pack.stat().st_size >= (3 << 20) + (delay_mib << 20):
            break
        try:
            proc.wait(timeout=0.002)  # wait on the process itself, a little at a time
            break
        except subprocess.TimeoutExpired:
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert _verify_all(data_dir / "blocks") >= 1
    with Blockstore(data_dir / "blocks") as store:
        pins = {str(CID.from_bytes(c)) for c in store.pins()}
    # The first add was acknowledged, so it is there; the killed one is all or nothing.
    assert pins in ({first_cid}, {first_cid, big_cid})
    # The next writer cuts the uncommitted tail, then stores normally.
    again = subprocess.run([*cmd, str(big)], env=env, capture_output=True, check=True)
    root = again.stdout.decode().strip()
    assert root == big_cid
    catted = subprocess.run(
        [sys.executable, "-m", "bacalhau.cli.ctl", "cat", "--local", root],
        env=env,
        capture_output=True,
    )
    assert catted.returncode == 0 and catted.stdout == big.read_bytes()
    first_back = subprocess.run(
        [sys.executable, "-m", "bacalhau.cli.ctl", "cat", "--local", first_cid],
        env=env,
        capture_output=True,
    )
    assert first_back.stdout == first.read_bytes()
    _verify_all(data_dir / "blocks")


def test_get_framed_reads_blocks_after_a_head(tmp_path: Path) -> None:
    blocks = [os.urandom(n) for n in (100, 0, 5000, 70)]
    cids = [cid_v0(b) for b in blocks]
    with Blockstore(tmp_path) as store:
        with store.batch() as batch:
            for cid, block in zip(cids[:2], blocks[:2], strict=True):
                batch.put(cid, block)
            batch.seal()  # the rest in another pack
            for cid, block in zip(cids[2:], blocks[2:], strict=True):
                batch.put(cid, block)

        def head(sizes: list[int]) -> bytes:
            return b"<%s>" % b",".join(b"%d" % n for n in sizes)

        assert store.get_framed(cids, head) == (b"<100,0,5000,70>" + b"".join(blocks),
                                                [100, 0, 5000, 70])  # fmt: skip
        # As many as fit in max_bytes, and always one.
        assert store.get_framed(cids, head, max_bytes=5100) == (
            b"<100,0,5000>" + b"".join(blocks[:3]), [100, 0, 5000])  # fmt: skip
        assert store.get_framed(cids[2:], head, max_bytes=10)[1] == [5000]
        with pytest.raises(NotFound, match="not in the local"):
            store.get_framed([cids[0], cid_v0(b"absent")], head)
        # A pack cut short: the block in it is named corrupt, as `get` names it.
        os.truncate(tmp_path / "packs" / "000002.pack", 5050)
        with pytest.raises(CorruptData, match=str(CID.from_bytes(cids[3]))):
            store.get_framed(cids, head)
        assert store.get_framed(cids[:2], head)[1] == [100, 0]
        # A pack that is gone.
        os.unlink(tmp_path / "packs" / "000001.pack")
        store._retire(1)
        with pytest.raises(CorruptData, match=str(CID.from_bytes(cids[0]))):
            store.get_framed(cids, head)
