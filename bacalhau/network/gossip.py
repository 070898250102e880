"""Gossip: reaching nodes this one has no stream to, through the peers that do.

A message for a node that is not connected (or, for a job announcement, for every node) is
sealed once by its origin, exactly like a direct packet (signed, with the origin's key), and
handed to peers inside `Gossip` with a hop count. Every node that handles it checks the
origin's signature before use, drops repeats by (origin, message ID), and passes it on only
towards nodes that the origin cannot reach directly, according to the peer lists its peers sent
(peer exchange). So in a fully connected network nothing is relayed at all, and otherwise each
node passes a message on at most once, to at most `FANOUT` peers: O(N) copies, never O(N^2).
"""

from __future__ import annotations

import random
import uuid
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from bacalhau._pb.bacalhau.v1 import peer_pb2
from bacalhau.identity import node_id_from_public_key, verify
from bacalhau.models import now_ns
from bacalhau.replay import REPEATED, ReplayWindow

if TYPE_CHECKING:
    from bacalhau.network.peers import Network

GOSSIP_HOPS = 3
FANOUT = 3
BROADCAST = "*"
MAX_AGE_NS = 300 * 10**9  # older (or that far in the future) gossip is dropped as a replay
_SEEN_MAX = 65536  # (origin, message ID) pairs remembered (see bacalhau.replay)


class GossipRouter:
    """Seals, checks, delivers and passes on gossip for one node's `Network`."""

    def __init__(self, net: Network) -> None:
        self._net = net
        self.neighbors: dict[str, set[str]] = {}  # peer -> whom it said it is connected to
        self._seen = ReplayWindow(MAX_AGE_NS, _SEEN_MAX)
        self.relayed = 0  # gossip messages this node sent or passed on

    # -- what peers told us ----------------------------------------------------------------

    def heard(self, peer: str, node_ids: list[str]) -> None:
        self.neighbors.setdefault(peer, set()).update(node_ids)

    def forget(self, peer: str) -> None:
        self.neighbors.pop(peer, None)

    def unreached(self) -> set[str]:
        """Nodes our peers are connected to that we have no stream to."""
        known: set[str] = set().union(*self.neighbors.values()) if self.neighbors else set()
        return known - set(self._net.connected()) - {self._net.node_id}

    # -- sending -----------------------------------------------------------------------------

    def unicast(self, recipient: str, msg: Any) -> bool:
        """Send `msg` to a node we have no stream to; False if no peer leads there."""
        return self._send(recipient, msg)

    def broadcast(self, msg: Any) -> bool:
        """Send `msg` to the nodes we cannot reach directly; False if there are none."""
        return bool(self.unreached()) and self._send(BROADCAST, msg)

    def _send(self, recipient: str, msg: Any) -> bool:
        message_id = uuid.uuid4().hex
        packet = peer_pb2.PeerPacket(
            sender=self._net.node_id,
            recipient=recipient,
            time_unix_nano=now_ns(),
            messages=[msg],
            message_id=message_id,
        )
        payload = packet.SerializeToString()
        env = peer_pb2.Envelope(
            payload=payload,
            public_key=self._net.identity.public_key_bytes,
            signature=self._net.identity.sign(payload),
        )
        sealed = env.SerializeToString()
        return self._forward(sealed, recipient, self._net.node_id, "", GOSSIP_HOPS)

    def _forward(
        self, envelope: bytes, recipient: str, origin: str, came_from: str, hops: int
    ) -> bool:
        targets = self._targets(recipient, origin, came_from)
        for target in targets:
            self.relayed += 1
            self._net.send(target, gossip=peer_pb2.Gossip(envelope=envelope, hops=hops))
        return bool(targets)

    def _targets(self, recipient: str, origin: str, came_from: str) -> list[str]:
        peers = [p for p in self._net.connected() if p not in (origin, came_from)]
        if recipient != BROADCAST:
            if recipient in peers:
                return [recipient]
            near = [p for p in peers if recipient in self.neighbors.get(p, ())]
            return near[:1] or random.sample(peers, min(FANOUT, len(peers)))
        if origin == self._net.node_id:  # towards peers that lead to nodes we do not reach
            reached = set(self._net.connected()) | {origin}
            peers = [p for p in peers if self.neighbors.get(p, set()) - reached]
        else:  # towards peers that are not connected to the origin themselves
            peers = [p for p in peers if origin not in self.neighbors.get(p, ())]
        return random.sample(peers, min(FANOUT, len(peers)))

    # -- receiving ---------------------------------------------------------------------------

    def receive(self, came_from: str, gossip: Any) -> None:
        """Check, deliver (if it is for us) and pass on a gossiped packet."""
        from bacalhau.network.peers import PeerProtocolError

        try:
            env = peer_pb2.Envelope.FromString(gossip.envelope)
            origin = node_id_from_public_key(env.public_key)
            if not verify(env.public_key, env.payload, env.signature):
                raise PeerProtocolError(f"gossip from {came_from}: bad signature", "forged")
            packet = peer_pb2.PeerPacket.FromString(env.payload)
        except PeerProtocolError as e:
            self._net.refused(e)
            return
        except (DecodeError, ValueError, Exception) as e:  # a key that is not ed25519, ...
            self._net.refused(PeerProtocolError(f"gossip from {came_from}: {e}", "malformed"))
            return
        if packet.sender != origin:
            self._net.refused(PeerProtocolError("gossip claiming another origin", "forged"))
            return
        if origin == self._net.node_id or not packet.message_id:
            return
        if self._net.trusted is not None and origin not in self._net.trusted:
            self._net.refused(PeerProtocolError(f"gossip from untrusted {origin}", "untrusted"))
            return
        verdict = self._seen.check((origin, packet.message_id), packet.time_unix_nano, now_ns())
        if verdict == REPEATED:  # the same gossip by another path: not an offence
            return
        if verdict is not None:
            self._net.refused(PeerProtocolError("stale gossip", "stale"))
            return
        # A broadcast is for the nodes the origin has no stream to: one with a stream got it
        # directly (a job announcement twice would be bid on twice).
        for_us = packet.recipient == self._net.node_id or (
            packet.recipient == BROADCAST and origin not in self._net.connected()
        )
        if for_us:
            for msg in packet.messages:  # what may travel as gossip: the dispatch table says
                self._net.dispatcher.dispatch(origin, msg, relayed=True)
        if packet.recipient != self._net.node_id and gossip.hops > 0:
            self._forward(gossip.envelope, packet.recipient, origin, came_from, gossip.hops - 1)
