"""`bacalhauctl get`: a result DAG to a folder, resumable, with a progress bar on a terminal.

Blocks are appended, as they arrive and after checking each against its CID, to
`DEST.partial/blocks` (records of CID length, CID, data length, data). An interrupted
download leaves that file; the next `get` into the same DEST reads back the whole records in
it (a torn last record is cut off), tells the node which blocks it has, and receives only the
rest. Once every block is there, the tree is written under `DEST.partial/` and renamed to
DEST in one step, then the partial folder is removed.

Room: as soon as the root block is here, the result's size (the root's own account of it)
is checked against the free space (its blocks, then its files: twice the size); while the
tree is written, the bytes are counted against the free space too (a root can lie, and one
block named a million times is written out a million times). Either stops `get` with one
line; so does a disk that fills anyway, and then nothing of the download is kept.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bacalhau.client import Client
from bacalhau.content import dag
from bacalhau.content.cid import CID
from bacalhau.content.errors import ContentError, CorruptData, TooLarge
from bacalhau.errors import BacalhauError, UsageError
from bacalhau.spec import size_text

_HEAD = struct.Struct(">HI")  # CID length, data length
_SYNC_BYTES = 16 << 20
_SPARE = 64 << 20  # left free on the destination's disk

Progress = Callable[[int, int], None]  # (bytes so far, total bytes or 0 if not known yet)


@dataclass(frozen=True)
class Downloaded:
    path: Path
    root_cid: str
    received_bytes: int  # sent by the node in this run
    resumed_bytes: int  # already in DEST.partial from an earlier, interrupted run


def download_result(
    c: Client, job_id: str, dest: Path, *, progress: Progress | None = None
) -> Downloaded:
    """Fetch job `job_id`'s result into `dest` (which must not exist, or be an empty folder).

    Raises UsageError if `dest` is in the way, CorruptData if the node sends a block that
    does not match its CID or leaves one out, ClientError if the node fails, BacalhauError
    if the result does not fit in the free space (see the module doc).
    """
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest} exists and is not an empty folder", hint="pick --output-dir")
    partial = dest.with_name(dest.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    with _exclusive(partial / "lock", dest):
        try:
            return _download(c, job_id, dest, partial, progress)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            shutil.rmtree(partial, ignore_errors=True)
            raise BacalhauError(
                f"the disk filled while writing the result of {job_id} under {dest.parent}; "
                "nothing of it was kept",
                hint="free some space, or pick --output-dir on another disk",
            ) from None


@contextlib.contextmanager
def _exclusive(lock: Path, dest: Path) -> Iterator[None]:
    """One `get` at a time into `dest`; another one fails at once."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"another bacalhauctl get is downloading into {dest}",
                hint="wait for it to finish, or pick another --output-dir",
            ) from None
        yield
    finally:
        os.close(fd)


def _download(
    c: Client, job_id: str, dest: Path, partial: Path, progress: Progress | None
) -> Downloaded:
    if dest.exists() and any(dest.iterdir()):  # finished by another get meanwhile
        raise UsageError(f"{dest} exists and is not an empty folder", hint="pick --output-dir")
    store = partial / "blocks"
    blocks = _load(store)  # CID -> (offset, length) in `store`; the bytes stay on disk
    resumed = sum(n for _, n in blocks.values())
    received = 0
    root = ""
    total = 0
    with open(store, "a+b") as f:
        unsynced = 0
        try:
            for chunk in c.results(job_id=job_id, have=blocks.keys()):
                if chunk.root_cid:
                    root = chunk.root_cid
                    total = _total(f, blocks, root)
                    _check_room(job_id, partial, total, resumed)
                    continue
                cid, data = bytes(chunk.cid), chunk.data
                dag.check_block(cid, data)
                if cid not in blocks:
                    f.write(_HEAD.pack(len(cid), len(data)) + cid)
                    blocks[cid] = (f.tell(), len(data))
                    f.write(data)
                    unsynced += len(data)
                received += len(data)
                if not total:
                    total = _total(f, blocks, root)
                    _check_room(job_id, partial, total, resumed + received)
                if unsynced >= _SYNC_BYTES:
                    f.flush()
                    os.fsync(f.fileno())
                    unsynced = 0
                if progress is not None:
                    progress(resumed + received, total)
        finally:
            f.flush()
            os.fsync(f.fileno())
    if not root:
        raise BacalhauError(f"the node sent no result for job {job_id}")

    tree = partial / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    with open(store, "rb") as r:

        def block(cid: bytes) -> bytes:
            where = blocks.get(cid)
            if where is None:
                raise CorruptData(f"the node did not send block {CID.from_bytes(cid)}")
            return _read(r, *where)

        free = shutil.disk_usage(partial).free
        try:
            dag.export(block, bytes(CID.parse(root)), tree, max_bytes=max(free - _SPARE, 1))
        except TooLarge:
            shutil.rmtree(tree, ignore_errors=True)
            raise BacalhauError(
                f"the result of {job_id} expands to more than the {size_text(free)} free "
                f"under {dest.parent} (its root said {size_text(total)}); nothing of it was "
                "written",
                hint="free some space, or pick --output-dir on another disk",
            ) from None
    if dest.exists():
        dest.rmdir()
    tree.replace(dest)
    shutil.rmtree(partial, ignore_errors=True)
    return Downloaded(dest, root, received, resumed)


