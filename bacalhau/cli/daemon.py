"""bacalhaud: the node."""

from __future__ import annotations

import argparse
import sys

from bacalhau.cli._common import Parser, print_version, run

PROG = "bacalhaud"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="A Bacalhau (Python) compute node.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("version", help="print the node version")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "version":
        return print_version(PROG)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
