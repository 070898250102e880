"""Garbage collection of the blockstore: what no pin reaches goes, the packs shrink, every
pinned block reads back; safe beside readers and writers, and after a kill -9 at any point."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bacalhau.blockstore import INPUT, PIN, UPLOAD, Blockstore, BlockstoreError
from bacalhau.content import CID, Importer, ImportOptions, NotFound, dag

V1 = ImportOptions(cid_version=1)  # raw leaves


def _add(store: Blockstore, data: bytes, *, pin: bytes | None = PIN, v1: bool = False) -> bytes:
    with store.batch() as batch, Importer(V1 if v1 else ImportOptions(), batch, workers=1) as imp:
        root = imp.add_bytes(data).cid
        if pin is not None:
            batch.pin(root, pin)
    return root


def _data(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _packs_size(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "packs").glob("*.pack"))


def _sizes(root: Path) -> dict[str, int]:
    sizes = {}
    for p in (root / "packs").glob("*.pack"):
        with contextlib.suppress(FileNotFoundError):  # deleted by a collection meanwhile
            sizes[p.name] = p.stat().st_size
    return sizes


def _check_pinned(store: Blockstore) -> int:
    """Every block of every pinned DAG reads back verified; how many."""
    n = 0
    for root in store.pins():
        for _ in dag.walk(store.get, root):
            n += 1
    return n


def test_gc_reclaims_unpinned_and_keeps_pinned(tmp_path: Path) -> None:
    with Blockstore(tmp_path) as store:
        kept = [_add(store, _data(i, 3 << 20), v1=bool(i % 2)) for i in range(3)]
        gone = _add(store, _data(10, 8 << 20))
        shared = _data(20, 1 << 20)
        both = _add(store, shared + _data(21, 1 << 20))  # shares its first chunks with...
        _add(store, shared, pin=None)  # ...an unpinned file: the shared blocks stay
        before = _packs_size(tmp_path)
        blocks_before = store.count()

        assert store.unpin(gone)
        report = store.gc(min_garbage=0)

        assert report.blocks_removed > 30
        assert report.bytes_removed >= 8 << 20
        after = _packs_size(tmp_path)
        assert before - after == report.bytes_reclaimed >= 8 << 20
        assert store.count() == blocks_before - report.blocks_removed
        for root in [*kept, both]:
            assert store.is_pinned(root)
        assert _check_pinned(store) == report.live_blocks
        with pytest.raises(NotFound):
            store.get(gone)
        # Nothing left to collect: a second run changes nothing.
        again = store.gc(min_garbage=0)
        assert again.blocks_removed == again.bytes_reclaimed == again.packs_rewritten == 0
    with Blockstore(tmp_path) as store:  # and it all holds after reopening
        assert _check_pinned(store) == report.live_blocks
        store.put(b"\x12\x20" + bytes(32), b"")  # an odd block to prove writes still work
        assert store.has(b"\x12\x20" + bytes(32))


def test_gc_threshold_spares_packs_with_little_garbage(tmp_path: Path) -> None:
    with Blockstore(tmp_path) as store:
        _add(store, _data(1, 4 << 20))
        small = _add(store, _data(2, 100_000))
        store.unpin(small)
        report = store.gc()  # default: a quarter of the pack must be garbage
        assert report.packs_rewritten == 0 and report.bytes_reclaimed == 0
        assert store.gc(min_garbage=0).bytes_reclaimed >= 100_000
        with pytest.raises(ValueError, match="min_garbage"):
            store.gc(min_garbage=2)


def test_pin_tags(tmp_path: Path) -> None:
    with Blockstore(tmp_path) as store:
        root = _add(store, b"tagged", pin=UPLOAD)
        store.pin(root, INPUT)
        assert store.pin_tags(root) == {UPLOAD, INPUT}
        assert store.unpin(root, INPUT)
        assert not store.unpin(root, INPUT)  # already gone
        assert store.is_pinned(root) and store.pin_tags(root) == {UPLOAD}
        store.gc(min_garbage=0)
        assert store.get(root)
        assert store.unpin(root, UPLOAD)
        assert not store.is_pinned(root)
        assert store.gc(min_garbage=0).blocks_removed == 1


def test_held_partial_dag_is_kept(tmp_path: Path) -> None:
    """A DAG being fetched (some blocks here, root not pinned yet) survives a collection."""
    with Blockstore(tmp_path) as scratch:
        root = _add(scratch, _data(3, 2 << 20), pin=None)
        blocks = list(dag.walk(scratch.get, root))
    with Blockstore(tmp_path / "real") as store:
        with store.batch() as batch:  # the root and half the leaves came so far
            for cid, data in blocks[: len(blocks) // 2]:
                batch.put(cid, data)
        _add(store, _data(4, 1 << 20), pin=None)  # garbage
        with store.hold(root):
            report = store.gc(min_garbage=0)
            assert report.blocks_removed > 0
            with store.batch() as batch:  # the rest arrives, and the root is pinned
                for cid, data in blocks[len(blocks) // 2 :]:
                    batch.put(cid, data)
                batch.pin(root)
        assert store.held() == []
        assert _check_pinned(store) == len(blocks)


def test_gc_drops_the_bytes_a_repair_left_behind(tmp_path: Path) -> None:
    data = _data(5, 2 << 20)
    with Blockstore(tmp_path) as store:
        root = _add(store, data)
    pack = tmp_path / "packs" / "000001.pack"
    raw = bytearray(pack.read_bytes())
    raw[1000] ^= 1
    pack.write_bytes(bytes(raw))
    with Blockstore(tmp_path) as store:
        _add(store, data)  # repairs the bad block: its new copy is appended
        before = _packs_size(tmp_path)
        report = store.gc(min_garbage=0)
        assert report.blocks_removed == 0
        assert before - _packs_size(tmp_path) == report.bytes_reclaimed >= 256 << 10
        assert store.verify().corrupt == []
        assert b"".join(dag.cat(store.get, root)) == data


def test_readers_and_writers_beside_gc(tmp_path: Path) -> None:
    """Reads of pinned blocks never fail while collections move them; data added and pinned
    meanwhile (some of it sharing blocks with garbage) survives."""
    stop = threading.Event()
    errors: list[BaseException] = []
    with Blockstore(tmp_path) as store:
        roots = [_add(store, _data(i, 1 << 20)) for i in range(4)]
        blocks = [cid for root in roots for cid, _ in dag.walk(store.get, root)]

        def read() -> None:
            rng = random.Random(1)
            while not stop.is_set():
                try:
                    store.get(rng.choice(blocks))
                except BaseException as exc:
                    errors.append(exc)
                    return

        readers = [threading.Thread(target=read) for _ in range(2)]
        for t in readers:
            t.start()
        added: list[tuple[bytes, bytes]] = []
        try:
            for i in range(6):
                garbage = _data(100 + i, 1 << 20)
                _add(store, garbage, pin=None)
                collector = threading.Thread(target=store.gc, kwargs={"min_garbage": 0})
                collector.start()
                # Meanwhile: the same bytes again, pinned this time (deduplicated against
                # blocks the collection may have marked dead), and something new.
                added.append((garbage, _add(store, garbage)))
                fresh = _data(200 + i, 300_000)
                added.append((fresh, _add(store, fresh)))
                collector.join()
        finally:
            stop.set()
            for t in readers:
                t.join()
        assert errors == []
        for data, root in added:
            assert b"".join(dag.cat(store.get, root)) == data
        store.gc(min_garbage=0)
        for data, root in added:
            assert b"".join(dag.cat(store.get, root)) == data
        _check_pinned(store)


_READER_SCRIPT = """
import sys
from bacalhau.blockstore import Blockstore
from bacalhau.content import dag
with Blockstore(sys.argv[1]) as store:
    root = bytes.fromhex(sys.argv[2])
    store.get(root)  # pack 1 is open in this process now
    print("read", flush=True)
    sys.stdin.readline()
    sys.stdout.buffer.write(b"".join(dag.cat(store.get, root)))
    assert store.verify().corrupt == []
