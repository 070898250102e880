"""Run WASI (preview 1) modules with wasmtime, each in its own sandbox with hard limits.

Every run gets its own Engine and Store: epoch interruption (used for timeouts and cancel)
is engine-wide, so sharing an engine would let one job's timeout stop every other job.
Compilation is shared instead: the executor compiles each distinct module once (keyed by the
sha256 of its bytes) into a serialized artifact, which each run deserializes into its engine
(a fraction of a millisecond). With `cache_dir`, artifacts also persist across processes;
that directory must be private to this node, because deserializing trusts its contents.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
from pathlib import Path, PurePosixPath

import wasmtime

from bacalhau.executor import _wasi_shims
from bacalhau.executor.base import (
    ExecutorError,
    InvalidModule,
    RunRequest,
    RunResult,
    prepare_outputs,
)
from bacalhau.executor.guard import NOT_EXITED, RunGuard
from bacalhau.spec import WASM_MAGIC as WASM_MAGIC  # re-exported: it was defined here

log = logging.getLogger(__name__)
WASI_MODULE = "wasi_snapshot_preview1"
_UNLIMITED_FUEL = 2**64 - 1


def _config() -> wasmtime.Config:
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    return config


def _one_line(e: BaseException) -> str:
    """wasmtime's messages span lines, with the cause last; keep the cause."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


def preopen_mounts(wasi: wasmtime.WasiConfig, req: RunRequest, outputs_dir: Path) -> None:
    """Preopen the inputs (read-only), then the outputs (writable), in the order given.

    A folder input is mounted as it is. File inputs are staged (hard-linked, else copied) in
    one folder per top-level guest folder, at their paths below it, and that folder is
    mounted there: `/inputs/a.txt` and `/inputs/d/b.txt` are both in the one `/inputs` (a
    shard's files, say), listable as in a job given the whole folder.
    """
    stages: dict[str, Path] = {}
    for host, guest in req.inputs:
        if host.is_dir():
            wasi.preopen_dir(str(host), guest, False)
            continue
        path = PurePosixPath(guest)
        top = str(PurePosixPath("/", *path.parts[1:2])) if len(path.parts) > 2 else str(path.parent)
        stage = stages.get(top)
        if stage is None:
            stage = stages[top] = req.workdir / "inputs" / str(len(stages))
            stage.mkdir(parents=True, exist_ok=True)
            wasi.preopen_dir(str(stage), top, False)
        target = stage / path.relative_to(top)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(host, target)
        except OSError:
            shutil.copyfile(host, target)
    for name, guest in req.outputs:
        wasi.preopen_dir(str(outputs_dir / name), guest, True)


