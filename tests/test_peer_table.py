"""The peer table stays bounded: peers with no accepted result age out, the table is cut to
its size, and peers with accepted results or a stream now stay; on a real LMDB store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bacalhau._pb.bacalhau.v1 import peer_pb2, records_pb2
from bacalhau.datastore import LmdbDatastore
from bacalhau.identity import Identity
from bacalhau.models import now_ns
from bacalhau.network import Network
from bacalhau.node.peer_table import PEER_TTL_S, PeerTable

DAY_NS = int(PEER_TTL_S * 1e9)


def test_stale_peers_are_forgotten_and_the_table_is_bounded(tmp_path: Path) -> None:
    ids = [Identity.generate().node_id for _ in range(7)]

    async def main() -> list[str]:
        store = LmdbDatastore(tmp_path / "db")
        net = Network(Identity.generate(), peer_pb2.Hello())
        table = PeerTable(store, net, max_records=3)
        now = now_ns()
        records = [
            records_pb2.PeerRecord(node_id=ids[0], last_seen_unix_nano=now - 2 * DAY_NS),  # aged
            records_pb2.PeerRecord(  # aged, but did work: stays
                node_id=ids[1], last_seen_unix_nano=now - 2 * DAY_NS, results_accepted=1
            ),
            *(
                records_pb2.PeerRecord(node_id=ids[i], last_seen_unix_nano=now - i * 1000)
                for i in range(2, 7)
            ),
        ]

        def put(tx: object) -> None:
            for r in records:
                tx.put_peer(r)  # type: ignore[attr-defined]

        await asyncio.wrap_future(store.submit(put))
        assert await table.prune() == 4
        kept = sorted(r.node_id for r in store.list_peers())
        store.close()
        await net.close()
        return kept

    kept = asyncio.run(main())
    # ids[0] aged out; of ids[2..6] (5 droppable, table of 3 with ids[1] kept) the 3 longest
    # away went: ids[6], ids[5], ids[4].
    assert kept == sorted([ids[1], ids[2], ids[3]])
