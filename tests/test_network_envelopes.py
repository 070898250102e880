"""Peer envelopes: what a receiver accepts and what it refuses, and delivery to oneself."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest

from bacalhau._pb.bacalhau.v1 import peer_pb2
from bacalhau.identity import Identity
from bacalhau.network import Network, PeerProtocolError
from bacalhau.network.dispatch import ANY_PEER
from bacalhau.network.peers import API_VERSION, MAX_PACKET, Connection


def hello(identity: Identity) -> Any:
    return peer_pb2.Hello(
        node_id=identity.node_id, version="test", address="127.0.0.1:1", api_version=API_VERSION
    )


JOB_KINDS = ("announce", "bid", "bid_decision", "execution_update", "result_decision", "cancel",
             "sync", "log")  # fmt: skip


def network(identity: Identity, handler: Any = None) -> Network:
    """A Network whose job messages (taken from any peer) go to `handler(sender, message)`."""
    net = Network(identity, hello(identity))
    for kind in JOB_KINDS:

        def deliver(sender: str, body: Any, kind: str = kind) -> None:
            if handler is not None:
                handler(sender, peer_pb2.PeerMessage(**{kind: body}))

        net.dispatcher.register(kind, deliver, ANY_PEER)
    return net


@pytest.fixture(scope="module")
def a() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def b() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def c() -> Identity:
    return Identity.generate()


@pytest.fixture
def net_b(b: Identity) -> Network:
    return network(b)


def bid(job_id: str = "j-1") -> Any:
    return peer_pb2.PeerMessage(bid=peer_pb2.Bid(job_id=job_id, shard=2, willing=True, queued=3))


def hello_msg(identity: Identity) -> Any:
    return peer_pb2.PeerMessage(hello=hello(identity))


def sealed(sender: Identity, recipient: str, *messages: Any, seq: int = 1) -> Any:
    """The envelope `sender`'s Network puts on the wire (through its own `_send_packet`)."""
    conn = Connection(outbound=True, sent_seq=seq - 1)
    network(sender)._send_packet(conn, recipient, list(messages or [bid()]))
    env = conn.queue.get_nowait()
    assert conn.queue.empty() and conn.sent_seq == seq
    return env


def signed(signer: Identity, packet: Any) -> Any:
    """An envelope built by hand the same way: the packet's bytes, signed by `signer`."""
    payload = packet.SerializeToString()
    return peer_pb2.Envelope(
        payload=payload, public_key=signer.public_key_bytes, signature=signer.sign(payload)
    )


def copy(env: Any, **changes: Any) -> Any:
    out = peer_pb2.Envelope()
    out.CopyFrom(env)
    for name, value in changes.items():
        setattr(out, name, value)
    return out


def inbound(peer: Identity, recv_seq: int = 0) -> Connection:
    """An established stream from `peer`, past its Hello."""
    return Connection(outbound=False, node_id=peer.node_id, recv_seq=recv_seq)


# -- accepted --------------------------------------------------------------------------------


def test_a_signed_packet_is_accepted(a: Identity, b: Identity, net_b: Network) -> None:
    announce = peer_pb2.PeerMessage(announce=peer_pb2.JobAnnouncement(job_id="j-9", shard=1))
    env = sealed(a, b.node_id, bid("j-1"), announce, bid("j-2"), seq=5)
    conn = inbound(a, recv_seq=4)
    packet = net_b._open(conn, env)
    assert packet.sender == a.node_id and packet.recipient == b.node_id
    assert packet.seq == 5 and packet.time_unix_nano > 0
    assert [m.WhichOneof("body") for m in packet.messages] == ["bid", "announce", "bid"]
    assert list(packet.messages) == [bid("j-1"), announce, bid("j-2")]
    assert conn.recv_seq == 5


