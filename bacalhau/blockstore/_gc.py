"""Garbage collection: drop the blocks no pin reaches and give their pack space back.

1. **Mark**, without the writer lock: every block reachable from a pin or a hold
   (`Blockstore.hold`: data being fetched or stored before its root is pinned), walking dag-pb
   links (raw blocks have none; a block that is not stored is skipped, so a partial DAG keeps
   what it has). A node whose whole DAG was there is remembered as complete. Where writing
   stood (the current pack and its committed end) is noted first: every block written after
   that is kept as too new to judge.
2. **Sweep**, pack by pack, each under the writer lock in one batch: walk the pins and holds
   again, skipping the complete DAGs (so only roots pinned meanwhile and partial DAGs are
   read again: a block can become reachable after the mark only through them); then copy the
   pack's live blocks to the end of the current pack (a new pack if the one being rewritten
   is the current one), take its dead blocks out of the index, and forget the pack. The
   batch syncs the copies and commits the index as any batch does; only then is the old pack
   file deleted.

Crash safety follows from that order. Before the commit, the copies lie past the committed
end of their pack (cut off by the next writer) and the index still points into the old pack,
which is whole. After it, every live block is in its new place, synced; the old pack is
referenced by nothing, and a pack file that no committed pack end names (and is not the
current pack) is deleted by the next collection, under the lock. Readers that looked a block
up before the commit and find its pack gone or shorter look it up again (`Blockstore.get`);
this process's descriptor of a deleted pack is closed once no read uses it.

Packs are rewritten when at least `min_garbage` of their bytes is garbage (blocks no pin
reaches, and bytes no index entry points at: copies replaced by a repair, dropped blocks, a
batch cut short), so a pack is not copied to free a few bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bacalhau.blockstore._packs import (
    _CURRENT,
    _END,
    _LOC,
    BlockstoreError,
    CorruptBlock,
    GcReport,
    _multihash,
)
from bacalhau.content import dag
from bacalhau.content.cid import CID, RAW
from bacalhau.content.errors import ContentError, CorruptData, NotFound

if TYPE_CHECKING:
    from bacalhau.blockstore._packs import Batch, Blockstore

log = logging.getLogger(__name__)


def collect(store: Blockstore, min_garbage: float) -> GcReport:
    """See `Blockstore.gc`."""
    if not 0.0 <= min_garbage <= 1.0:
        raise ValueError(f"min_garbage must be within 0..1, not {min_garbage}")
    started = time.monotonic()
    report = GcReport()
    with store._env.begin() as txn:
        raw = txn.get(_CURRENT, db=store._meta)
        snap_pack = int(raw) if raw else 1
        raw_end = txn.get(b"end:%d" % snap_pack, db=store._meta)
        snap_end = _END.unpack(raw_end)[0] if raw_end else 0
        pins = [bytes(k) for k in txn.cursor(db=store._pins).iternext(values=False)]
    marked: set[bytes] = set()
    complete: set[bytes] = set()
    _mark(store, [*pins, *store.held()], marked, complete)

    def live(mh: bytes, loc: bytes) -> bool:
        pack, offset, _ = _LOC.unpack(loc)
        return mh in marked or (pack, offset) >= (snap_pack, snap_end)

    # Which packs to rewrite: from one pass over the index (under the lock, which also
    # deletes what a crashed collection left).
    with store.batch() as batch:
        _remove_orphans(store, batch)
        ends = batch.pack_ends()
        live_bytes = dict.fromkeys(ends, 0)
        for mh, loc in batch.entries():
            pack, _, length = _LOC.unpack(loc)
            if live(mh, loc):
                live_bytes[pack] = live_bytes.get(pack, 0) + length
    todo = [
        p
        for p, end in sorted(ends.items())
        if p <= snap_pack
        and end - live_bytes.get(p, 0) > 0
        and end - live_bytes.get(p, 0) >= min_garbage * end
    ]
    for pack in todo:
        if store._closing.is_set():  # the node is stopping: the rest waits for next time
            break
        _rewrite(store, pack, marked, complete, live, report)
    report.live_blocks = len(marked)
    report.seconds = time.monotonic() - started
    log.info(
        "gc: removed %d blocks (%d bytes), reclaimed %d bytes in %d packs (%d bytes moved) "
        "in %.2fs",
        report.blocks_removed,
        report.bytes_removed,
        report.bytes_reclaimed,
        report.packs_rewritten,
        report.bytes_moved,
        report.seconds,
    )
    return report


def _rewrite(
    store: Blockstore,
    pack: int,
    marked: set[bytes],
    complete: set[bytes],
    live: Callable[[bytes, bytes], bool],
    report: GcReport,
) -> None:
    """Copy the live blocks of `pack` out, forget the rest, commit, then delete the file."""
    path = store.pack_path(pack)
    size = 0
    with contextlib.suppress(FileNotFoundError):
        size = path.stat().st_size
    with store.batch() as batch:
        # Pins and holds added since the mark (and partial DAGs) are walked again.
        _mark(store, [*batch.pins(), *store.held()], marked, complete)
        if batch.pack == pack:
            batch.seal()
        entries = [(mh, loc) for mh, loc in batch.entries() if _LOC.unpack(loc)[0] == pack]
        entries.sort(key=lambda e: _LOC.unpack(e[1])[1])
        moved = 0
        for mh, loc in entries:
            _, offset, length = _LOC.unpack(loc)
            if not live(mh, loc):
                batch.forget(mh)
                report.blocks_removed += 1
                report.bytes_removed += length
                continue
            data = store._pread(pack, length, offset)
            if len(data) != length or hashlib.sha256(data).digest() != mh[2:]:
                # Live but already lost: taken out of the index as `repo verify --repair`
                # would, so a fetch or a new add stores it again.
                reason = "truncated" if len(data) != length else "hash mismatch"
                report.corrupt.append(CorruptBlock(mh, pack, offset, length, reason))
                batch.forget(mh)
                continue
            batch.move(mh, data)
            moved += length
        batch.drop_pack(pack)
    # Committed: nothing points into the pack any more.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    store._retire(pack)
    report.packs_rewritten += 1
    report.bytes_moved += moved
    report.bytes_reclaimed += max(size - moved, 0)


def _remove_orphans(store: Blockstore, batch: Batch) -> None:
    """Delete pack files that no committed pack end names (a collection or a batch that
    crashed after its commit or before it): nothing in the index points into them."""
    ends = batch.pack_ends()
    for entry in os.scandir(store.root / "packs"):
        name = entry.name
        if not (name.endswith(".pack") and name[:-5].isdigit()):
            continue
        pack = int(name[:-5])
        if pack in ends or pack == batch.pack:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
        store._retire(pack)


def _mark(store: Blockstore, roots: list[bytes], marked: set[bytes], complete: set[bytes]) -> None:
    """Add to `marked` the multihash of every stored block under `roots`; add to `complete`
    each CID whose whole DAG is stored (its DAG is not walked again).

    Raises BlockstoreError if a stored node of the DAG is corrupt or of a codec whose links
    cannot be read: its children cannot be known, so nothing may be collected."""
    seen: set[bytes] = set()
    for root in roots:
        # A frame: [cid, children left to visit (None: not read yet), all present so far]
        stack: list[list[object]] = [[root, None, True]]
        while stack:
            frame = stack[-1]
            cid = frame[0]
            assert isinstance(cid, bytes)
            kids = frame[1]
            if kids is None:
                if cid in complete:
                    stack.pop()
                    continue
                if cid in seen:  # walked in this pass, and found partial
                    stack.pop()
                    if stack:
                        stack[-1][2] = False
                    continue
                seen.add(cid)
                links = _links(store, cid, marked)
                if links is None:  # not stored
                    stack.pop()
                    if stack:
                        stack[-1][2] = False
                    continue
                frame[1] = links[::-1]
                continue
            assert isinstance(kids, list)
            if kids:
                stack.append([kids.pop(), None, True])
                continue
            stack.pop()
            if frame[2]:
                complete.add(cid)
            elif stack:
                stack[-1][2] = False


def _links(store: Blockstore, cid: bytes, marked: set[bytes]) -> list[bytes] | None:
    """Mark the block; its links (None if it is not stored)."""
    if store._closing.is_set():
        raise BlockstoreError("garbage collection stopped: the blockstore is closing")
    try:
        mh = _multihash(cid)
        if CID.from_bytes(cid).codec == RAW:
            if not store.has(mh):
                return None
            marked.add(mh)
            return []
        block = store.get(cid)
        marked.add(mh)
        return [link.cid for link in dag.decode(cid, block).links]
    except NotFound:
        return None
    except CorruptData as exc:
        raise BlockstoreError(
            f"garbage collection stopped: {exc}",
            hint="run 'bacalhauctl repo verify --repair', then add or fetch the data again",
        ) from None
    except ContentError as exc:
        raise BlockstoreError(
            f"garbage collection stopped: cannot read the links of {CID.from_bytes(cid)} ({exc})",
            hint="unpin the DAG if it is not needed",
        ) from None
