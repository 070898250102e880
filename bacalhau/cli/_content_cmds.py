"""bacalhauctl commands on content: add, cat, car export/import (local blockstore)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from bacalhau.blockstore import Blockstore
from bacalhau.content import CID, Importer, ImportOptions, Node, dag, parse_chunker
from bacalhau.content import car as carfile
from bacalhau.errors import UsageError


def _blockstore(data_dir: Path) -> Blockstore:
    return Blockstore(data_dir / "blocks")


def add(args: argparse.Namespace) -> int:
    options = ImportOptions(
        cid_version=args.cid_version,
        raw_leaves=args.raw_leaves,
        chunk_size=parse_chunker(args.chunker),
    )
    entries: list[tuple[str, Node]] = []

    def record(path: str, node: Node) -> None:
        entries.append((path, node))

    if args.only_hash:
        with Importer(options, None, record) as importer:
            root = importer.add_path(args.path)
    else:
        with _blockstore(args.data_dir) as store, store.batch() as batch:
            with Importer(options, batch, record) as importer:
                root = importer.add_path(args.path)
            batch.pin(root.cid)
    # Printed only now: with storing, everything above is synced and committed.
    out = sys.stdout
    if args.quiet:
        out.write(f"{CID.from_bytes(root.cid)}\n")
    else:
        out.writelines(f"added {CID.from_bytes(n.cid)} {path}\n" for path, n in entries)
    return 0


def cat(args: argparse.Namespace) -> int:
    cid = bytes(CID.parse(args.cid))
    with _blockstore(args.data_dir) as store:
        out = sys.stdout.buffer
        for piece in dag.cat(store.get, cid):
            out.write(piece)
        out.flush()
    return 0


def car_export(args: argparse.Namespace) -> int:
    root = CID.parse(args.cid)
    with _blockstore(args.data_dir) as store, _output(args.output) as out:
        carfile.write_car(out, [root], dag.walk(store.get, bytes(root)))
    return 0


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[BinaryIO]:
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            yield f
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def car_import(args: argparse.Namespace) -> int:
    if args.file == "-":
        return _import_from(sys.stdin.buffer, args)
    try:
        f = open(args.file, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UsageError(f"{args.file}: {exc.strerror}") from None
    with f:
        return _import_from(f, args)


def _import_from(inp: BinaryIO, args: argparse.Namespace) -> int:
    roots, sections = carfile.read_car(inp)
    with _blockstore(args.data_dir) as store, store.batch() as batch:
        count = 0
        for cid, block in sections:
            batch.put(cid, block)
            count += 1
        for root in roots:
            batch.pin(bytes(root))
    for root in roots:
        print(f"imported {count} blocks, pinned root {root}")
    if not roots:
        print(f"imported {count} blocks")
    return 0
