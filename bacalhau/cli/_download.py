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
from typing import IO, Any

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


class NoRoom(BacalhauError):
    """The result does not fit in the free space at the destination."""


@dataclass(frozen=True)
class Downloaded:
    path: Path
    root_cid: str
    received_bytes: int  # sent by the node in this run
    resumed_bytes: int  # already in DEST.partial from an earlier, interrupted run


def download_result(
    c: Client, job_id: str, dest: Path, *, progress: Progress | None = None, result_cid: str = ""
) -> Downloaded:
    """Fetch job `job_id`'s result (or, with `result_cid`, that result DAG of the job's) into
    `dest`
    (which must not exist, or be an empty folder).

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
            return _download(c, job_id, dest, partial, progress, result_cid)
        except NoRoom:
            shutil.rmtree(partial, ignore_errors=True)  # nothing of it is kept
            raise
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
    c: Client,
    job_id: str,
    dest: Path,
    partial: Path,
    progress: Progress | None,
    result_cid: str = "",
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
            asked = {"cid": result_cid} if result_cid else {"job_id": job_id}
            for chunk in c.results(**asked, have=blocks.keys()):
                if chunk.root_cid:
                    root = chunk.root_cid
                    total = _total(f, blocks, root)
                    _check_room(job_id, partial, total, resumed)
                    continue
                cid, data = bytes(CID.parse(chunk.block_cid)), chunk.data
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
            raise NoRoom(
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

_LOGS = ("stdout", "stderr")


def download_shards(
    c: Client,
    job: Any,
    dest: Path,
    *,
    keep_last: bool = False,
    progress: Progress | None = None,
) -> Path:
    """A sharded job's results into `dest`: `per_shard/N/` with each shard's own result, and
    merged in shard order: each output folder with the files of every shard, `stdout` and
    `stderr` concatenated, `exitCode` the first non-zero one (else 0).

    Each shard's download resumes like `download_result` (under DEST.shards/ until the whole
    tree is there). A file that two shards both wrote is an error naming both, unless
    `keep_last` (the later shard's is kept). Raises UsageError, BacalhauError, ClientError."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest} exists and is not an empty folder", hint="pick --output-dir")
    results = _shard_results(job)
    work = dest.with_name(dest.name + ".shards")
    tree = work / "tree"
    per = tree / "per_shard"
    per.mkdir(parents=True, exist_ok=True)
    for shard, cid in enumerate(results):
        target = per / str(shard)
        if not target.exists():  # a finished shard's folder appears whole, in one rename
            download_result(c, job.id, target, progress=progress, result_cid=cid)
    for entry in list(tree.iterdir()):  # an interrupted merge: start it again
        if entry.name != "per_shard":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    _merge(tree, len(results), keep_last)
    if dest.exists():
        dest.rmdir()
    tree.replace(dest)
    shutil.rmtree(work, ignore_errors=True)
    return dest


def _shard_results(job: Any) -> list[str]:
    """Each shard's result CID (of a published execution), in shard order."""
    from bacalhau.models import ExecutionState

    published = ExecutionState.PUBLISHED.pb
    found: dict[int, str] = {}
    for ex in job.executions:
        if ex.state == published and ex.result_cid:
            found.setdefault(ex.shard, ex.result_cid)
    missing = [s for s in range(job.shard_count) if s not in found]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise BacalhauError(
            f"job {job.id} has no result for shard(s) {shown}",
            hint="wait for it to complete ('bacalhauctl describe' shows each shard's state)",
        )
    return [found[s] for s in range(job.shard_count)]


def _merge(tree: Path, count: int, keep_last: bool) -> None:
    """Merge `tree/per_shard/0..count-1` into `tree` (see `download_shards`)."""
    owner: dict[str, int] = {}  # merged file -> the shard it came from
    logs = {name: open(tree / name, "wb") for name in _LOGS}  # noqa: SIM115 - closed below
    exit_code = "0"
    try:
        for shard in range(count):
            own = tree / "per_shard" / str(shard)
            for name in _LOGS:
                if (own / name).is_file():
                    with open(own / name, "rb") as log:
                        shutil.copyfileobj(log, logs[name])
            code = (own / "exitCode").read_text().strip() if (own / "exitCode").is_file() else ""
            if exit_code == "0" and code not in ("", "0"):
                exit_code = code
            for volume in sorted(p for p in own.iterdir() if p.is_dir()):
                for src in sorted(volume.rglob("*")):
                    rel = src.relative_to(own)
                    out = tree / rel
                    if src.is_dir():
                        out.mkdir(parents=True, exist_ok=True)
                        continue
                    key = rel.as_posix()
                    if key in owner:
                        if not keep_last:
                            raise BacalhauError(
                                f"shards {owner[key]} and {shard} both wrote {key}",
                                hint="make each shard write its own file names, or pass "
                                "--merge keep-last to keep the later shard's",
                            )
                        out.unlink()
                    out.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(src, out)
                    except OSError:
                        shutil.copyfile(src, out)
                    owner[key] = shard
    finally:
        for out_file in logs.values():
            out_file.close()
    (tree / "exitCode").write_text(exit_code)


def _check_room(job_id: str, partial: Path, total: int, have: int) -> None:
    """Refuse a result whose blocks and files would not fit in the free space."""
    if not total:
        return
    need = max(total - have, 0) + total  # the blocks still to come, then the files
    free = shutil.disk_usage(partial).free
    if need + _SPARE > free:
        raise NoRoom(
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
