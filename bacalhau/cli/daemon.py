"""bacalhaud: the node."""

from __future__ import annotations

import argparse
import sys

from bacalhau.cli._common import Parser, run

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
    from bacalhau.version import __version__

    if args.command == "version":
        print(f"{PROG} {__version__}")
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
