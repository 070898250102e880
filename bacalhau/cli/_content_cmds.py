"""bacalhauctl commands on content: add, cat, car export/import, repo verify (local
blockstore)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from bacalhau.blockstore import Blockstore, BlockstoreError
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


def repo_verify(args: argparse.Namespace) -> int:
    blocks = args.data_dir / "blocks"
    if not (blocks / "index").is_dir():
        raise BlockstoreError(
            f"no blockstore at {blocks}",
            hint="give the data directory of a node or of 'bacalhauctl add' with --data-dir",
        )
    with _blockstore(args.data_dir) as store:
        report = store.verify()
        dropped = store.drop(report.corrupt) if args.repair and report.corrupt else 0
    if args.output != "text":
        from bacalhau.cli._render import dump

        doc = {
            "blocks": report.blocks,
            "bytes": report.bytes,
            "corrupt": [
                {
                    "cid": str(b.cid),
                    "pack": b.pack,
                    "offset": b.offset,
                    "length": b.length,
                    "reason": b.reason,
                }
                for b in report.corrupt
            ],
            "dropped": dropped,
        }
        sys.stdout.write(dump(doc, args.output))
    else:
        sys.stdout.writelines(f"{b.cid}\n" for b in report.corrupt)
        checked = f"{report.blocks} blocks ({report.bytes / (1 << 20):.1f} MiB)"
        if not report.corrupt:
            summary = f"checked {checked}: none is corrupt"
        elif args.repair:
            summary = (
                f"checked {checked}: dropped {dropped} corrupt; add the data again or let a "
                "node fetch it from a peer"
            )
        else:
            summary = (
                f"checked {checked}: {len(report.corrupt)} corrupt (listed on stdout); run "
                "'bacalhauctl repo verify --repair' to drop them, then add the data again"
            )
        print(summary, file=sys.stderr)
    return 1 if report.corrupt and not args.repair else 0
