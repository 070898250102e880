"""Cutting a sharded job into shards at submit: its inputs under the base path expanded into
their files, matched, sorted and batched (the rules are `bacalhau.spec`'s sharding rules).

Inputs by CID are walked through their folder blocks, from this node or read from peers without
keeping them (the requester does not become a holder of the data); inputs by URL are one file
each, at their mount paths. A file's input in a
shard is the file's own CID (or URL), mounted where the file is in the job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import PurePosixPath
from typing import Any

from bacalhau import spec as jobspec
from bacalhau.content import dag
from bacalhau.content.cid import CID, RAW
from bacalhau.content.errors import NotFound

MAX_FILES = 200_000  # files a sharded job's inputs may expand to
MAX_BLOCKS = 2 * MAX_FILES  # folder and file blocks looked at to find them
_SHOWN = 5  # paths named when a pattern matches none


Peek = Callable[[list[bytes]], Awaitable[dict[bytes, bytes]]]


async def expand(spec: Any, peek: Peek) -> list[list[Any]]:
    """The shards of `spec` (each a list of InputSpec, one per file). `peek(cids)` gives the
    blocks it can (from this node, or read from peers without storing them): folders are
    walked through their blocks, a file's data is never fetched beyond its root block. Raises
    SpecError when no file matches or there are too many, NotFound when a block of an input's
    folders cannot be had."""
    inside, _ = jobspec.sharded_inputs(spec)
    base = jobspec.base_path(spec)
    files: list[tuple[str, Any]] = []
    for inp in inside:
        if inp.source == "url":
            files.append((_relative(inp.mount_path, base), inp))
            continue
        root = bytes(CID.parse(inp.cid))
        for rel, cid in await _files(peek, root, MAX_FILES - len(files) + 1):
            mount = str(PurePosixPath(inp.mount_path, rel)) if rel else inp.mount_path
            one = type(inp)(source="ipfs", cid=cid, mount_path=mount)  # an InputSpec
            files.append((_relative(mount, base), one))
            if len(files) > MAX_FILES:
                raise _problem(f"the inputs under {base} hold more than {MAX_FILES} files")
    pattern = spec.sharding.glob_pattern
    matched = [(path, inp) for path, inp in files if jobspec.glob_match(pattern, path)]
    if not matched:
        seen = ", ".join(sorted(p for p, _ in files)[:_SHOWN]) or "no files at all"
        more = f" (and {len(files) - _SHOWN} more)" if len(files) > _SHOWN else ""
        raise _problem(
            f"no file under {base} matches {pattern!r}; paths there: {seen}{more}",
            "patterns are relative to the base path; '**/' matches any folders",
        )
    batches = jobspec.cut(matched, jobspec.batch_size(spec))
    if len(batches) > jobspec.MAX_SHARDS:
        raise _problem(
            f"{len(matched)} files in batches of {jobspec.batch_size(spec)} make "
            f"{len(batches)} shards, more than {jobspec.MAX_SHARDS}",
            "raise --sharding-batch-size",
        )
    return [[inp for _, inp in batch] for batch in batches]


def _problem(message: str, hint: str = "") -> jobspec.SpecError:
    return jobspec.SpecError([jobspec.Problem("sharding.glob_pattern", message, hint)])


def _relative(mount: str, base: str) -> str:
    return str(PurePosixPath(mount).relative_to(base)) if mount != base else ""


async def _files(peek: Peek, root: bytes, most: int) -> list[tuple[str, str]]:
    """(path below the root, file CID) of every file of the DAG at `root`, level by level (a
    level's blocks in one request); "" for a root that is a file itself. Symlinks are left
    out; raw leaves are files without a look. Stops past `most` files."""
    files: list[tuple[str, str]] = []
    level: list[tuple[str, bytes]] = [("", root)]
    looked = 0
    while level and len(files) <= most:
        looked += len(level)
        if looked > MAX_BLOCKS:  # folders upon folders: as bounded as files are
            raise _problem(f"the inputs under the base path hold more than {MAX_BLOCKS} entries")
        look = [cid for _, cid in level if CID.from_bytes(cid).codec != RAW]
        blocks = await peek(look) if look else {}
        following: list[tuple[str, bytes]] = []
        for path, cid in level:
            if CID.from_bytes(cid).codec == RAW:
                files.append((path, str(CID.from_bytes(cid))))
                continue
            block = blocks.get(cid)
            if block is None:
                raise NotFound(
                    f"block {CID.from_bytes(cid)} of the input at {path or '/'} is on no "
                    "connected node",
                    hint="add the data to a node of the network first",
                )
            node = dag.decode(cid, block)
            if node.type == dag.DIRECTORY:
                for link in node.links:
                    name = link.name.decode("utf-8", "replace")
                    following.append((f"{path}/{name}" if path else name, bytes(link.cid)))
            elif node.type != dag.SYMLINK:
                files.append((path, str(CID.from_bytes(cid))))
        level = following
    return files
