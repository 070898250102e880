"""bacalhauctl run python: a Python program (file or inline code) run by CPython for WASI.

The parser part is imported when bacalhauctl builds its parser, so the heavy modules (gRPC,
the client) are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bacalhau.errors import UsageError

if TYPE_CHECKING:
    from bacalhau.cli._job_cmds import Uploads

MAX_CONTEXT_BYTES = 10 << 20


def add_parser(sub: Any, flags: argparse.ArgumentParser) -> None:
    """Register `run python` (with the shared run flags) under the `run` command."""
    py = sub.add_parser(
        "python",
        parents=[flags],
        help="run a Python program (CPython 3.12 for WASI) on the network",
        description="Run FILE, or -c CODE, with CPython 3.12 compiled to WebAssembly (WASI) "
        "on a node with the python engine. The context folder (--context-path; by default "
        "just FILE) is uploaded (at most 10 MiB) and seen read-only at /app, which is on "
        "sys.path: the program imports its own modules and pure-Python packages shipped in "
        "it. /tmp is an empty scratch folder. With --deterministic, clocks, randomness, "
        "sleeps, hash order and directory listings are the same on every node, so the same "
        "program on the same inputs gives the same result CID. Prints the job ID first; with "
        "--wait (the default) follows the job, prints its stdout and exits 0 only if it "
        "completed (--output json|yaml: the job's document alone). Options go "
        "before FILE; everything after it is the program's arguments (sys.argv[1:]).",
    )
    py.add_argument("-c", dest="code", metavar="CODE", help="run CODE instead of a FILE")
    py.add_argument(
        "--deterministic",
        action="store_true",
        help="fixed clocks, seeded randomness, instant sleeps, sorted listings (docs/python.md)",
    )
    py.add_argument(
        "--context-path",
        type=Path,
        metavar="DIR",
        help="folder to upload with the program (FILE must be inside it); seen at /app",
    )
    py.add_argument(
        "-r",
        "--requirements",
        type=Path,
        metavar="FILE",
        help="pip requirements: their pure-Python wheels (and their dependencies') are "
        "resolved here (pip download --only-binary :all: --platform any) and uploaded in the "
        "context under site-packages/; a package with compiled code is refused",
    )
    py.add_argument("program", nargs="?", metavar="FILE", help="the program (a .py file)")
    py.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="program arguments")


def run_python(args: argparse.Namespace) -> int:
    """Check the command line, upload the context, submit; see `run_job` for the rest.

    Raises UsageError for a missing program, a context that is not a folder or is too large,
    or a program outside its context.
    """
    extra = list(args.args)
    code: str = args.code or ""
    program_arg: str | None = args.program
    if args.code is not None:
        if not code.strip():
            raise UsageError("-c needs some code", hint="e.g. -c 'print(1)'")
        if program_arg is not None:  # with -c, every positional is an argument
            extra.insert(0, program_arg)
            program_arg = None
    elif program_arg is None:
        raise UsageError(
            "give a program FILE or -c CODE",
            hint="e.g. bacalhauctl run python main.py, or bacalhauctl run python -c 'print(1)'",
        )
    _check_mounts(args)
    context: Path | None = args.context_path
    if context is not None:
        if not context.is_dir():
            raise UsageError(f"--context-path {context} is not a folder")
        _check_size(context)
    program = ""
    single: Path | None = None  # a program file uploaded alone as the context
    if program_arg is not None:
        path = Path(program_arg)
        if context is not None:
            if not path.is_absolute() and not path.exists():
                path = context / path  # FILE may be given relative to the context
            if not path.is_file():
                raise UsageError(f"{program_arg}: no such file")
            try:
                program = path.resolve().relative_to(context.resolve()).as_posix()
            except ValueError:
                raise UsageError(
                    f"{program_arg} is not inside the context folder {context}",
                    hint="put the program in the --context-path folder",
                ) from None
        else:
            if not path.is_file():
                raise UsageError(f"{program_arg}: no such file")
            _check_size(path)
            program, single = path.name, path

    with tempfile.TemporaryDirectory(prefix="bacalhau-context-") as tmp:
        if args.requirements is not None:
            context = _with_packages(args.requirements, context or single, Path(tmp))
            single = None
        return _submit(args, program, code, extra, context, single)


def _submit(
    args: argparse.Namespace,
    program: str,
    code: str,
    extra: list[str],
    context: Path | None,
    single: Path | None,
) -> int:
    from bacalhau._pb.bacalhau.v1 import types_pb2
    from bacalhau.cli._job_cmds import run_job

    def build(up: Uploads, spec: Any, env: dict[str, str]) -> None:
        context_cid = ""
        if context is not None:
            context_cid = up.folder(context)
        elif single is not None:
            context_cid = _upload_alone(up, single)
        spec.engine = "python"
        spec.python.CopyFrom(
            types_pb2.PythonSpec(
                program=program,
                code=code,
                context_cid=context_cid,
                deterministic=args.deterministic,
                args=extra,
                env=env,
            )
        )

    return run_job(args, build)


def _with_packages(requirements: Path, source: Path | None, tmp: Path) -> Path:
    """A staged context: `source` (a folder, a program file, or nothing) plus the pure-Python
    wheels of `requirements` unpacked in its site-packages/. Raises UsageError."""
    from bacalhau.cli import _wheels

    staged = tmp / "context"
    if source is not None and source.is_dir():
        if (source / _wheels.SITE_PACKAGES).exists():
            raise UsageError(
                f"{source} has a {_wheels.SITE_PACKAGES} folder already, where -r puts packages",
                hint="rename it, or drop -r",
            )
        shutil.copytree(source, staged, symlinks=True)
    else:
        staged.mkdir()
        if source is not None:
            shutil.copyfile(source, staged / source.name)
    wheels = tmp / "wheels"
    wheels.mkdir()
    _wheels.unpack(_wheels.pip_download(requirements, wheels), staged / _wheels.SITE_PACKAGES)
    total = _wheels.size_of(staged)
    if total > MAX_CONTEXT_BYTES:
        raise UsageError(
            f"the context with the packages of {requirements} holds {total / 2**20:.1f} MiB, "
            f"more than the {MAX_CONTEXT_BYTES >> 20} MiB a context may",
            hint="need fewer packages, or pass data as inputs instead",
        )
    return staged


def _check_mounts(args: argparse.Namespace) -> None:
    """Refuse -v/-o paths the guest reserves, before anything is uploaded (UsageError)."""
    from bacalhau.cli._job_cmds import input_flags
    from bacalhau.spec import check_mount_paths

    paths = [i.mount for i in input_flags(args) if i.mount]
    paths += [text.partition(":")[2] for text in args.output_volumes]
    check_mount_paths([p for p in paths if p.startswith("/")])


def _upload_alone(up: Uploads, program: Path) -> str:
    """Upload a folder holding only `program`; its CID."""
    with tempfile.TemporaryDirectory(prefix="bacalhau-context-") as tmp:
        staged = Path(tmp) / "context"
        staged.mkdir()
        shutil.copyfile(program, staged / program.name)
        return up.folder(staged)


def _check_size(path: Path) -> None:
    total = path.stat().st_size if path.is_file() else 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_size
    if total > MAX_CONTEXT_BYTES:
        raise UsageError(
            f"{path} holds {total / 2**20:.1f} MiB, more than the "
            f"{MAX_CONTEXT_BYTES >> 20} MiB a context may",
            hint="pass data as inputs (-v CID:/path) instead of shipping it in the context",
        )