def test_packets_in_order_on_one_stream_are_accepted(a: Identity, b: Identity) -> None:
    sender, receiver = network(a), network(b)
    out = Connection(outbound=True, node_id=b.node_id)
    for n in range(3):
        sender._send_packet(out, b.node_id, [bid(f"j-{n}")])
    conn = inbound(a)
    got = [receiver._open(conn, out.queue.get_nowait()) for _ in range(3)]
    assert [p.seq for p in got] == [1, 2, 3]
    assert [p.messages[0].bid.job_id for p in got] == ["j-0", "j-1", "j-2"]
    assert conn.recv_seq == 3


def test_a_dialers_hello_to_nobody_is_accepted_on_a_new_stream(a: Identity, net_b: Network) -> None:
    # A dialer does not yet know whom it reached, so its Hello has no recipient.
    conn = Connection(outbound=False)
    packet = net_b._open(conn, sealed(a, "", hello_msg(a)))
    assert packet.messages[0].hello.node_id == a.node_id and conn.recv_seq == 1


# -- refused ---------------------------------------------------------------------------------


def assert_refused(net: Network, conn: Connection, env: Any, match: str) -> None:
    before = conn.recv_seq
    with pytest.raises(PeerProtocolError, match=match):
        net._open(conn, env)
    assert conn.recv_seq == before  # a refused packet does not move the stream on


def test_a_bad_signature_is_refused(a: Identity, b: Identity, net_b: Network) -> None:
    env = sealed(a, b.node_id)
    flipped = bytearray(env.signature)
    flipped[0] ^= 0x01
    assert_refused(net_b, inbound(a), copy(env, signature=bytes(flipped)), "bad signature")
    for signature in (b"", env.signature[:63], env.signature + b"\x00"):
        assert_refused(net_b, inbound(a), copy(env, signature=signature), "bad signature")
    # The original is still fine.
    assert net_b._open(inbound(a), env).sender == a.node_id


def test_a_signature_by_someone_else_is_refused(
    a: Identity, b: Identity, c: Identity, net_b: Network
) -> None:
    env = sealed(a, b.node_id)
    # The right payload and A's key, but C's signature.
    assert_refused(net_b, inbound(a), copy(env, signature=c.sign(env.payload)), "bad signature")


def test_a_payload_changed_after_signing_is_refused(
    a: Identity, b: Identity, net_b: Network
) -> None:
    env = sealed(a, b.node_id)
    packet = peer_pb2.PeerPacket.FromString(env.payload)
    packet.messages[0].bid.willing = False
    assert_refused(
        net_b, inbound(a), copy(env, payload=packet.SerializeToString()), "bad signature"
    )
    packet = peer_pb2.PeerPacket.FromString(env.payload)
    packet.seq = 99  # a replayer moving the counter on
    assert_refused(
        net_b, inbound(a), copy(env, payload=packet.SerializeToString()), "bad signature"
    )
    assert_refused(net_b, inbound(a), copy(env, payload=env.payload + b"\x00"), "bad signature")


def test_a_key_that_does_not_match_the_claimed_sender_is_refused(
    a: Identity, b: Identity, c: Identity, net_b: Network
) -> None:
    # C signs, correctly, a packet that claims to come from A.
    packet = peer_pb2.PeerPacket(
        sender=a.node_id,
        recipient=b.node_id,
        seq=1,
        messages=[bid()],
        nonce=os.urandom(16),
        time_unix_nano=time.time_ns(),
    )
    assert_refused(net_b, inbound(a), signed(c, packet), "claiming to be from")
    assert_refused(net_b, Connection(outbound=False), signed(c, packet), "claiming to be from")
    # A's own signature over the same packet is accepted.
    assert net_b._open(inbound(a), signed(a, packet)).sender == a.node_id


def test_a_malformed_public_key_is_refused(a: Identity, b: Identity, net_b: Network) -> None:
    env = sealed(a, b.node_id)
    for key in (b"", env.public_key[:31], env.public_key + b"\x00"):
        assert_refused(net_b, inbound(a), copy(env, public_key=key), "bad public key")


def test_a_packet_for_someone_else_is_refused(
    a: Identity, b: Identity, c: Identity, net_b: Network
) -> None:
    env = sealed(a, c.node_id)
    assert_refused(net_b, inbound(a), env, "meant for")
    # Also on a stream whose peer is not known yet.
    assert_refused(net_b, Connection(outbound=False), env, "meant for")


