"""Where a Python job's guest keeps its own folders, and checks on paths against them.

Light on purpose (no wasmtime): bacalhauctl checks a command line with it before uploading.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from bacalhau.executor.base import ExecutorError

GUEST_APP = "/app"  # the context folder, read-only
GUEST_TMP = "/tmp"  # scratch
GUEST_BOOT = "/.bacalhau"  # deterministic start-up code, read-only
RESERVED_PATHS = (GUEST_APP, GUEST_TMP, GUEST_BOOT)

__all__ = [
    "GUEST_APP",
    "GUEST_BOOT",
    "GUEST_TMP",
    "RESERVED_PATHS",
    "check_mount_paths",
    "check_program",
]


def check_mount_paths(paths: list[str]) -> None:
    """Raise ExecutorError if a mount path is one the Python guest reserves (or under one)."""
    for path in paths:
        p = PurePosixPath(path)
        for reserved in RESERVED_PATHS:
            r = PurePosixPath(reserved)
            if p == r or r in p.parents or p in r.parents:
                raise ExecutorError(
                    f"mount path {path} clashes with {reserved}, which Python jobs reserve",
                    hint="mount inputs and outputs elsewhere, e.g. /inputs and /outputs",
                )


def check_program(program: str) -> PurePosixPath:
    """`program` as a relative path inside the context; raises ExecutorError if it is not."""
    p = PurePosixPath(program)
    if not program or p.is_absolute() or ".." in p.parts:
        raise ExecutorError(
            f"program {program!r} must be a relative path inside the context folder",
            hint="e.g. main.py or src/main.py",
        )
    return p
