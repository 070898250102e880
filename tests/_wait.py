"""Waiting on a condition with a deadline (tests never sleep a fixed time)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(cond: Callable[[], T], timeout: float = 5.0, what: str = "condition") -> T:
    """Poll `cond` until it returns something truthy; return that, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout:g} s")
        threading.Event().wait(0.005)
    return value