def test_a_packet_to_nobody_on_an_established_stream_is_refused(
    a: Identity, net_b: Network
) -> None:
    assert_refused(net_b, inbound(a), sealed(a, ""), "meant for")


def test_a_replay_is_refused(a: Identity, b: Identity, net_b: Network) -> None:
    conn = inbound(a)
    env = sealed(a, b.node_id)
    assert net_b._open(conn, env).seq == 1
    assert_refused(net_b, conn, env, "replayed")
    assert conn.recv_seq == 1


@pytest.mark.parametrize("seq", [0, 6, 7])
def test_a_seq_that_does_not_grow_is_refused(
    a: Identity, b: Identity, net_b: Network, seq: int
) -> None:
    conn = inbound(a, recv_seq=7)
    assert_refused(net_b, conn, sealed(a, b.node_id, seq=seq), "replayed")
    # The next number is still welcome.
    assert net_b._open(conn, sealed(a, b.node_id, seq=8)).seq == 8


def test_a_packet_from_another_node_on_an_established_stream_is_refused(
    a: Identity, b: Identity, c: Identity, net_b: Network
) -> None:
    # C's packet is correctly signed and addressed to B, but the stream is A's.
    env = sealed(c, b.node_id)
    assert_refused(net_b, inbound(a), env, "wrote on the stream of")
    # The same envelope is fine on C's own stream.
    assert net_b._open(inbound(c), env).sender == c.node_id


def test_a_packet_taken_before_is_refused_on_any_stream(
    a: Identity, b: Identity, net_b: Network
) -> None:
    env = sealed(a, b.node_id)
    assert net_b._open(inbound(a), env).seq == 1
    # A new stream (its sequence starts again) does not make the same packet new.
    assert_refused(net_b, inbound(a), env, "taken before")


def test_a_packet_far_from_the_clock_or_without_a_nonce_is_refused(
    a: Identity, b: Identity, net_b: Network
) -> None:
    def packet(**fields: Any) -> Any:
        base = {"sender": a.node_id, "recipient": b.node_id, "seq": 1, "messages": [bid()],
                "nonce": os.urandom(16), "time_unix_nano": time.time_ns()}  # fmt: skip
        return signed(a, peer_pb2.PeerPacket(**{**base, **fields}))

    ten_minutes = 600 * 10**9
    assert_refused(net_b, inbound(a), packet(time_unix_nano=time.time_ns() - ten_minutes),
                   "behind this node's clock")  # fmt: skip
    assert_refused(net_b, inbound(a), packet(time_unix_nano=time.time_ns() + ten_minutes),
                   "ahead of this node's clock")  # fmt: skip
    assert_refused(net_b, inbound(a), packet(time_unix_nano=0), "behind")
    for nonce in (b"", b"x" * 15, b"x" * 17):
        assert_refused(net_b, inbound(a), packet(nonce=nonce), "without a nonce")
    assert net_b._open(inbound(a), packet()).sender == a.node_id


# -- Hello and registration -----------------------------------------------------------------


def test_the_first_message_must_be_hello(a: Identity, b: Identity) -> None:
    for first in (sealed(a, ""), sealed(a, "", bid(), hello_msg(a))):
        net = network(b)
        with pytest.raises(PeerProtocolError, match="must be Hello"):
            net._check_hello(Connection(outbound=False), first)
        assert net.connected() == []
    empty = signed(
        a,
        peer_pb2.PeerPacket(
            sender=a.node_id, seq=1, nonce=os.urandom(16), time_unix_nano=time.time_ns()
        ),
    )
    with pytest.raises(PeerProtocolError, match="must be Hello"):
        network(b)._check_hello(Connection(outbound=False), empty)


