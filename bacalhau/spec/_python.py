"""Where a Python job's guest keeps its own folders, and the rules on paths against them."""

from __future__ import annotations

from pathlib import PurePosixPath

from bacalhau.errors import UsageError

GUEST_APP = "/app"  # the context folder, read-only
GUEST_TMP = "/tmp"  # scratch
GUEST_BOOT = "/.bacalhau"  # deterministic start-up code, read-only
RESERVED_PATHS = (GUEST_APP, GUEST_TMP, GUEST_BOOT)

_MOUNT_HINT = "mount inputs and outputs elsewhere, e.g. /inputs and /outputs"
_PROGRAM_HINT = "e.g. main.py or src/main.py"


def mount_path_clash(path: str) -> str:
    """Why `path` cannot be mounted in a Python guest ("" if it can): it is, holds or is
    inside a folder the guest reserves."""
    p = PurePosixPath(path)
    for reserved in RESERVED_PATHS:
        r = PurePosixPath(reserved)
        if p == r or r in p.parents or p in r.parents:
            return f"mount path {path} clashes with {reserved}, which Python jobs reserve"
    return ""


def program_problem(program: str) -> str:
    """Why `program` is not a relative path inside the context ("" if it is one)."""
    p = PurePosixPath(program)
    if not program or p.is_absolute() or ".." in p.parts:
        return f"program {program!r} must be a relative path inside the context folder"
    return ""


def check_mount_paths(paths: list[str]) -> None:
    """Raise UsageError if a mount path is one the Python guest reserves (or under one)."""
    for path in paths:
        clash = mount_path_clash(path)
        if clash:
            raise UsageError(clash, hint=_MOUNT_HINT)


def check_program(program: str) -> PurePosixPath:
    """`program` as a relative path inside the context; raises UsageError if it is not."""
    problem = program_problem(program)
    if problem:
        raise UsageError(problem, hint=_PROGRAM_HINT)
    return PurePosixPath(program)
