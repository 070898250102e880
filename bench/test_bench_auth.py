"""The cost of trust: signing and checking a client call and a peer packet (signed, or with a
stream's MAC), against the same work unsigned, in the same run (the summary also puts it
beside a trivial job's latency)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bacalhau import callsign
from bacalhau._pb.bacalhau.v1 import client_pb2, peer_pb2
from bacalhau.callsign import Verifier
from bacalhau.identity import Identity
from bacalhau.network.peers import API_VERSION, Connection, Network

Record = Callable[[str, Any], None]
METHOD = "/bacalhau.v1.ClientService/GetJob"


def test_client_call_unsigned(benchmark: Any, record: Record) -> None:
    """Baseline: what an unsigned call costs here before the network: serialize, parse."""
    req = client_pb2.GetJobRequest(job_id="j-00000000-0000-0000-0000-000000000000", wait=True)

    def plain() -> None:
        client_pb2.GetJobRequest.FromString(req.SerializeToString())

    benchmark(plain)
    record("call_plain", benchmark)


def test_client_call_signed_and_checked(benchmark: Any, record: Record) -> None:
    key = Identity.generate()
    verifier = Verifier()
    req = client_pb2.GetJobRequest(job_id="j-00000000-0000-0000-0000-000000000000", wait=True)

    def signed() -> None:
        body = req.SerializeToString()
        metadata = dict(callsign.sign(key, METHOD, body))
        verifier.check(metadata, METHOD, body, time.time_ns() // 1_000_000)
        client_pb2.GetJobRequest.FromString(body)

    benchmark(signed)
    record("call_signed", benchmark)


def _pair() -> tuple[Network, Network, Any]:
    a, b = Identity.generate(), Identity.generate()
    hello = peer_pb2.Hello(version="0", api_version=API_VERSION)
    bid = peer_pb2.PeerMessage(bid=peer_pb2.Bid(job_id="j-1", shard=0, willing=True, queued=1))
    return Network(a, hello), Network(b, hello), bid


def test_peer_packet_unsigned(benchmark: Any, record: Record) -> None:
    net_a, net_b, bid = _pair()

    def plain() -> None:
        packet = peer_pb2.PeerPacket(
            sender=net_a.node_id, recipient=net_b.node_id, seq=1, messages=[bid]
        )
        peer_pb2.PeerPacket.FromString(packet.SerializeToString())

    benchmark(plain)
    record("packet_plain", benchmark)


def test_peer_packet_sealed_and_opened(benchmark: Any, record: Record) -> None:
    """Sign, then check signature, sender, sequence, time and nonce (as on a stream)."""
    net_a, net_b, bid = _pair()
    out = Connection(outbound=True, node_id=net_b.node_id)
    inbound = Connection(outbound=False, node_id=net_a.node_id)

    def sealed() -> None:
        net_a._send_packet(out, net_b.node_id, [bid])
        net_b._open(inbound, out.queue.get_nowait())

    benchmark(sealed)
    record("packet_sealed", benchmark)


def test_peer_packet_maced_and_opened(benchmark: Any, record: Record) -> None:
    """The same on a stream whose Hellos agreed keys: an HMAC instead of a signature."""
    net_a, net_b, bid = _pair()
    out = Connection(outbound=True, node_id=net_b.node_id)
    inbound = Connection(outbound=False, node_id=net_a.node_id)
    share_a, share_b = net_a._hello_for(out).key_share, net_b._hello_for(inbound).key_share
    out.agree(share_b)  # as each side's `_answer` does once both Hellos went
    inbound.agree(share_a)
    assert out.mac_send and out.mac_send == inbound.mac_recv

    def maced() -> None:
        net_a._send_packet(out, net_b.node_id, [bid])
        net_b._open(inbound, out.queue.get_nowait())

    benchmark(maced)
    record("packet_maced", benchmark)