def handshake(net_a: Network, net_b: Network, *with_hello: Any) -> tuple[Connection, Connection]:
    """A dials B, as `_dial_once` and `serve_stream` do: Hello each way, each answered."""
    dialer, listener = Connection(outbound=True), Connection(outbound=False)
    dialer.challenge = net_a._send_packet(dialer, "", [hello_msg(net_a.identity), *with_hello])
    hello_a = net_b._check_hello(listener, dialer.queue.get_nowait())
    listener.node_id = hello_a.sender
    net_b._answer(listener, hello_a)
    hello_b = net_a._check_hello(dialer, listener.queue.get_nowait())
    net_a._answer(dialer, hello_b)
    net_a._register(dialer, hello_b)
    answer = net_b._open(listener, dialer.queue.get_nowait())
    net_b._confirm(listener, answer)
    net_b._register(listener, hello_a)
    return dialer, listener


def test_a_hello_registers_the_peer_once_each_side_answered(a: Identity, b: Identity) -> None:
    net_a, net_b = network(a), network(b)
    joined: list[str] = []
    net_b.on_connect.append(joined.append)
    dialer, listener = handshake(net_a, net_b)
    assert listener.node_id == a.node_id and listener.address == "127.0.0.1:1"
    assert dialer.node_id == b.node_id
    assert net_b.connected() == [a.node_id] and joined == [a.node_id]
    assert net_a.connected() == [b.node_id]
    assert net_a.status_of(b.node_id) is not None  # B's status came with its Hello
    # what came with a Hello besides a status is handed on for delivery
    conn = Connection(outbound=False)
    hello = network(b)._check_hello(conn, sealed(a, "", hello_msg(a), bid("j-7")))
    assert [m.bid.job_id for m in network(b)._register(conn, hello)] == ["j-7"]


def mac_handshake(net_a: Network, net_b: Network) -> tuple[Connection, Connection]:
    """A dials B with Hellos that carry key shares, as `_dial_once` and `serve_stream` do."""
    dialer, listener = Connection(outbound=True), Connection(outbound=False)
    opening = [peer_pb2.PeerMessage(hello=net_a._hello_for(dialer))]
    dialer.challenge = net_a._send_packet(dialer, "", opening)
    hello_a = net_b._check_hello(listener, dialer.queue.get_nowait())
    listener.node_id = hello_a.sender
    net_b._answer(listener, hello_a)
    b_hello = listener.queue.get_nowait()
    assert b_hello.signature and not b_hello.mac  # a Hello is signed: it vouches for its share
    hello_b = net_a._check_hello(dialer, b_hello)
    net_a._answer(dialer, hello_b)
    net_a._register(dialer, hello_b)
    net_b._confirm(listener, net_b._open(listener, dialer.queue.get_nowait()))
    net_b._register(listener, hello_a)
    return dialer, listener


def test_packets_after_hellos_with_key_shares_carry_a_mac(a: Identity, b: Identity) -> None:
    """Both Hellos carried key shares: later packets are authenticated by the stream's keys
    (no signature), each direction its own, and read as signed ones are."""
    got: list[tuple[str, Any]] = []
    net_a, net_b = network(a), network(b, lambda sender, msg: got.append((sender, msg)))
    dialer, listener = mac_handshake(net_a, net_b)
    assert dialer.mac_send == listener.mac_recv and dialer.mac_recv == listener.mac_send
    assert dialer.mac_send != dialer.mac_recv
    net_a._send_packet(dialer, b.node_id, [bid("j-mac")])
    env = dialer.queue.get_nowait()
    assert env.mac and not env.signature and not env.public_key
    packet = net_b._open(listener, env)
    assert packet.sender == a.node_id and packet.messages[0].bid.job_id == "j-mac"
    net_b._send_packet(listener, a.node_id, [bid("j-back")])  # and the other way
    assert net_a._open(dialer, listener.queue.get_nowait()).messages[0].bid.job_id == "j-back"


