"""The compiled hot path, with pure-Python twins.

``from bacalhau._fast import dagpb`` gives the compiled module when it is built and
``BACALHAU_PUREPYTHON`` is unset (or ``0``); otherwise the pure twin, which gives identical
results. ``COMPILED`` says which one is in use.
"""

from __future__ import annotations

import os
from types import ModuleType

from bacalhau._fast import _dagpb_py


def _pick() -> tuple[ModuleType, bool]:
    if os.environ.get("BACALHAU_PUREPYTHON", "") not in ("", "0"):
        return _dagpb_py, False
    try:
        from bacalhau._fast import _dagpb  # type: ignore[attr-defined]
    except ImportError:
        return _dagpb_py, False
    return _dagpb, True


dagpb, COMPILED = _pick()

__all__ = ["COMPILED", "dagpb"]