"""


def test_another_process_reading_a_moved_block(tmp_path: Path) -> None:
    """Another process (a `repo verify`, say) that opened a pack before it was rewritten
    finds its blocks where they went."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with Blockstore(tmp_path) as store:
        root = _add(store, _data(6, 1 << 20))
        gone = _add(store, _data(7, 1 << 20))
        proc = subprocess.Popen(
            [sys.executable, "-c", _READER_SCRIPT, str(tmp_path), root.hex()],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        assert proc.stdout.readline() == b"read\n"
        store.unpin(gone)
        assert store.gc(min_garbage=0).packs_rewritten == 1
        assert not store.pack_path(1).exists()
        out, _ = proc.communicate(b"go\n", timeout=60)
        assert proc.returncode == 0
        assert out == _data(6, 1 << 20)


def test_corrupt_pinned_node_stops_gc_and_removes_nothing(tmp_path: Path) -> None:
    with Blockstore(tmp_path) as store:
        root = _add(store, _data(8, 1 << 20))  # v0: dag-pb leaves, read by the mark
        gone = _add(store, _data(9, 1 << 20))
        store.unpin(gone)
        count = store.count()
        offset = store.locate(root)
        assert offset is not None
    with open(tmp_path / "packs" / "000001.pack", "r+b") as f:
        f.seek(offset[1] + 10)
        byte = f.read(1)
        f.seek(offset[1] + 10)
        f.write(bytes([byte[0] ^ 1]))
    with Blockstore(tmp_path) as store:
        with pytest.raises(BlockstoreError, match=r"garbage collection stopped.*corrupt"):
            store.gc(min_garbage=0)
        assert store.count() == count


_GC_SCRIPT = """
import sys
from bacalhau.blockstore import Blockstore
with Blockstore(sys.argv[1]) as store:
    print("open", flush=True)
    r = store.gc(min_garbage=0)
    print(r.blocks_removed, r.bytes_reclaimed, flush=True)
"""


def test_kill_9_during_gc_loses_no_pinned_block(tmp_path: Path) -> None:
    """A collection killed at random points (as it copies, around its commit, as it deletes
    packs) leaves every pinned block intact; the next one finishes the work."""
    root = tmp_path / "blocks"
    rng = random.Random(2024)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with Blockstore(root) as store:
        pinned = {
            _add(store, _data(i, 4 << 20), v1=bool(i % 2)): _data(i, 4 << 20) for i in range(3)
        }
    kills = round_ = 0
    while kills < 8:  # collections cut short; some rounds finish before the kill lands
        round_ += 1
        assert round_ <= 60, f"only {kills} of {round_ - 1} collections were cut short"
        with Blockstore(root) as store:
            for j in range(3):  # fresh garbage for this round
                store.unpin(_add(store, _data(1000 + 10 * round_ + j, 2 << 20)))
            fresh = _data(round_, 1 << 20)
            pinned[_add(store, fresh)] = fresh
            live = sum(len(b) for r in pinned for _, b in dag.walk(store.get, r))
        sizes = _sizes(root)
        # How far the copies get before the kill; past `live`, it lands around the commit
        # or as the old packs are deleted.
        target = rng.randrange(0, live + live // 4)
        proc = subprocess.Popen(
            [sys.executable, "-c", _GC_SCRIPT, str(root)], env=env, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"open\n"
        while sum(max(0, n - sizes.get(p, 0)) for p, n in _sizes(root).items()) < target:
            try:
                proc.wait(timeout=0.001)
                break
            except subprocess.TimeoutExpired:
                pass
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += not finished
        with Blockstore(root) as store:
            for r, data in pinned.items():
                assert b"".join(dag.cat(store.get, r)) == data, f"round {round_}"
            assert store.verify().corrupt == []
    with Blockstore(root) as store:
        store.gc(min_garbage=0)
        assert store.gc(min_garbage=0).bytes_reclaimed == 0
        _check_pinned(store)
        reachable = {
            bytes(CID.from_bytes(c).multihash) for r in pinned for c, _ in dag.walk(store.get, r)
        }
        assert reachable == set(store.iter_cids())
        live = sum(store.locate(c)[2] for c in store.iter_cids())  # type: ignore[index]
    # What crashed collections left (copies past a committed end, deleted packs' files) is
    # gone: the packs hold the live blocks and nothing else.
    assert _packs_size(root) == live


def test_evicted_inputs_are_unpinned_and_collected(tmp_path: Path) -> None:
    """The input cache pins what it fetches as INPUT; evicting an entry removes that pin (an
    upload's pin of the same root stays), and once a quarter of the cap was evicted the
    garbage is collected in the background."""
    from tests.test_inputs import make_cache

    mib = 1 << 20
    with Blockstore(tmp_path / "blocks") as store:
        roots = [_add(store, _data(300 + i, mib), pin=None) for i in range(4)]
        store.pin(roots[1], UPLOAD)  # also someone's upload
        texts = [str(CID.from_bytes(r)) for r in roots]
        cache = make_cache(tmp_path, store, max_bytes=int(2.5 * mib))
        assert cache.gc_after == int(2.5 * mib) // 4

        async def main() -> None:
            for text in texts:
                path = await cache.acquire(text, "")
                assert store.pin_tags(bytes(CID.parse(text))) >= {INPUT}
                cache.release(path)
            await asyncio.gather(*cache.pending)

        asyncio.run(main())
        assert not cache.holds(texts[0]) and not cache.holds(texts[1])
        assert cache.holds(texts[2]) and cache.holds(texts[3])
        assert cache.collections >= 1
        assert not store.is_pinned(roots[0]) and not store.has(roots[0])
        assert store.pin_tags(roots[1]) == {UPLOAD}  # the upload's pin stays
        assert b"".join(dag.cat(store.get, roots[1])) == _data(301, mib)
        for root in roots[2:]:
            assert store.pin_tags(root) == {INPUT}
        _check_pinned(store)


def test_closing_the_store_stops_a_collection_between_steps(tmp_path: Path) -> None:
    store = Blockstore(tmp_path)
    roots = [_add(store, _data(400 + i, 1 << 20)) for i in range(3)]
    store.unpin(roots[0])
    store._closing.set()  # as `close` does first, before it waits for the collection
    with pytest.raises(BlockstoreError, match="closing"):
        store.gc(min_garbage=0)
    store.close()
    with Blockstore(tmp_path) as store:
        assert store.count() > 0 and _check_pinned(store) > 0
        assert store.gc(min_garbage=0).blocks_removed > 0