def test_a_packet_whose_mac_does_not_check_is_refused(a: Identity, b: Identity) -> None:
    """A changed byte, a packet from another stream (other keys), one sent back to its sender
    (the other direction's key), a MAC where the stream has no keys: all refused as forged."""
    net_a, net_b = network(a), network(b)
    dialer, listener = mac_handshake(net_a, net_b)
    net_a._send_packet(dialer, b.node_id, [bid()])
    good = dialer.queue.get_nowait()
    changed = peer_pb2.Envelope(payload=good.payload[:-1] + b"x", mac=good.mac)
    with pytest.raises(PeerProtocolError, match="MAC that does not check") as e:
        net_b._open(listener, changed)
    assert e.value.reason == "forged"
    other_dialer, _ = mac_handshake(network(a), network(b))
    net_a._send_packet(other_dialer, b.node_id, [bid()])
    with pytest.raises(PeerProtocolError, match="MAC that does not check"):
        net_b._open(listener, other_dialer.queue.get_nowait())
    with pytest.raises(PeerProtocolError, match="MAC that does not check"):
        net_a._open(dialer, good)  # its own packet, reflected
    plain = Connection(outbound=False, node_id=a.node_id)  # a stream without keys
    with pytest.raises(PeerProtocolError, match="MAC that does not check"):
        network(b)._open(plain, good)
    assert net_b._open(listener, good).messages[0].bid.job_id == "j-1"  # the real one is fine


def test_a_hello_without_a_key_share_keeps_the_stream_signed(a: Identity, b: Identity) -> None:
    """A peer whose Hello has no key share (an older node) gets, and must send, signed packets."""
    net_a, net_b = network(a), network(b)
    dialer, listener = handshake(net_a, net_b)  # A's Hello has no share; B's has
    assert not dialer.mac_send and not listener.mac_send and not listener.mac_recv
    net_b._send_packet(listener, a.node_id, [bid()])
    env = listener.queue.get_nowait()
    assert env.signature and not env.mac
    assert net_a._open(dialer, env).messages[0].bid.job_id == "j-1"


def test_a_hello_that_does_not_answer_ours_is_refused(a: Identity, b: Identity) -> None:
    """A Hello captured from another stream (answering another dialer) is worth nothing."""
    net_a, net_b = network(a), network(b)
    other = Connection(outbound=True)
    other.challenge = net_a._send_packet(other, "", [hello_msg(a)])
    listener = Connection(outbound=False)
    hello_a = net_b._check_hello(listener, other.queue.get_nowait())
    net_b._answer(listener, hello_a)
    b_hello = listener.queue.get_nowait()  # B's Hello answers `other`'s, not ours
    mine = Connection(outbound=True)
    mine.challenge = net_a._send_packet(mine, "", [hello_msg(a)])
    with pytest.raises(PeerProtocolError, match="does not answer ours"):
        net_a._check_hello(mine, b_hello)
    assert net_a.connected() == []


def test_a_replayed_hello_whose_sender_cannot_answer_is_refused(a: Identity, b: Identity) -> None:
    """The dialed side registers a peer only when the dialer answers its Hello."""
    net_b = network(b)
    hello = sealed(a, "", hello_msg(a))
    listener = Connection(outbound=False)
    packet = net_b._check_hello(listener, hello)
    listener.node_id = packet.sender
    net_b._answer(listener, packet)
    # Whoever replays A's Hello cannot sign A's answer; a packet of A's that does not carry the
    # challenge (say, a later one captured elsewhere) is not an answer.
    with pytest.raises(PeerProtocolError, match="did not answer this node's Hello"):
        net_b._confirm(listener, net_b._open(listener, sealed(a, b.node_id, seq=2)))
    assert net_b.connected() == []
    # The same Hello again, on a new stream, is refused outright.
    with pytest.raises(PeerProtocolError, match="taken before"):
        net_b._check_hello(Connection(outbound=False), hello)


def test_a_hello_from_oneself_is_refused(b: Identity, net_b: Network) -> None:
    with pytest.raises(PeerProtocolError, match="itself"):
        net_b._check_hello(Connection(outbound=False), sealed(b, "", hello_msg(b)))
    assert net_b.connected() == []


