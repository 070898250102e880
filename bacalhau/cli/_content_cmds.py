"""bacalhauctl commands on content: add and cat (through the node at --api, or with --local
the local blockstore), car export/import and repo verify (local blockstore)."""

from __future__ import annotations

import argparse
import contextlib
import os
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


PROGRESS_FROM = 16 << 20  # uploads at least this large show progress on a terminal


def add(args: argparse.Namespace) -> int:
    options = ImportOptions(
        cid_version=args.cid_version,
        raw_leaves=args.raw_leaves,
        chunk_size=parse_chunker(args.chunker),
    )
    if not (args.local or args.only_hash):
        return _add_to_node(args, options)
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


def _add_to_node(args: argparse.Namespace, options: ImportOptions) -> int:
    """`add` through the node at --api: uploaded (AddData), pinned there as the user's upload;
    the node lists each entry's CID."""
    from bacalhau._pb.bacalhau.v1 import client_pb2
    from bacalhau.cli._job_cmds import _client
    from bacalhau.client import ClientError

    path = Path(args.path)
    if not path.exists() and not path.is_symlink():
        raise UsageError(f"{args.path}: no such file or directory")
    if options.chunk_size < 1024:
        raise UsageError(
            f"a node takes chunks of 1024 bytes or more, not {options.chunk_size}",
            hint="give --chunker size-1024 or more, or add --local",
        )
    header = client_pb2.AddDataHeader(
        cid_version=options.cid_version,
        chunk_size=options.chunk_size,
        list_entries=not args.quiet,
    )
    if args.raw_leaves is not None:
        header.raw_leaves = args.raw_leaves
    bar = _progress(path)
    try:
        with _client(args) as c:
            upload = c.add_directory if path.is_dir() else c.add_file
            answer = upload(path, header, bar)
    except ClientError as e:
        if e.message.startswith("cannot reach a node"):
            e.hint = f"{e.hint}; or add --local to store it in {args.data_dir} without a node"
        raise
    finally:
        if bar is not None:
            bar.close()
    if args.quiet:
        sys.stdout.write(f"{answer.cid}\n")
        return 0
    sys.stdout.writelines(f"added {e.cid} {e.path}\n" for e in answer.entries)
    if answer.entries_truncated:
        print(
            f"(the node listed the first {len(answer.entries) - 1} entries and the root)",
            file=sys.stderr,
        )
    return 0


class _Progress:
    """The upload's bytes sent so far, drawn by get's progress bar."""

    def __init__(self, total: int) -> None:
        from bacalhau.cli._download import ProgressBar

        self._bar = ProgressBar()
        self._total = total
        self._done = 0

    def __call__(self, n: int) -> None:
        self._done += n
        self._bar(self._done, self._total)

    def close(self) -> None:
        self._bar.close()


def _progress(path: Path) -> _Progress | None:
    """A progress bar on stderr when it is a terminal and the upload is large, else None."""
    if not sys.stderr.isatty():
        return None
    try:
        if path.is_dir():
            total = sum(
                os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(path) for f in files
            )
        else:
            total = path.stat().st_size
    except OSError:
        return None  # the upload names what it cannot read
    return _Progress(total) if total >= PROGRESS_FROM else None


def cat(args: argparse.Namespace) -> int:
    from bacalhau.content.paths import split_path

    root_text, parts = split_path(args.cid)
    root = CID.parse(root_text)  # InvalidCID: one line, before anything is asked
    out = sys.stdout.buffer
    if not args.local:
        from bacalhau.cli._job_cmds import _client

        with _client(args) as c:
            path = "/".join([str(root), *parts])
            for chunk in c.cat(path):
                out.write(chunk.data)
        out.flush()
        return 0
    with _blockstore(args.data_dir) as store:
        cid = _walk(store, bytes(root), parts, root_text)
        for piece in dag.cat(store.get, cid):
            out.write(piece)
        out.flush()
    return 0


def _walk(store: Blockstore, cid: bytes, parts: list[str], shown: str) -> bytes:
    """The CID at `parts` under the folder `cid` in the local blockstore."""
    for part in parts:
        links = dag.decode(cid, store.get(cid)).links
        found = next((ln for ln in links if ln.name == part.encode()), None)
        if found is None:
            raise UsageError(f"{shown} has no {part!r}")
        cid = bytes(found.cid)
        shown = f"{shown}/{part}"
    return cid


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
