"""The node's input cache: the files and folders jobs read, written out once per node.

Jobs name their inputs (and wasm modules, and Python contexts) by CID. The first job that
needs a CID fetches its DAG (from the requester first, then any peer) and writes it out under
`root/<cid>` atomically (temp + rename); jobs needing the same CID meanwhile wait on that one
fetch (single flight). `acquire` returns the local path; `release` says a job is done with it.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path
from typing import Any

from bacalhau.blockstore import Blockstore
from bacalhau.content import dag
from bacalhau.content.cid import CID
from bacalhau.network import Network, fetch_dag

FETCH_PATIENCE_S = 30.0


class InputCache:
    """CID -> local file or folder, fetched once per node."""

    def __init__(self, network: Network, blocks: Blockstore, root: Path) -> None:
        self._net = network
        self._blocks = blocks
        self._root = root
        root.mkdir(parents=True, exist_ok=True)
        self._fetches: dict[str, asyncio.Future[Path]] = {}

    @property
    def pending(self) -> list[asyncio.Future[Any]]:
        """Fetches in flight (for shutdown)."""
        return list(self._fetches.values())

    async def acquire(self, cid_text: str, requester: str) -> Path:
        """The CID's content as a local path; fetched from `requester` or peers if needed."""
        cid_text = str(CID.parse(cid_text))
        path = self._root / cid_text
        if path.exists():
            return path
        fut = self._fetches.get(cid_text)
        if fut is None:
            fut = asyncio.ensure_future(self._fetch_to(cid_text, requester, path))
            self._fetches[cid_text] = fut
            fut.add_done_callback(lambda _: self._fetches.pop(cid_text, None))
        return await asyncio.shield(fut)

    def release(self, path: Path) -> None:
        """A job is done with `path`."""

    async def _fetch_to(self, cid_text: str, requester: str, path: Path) -> Path:
        """Fetch the DAG (from the requester first), then write it out at `path` atomically."""
        root = bytes(CID.parse(cid_text))
        # The requester may be restarting: give it the time a lost node gets to come back.
        await fetch_dag(self._net, self._blocks, root, [requester], patience_s=FETCH_PATIENCE_S)

        def write() -> Path:
            tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            dag.export(self._blocks.get, root, tmp)
            tmp.replace(path)
            return path

        return await asyncio.to_thread(write)