def test_handshake_then_messages_sent_together_share_one_packet(a: Identity, b: Identity) -> None:
    """Both sides of a stream, wired by hand: Hello each way, then a burst of sends."""

    async def main() -> Any:
        net_a, net_b = network(a), network(b)
        dialer, listener = handshake(net_a, net_b)
        assert net_a.connected() == [b.node_id] and net_b.connected() == [a.node_id]

        for n in range(3):
            assert net_a.send(b.node_id, bid=peer_pb2.Bid(job_id=f"j-{n}"))
        assert dialer.queue.empty()  # packed when the loop comes round, not on each send
        env = await asyncio.wait_for(dialer.queue.get(), timeout=5.0)
        assert dialer.queue.empty()
        return net_b._open(listener, env)

    packet = asyncio.run(main())
    assert packet.sender == a.node_id and packet.recipient == b.node_id and packet.seq == 3
    assert [m.bid.job_id for m in packet.messages] == ["j-0", "j-1", "j-2"]


# -- sending to oneself ----------------------------------------------------------------------


def test_send_to_itself_is_delivered_on_the_loop(a: Identity, b: Identity) -> None:
    async def main() -> list[tuple[str, Any, bool]]:
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()
        got: list[tuple[str, Any, bool]] = []

        def handler(sender: str, msg: Any) -> None:
            on_loop = asyncio.get_running_loop() is loop
            main_thread = threading.current_thread() is threading.main_thread()
            got.append((sender, msg, on_loop and main_thread))
            if msg.bid.job_id == "boom":
                raise RuntimeError("a handler's failure is logged, not raised")
            arrived.set()

        net = network(a, handler)
        assert net.send(a.node_id, bid=peer_pb2.Bid(job_id="boom"))
        assert net.send(a.node_id, bid=peer_pb2.Bid(job_id="j-1", willing=True))
        assert got == []  # not called from within send
        await asyncio.wait_for(arrived.wait(), timeout=5.0)
        # Another node, not connected: nothing is sent.
        assert not net.send(b.node_id, bid=peer_pb2.Bid(job_id="j-1"))
        assert net.is_connected(a.node_id) and not net.is_connected(b.node_id)
        await net.close()
        return got

    got = asyncio.run(main())
    assert [(sender, m.bid.job_id, ok) for sender, m, ok in got] == [
        (a.node_id, "boom", True),
        (a.node_id, "j-1", True),
    ]
    assert got[1][1].bid.willing


def test_oversized_malformed_and_forged_packets_name_their_reason(
    a: Identity, b: Identity, net_b: Network
) -> None:
    big = peer_pb2.PeerMessage(
        announce=peer_pb2.JobAnnouncement(job_id="j" * (MAX_PACKET + 1), shard=1)
    )
    cases = {
        # built by hand: a node's own sender drops a message too large for any packet
        "oversized": signed(a, peer_pb2.PeerPacket(sender=a.node_id, messages=[big])),
        "malformed": signed(a, peer_pb2.PeerPacket()).__class__(
            payload=b"\xff\xff\xff",
            public_key=a.public_key_bytes,
            signature=a.sign(b"\xff\xff\xff"),
        ),
        "forged": copy(sealed(a, b.node_id), signature=bytes(64)),
        "replayed": sealed(a, b.node_id, seq=1),
    }
    for reason, env in cases.items():
        conn = inbound(a, recv_seq=3)
        with pytest.raises(PeerProtocolError) as err:
            net_b._open(conn, env)
        assert err.value.reason == reason, reason
        assert conn.recv_seq == 3


def test_a_peer_with_another_api_version_is_refused_with_a_reason(a: Identity, b: Identity) -> None:
    other = hello(a)
    other.api_version = "v9"
    env = sealed(a, "", peer_pb2.PeerMessage(hello=other))
    net = network(b)
    with pytest.raises(PeerProtocolError, match="speaks API v9; this node speaks v1") as err:
        net._check_hello(Connection(outbound=False), env)
    assert err.value.reason == "version" and net.connected() == []


def gossip_of(signer: Identity, recipient: str, *messages: Any, **packet_fields: Any) -> Any:
    fields: dict[str, Any] = {"time_unix_nano": time.time_ns(), "message_id": "m-1"}
    fields.update(packet_fields)
    packet = peer_pb2.PeerPacket(
        sender=signer.node_id, recipient=recipient, messages=list(messages or [bid()]), **fields
    )
    return peer_pb2.Gossip(envelope=signed(signer, packet).SerializeToString(), hops=2)


