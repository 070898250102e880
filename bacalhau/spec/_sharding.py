"""Sharding rules: which files make a job's shards, and what each shard's executions are given.

A sharded job names a base path (default /inputs), a glob pattern relative to it and a batch
size. The files of the job's inputs under the base path that match the pattern, sorted by path,
are cut into batches of that many files: each batch is a shard. A shard's executions are given
the job's other inputs whole, and of the inputs under the base path only their own files, each
at the path it has in the job, with BACALHAU_SHARD_INDEX and BACALHAU_SHARD_COUNT set.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from bacalhau.spec._problems import Problem

DEFAULT_BASE_PATH = "/inputs"
DEFAULT_RETRIES = 2
MAX_SHARDS = 100_000
MAX_BATCH_SIZE = 100_000
MAX_RETRIES = 10
MAX_GLOB_LENGTH = 1024
SHARD_INDEX_ENV = "BACALHAU_SHARD_INDEX"
SHARD_COUNT_ENV = "BACALHAU_SHARD_COUNT"


def is_sharded(spec: Any) -> bool:
    return bool(spec.sharding.glob_pattern)


def base_path(spec: Any) -> str:
    return (spec.sharding.base_path or DEFAULT_BASE_PATH).rstrip("/") or "/"


def batch_size(spec: Any) -> int:
    return spec.sharding.batch_size or 1


def retries(spec: Any) -> int:
    s = spec.sharding
    return s.retries if s.HasField("retries") else DEFAULT_RETRIES


def check_sharding(spec: Any) -> list[Problem]:
    s = spec.sharding
    problems: list[Problem] = []
    if not s.glob_pattern:
        if s.base_path or s.batch_size or s.HasField("retries"):
            problems.append(
                Problem(
                    "sharding.glob_pattern",
                    "sharding options without a glob pattern",
                    "give --sharding-glob-pattern (e.g. '*.txt' or '**/*.csv')",
                )
            )
        return problems
    if len(s.glob_pattern) > MAX_GLOB_LENGTH or "\x00" in s.glob_pattern:
        problems.append(
            Problem("sharding.glob_pattern", f"glob pattern longer than {MAX_GLOB_LENGTH}")
        )
    elif s.glob_pattern.startswith("/"):
        problems.append(
            Problem(
                "sharding.glob_pattern",
                f"glob pattern {s.glob_pattern!r} is absolute",
                f"it is matched against paths relative to the base path ({base_path(spec)})",
            )
        )
    if s.base_path and (
        not s.base_path.startswith("/") or ".." in PurePosixPath(s.base_path).parts
    ):
        problems.append(
            Problem(
                "sharding.base_path",
                f"base path {s.base_path!r} must be absolute, without '..'",
            )
        )
    if s.batch_size > MAX_BATCH_SIZE:
        problems.append(
            Problem("sharding.batch_size", f"batch size {s.batch_size} is above {MAX_BATCH_SIZE}")
        )
    if s.HasField("retries") and s.retries > MAX_RETRIES:
        problems.append(
            Problem("sharding.retries", f"shard retries {s.retries} are above {MAX_RETRIES}")
        )
    under = [i for i in spec.inputs if _under(i.mount_path, base_path(spec))]
    if not under:
        problems.append(
            Problem(
                "sharding.base_path",
                f"no input is mounted at or under the base path {base_path(spec)}",
                "mount the data to shard there (e.g. -v CID:/inputs), or set --sharding-base-path",
            )
        )
    return problems


def _under(mount_path: str, base: str) -> bool:
    return mount_path == base or mount_path.startswith(base.rstrip("/") + "/")


def sharded_inputs(spec: Any) -> tuple[list[Any], list[Any]]:
    """(inputs under the base path: to expand into files, the others: given whole)."""
    base = base_path(spec)
    inside = [i for i in spec.inputs if _under(i.mount_path, base)]
    outside = [i for i in spec.inputs if not _under(i.mount_path, base)]
    return inside, outside


@functools.lru_cache(maxsize=64)
def _glob(pattern: str) -> re.Pattern[str]:
    """A glob as a regular expression over '/'-separated relative paths: `*` and `?` stay in
    one path part, `**` crosses parts (`**/` also matches no folder), `[...]` a character."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    i += 1
                    out.append("(?:.*/)?")
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern.startswith("[!", i) else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def glob_match(pattern: str, path: str) -> bool:
    """Whether the relative path `path` matches the glob `pattern`."""
    try:
        return _glob(pattern).match(path) is not None
    except re.error:
        return False


def cut(files: Sequence[tuple[str, Any]], size: int) -> list[list[tuple[str, Any]]]:
    """Sorted (path, what) pairs cut into batches of `size`."""
    ordered = sorted(files, key=lambda f: f[0])
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def shard_spec(spec: Any, index: int, count: int, inputs: Sequence[Any]) -> Any:
    """The spec one shard's executions run: the job's spec with, instead of its inputs under
    the base path, the shard's own files (`inputs`), and the shard's index and count in the
    engine's environment."""
    out = type(spec)()
    out.CopyFrom(spec)
    _, outside = sharded_inputs(spec)
    del out.inputs[:]
    out.inputs.extend(outside)
    out.inputs.extend(inputs)
    for field, section in out.ListFields():
        if field.message_type is not None and "env" in field.message_type.fields_by_name:
            section.env[SHARD_INDEX_ENV] = str(index)
            section.env[SHARD_COUNT_ENV] = str(count)
    return out
