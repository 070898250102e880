"""Run Python programs with CPython compiled to WASI (3.12.0), in wasmtime, in process.

The interpreter is the pinned build checked by `_python_interp` (its SHA-256 is verified before
it is compiled; a tampered file is refused). Each run gets its own Engine and Store, as wasm
runs do (epoch interruption is engine-wide), with the compiled interpreter mapped in from the
cache. What the guest sees:

- `/app`: the job's context folder, read-only; the program is a file in it, and `/app` is on
  `sys.path`, so the program imports its own modules and pure-Python packages shipped there;
- `/tmp`: an empty scratch folder, writable, discarded after the run;
- the inputs read-only and the outputs writable at their mount paths (as in wasm runs);
- argv `["python", "/app/PROGRAM", *args]` or `["python", "-c", CODE, *args]`; the job's
  environment (sorted by name), plus `PYTHONDONTWRITEBYTECODE=1` and `PYTHONPATH`; nothing
  from the host.

Output goes through the run guard (`guard.py`: the run's timeout and disk limit), which keeps
the first part of each stream in the workdir; `RunRequest.on_log`, when given, gets it as it is
written.

Deterministic runs (`RunRequest.deterministic`) also get `PYTHONHASHSEED=0`, the virtual
clocks, seeded randomness and instant sleeps of `_wasi_shims`, directory listings
(`os.listdir`, `os.scandir` and so `glob`, `os.walk`, `pathlib`) sorted by name, since the
order a host file system returns differs between nodes, and file times (`os.stat`, `lstat`,
`fstat`, `DirEntry.stat`) that read as the fixed epoch. See docs/python.md for exactly what is
and is not deterministic. Every run's sleeps are bounded by its timeout and by cancel.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path, PurePosixPath

import wasmtime

from bacalhau import spec as rules
from bacalhau.errors import UsageError
from bacalhau.executor import _wasi_shims
from bacalhau.executor._python_interp import (
    CompiledInterpreter,
    InterpreterError,
    cache_name,
    engine_config,
)
from bacalhau.executor.base import (
    ExecutorError,
    RunRequest,
    RunResult,
    prepare_outputs,
)
from bacalhau.executor.guard import NOT_EXITED, RunGuard
from bacalhau.executor.wasm import Interrupter, _one_line, outputs_folders, preopen_mounts
from bacalhau.spec import GUEST_APP, GUEST_BOOT, GUEST_TMP

log = logging.getLogger(__name__)

_TAIL_BYTES = 8192
SITE_PACKAGES = "site-packages"  # a context's packages (bacalhauctl run python -r)

# Imported by `site` at start-up in deterministic runs (from GUEST_BOOT, first on PYTHONPATH).
SITECUSTOMIZE = '''\
"""Deterministic runs: what the host file system would make differ between nodes.

