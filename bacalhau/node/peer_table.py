"""The peer table: every node this one has heard from, kept in the datastore.

It is bounded: a peer none of whose results this node ever accepted ages out once it has been
away for `PEER_TTL_S`, and when the table holds more than `max_records` such peers are dropped,
the longest away first (those connected now, and those with accepted results, stay).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from bacalhau._aio import then
from bacalhau._pb.bacalhau.v1 import records_pb2
from bacalhau.datastore import Datastore, Tx
from bacalhau.models import now_ns
from bacalhau.network import Network

log = logging.getLogger(__name__)
PEER_TTL_S = 86400.0  # a peer with no accepted result, away this long, is forgotten


class PeerTable:
    """Writes what peers say of themselves (Hello) and when they come and go."""

    def __init__(self, store: Datastore, network: Network, max_records: int = 1000) -> None:
        self._store = store
        self._net = network
        self.max_records = max_records
        self._last_prune = 0.0
        self._pruning: asyncio.Task[int] | None = None
        network.on_connect.append(self._connected)
        network.on_disconnect.append(self._disconnected)

    def stale(self, records: list[Any], now_ns: int) -> list[str]:
        """The node IDs to forget: those with no accepted result, away longer than
        PEER_TTL_S, then (the longest away first) as many as make the table fit."""
        droppable = [
            r for r in records if not r.results_accepted and not self._net.is_connected(r.node_id)
        ]
        droppable.sort(key=lambda r: r.last_seen_unix_nano)
        old = [r for r in droppable if now_ns - r.last_seen_unix_nano > PEER_TTL_S * 1e9]
        excess = max(0, len(records) - len(old) - self.max_records)
        rest = droppable[len(old) :]
        return [r.node_id for r in old + rest[:excess]]

    async def prune(self) -> int:
        """Forget stale peers; how many."""
        self._last_prune = time.monotonic()
        records = await asyncio.to_thread(self._store.list_peers)
        gone = self.stale(records, now_ns())
        if gone:

            def drop(tx: Tx) -> None:
                for node_id in gone:
                    tx.delete_peer(node_id)

            await asyncio.wrap_future(self._store.submit(drop))
            log.info("forgot %d peers (no accepted results, long away or too many)", len(gone))
        return len(gone)

    async def start(self) -> None:
        """Nobody is connected yet: forget stale peers, mark the rest not alive, and dial
        the ones we knew."""
        await self.prune()
        known = await asyncio.to_thread(self._store.list_peers)

        def mark(tx: Tx) -> None:
            for rec in known:
                if rec.alive and not self._net.is_connected(rec.node_id):
                    rec.alive = False
                    tx.put_peer(rec)

        await asyncio.wrap_future(self._store.submit(mark))
        for rec in known:
            for address in rec.addresses:
                self._net.discover(rec.node_id, address)

    def _connected(self, node_id: str) -> None:
        hello = self._net.hello_of(node_id)
        now = now_ns()

        new = False

        def write(tx: Tx) -> None:
            nonlocal new
            rec = tx.get_peer(node_id)
            if rec is None:
                new = True
                rec = records_pb2.PeerRecord(node_id=node_id, first_seen_unix_nano=now)
            if hello is not None:
                addresses = [hello.address, *(a for a in rec.addresses if a != hello.address)]
                del rec.addresses[:]
                rec.addresses.extend(a for a in addresses if a)
                rec.version = hello.version
                del rec.engines[:]
                rec.engines.extend(hello.engines)
                rec.resources.CopyFrom(hello.resources)
                rec.labels.clear()
                rec.labels.update(hello.labels)
            rec.last_seen_unix_nano = now
            rec.alive = True
            tx.put_peer(rec)

        loop = asyncio.get_running_loop()

        def written(_: Any) -> None:  # a new peer may make the table too long
            if new and time.monotonic() - self._last_prune > 1.0:
                self._pruning = loop.create_task(self.prune())

        then(loop, self._store.submit(write), on_done=written, what="recording a peer")

    def _disconnected(self, node_id: str) -> None:
        now = now_ns()

        def write(tx: Tx) -> None:
            rec = tx.get_peer(node_id)
            if rec is not None:
                rec.alive = False
                rec.last_seen_unix_nano = max(rec.last_seen_unix_nano, now)
                tx.put_peer(rec)

        then(asyncio.get_running_loop(), self._store.submit(write), what="recording a peer")

    def infos(self) -> list[Any]:
        """The table with live values: (record, alive, last seen ns, last Heartbeat or None)."""
        out = []
        recorded = set()
        for rec in self._store.list_peers():
            recorded.add(rec.node_id)
            alive = self._net.is_connected(rec.node_id)
            seen = self._net.last_seen(rec.node_id) if alive else rec.last_seen_unix_nano
            status = self._net.status_of(rec.node_id)
            out.append((rec, alive, max(seen, rec.last_seen_unix_nano), status))
        # Nodes only heard of from peers (no stream to them yet, or ever): not alive here.
        for node_id, address in self._net.addresses().items():
            if node_id not in recorded and node_id != self._net.node_id:
                rec = records_pb2.PeerRecord(node_id=node_id, addresses=[address])
                out.append((rec, False, 0, None))
        return out
