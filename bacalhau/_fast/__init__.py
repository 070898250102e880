"""The compiled hot path, with pure-Python twins.

``from bacalhau._fast import dagpb, planner`` gives the compiled modules when they are built and
``BACALHAU_PUREPYTHON`` is unset (or ``0``); otherwise the pure twins, which give identical
results. ``COMPILED`` says which ones are in use: all compiled or all pure, never a mix (a
build that compiled only some of them falls back to the pure twins for all).
"""

from __future__ import annotations

import os
from types import ModuleType

from bacalhau._fast import _dagpb_py, _planner_py


def _pick() -> tuple[ModuleType, ModuleType, bool]:
    if os.environ.get("BACALHAU_PUREPYTHON", "") not in ("", "0"):
        return _dagpb_py, _planner_py, False
    try:
        from bacalhau._fast import _dagpb, _planner  # type: ignore[attr-defined]
    except ImportError:
        return _dagpb_py, _planner_py, False
    return _dagpb, _planner, True


dagpb, planner, COMPILED = _pick()

__all__ = ["COMPILED", "dagpb", "planner"]