class WasmExecutor:
    """Runs `_start` of a WASI preview 1 module; see `RunRequest` for the sandbox's shape."""

    name = "wasm"

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._engine = wasmtime.Engine(_config())  # compiles; runs use their own engines
        self._cache_dir = cache_dir
        self._artifacts: dict[str, bytes] = {}
        self._imports: dict[bytes, frozenset[str]] = {}  # a compiled module -> its imports
        self._lock = threading.Lock()

    def is_installed(self) -> bool:
        """True: this class imports only where wasmtime does. Raises nothing."""
        return True

    def compile(self, wasm: bytes) -> bytes:
        """Return the serialized compiled form of `wasm`, compiling it once per executor.

        Raises InvalidModule if the bytes are not WebAssembly, fail to compile, import
        anything besides WASI preview 1, or lack a `_start` function.
        """
        key = hashlib.sha256(wasm).hexdigest()
        with self._lock:
            artifact = self._artifacts.get(key)
        if artifact is not None:
            return artifact
        cached = self._cache_dir / f"{key}.cwasm" if self._cache_dir else None
        if cached is not None and cached.exists():
            artifact = cached.read_bytes()
        else:
            artifact = self._compile(wasm)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.write_bytes(artifact)
                tmp.replace(cached)
        with self._lock:
            self._artifacts[key] = artifact
        return artifact

    def _compile(self, wasm: bytes) -> bytes:
        if not wasm.startswith(WASM_MAGIC):
            raise InvalidModule("not a WebAssembly module (bad magic number)")
        try:
            module = wasmtime.Module(self._engine, wasm)
        except wasmtime.WasmtimeError as e:
            raise InvalidModule(f"invalid WebAssembly module: {_one_line(e)}") from e
        for imp in module.imports:
            if imp.module != WASI_MODULE:
                raise InvalidModule(
                    f"module imports {imp.module}.{imp.name}",
                    hint=f"only {WASI_MODULE} imports are provided",
                )
        if not any(
            exp.name == "_start" and isinstance(exp.type, wasmtime.FuncType)
            for exp in module.exports
        ):
            raise InvalidModule("module has no _start function", hint="build it as a WASI command")
        return bytes(module.serialize())

    def _load(
        self, engine: wasmtime.Engine, req: RunRequest
    ) -> tuple[wasmtime.Module, frozenset[str]]:
        """The request's module, compiled for `engine`, and the WASI functions it imports."""
        if req.module is None:
            raise ExecutorError("a wasm run needs a module")
        try:
            wasm = req.module.read_bytes()
        except OSError as e:
            raise ExecutorError(f"cannot read module {req.module}: {e}") from e
        artifact = self.compile(wasm)
        try:
            module = wasmtime.Module.deserialize(engine, artifact)
        except wasmtime.WasmtimeError:
            # A stale on-disk artifact (say, from another wasmtime version): rebuild it.
            key = hashlib.sha256(wasm).hexdigest()
            with self._lock:
                self._artifacts.pop(key, None)
            if self._cache_dir is not None:
                (self._cache_dir / f"{key}.cwasm").unlink(missing_ok=True)
            artifact = self.compile(wasm)
            module = wasmtime.Module.deserialize(engine, artifact)
        return module, self._imported(artifact, module)

    def _imported(self, artifact: bytes, module: wasmtime.Module) -> frozenset[str]:
        """The WASI functions `module` (compiled as `artifact`) imports, read once per
        distinct module."""
        with self._lock:
            names = self._imports.get(artifact)
        if names is None:
            names = frozenset(imp.name or "" for imp in module.imports)
            with self._lock:
                self._imports[artifact] = names
        return names

    def _wasi(self, req: RunRequest, outputs_dir: Path, guard: RunGuard) -> wasmtime.WasiConfig:
        wasi = wasmtime.WasiConfig()
        wasi.argv = [req.module.name if req.module else "main", *req.args]
        wasi.env = list(req.env.items())
        wasi.stdout_file = guard.pipe(1)
        wasi.stderr_file = guard.pipe(2)
        # Preopens get fds 3, 4, ... in this order: inputs, then outputs.
        preopen_mounts(wasi, req, outputs_dir)
        return wasi

    def run(self, req: RunRequest, cancel: threading.Event | None = None) -> RunResult:
        """Run `req`'s module to completion (see `Executor.run`).

        Exit code is the guest's (0 if `_start` returns), or -1 with `error` set to
        "timed out after N s", "cancelled", "output limit of N exceeded: ...", "out of
        fuel", "memory limit exceeded: ..." or "trap: ..." when the guest did not exit on
        its own. Its limits are the `RunGuard`'s; sleeps (`poll_oneoff`) end when it stops
        the run, and a write it is blocked in fails.

        Raises InvalidModule if the module is not runnable WebAssembly (see `compile`), and
        ExecutorError if the request is malformed or the workdir cannot be prepared.
        """
        req.validate()
        outputs_dir = prepare_outputs(req)
        engine = wasmtime.Engine(_config())
        module, imported = self._load(engine, req)
        stop = threading.Event()
        interrupt = Interrupter(engine, stop)
        guard = RunGuard(
            req, cancel, folders=outputs_folders(req, outputs_dir), interrupt=interrupt
        )
        store: wasmtime.Store | None = None
        exit_code, error = 0, None
        with guard:
            try:
                try:
                    wasi = self._wasi(req, outputs_dir, guard)
                except (OSError, wasmtime.WasmtimeError) as e:
                    raise ExecutorError(f"cannot mount the job's folders: {_one_line(e)}") from e
                store = wasmtime.Store(engine)
                store.set_wasi(wasi)
                store.set_limits(memory_size=req.memory_limit_bytes)
                store.set_fuel(req.fuel if req.fuel is not None else _UNLIMITED_FUEL)
                store.set_epoch_deadline(1)
                linker = wasmtime.Linker(engine)
                linker.define_wasi()
                clocks = _wasi_shims.Clocks(deterministic=req.deterministic, stop=stop)
                _wasi_shims.define(linker, clocks, imported)
                exit_code, error = _start(linker, store, module)
            finally:
                # Closes the guest's files now (its pipes, files in its folders), not when
                # the collector gets to them: a removed file's space comes back at once.
                interrupt.close(store)
        return guard.result(outputs_dir, exit_code, error)


def outputs_folders(req: RunRequest, outputs_dir: Path) -> list[Path]:
    """The writable folders of a run, whose size counts towards its disk limit."""
    return [outputs_dir / name for name, _ in req.outputs]


class Interrupter:
    """Stops a run from the guard's thread (ends a sleep, interrupts the guest at its next
    epoch check) and closes the run's store and engine: never both at once, and never an
    interrupt after the close (the engine's memory is gone then)."""

    def __init__(self, engine: wasmtime.Engine, stop: threading.Event) -> None:
        self._engine = engine
        self._stop = stop
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self) -> None:
        self._stop.set()  # ends a sleep in progress
        with self._lock:
            if not self._closed:
                self._engine.increment_epoch()

    def close(self, store: wasmtime.Store | None) -> None:
        with self._lock:
            self._closed = True
            close(store, self._engine)


def close(store: wasmtime.Store | None, engine: wasmtime.Engine) -> None:
    """Free a run's store (and with it the guest's open files) and engine now."""
    with contextlib.suppress(Exception):
        if store is not None:
            store.close()
    with contextlib.suppress(Exception):
        engine.close()


def _start(
    linker: wasmtime.Linker, store: wasmtime.Store, module: wasmtime.Module
) -> tuple[int, str | None]:
    """Run `_start`; (exit code, why the guest did not exit on its own or None)."""
    try:
        instance = linker.instantiate(store, module)
        start = instance.exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        start(store)
    except wasmtime.ExitTrap as e:
        return e.code, None
    except wasmtime.Trap as e:
        if e.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
            return NOT_EXITED, "out of fuel"
        # an interrupt's cause is the guard's reason, which the result takes
        return NOT_EXITED, f"trap: {_one_line(e)}"
    except wasmtime.WasmtimeError as e:
        message = _one_line(e)
        if "exceeds memory limits" in message:
            return NOT_EXITED, f"memory limit exceeded: {message}"
        return NOT_EXITED, f"error: {message}"
    return 0, None
