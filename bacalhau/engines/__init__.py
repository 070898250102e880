"""Engines by name: one adapter per kind of job (`base.py`: the interface; `wasm`, `docker`,
`python`, `noop`), each joining a spec's section to its executor.

Light on purpose: an adapter's module is imported when first asked for, and executors
(wasmtime, the Docker SDK) only by `make_executor`.
"""

from __future__ import annotations

import importlib
import threading

from bacalhau.engines.base import Engine, EngineContext, Head, blockstore_head
from bacalhau.errors import UsageError
from bacalhau.spec import ENGINES

__all__ = ["Engine", "EngineContext", "Head", "blockstore_head", "get", "names"]

# The spec's rules know the same engines, in the same order.
_CLASSES = {
    "wasm": "bacalhau.engines.wasm:WasmEngine",
    "docker": "bacalhau.engines.docker:DockerEngine",
    "python": "bacalhau.engines.python:PythonEngine",
    "noop": "bacalhau.engines.noop:NoopEngine",
}
assert tuple(_CLASSES) == ENGINES, (tuple(_CLASSES), ENGINES)
_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def get(name: str) -> Engine:
    """The engine called `name`; raises UsageError naming the known ones if there is none."""
    if name not in _CLASSES:
        raise UsageError(f"unknown engine {name!r}", hint=f"use one of: {', '.join(ENGINES)}")
    with _lock:
        engine = _engines.get(name)
        if engine is None:
            module, _, cls = _CLASSES[name].partition(":")
            engine = _engines[name] = getattr(importlib.import_module(module), cls)()
        return engine


def names() -> tuple[str, ...]:
    """The engines' names, in the order the spec lists them."""
    return ENGINES
