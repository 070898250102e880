"""The compiled hot path, with pure-Python twins.

``from bacalhau._fast import blockio, dagpb, planner`` gives the compiled modules when they
are built and ``BACALHAU_PUREPYTHON`` is unset (or ``0``); otherwise the pure twins, which give
identical results. ``COMPILED`` says which ones are in use: all compiled or all pure, never a mix
(a build that compiled only some of them falls back to the pure twins for all).
"""

from __future__ import annotations

import os
from types import ModuleType

from bacalhau._fast import _blockio_py, _dagpb_py, _planner_py


def _pick() -> tuple[ModuleType, ModuleType, ModuleType, bool]:
    if os.environ.get("BACALHAU_PUREPYTHON", "") not in ("", "0"):
        return _blockio_py, _dagpb_py, _planner_py, False
    try:
        from bacalhau._fast import (  # type: ignore[attr-defined]
            _blockio,
            _dagpb,
            _planner,
        )
    except ImportError:
        return _blockio_py, _dagpb_py, _planner_py, False
    return _blockio, _dagpb, _planner, True


blockio, dagpb, planner, COMPILED = _pick()

__all__ = ["COMPILED", "blockio", "dagpb", "planner"]
