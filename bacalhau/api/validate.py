"""Checks on a submitted JobSpec: each failure is one line saying what to change."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from bacalhau.blockstore import Blockstore
from bacalhau.compute.results import RESERVED_NAMES
from bacalhau.content import dag
from bacalhau.content.cid import CID
from bacalhau.content.errors import NotFound
from bacalhau.data import check_url
from bacalhau.errors import UsageError
from bacalhau.executor.base import OUTPUT_NAME, ExecutorError
from bacalhau.executor.wasm import WASM_MAGIC

ENGINES = ("wasm", "docker", "python", "noop")
MAX_CONCURRENCY = 64


def validate_spec(spec: Any, store: Blockstore) -> None:
    """Raise UsageError (or NotFound for missing data) unless `spec` can be scheduled."""
    if spec.engine not in ENGINES:
        raise UsageError(
            f"unknown engine {spec.engine!r}", hint=f"use one of: {', '.join(ENGINES)}"
        )
    if spec.engine == "wasm":
        _check_module(spec.wasm.module_cid, store)
    elif spec.engine == "docker":
        if not spec.docker.image:
            raise UsageError(
                "a docker job needs an image", hint="e.g. bacalhauctl docker run IMAGE"
            )
        if spec.docker.working_dir and not spec.docker.working_dir.startswith("/"):
            raise UsageError(f"working dir {spec.docker.working_dir!r} must be absolute")
    elif spec.engine == "python":
        if bool(spec.python.program) == bool(spec.python.code):
            raise UsageError("a python job needs a program file or inline code, not both")
        if spec.python.program and not spec.python.context_cid:
            raise UsageError(f"program {spec.python.program!r} needs a context folder (by CID)")
        if spec.python.context_cid:
            CID.parse(spec.python.context_cid)
        _check_python_paths(spec)
    _check_inputs(spec.inputs)
    names: set[str] = set()
    for out in spec.outputs:
        if not OUTPUT_NAME.match(out.name) or out.name in RESERVED_NAMES:
            raise UsageError(
                f"bad output name {out.name!r}",
                hint="use letters, digits, '_', '.', '-'; not stdout, stderr or exitCode",
            )
        if out.name in names:
            raise UsageError(f"output name {out.name!r} is used twice")
        names.add(out.name)
        if not out.path.startswith("/"):
            raise UsageError(f"output path {out.path!r} must be absolute, like /outputs")
    if spec.deal.concurrency > MAX_CONCURRENCY:
        raise UsageError(f"concurrency {spec.deal.concurrency} is above {MAX_CONCURRENCY}")
    if spec.timeout_seconds < 0:
        raise UsageError(f"timeout must not be negative, not {spec.timeout_seconds:g}")


def _check_python_paths(spec: Any) -> None:
    from bacalhau.executor._python_paths import check_mount_paths, check_program

    try:
        if spec.python.program:
            check_program(spec.python.program)
        check_mount_paths([i.mount_path for i in spec.inputs] + [o.path for o in spec.outputs])
    except ExecutorError as e:
        raise UsageError(e.message, hint=e.hint) from None


def _check_module(cid_text: str, store: Blockstore) -> None:
    if not cid_text:
        raise UsageError("a wasm job needs a module", hint="give a .wasm file or its CID")
    root = bytes(CID.parse(cid_text))
    try:
        head = next(dag.cat(store.get, root), b"")
    except NotFound:
        raise NotFound(
            f"module {cid_text} is not on this node",
            hint="pass the .wasm file itself, so it is uploaded",
        ) from None
    if not head.startswith(WASM_MAGIC):
        raise UsageError(
            f"{cid_text} is not a WebAssembly module (no \\0asm header)",
            hint="give a .wasm file built for WASI",
        )


MAX_INPUTS = 20_000
# Announcements and decisions carry the spec in signed packets of at most 4 MiB.
MAX_INPUTS_BYTES = 1 << 20


def _check_inputs(inputs: Any) -> None:
    """Inputs by CID ("ipfs", or no source) or by URL ("url"), each at its own absolute
    mount path; URL inputs are mounted by folder, so a URL's folder is no other input's path."""
    if len(inputs) > MAX_INPUTS:
        raise UsageError(
            f"{len(inputs)} inputs are more than {MAX_INPUTS}",
            hint="split the job, or put the files in one folder and give its CID",
        )
    size = sum(inp.ByteSize() for inp in inputs)
    if size > MAX_INPUTS_BYTES:
        raise UsageError(
            f"the inputs take {size} bytes in the spec, more than {MAX_INPUTS_BYTES}",
            hint="split the job, or put the files in one folder and give its CID",
        )
    mounts: set[str] = set()
    cid_mounts: list[str] = []
    url_folders: set[str] = set()
    for inp in inputs:
        where = inp.cid or inp.url or inp.path or inp.mount_path
        if inp.source in ("", "ipfs"):
            if not inp.cid:
                raise UsageError(f"input at {inp.mount_path!r} has no CID")
            CID.parse(inp.cid)
            cid_mounts.append(inp.mount_path)
        elif inp.source == "url":
            check_url(inp.url)
            folder = str(PurePosixPath(inp.mount_path).parent)
            if not inp.mount_path.startswith("/") or folder == inp.mount_path:
                raise UsageError(
                    f"URL input {inp.url[:200]} needs a mount path of a file in a folder",
                    hint="e.g. /inputs/data.csv (bacalhauctl -u picks /inputs/<file name>)",
                )
            url_folders.add(folder)
        else:
            raise UsageError(
                f"input {where[:200]!r}: unknown source {inp.source!r}",
                hint="use ipfs (a CID) or url (bacalhauctl uploads local files and folders "
                "and gives their CIDs)",
            )
        if not inp.mount_path.startswith("/") or inp.mount_path in mounts:
            raise UsageError(f"input mount path {inp.mount_path!r} must be absolute and used once")
        mounts.add(inp.mount_path)
    # URL inputs are mounted as one folder per mount folder: an input by CID at or inside
    # that folder would be a second mount at the same place.
    for mount in cid_mounts:
        for folder in url_folders:
            if mount == folder or mount.startswith(folder.rstrip("/") + "/"):
                raise UsageError(
                    f"input {mount} is in {folder}, the folder URL inputs are mounted as",
                    hint="mount it somewhere else, e.g. -v CID:/data/NAME",
                )
