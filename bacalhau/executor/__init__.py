"""Executors: the layer that runs a job's code next to its data.

`get_executor(name)` returns the shared instance of a named executor ("docker", "noop" or
"wasm"). The wasm and docker executors are imported only when asked for.
"""

from __future__ import annotations

import threading
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
    from bacalhau.executor.wasm import WasmExecutor

__all__ = [
    "EXECUTOR_NAMES",
    "Executor",
    "ExecutorError",
    "InvalidModule",
    "NoopExecutor",
    "RunRequest",
    "RunResult",
    "WasmExecutor",
    "get_executor",
]

EXECUTOR_NAMES = ("docker", "noop", "wasm")

_lock = threading.Lock()
_instances: dict[str, Executor] = {}


def _make(name: str) -> Executor:
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
    raise ExecutorError(
        f"unknown executor {name!r}", hint=f"use one of {', '.join(EXECUTOR_NAMES)}"
    )


def get_executor(name: str) -> Executor:
    """Return the shared executor called `name`.

    Raises ExecutorError if there is no such executor or it is not installed.
    """
    with _lock:
        if name not in _instances:
            _instances[name] = _make(name)
        return _instances[name]


def __getattr__(name: str) -> Any:
    if name == "WasmExecutor":
        from bacalhau.executor.wasm import WasmExecutor

        return WasmExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
