"""Quantities as people write them: cpu "500m", memory "1Gb", timeouts "1m30s".

Each parser names `what` (a flag or a spec field) in its one-line UsageError, so the CLI and
the spec file reader share them.
"""

from __future__ import annotations

import math
import re

from bacalhau.errors import UsageError

# Decimal units by their letter, binary ones with an "i"; a trailing "b" (any case) is allowed.
_SIZE_UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "p": 1000**5,
    "ki": 1 << 10,
    "mi": 1 << 20,
    "gi": 1 << 30,
    "ti": 1 << 40,
    "pi": 1 << 50,
}
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kmgtp]i?)?b?\Z")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)")
_NUMBER = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\Z")


def parse_memory(text: str, what: str = "memory") -> int:
    """Bytes from "512Mb", "1GB", "1gib", "64Mi", "1048576": k, M, G, T, P are powers of 1000,
    Ki, Mi, Gi, Ti, Pi powers of 1024, case-insensitive, with or without a trailing B.

    Raises UsageError naming `what` for anything else, or for zero."""
    t = text.strip().lower()
    m = _SIZE.match(t)
    value = float(m.group(1)) * _SIZE_UNITS[m.group(2) or ""] if m else 0.0
    if not m or value < 1:
        raise UsageError(
            f"{what}: bad size {text[:40]!r}",
            hint="write it like 512Mb, 1GB (powers of 1000) or 64Mi, 1GiB (powers of 1024)",
        )
    return int(value)


def parse_cpu(text: str, what: str = "cpu") -> float:
    """Cores from "2", "0.5" or "500m" (millicores). Raises UsageError naming `what`."""
    t = text.strip().lower()
    milli = t.endswith("m")
    m = _NUMBER.match(t[:-1] if milli else t)
    if not m:
        raise UsageError(
            f"{what}: bad cpu amount {text[:40]!r}",
            hint="give cores (0.5, 2) or millicores (500m)",
        )
    return float(m.group(1)) / (1000 if milli else 1)


def parse_duration(text: str, what: str = "timeout") -> float:
    """Seconds from "90", "1.5", "90s", "1m30s", "1h", "250ms" (Go's duration form, or plain
    seconds). Raises UsageError naming `what` for anything else, or for zero."""
    t = text.strip()
    m = _NUMBER.match(t)
    if m:
        seconds = float(m.group(1))
    else:
        pos, seconds = 0, 0.0
        for part in _DURATION_PART.finditer(t):
            if part.start() != pos:
                break
            seconds += float(part.group(1)) * _DURATION_UNITS[part.group(2)]
            pos = part.end()
        if pos != len(t) or not t:
            seconds = -1.0
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageError(
            f"{what}: bad duration {text[:40]!r}",
            hint="give seconds (90) or a duration like 90s, 1m30s, 1h",
        )
    return seconds