Blocks = dict[bytes, tuple[int, int]]  # CID -> (offset, length) of its bytes in the file


def _check_room(job_id: str, partial: Path, total: int, have: int) -> None:
    """Refuse a result whose blocks and files would not fit in the free space."""
    if not total:
        return
    need = max(total - have, 0) + total  # the blocks still to come, then the files
    free = shutil.disk_usage(partial).free
    if need + _SPARE > free:
        raise BacalhauError(
            f"the result of {job_id} is {size_text(total)} and needs {size_text(need)} "
            f"here (its blocks, then its files); {size_text(free)} is free under "
            f"{partial.parent}",
            hint="free some space, or pick --output-dir on another disk",
        )


def _read(f: IO[bytes], offset: int, length: int) -> bytes:
    return os.pread(f.fileno(), length, offset)


def _total(f: IO[bytes], blocks: Blocks, root: str) -> int:
    """Bytes of the whole DAG, from the root block's link sizes (0 if it is not here yet)."""
    if not root:
        return 0
    cid = bytes(CID.parse(root))
    where = blocks.get(cid)
    if where is None:
        return 0
    f.flush()
    data = _read(f, *where)
    try:
        return len(data) + sum(link.tsize for link in dag.decode(cid, data).links)
    except ContentError:
        return 0


def _load(path: Path) -> Blocks:
    """Where the whole, valid records of an earlier run are; the file is cut after the last."""
    blocks: Blocks = {}
    if not path.exists():
        return blocks
    good = 0
    with open(path, "r+b") as f:
        while True:
            head = f.read(_HEAD.size)
            if len(head) < _HEAD.size:
                break
            n_cid, n_data = _HEAD.unpack(head)
            cid = f.read(n_cid)
            data = f.read(n_data)
            if len(cid) < n_cid or len(data) < n_data:
                break
            try:
                dag.check_block(cid, data)
            except ContentError:
                break
            blocks[cid] = (f.tell() - n_data, n_data)
            good = f.tell()
        f.truncate(good)
    return blocks


class ProgressBar:
    """`12.0/64.0 MiB  120.5 MiB/s  ETA 0:03` on one terminal line, redrawn 10 times a second."""

    def __init__(self, out: IO[str] = sys.stderr) -> None:
        self._out = out
        self._start = time.monotonic()
        self._first: int | None = None
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = done
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        elapsed = max(now - self._start, 1e-6)
        rate = (done - self._first) / elapsed
        mib = 1 << 20
        text = f"{done / mib:.1f}"
        if total:
            text += f"/{total / mib:.1f} MiB {100 * done / total:3.0f}%"
        else:
            text += " MiB"
        text += f"  {rate / mib:.1f} MiB/s"
        if total and rate > 0:
            eta = int(max(total - done, 0) / rate)
            text += f"  ETA {eta // 60}:{eta % 60:02d}"
        self._out.write("\r" + text.ljust(60))
        self._out.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self._out.write("\n")
            self._out.flush()
