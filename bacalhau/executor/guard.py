"""One run's limits, enforced in one place for every engine: its timeout, its cancel event,
and the bytes it writes.

A `RunGuard` runs one watcher thread per run. It stops the run (through the engine's own
`interrupt`) on the first of: the cancel event, the deadline, or the run's output passing
`RunRequest.disk_limit_bytes`, where output is stdout, stderr and the run's writable
folders (its output volumes; python's /tmp) counted together.

- stdout and stderr are counted exactly, as they are written: a wasm or python guest writes
  them into pipes the watcher drains (`pipe`), a container's come from its attach stream
  (`wrote`). The first `stdout_limit_bytes` of each are kept in `workdir/stdout` and
  `workdir/stderr`; the rest is counted and handed to `on_log`, never stored. Once the limit
  is passed the pipes are closed, so a guest blocked in a write gets an error at once.
- folders are measured by walking them, every `FOLDER_POLL_S` (more rarely when a walk takes
  long: at most a twentieth of the watcher's time goes to walking), and once more after the
  run, so a result over the limit is never published: the folders are emptied instead.

A file or folder counts as at least `ENTRY_BYTES`, so a run cannot fill a disk's inodes with
millions of empty files either.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import queue
import select
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bacalhau.executor.base import RunRequest, RunResult
from bacalhau.spec import size_text

log = logging.getLogger(__name__)

POLL_S = 0.02  # how often the watcher looks at cancel and the deadline
FOLDER_POLL_S = 0.05  # how often it measures the folders, at the most
ENTRY_BYTES = 512  # what a file or folder counts as at least
_READ = 1 << 20
_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
NOT_EXITED = -1  # RunResult.exit_code when the program did not exit on its own


def folder_bytes(folders: Sequence[Path]) -> int:
    """What the files under `folders` take, each file or folder counting `ENTRY_BYTES` at least."""
    total = 0
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            total += ENTRY_BYTES * len(dirs)
            for name in files:
                with contextlib.suppress(OSError):
                    total += max(os.lstat(os.path.join(root, name)).st_size, ENTRY_BYTES)
    return total


class RunGuard:
    """Watches one run; see the module doc. Use as a context manager around the run.

    `interrupt` is the engine's way to stop the run (raise an epoch, kill a container); the
    watcher calls it once, within `POLL_S` of the cause. After the run,
    `reason` is why it was stopped (None if it was not): "cancelled", "timed out after N s"
    or "output limit of N exceeded: ...".
    """

    def __init__(
        self,
        req: RunRequest,
        cancel: threading.Event | None,
        *,
        folders: Sequence[Path],
        interrupt: Callable[[], None],
    ) -> None:
        self.limit = req.disk_limit_bytes
        self.reason: str | None = None
        self.exceeded = False
        self._req = req
        self._cancel = cancel
        self._folders = list(folders)
        self._interrupt = interrupt
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._streams = {1: _Stream(req.workdir / "stdout"), 2: _Stream(req.workdir / "stderr")}
        self._pipes: dict[int, int] = {}  # read end -> stream
        self._fifos: list[Path] = []
        self._written = 0  # stdout and stderr, all of it
        self._in_folders = 0  # at the last walk
        self._watched: threading.Event | None = None  # set when the watcher returned

    # -- what the engines call ----------------------------------------------------------

    def pipe(self, stream: int) -> str:
        """A FIFO under the workdir for the guest's stream 1 (stdout) or 2 (stderr) to be
        opened for writing (wasmtime's `stdout_file`), drained by the watcher.

        Raises OSError if it cannot be made.
        """
        path = self._req.workdir / f".{'stdout' if stream == 1 else 'stderr'}.pipe"
        os.mkfifo(path, 0o600)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # so the writer's open does not block
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
        self._pipes[fd] = stream
        self._fifos.append(path)
        return str(path)

    def wrote(self, stream: int, data: bytes) -> bool:
        """Count `data` written to `stream`, keep what fits, pass it on; False once the run
        is over its limit (the caller should drop the rest)."""
        if not data:
            return True
        with self._lock:
            if self.exceeded:
                return False
            self._written += len(data)
            over = self._written + self._in_folders > self.limit
            self._streams[stream].keep(data, self._req.stdout_limit_bytes)
        if self._req.on_log is not None:
            try:
                self._req.on_log(stream, data)
            except Exception:  # a failing sink must not stop the run
                log.exception("passing on a run's output failed")
        if over:
            self._exceed()
            return False
        return True

    def __enter__(self) -> RunGuard:
        self._deadline = time.monotonic() + self._req.timeout_s
        self._watched = _WATCHERS.run(self._watch)
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop watching, drain and close the pipes, measure the folders a last time, and
        empty them if the run went over its limit."""
        self._done.set()
        if self._watched is not None:
            self._watched.wait()
        self._drain(block=False)
        for fd in list(self._pipes):
            self._close_pipe(fd)
        for fifo in self._fifos:
            fifo.unlink(missing_ok=True)
        for s in self._streams.values():
            s.close()
        if not self.exceeded and self.reason is None:
            self._measure()
        if self.exceeded:
            for folder in self._folders:
                shutil.rmtree(folder, ignore_errors=True)
                with contextlib.suppress(OSError):
                    folder.mkdir()

    def result(self, outputs_dir: Path, exit_code: int, error: str | None) -> RunResult:
        """The run's result, with the kept stdout and stderr. Call after the guard exited.

        When the guard stopped the run, its reason is the error (exit code -1), whatever the
        program did on the way out.
        """
        if self.reason is not None:
            exit_code, error = NOT_EXITED, self.reason
        out, err = self._streams[1], self._streams[2]
        cap = self._req.stdout_limit_bytes
        return RunResult(
            exit_code=exit_code,
            stdout=out.read(),
            stderr=err.read(),
            stdout_truncated=out.seen > cap,
            stderr_truncated=err.seen > cap,
            outputs_dir=outputs_dir,
            error=error,
        )

    # -- the watcher --------------------------------------------------------------------

    def _watch(self) -> None:
        next_walk = time.monotonic() + FOLDER_POLL_S
        while not self._done.is_set():
            if self._pipes:
                self._drain(block=True)
            else:
                self._done.wait(POLL_S)
            now = time.monotonic()
            if self._cancel is not None and self._cancel.is_set():
                self._stop("cancelled")
            elif now >= self._deadline:
                self._stop(f"timed out after {self._req.timeout_s:g} s")
            elif now >= next_walk and self._folders:
                self._measure()
                took = time.monotonic() - now
                next_walk = time.monotonic() + max(FOLDER_POLL_S, 20 * took)
            if self.reason is not None:
                try:
                    self._interrupt()
                except Exception:
                    log.exception("stopping a run failed")
                break
        # Stopped: keep draining until the run ends, so a guest's last writes do not block.
        while not self._done.is_set() and self._pipes:
            self._drain(block=True)

    def _drain(self, *, block: bool) -> None:
        poller = select.poll()  # not select.select: a node's fds may pass FD_SETSIZE
        for fd in self._pipes:
            poller.register(fd, select.POLLIN)
        try:
            ready = [fd for fd, _ in poller.poll(POLL_S * 1000 if block else 0)]
        except OSError:
            return
        idle = False
        for fd in ready:
            while fd in self._pipes:
                try:
                    data = os.read(fd, _READ)
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno != errno.EINTR:
                        self._close_pipe(fd)
                    break
                if not data:  # no writer (yet, or any more): poll would answer at once
                    idle = True
                    break
                if not self.wrote(self._pipes[fd], data):
                    break
        if idle and block:
            self._done.wait(POLL_S)

    def _measure(self) -> None:
        size = folder_bytes(self._folders)
        with self._lock:
            self._in_folders = size
            over = self._written + size > self.limit
        if over:
            self._exceed()

    def _exceed(self) -> None:
        with self._lock:
            if self.exceeded:
                return
            self.exceeded = True
        self._stop(
            f"output limit of {size_text(self.limit)} exceeded: stdout, stderr and the "
            "output folders together (ask for more with the job's disk resource, up to the "
            "node's --limit-job-disk)"
        )
        for fd in list(self._pipes):  # a guest blocked writing gets an error at once
            self._close_pipe(fd)

    def _stop(self, reason: str) -> None:
        """Record why the run stops; the watcher interrupts it (a container's attach stream
        must be read while it is killed, so the thread reading it cannot do the killing)."""
        with self._lock:
            if self.reason is None:
                self.reason = reason

    def _close_pipe(self, fd: int) -> None:
        if self._pipes.pop(fd, None) is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class _Watchers:
    """The threads that run guards' watchers, kept for the next run: starting a thread for
    each run costs a wait for it to be scheduled, which on a busy machine is much of a short
    run. A thread idle for `IDLE_S` ends; there are never more than runs at once."""

    IDLE_S = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for work that no submitted run has counted on
        self._work: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = (
            queue.SimpleQueue()
        )

    def run(self, fn: Callable[[], None]) -> threading.Event:
        """Run `fn` on a watcher thread; the event is set once it returned."""
        done = threading.Event()
        with self._lock:
            spawn = not self._idle
            if not spawn:
                self._idle -= 1
        self._work.put((fn, done))
        if spawn:
            threading.Thread(target=self._serve, name="run-guard", daemon=True).start()
        return done

    def _serve(self) -> None:
        while True:
            try:
                fn, done = self._work.get(timeout=self.IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # nobody counts on this thread: it ends
                        self._idle -= 1
                        return
                continue  # a run counted on it just now: its work is on the way
            try:
                fn()
            except Exception:
                log.exception("a run's watcher failed")
            finally:
                with self._lock:  # free before its run hears so: the next run takes it
                    self._idle += 1
                done.set()


_WATCHERS = _Watchers()


class _Stream:
    """The kept start of one output stream, in a file, and how much of it was seen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = 0
        self._file = path.open("wb")

    def keep(self, data: bytes, cap: int) -> None:
        room = cap - self.seen
        self.seen += len(data)
        if room > 0 and not self._file.closed:
            self._file.write(data[:room])
            self._file.flush()

    def close(self) -> None:
        self._file.close()

    def read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError:
            return b""
