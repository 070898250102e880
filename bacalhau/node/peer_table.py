"""The peer table: every node this one has heard from, kept in the datastore."""

from __future__ import annotations

import asyncio
from typing import Any

from bacalhau._aio import then
from bacalhau._pb.bacalhau.v1 import records_pb2
from bacalhau.datastore import Datastore, Tx
from bacalhau.models import now_ns
from bacalhau.network import Network


class PeerTable:
    """Writes what peers say of themselves (Hello) and when they come and go."""

    def __init__(self, store: Datastore, network: Network) -> None:
        self._store = store
        self._net = network
        network.on_connect.append(self._connected)
        network.on_disconnect.append(self._disconnected)

    async def start(self) -> None:
        """Nobody is connected yet: mark every peer not alive, and dial the ones we knew."""
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

        def write(tx: Tx) -> None:
            rec = tx.get_peer(node_id) or records_pb2.PeerRecord(
                node_id=node_id, first_seen_unix_nano=now
            )
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

        then(asyncio.get_running_loop(), self._store.submit(write), what="recording a peer")

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