Directory listings come in name order; file times read as the fixed epoch.
"""
import os as _os

_EPOCH = 946684800  # 2000-01-01T00:00:00Z
_listdir, _scandir = _os.listdir, _os.scandir
_stat, _lstat, _fstat = _os.stat, _os.lstat, _os.fstat


def _pinned(st):
    cls, (fields, extra) = st.__reduce__()
    fields = (*fields[:7], _EPOCH, _EPOCH, _EPOCH)
    for name in ("st_atime", "st_mtime", "st_ctime"):
        extra[name] = float(_EPOCH)
        extra[name + "_ns"] = _EPOCH * 1_000_000_000
    return cls(fields, extra)


def stat(path, *, dir_fd=None, follow_symlinks=True):
    return _pinned(_stat(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks))


def lstat(path, *, dir_fd=None):
    return _pinned(_lstat(path, dir_fd=dir_fd))


def fstat(fd):
    return _pinned(_fstat(fd))


def listdir(path="."):
    return sorted(_listdir(path))


class DirEntry:
    """An os.DirEntry whose stat() has the fixed file times."""

    __slots__ = ("_entry", "name", "path")

    def __init__(self, entry):
        self._entry, self.name, self.path = entry, entry.name, entry.path

    def __fspath__(self):
        return self.path

    def __repr__(self):
        return f"<DirEntry {self.name!r}>"

    def inode(self):
        return self._entry.inode()

    def is_dir(self, *, follow_symlinks=True):
        return self._entry.is_dir(follow_symlinks=follow_symlinks)

    def is_file(self, *, follow_symlinks=True):
        return self._entry.is_file(follow_symlinks=follow_symlinks)

    def is_symlink(self):
        return self._entry.is_symlink()

    def is_junction(self):
        return False

    def stat(self, *, follow_symlinks=True):
        return _pinned(self._entry.stat(follow_symlinks=follow_symlinks))


class _SortedScandir:
    def __init__(self, it):
        with it:
            self._entries = sorted((DirEntry(e) for e in it), key=lambda e: e.name)
        self._it = iter(self._entries)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._it = iter(())


def scandir(path="."):
    return _SortedScandir(_scandir(path))


for _f, _orig in ((stat, _stat), (lstat, _lstat), (fstat, _fstat), (listdir, _listdir),
                  (scandir, _scandir)):
    _f.__doc__ = _orig.__doc__
_os.stat, _os.lstat, _os.fstat = stat, lstat, fstat
_os.listdir, _os.scandir = listdir, scandir
'''

SITECUSTOMIZE_PYC = "__pycache__/sitecustomize.cpython-312.pyc"
# Unchecked: the folder's name carries the source's hash, so the bytecode cannot go stale.
COMPILE_SITECUSTOMIZE = (
    "import py_compile\n"
    f"py_compile.compile('{GUEST_BOOT}/sitecustomize.py', "
    f"cfile='{GUEST_BOOT}/{SITECUSTOMIZE_PYC}', doraise=True, "
    "invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)\n"
)

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(: .*)?$")
_COMPILE_ERRORS = ("SyntaxError", "IndentationError", "TabError")


class PythonExecutor:
    """Runs Python programs in CPython for WASI; see the module doc for the guest's world."""

    name = "python"

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        interpreter: Path | None = None,
    ) -> None:
        """`cache_dir` keeps the compiled interpreter across processes (private to the node);
        `interpreter` replaces the packaged one (it must still be the pinned build)."""
        self.interpreter = CompiledInterpreter(interpreter, cache_dir)
        self._cache_dir = cache_dir
        self._boot: Path | None = None
        self._lock = threading.Lock()

    def is_installed(self) -> bool:
        """Whether the pinned interpreter is installed here (its hash is checked once).

        Raises nothing: a missing or tampered interpreter is logged and answers False.
        """
        try:
            self.interpreter.verify()
        except InterpreterError as e:
            log.warning("python engine unavailable: %s", e)
            return False
        return True

    def prepare(self) -> None:
        """Check the interpreter and compile it if no run has yet (a few seconds, once).

        Raises InterpreterError if the interpreter is missing or not the pinned build.
        """
        self.interpreter.prepare()
        self._boot_dir()

    def run(self, req: RunRequest, cancel: threading.Event | None = None) -> RunResult:
        """Run `req`'s program to completion (see `Executor.run`).

        The result's exit code is the interpreter's; `error` names the cause of a failure:
        "timed out after N s", "cancelled", "out of memory: ...", "output limit of N
        exceeded: ..." (stdout, stderr, outputs and /tmp together), "Python exception: <last
        line of the traceback> ..." (exit code 1; the traceback is in stderr), "trap: ...";
        it is None for a plain non-zero exit. Its limits are the `RunGuard`'s.

        Raises InterpreterError if the interpreter is missing or tampered with, and
        ExecutorError if the request is malformed (no program or code, a program outside
        its context, a reserved mount path) or the workdir cannot be prepared.
        """
        req.validate()
        argv = self._argv(req)
        _check_mount_paths([g for _, g in req.inputs] + [g for _, g in req.outputs])
        outputs_dir = prepare_outputs(req)
        tmp = req.workdir / "tmp"
        try:
            tmp.mkdir(exist_ok=True)
        except OSError as e:
            raise ExecutorError(f"cannot prepare {tmp}: {e.strerror}") from e
        boot = self._boot_dir() if req.deterministic else None
        engine = wasmtime.Engine(engine_config())
        module = self.interpreter.load(engine)
        stop = threading.Event()
        interrupt = Interrupter(engine, stop)
        folders = [*outputs_folders(req, outputs_dir), tmp]
        guard = RunGuard(req, cancel, folders=folders, interrupt=interrupt)
        store: wasmtime.Store | None = None
        exit_code, error = 0, None
        with guard:
            try:
                try:
                    wasi = self._wasi(req, argv, outputs_dir, tmp, boot, guard)
                except (OSError, wasmtime.WasmtimeError) as e:
                    raise ExecutorError(f"cannot mount the job's folders: {_one_line(e)}") from e
                store = wasmtime.Store(engine)
                clocks = _wasi_shims.Clocks(deterministic=req.deterministic, stop=stop)
                store.set_wasi(wasi)
                store.set_limits(memory_size=req.memory_limit_bytes)
                store.set_epoch_deadline(1)
                linker = wasmtime.Linker(engine)
                linker.define_wasi()
                _wasi_shims.define(linker, clocks)
                exit_code, error = _start(linker, store, module, clocks, req)
            finally:
                interrupt.close(store)  # the guest's files, closed now
        trapped = error is not None and error.startswith("trap")
        if guard.reason is None and ((error is None and exit_code != 0) or trapped):
            error = _diagnose(exit_code, _tail(req.workdir / "stderr"), req) or error
        return guard.result(outputs_dir, exit_code, error)

    # -- the guest's world ----------------------------------------------------------------

    def _argv(self, req: RunRequest) -> list[str]:
        if bool(req.program) == bool(req.code):
            raise ExecutorError(
                "a Python run needs a program file or inline code, not both",
                hint="give PROGRAM.py, or -c CODE",
            )
        if req.context is not None and not req.context.is_dir():
            raise ExecutorError(
                "the context must be a folder", hint="upload the program's folder as context"
            )
        if req.code:
            return ["python", "-c", req.code, *req.args]
        program = _check_program(req.program)
        if req.context is None or not (req.context / program).is_file():
            raise ExecutorError(
                f"program {req.program} is not a file in the context folder",
                hint="give a path relative to the context folder",
            )
        return ["python", f"{GUEST_APP}/{program}", *req.args]

    def _env(self, req: RunRequest, boot: Path | None) -> list[tuple[str, str]]:
        env = {"PYTHONDONTWRITEBYTECODE": "1"}
        if req.deterministic:
            env["PYTHONHASHSEED"] = "0"
            if req.env.get("PYTHONHASHSEED", "0") == "random":
                raise ExecutorError(
                    "PYTHONHASHSEED=random contradicts a deterministic run",
                    hint="drop it, or run without --deterministic",
                )
        path = [p for p in (GUEST_BOOT if boot else "", GUEST_APP if req.context else "") if p]
        if req.context is not None and (req.context / SITE_PACKAGES).is_dir():
            path.append(f"{GUEST_APP}/{SITE_PACKAGES}")  # what `run python -r` put there
        env.update(req.env)
        if req.env.get("PYTHONPATH"):
            path.append(req.env["PYTHONPATH"])
        if path:
            env["PYTHONPATH"] = ":".join(path)
        return sorted(env.items())

    def _wasi(
        self,
        req: RunRequest,
        argv: list[str],
        outputs_dir: Path,
        tmp: Path,
        boot: Path | None,
        guard: RunGuard,
    ) -> wasmtime.WasiConfig:
        wasi = wasmtime.WasiConfig()
        wasi.argv = argv
        wasi.env = self._env(req, boot)
        wasi.stdout_file = guard.pipe(1)
        wasi.stderr_file = guard.pipe(2)
        # The root first: a read-only folder holding an empty folder for each mount, so that
        # `/` exists (os.makedirs("/outputs", exist_ok=True) walks up to it) and lists them.
        # WASI resolves a path by the longest preopened prefix, so the mounts shadow these.
        wasi.preopen_dir(str(self._root(req, boot)), "/", False)
        if req.context is not None:
            wasi.preopen_dir(str(req.context), GUEST_APP, False)
        wasi.preopen_dir(str(tmp), GUEST_TMP, True)
        if boot is not None:
            wasi.preopen_dir(str(boot), GUEST_BOOT, False)
        preopen_mounts(wasi, req, outputs_dir)
        return wasi

    def _root(self, req: RunRequest, boot: Path | None) -> Path:
        """The guest's `/`: /app, /inputs, /outputs, /tmp and every mount path, as empty
        folders (the mounts themselves are preopened over them)."""
        root = req.workdir / "root"
        guest = [GUEST_APP, GUEST_TMP, "/inputs", "/outputs"]
        guest += [g for _, g in req.inputs] + [g for _, g in req.outputs]
        if boot is not None:
            guest.append(GUEST_BOOT)
        try:
            for path in guest:
                parts = PurePosixPath(path).parts[1:]
                if parts and ".." not in parts:
                    root.joinpath(*parts).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ExecutorError(f"cannot prepare {root}: {e.strerror}") from e
        return root

    def _boot_dir(self) -> Path:
        """A read-only folder holding SITECUSTOMIZE and its bytecode, made once.

        The bytecode is compiled by the guest interpreter itself (it saves each run some
        15 ms of compiling); without it the source still works, only slower.
        """
        with self._lock:
            if self._boot is not None:
                return self._boot
            key = f"{SITECUSTOMIZE}\n{cache_name()}".encode()
            digest = hashlib.sha256(key).hexdigest()[:12]
            if self._cache_dir is not None:
                boot = self._cache_dir / f"python-guest-{digest}"
            else:
                boot = Path(tempfile.mkdtemp(prefix="bacalhau-python-guest-")) / "guest"
            if not (boot / SITECUSTOMIZE_PYC).is_file():
                self._make_boot_dir(boot)
            self._boot = boot
            return boot

    def _make_boot_dir(self, boot: Path) -> None:
        """Write SITECUSTOMIZE into a staging folder, compile it there, move it to `boot`."""
        stage = boot.with_name(f".{boot.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        try:
            (stage / "sitecustomize.py").write_text(SITECUSTOMIZE)
            try:
                self._compile_in_guest(stage)
            except (wasmtime.WasmtimeError, wasmtime.Trap, ExecutorError, OSError) as e:
                log.warning("cannot precompile the deterministic start-up code: %s", e)
            try:
                stage.rename(boot)
            except OSError:  # made meanwhile by another process; or an old one: replace it
                if not (boot / SITECUSTOMIZE_PYC).is_file():
                    shutil.rmtree(boot, ignore_errors=True)
                    stage.rename(boot)
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def _compile_in_guest(self, folder: Path) -> None:
        engine = wasmtime.Engine(engine_config())
        module = self.interpreter.load(engine)
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["python", "-c", COMPILE_SITECUSTOMIZE]
        wasi.stderr_file = str(folder / "stderr")
        wasi.preopen_dir(str(folder), GUEST_BOOT, True)
        store = wasmtime.Store(engine)
        store.set_wasi(wasi)
        store.set_epoch_deadline(1)  # nothing increments the epoch: no time limit
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        start = linker.instantiate(store, module).exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        try:
            start(store)
        except wasmtime.ExitTrap as e:
            if e.code != 0:
                raise ExecutorError(_tail(folder / "stderr").strip()[-300:]) from None
        finally:
            (folder / "stderr").unlink(missing_ok=True)


def _check_mount_paths(paths: list[str]) -> None:
    """The spec's rule on reserved guest paths; raises ExecutorError for a clash."""
    try:
        rules.check_mount_paths(paths)
    except UsageError as e:
        raise ExecutorError(e.message, hint=e.hint) from None


def _check_program(program: str) -> PurePosixPath:
    """The spec's rule on program paths; raises ExecutorError for one outside the context."""
    try:
        return rules.check_program(program)
    except UsageError as e:
        raise ExecutorError(e.message, hint=e.hint) from None


def _diagnose(exit_code: int, tail: str, req: RunRequest) -> str | None:
    """Name the cause of a failed run from the end of its stderr, if Python said one."""
    lines = [line.rstrip() for line in tail.splitlines() if line.strip()]
    fatal = next((line for line in lines if line.startswith("Fatal Python error")), None)
    if fatal is not None:
        if "memory" in fatal.lower():
            return f"out of memory: {fatal} (memory limit {_mib(req.memory_limit_bytes)})"
        return f"Python crashed: {fatal[:200]}"
    if not lines:
        return None
    last = lines[-1]
    m = _EXCEPTION_LINE.match(last)
    if m is None:
        return None
    name = m.group(1).rsplit(".", 1)[-1]
    if "Traceback (most recent call last):" not in tail and name not in _COMPILE_ERRORS:
        return None
    if name == "MemoryError":
        return (
            f"out of memory: the program needs more than its {_mib(req.memory_limit_bytes)} "
            "memory limit (MemoryError; the traceback is in stderr)"
        )
    return f"Python exception: {last[:200]} (exit code {exit_code}; the traceback is in stderr)"


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - _TAIL_BYTES, 0))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def _start(
    linker: wasmtime.Linker,
    store: wasmtime.Store,
    module: wasmtime.Module,
    clocks: _wasi_shims.Clocks,
    req: RunRequest,
) -> tuple[int, str | None]:
    """Run the interpreter; (exit code, why it did not exit on its own or None)."""
    try:
        instance = linker.instantiate(store, module)
        memory = instance.exports(store)["memory"]
        clocks.memory = memory if isinstance(memory, wasmtime.Memory) else None
        start = instance.exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        start(store)
    except wasmtime.ExitTrap as e:
        return e.code, None
    except wasmtime.Trap as e:
        return NOT_EXITED, f"trap: {_one_line(e)}"  # an interrupt: the guard's reason wins
    except wasmtime.WasmtimeError as e:
        message = _one_line(e)
        if "exceeds memory limits" in message or "memory minimum size" in message:
            return NOT_EXITED, (
                f"out of memory: the interpreter does not fit in the "
                f"{_mib(req.memory_limit_bytes)} memory limit ({message})"
            )
        return NOT_EXITED, f"error: {message}"
    return 0, None
