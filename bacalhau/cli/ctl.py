"""bacalhauctl: the client. Heavy modules are imported inside commands, so --help is fast."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bacalhau.cli._common import Parser, default_data_dir, print_version, run

PROG = "bacalhauctl"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Client for Bacalhau (Python): add and read content-addressed data.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="local node data directory for commands that work without a node "
        "(default: $BACALHAU_DATA_DIR or ~/.bacalhau)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("version", help="print the client version")

    add = sub.add_parser(
        "add",
        help="add a file or folder; print its CIDs (kubo-compatible)",
        description="Import PATH as UnixFS (folders recursively, hidden files included) and "
        "store it in the local blockstore, pinned. Prints 'added <CID> <path>' for each file "
        "and folder, root last, once everything is synced to disk.",
    )
    add.add_argument("path", metavar="PATH")
    add.add_argument(
        "-n", "--only-hash", action="store_true", help="compute the CIDs, store nothing"
    )
    add.add_argument("--cid-version", type=int, choices=(0, 1), default=0)
    add.add_argument(
        "--raw-leaves",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="raw leaf blocks (default: on with --cid-version 1, off with 0)",
    )
    add.add_argument("--chunker", default="size-262144", help="size-N (default size-262144)")
    add.add_argument("-q", "--quiet", action="store_true", help="print only the root CID")

    cat = sub.add_parser("cat", help="write a file's bytes to stdout")
    cat.add_argument("cid", metavar="CID")

    car = sub.add_parser("car", help="export or import a DAG as a CAR v1 archive")
    car_sub = car.add_subparsers(dest="car_command", metavar="COMMAND", required=True)
    export = car_sub.add_parser("export", help="write the DAG under CID as CAR v1 to stdout")
    export.add_argument("cid", metavar="CID")
    export.add_argument("-o", "--output", type=Path, help="write to this file, not stdout")
    imp = car_sub.add_parser(
        "import", help="verify and store every block of a CAR v1 file; pin its roots"
    )
    imp.add_argument("file", metavar="FILE", help="the CAR file, or - for stdin")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    from bacalhau.cli import _content_cmds

    if args.command == "version":
        return print_version(PROG)
    if args.command == "add":
        return _content_cmds.add(args)
    if args.command == "cat":
        return _content_cmds.cat(args)
    if args.command == "car":
        if args.car_command == "export":
            return _content_cmds.car_export(args)
        return _content_cmds.car_import(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
