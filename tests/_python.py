"""The compiled Python interpreter, made once per test process and shared by tests and nodes.

Compiling the 26 MB interpreter takes seconds; every node started by a test would otherwise
do it again in its own data dir. The artifact is made here by this process, so handing it to
test nodes (hard links into `DATA_DIR/cache/python`) is as trustworthy as their own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bacalhau.executor.python import PythonExecutor

_compiled: Path | None = None


def compiled_cache(factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the compiled interpreter (compiled on first use)."""
    global _compiled
    if _compiled is None:
        folder = factory.mktemp("python-cache")
        PythonExecutor(folder).prepare()
        _compiled = folder
    return _compiled


def seed_node(data_dir: Path, cache: Path) -> None:
    """Give a node's data dir the compiled interpreter, so its python engine starts warm."""
    target = data_dir / "cache" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for src in cache.glob("*.cwasm"):
        dst = target / src.name
        if not dst.exists():
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