def test_gossip_is_checked_delivered_once_and_refused_when_bad(a: Identity, b: Identity) -> None:
    got: list[tuple[str, str]] = []
    refused: list[str] = []
    net = network(b, lambda sender, msg: got.append((sender, msg.WhichOneof("body"))))
    net.on_reject.append(refused.append)
    relay = "12D3KooWRelay"
    # for b, and for everyone: delivered as coming from the origin (a), not the relay
    net.gossip.receive(relay, gossip_of(a, b.node_id))
    net.gossip.receive(relay, gossip_of(a, "*", message_id="m-2"))
    assert got == [(a.node_id, "bid"), (a.node_id, "bid")]
    # a repeat of a message ID is dropped; a packet for someone else is not delivered here
    net.gossip.receive(relay, gossip_of(a, b.node_id))
    net.gossip.receive(relay, gossip_of(a, "12D3KooWSomeoneElse", message_id="m-3"))
    # only the job protocol travels as gossip
    net.gossip.receive(relay, gossip_of(a, b.node_id, hello_msg(a), message_id="m-4"))
    assert len(got) == 2 and refused == []

    forged = gossip_of(a, b.node_id, message_id="m-5")
    env = peer_pb2.Envelope.FromString(forged.envelope)
    env.signature = bytes(64)
    forged.envelope = env.SerializeToString()
    net.gossip.receive(relay, forged)
    stale = gossip_of(a, b.node_id, message_id="m-6", time_unix_nano=time.time_ns() - 10**12)
    net.gossip.receive(relay, stale)
    net.gossip.receive(relay, peer_pb2.Gossip(envelope=b"\xff\x00", hops=1))
    assert refused == ["forged", "stale", "malformed"] and len(got) == 2


def test_a_broadcast_is_not_delivered_to_a_node_with_a_stream_to_its_origin(
    a: Identity, b: Identity
) -> None:
    got: list[str] = []
    net = network(b, lambda sender, msg: got.append(sender))
    net._conns[a.node_id] = [Connection(outbound=True, node_id=a.node_id)]  # a reached b directly
    net.gossip.receive("12D3KooWRelay", gossip_of(a, "*", message_id="m-1"))
    assert got == []  # a sent it to b on their stream already
    net.gossip.receive("12D3KooWRelay", gossip_of(a, b.node_id, message_id="m-2"))
    assert got == [a.node_id]  # addressed to b: delivered however it came


def test_gossip_goes_only_towards_nodes_the_origin_cannot_reach(a: Identity, b: Identity) -> None:
    net = network(b)
    assert not net.gossip.unreached()
    net.gossip.heard("12D3KooWPeer", ["12D3KooWFar", b.node_id])
    assert net.gossip.unreached() == {"12D3KooWFar"}
    net.gossip.forget("12D3KooWPeer")
    assert not net.gossip.unreached()


def test_messages_too_many_for_one_packet_go_in_several_in_order(
    a: Identity, b: Identity, net_b: Network
) -> None:
    logs = [
        peer_pb2.PeerMessage(log=peer_pb2.ExecutionLog(job_id="j", offset=n, data=b"x" * 300_000))
        for n in range(30)
    ]  # about 9 MB, and one message larger than any packet, which is dropped
    huge = peer_pb2.PeerMessage(log=peer_pb2.ExecutionLog(job_id="j", data=b"y" * (5 << 20)))
    conn = Connection(outbound=True)
    network(a)._send_packet(conn, b.node_id, [*logs[:10], huge, *logs[10:]])
    envelopes = []
    while not conn.queue.empty():
        envelopes.append(conn.queue.get_nowait())
    assert len(envelopes) > 1 and conn.sent_seq == len(envelopes)
    assert all(len(env.payload) <= MAX_PACKET for env in envelopes)
    got = [m.log.offset for env in envelopes for m in net_b._open(inbound(a), env).messages]
    assert got == list(range(30))
