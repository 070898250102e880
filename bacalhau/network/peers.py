"""Peer connections: one PeerService.Connect stream per pair of nodes, signed envelopes.

Messages travel in packets: what is queued for a peer when the event loop comes round is packed
into one `PeerPacket`, signed with the sender's ed25519 key and carried in an `Envelope` with
that key. A receiver refuses a packet whose key does not give the node ID it claims, whose
signature is wrong, which is meant for another node, whose sequence number does not grow (a
replay on the stream), whose time is more than `PACKET_WINDOW_S` from the receiver's clock, or
whose nonce it has taken before on any stream, and closes that stream.

Both sides send Hello first, and each answers the other's: the dialed side's Hello carries the
dialer's Hello nonce in `ack`, and the dialer's next packet carries the dialed side's. A stream
counts (the peer is connected and alive) only once its Hello was answered that way, so a
captured Hello replayed on a new stream is worth nothing: its sender is not there to answer.

Each Hello also carries an X25519 key made for the stream (`key_share`). Once a side has both,
the packets it sends without a Hello carry an HMAC-SHA256 under the key of their direction
(X25519 of the two shares through HKDF-SHA256) instead of an ed25519 signature: sealing and
opening a packet takes about 8 µs so, against 150 µs signed (`bench/test_bench_auth.py`).
The shares came in signed Hellos, so nobody else can have the keys; every other check
(sequence, nonce, clock) is the same. A peer whose Hello has no share gets, and must send,
signed packets.

Messages a node sends to itself are delivered on the event loop without a network hop, so the
requester and compute roles of one node talk the same way as those of two nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.message import DecodeError

from bacalhau._pb.bacalhau.v1 import peer_pb2, peer_pb2_grpc
from bacalhau.identity import Identity, node_id_from_public_key, verify
from bacalhau.models import now_ns
from bacalhau.network.dispatch import ANY_PEER, NOBODY, Dispatcher
from bacalhau.network.gossip import GossipRouter
from bacalhau.replay import FUTURE, REPEATED, STALE, ReplayWindow

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # As a server, accept the pings peers send (the default would answer them with GOAWAY).
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    # A peer that restarts is redialled within a second or two, not after gRPC's default
    # backoff of up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
_HELLO_TIMEOUT_S = 10.0
API_VERSION = "v1"
MAX_PACKET = 4 << 20  # bytes of one signed packet; blocks travel by GetBlocks, not here
PACKET_FILL = 3 << 20  # what a sender packs into one packet, leaving room for its header
HEARTBEAT_S = 4.0  # every stream carries something at least this often
DEAD_AFTER_S = 12.0  # a stream silent this long is closed: the peer is not alive
_DISCOVERED_PATIENCE_S = 60.0  # how long to keep dialling an address heard from a peer
_BACKOFF_MIN_S, _BACKOFF_MAX_S = 0.05, 2.0
PACKET_WINDOW_S = 120.0  # how far a packet's time may be from the receiver's clock
MAX_PEERS = 100  # peers connected at once (serve --max-peers)
NEW_IDS_PER_MINUTE = 10  # identities never seen before, per source address, per minute
NONCE_BYTES = 16
KEY_SHARE_BYTES = 32  # an X25519 public key
_MAC_INFO = b"bacalhau peer packet mac v1"
_MAX_SEEN_IDS = 100_000  # identities remembered as seen (not new) for the rate limit
_MAX_NONCES = 100_000  # packet nonces remembered across streams (see bacalhau.replay)


class PeerProtocolError(Exception):
    """A peer sent something that breaks the protocol; its stream is closed.

    `reason` is one word for metrics: forged, malformed, oversized, replayed, misaddressed,
    version, protocol, stale, untrusted, full, rate.
    """

    def __init__(self, message: str, reason: str = "protocol") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(eq=False)
class Connection:
    """One live Connect stream to a peer."""

    outbound: bool
    node_id: str = ""
    address: str = ""
    hello: Any = None
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)  # envelopes to write
    pending: list[Any] = field(default_factory=list)  # messages for the next packet
    sent_seq: int = 0
    recv_seq: int = 0
    challenge: bytes = b""  # the nonce of our Hello's packet: the peer must answer it
    last_recv: float = 0.0  # time.monotonic() of the last packet received
    call: Any = None  # the client call of an outbound stream, to cancel it
    kx: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate)  # for key_share
    shared: bool = False  # our Hello on this stream carried our key share
    mac_send: bytes = b""  # the MAC key of packets to the peer, once both shares are known
    mac_recv: bytes = b""  # the MAC key of packets from the peer

    def key_share(self) -> bytes:
        return self.kx.public_key().public_bytes_raw()

    def agree(self, theirs: bytes) -> None:
        """Make the stream's two MAC keys from the peer's key share (from its signed Hello),
        if ours went in our Hello too: the first half of the HKDF output for the dialer's
        packets, the second for the dialed side's."""
        if not self.shared or len(theirs) != KEY_SHARE_BYTES:
            return  # a Hello without one: this stream's packets stay signed
        mine = self.key_share()
        dialer, dialed = (mine, theirs) if self.outbound else (theirs, mine)
        secret = self.kx.exchange(X25519PublicKey.from_public_bytes(theirs))
        keys = HKDF(hashes.SHA256(), 64, None, _MAC_INFO + dialer + dialed).derive(secret)
        ours, peers = (keys[:32], keys[32:]) if self.outbound else (keys[32:], keys[:32])
        self.mac_send, self.mac_recv = ours, peers

    def close(self) -> None:
        self.queue.put_nowait(None)
        if self.call is not None:
            self.call.cancel()


class Network:
    """This node's side of every peer stream, plus its gRPC channels to peers."""

    def __init__(
        self, identity: Identity, hello: Any, dispatcher: Dispatcher | None = None
    ) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self._hello = hello
        self.dispatcher = dispatcher or Dispatcher()
        self._conns: dict[str, list[Connection]] = {}
        self._addresses: dict[str, str] = {}  # node ID -> gRPC address, from Hello
        self._last_seen: dict[str, int] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_connect: list[Callable[[str], None]] = []
        self.on_disconnect: list[Callable[[str], None]] = []
        self.on_reject: list[Callable[[str], None]] = []  # reason of each refused packet
        self.status: Callable[[], Any] = peer_pb2.Heartbeat  # what heartbeats report
        self._status: dict[str, Any] = {}  # peer -> its last Heartbeat
        self.exchange = True  # dial the nodes peers tell us about
        self._dialing: set[str] = set()  # addresses with a dial loop running
        self.messages_sent = 0  # to other nodes (heartbeats and peer lists included)
        self.gossip = GossipRouter(self)
        self.packets_sent = 0
        self._closing = False
        self._nonces = ReplayWindow(int(PACKET_WINDOW_S * 1e9), _MAX_NONCES)
        self.max_peers = MAX_PEERS
        self.trusted: frozenset[str] | None = None  # serve --trusted-peers: only these
        self.tls: grpc.ChannelCredentials | None = None  # dial peers over TLS with these
        self._seen_ids: set[str] = set()  # identities that completed a Hello here
        self._new_ids: dict[str, list[float]] = {}  # source host -> when new identities came
        d = self.dispatcher
        d.register("hello", lambda sender, body: None, NOBODY, relayable=False)
        d.register("heartbeat", self._on_heartbeat, ANY_PEER, relayable=False)
        d.register("peer_list", self._on_peer_list, ANY_PEER, relayable=False)
        d.register("gossip", self.gossip.receive, ANY_PEER, relayable=False)

    # -- sending ------------------------------------------------------------------------

    def send(self, node_id: str, **body: Any) -> bool:
        """Send one message (`announce=...`, `bid=...`, ...) to `node_id`; False if unreachable."""
        msg = peer_pb2.PeerMessage(**body)
        if node_id == self.node_id:
            asyncio.get_running_loop().call_soon(self.dispatcher.dispatch, node_id, msg)
            return True
        conns = self._conns.get(node_id)
        if not conns:  # no stream to it: through the peers that have one
            return self.gossip.unicast(node_id, msg)
        conn = conns[0]
        self.messages_sent += 1
        if not conn.pending:
            asyncio.get_running_loop().call_soon(self._flush, conn)
        conn.pending.append(msg)
        return True

    def broadcast(self, **body: Any) -> bool:
        """Gossip one message to the nodes this one has no stream to; False if none."""
        return self.gossip.broadcast(peer_pb2.PeerMessage(**body))

    def _flush(self, conn: Connection) -> None:
        if conn.pending:
            messages, conn.pending = conn.pending, []
            self._send_packet(conn, conn.node_id, messages)

    def _send_packet(
        self, conn: Connection, recipient: str, messages: list[Any], ack: bytes = b""
    ) -> bytes:
        """Seal and queue one packet; its nonce. Messages too many for one packet (over
        PACKET_FILL) go in several, in order; one too large for any packet is dropped, loudly."""
        nonce = os.urandom(NONCE_BYTES)
        packet = peer_pb2.PeerPacket(
            sender=self.node_id,
            recipient=recipient,
            seq=conn.sent_seq + 1,
            time_unix_nano=now_ns(),
            messages=messages,
            nonce=nonce,
            ack=ack,
        )
        payload = packet.SerializeToString()
        if len(payload) > PACKET_FILL:
            if len(messages) > 1:
                half = len(messages) // 2
                nonce = self._send_packet(conn, recipient, messages[:half], ack)
                self._send_packet(conn, recipient, messages[half:])
                return nonce
            if len(payload) > MAX_PACKET:
                log.error("not sending a %s of %d bytes to %s: too large for a packet",
                          messages[0].WhichOneof("body"), len(payload), recipient)  # fmt: skip
                return nonce
        self.packets_sent += 1
        conn.sent_seq += 1
        if conn.mac_send and messages[0].WhichOneof("body") != "hello":
            mac = hmac.digest(conn.mac_send, payload, "sha256")
            env = peer_pb2.Envelope(payload=payload, mac=mac)
        else:  # a Hello is always signed: it vouches for the stream's key share
            env = peer_pb2.Envelope(
                payload=payload,
                public_key=self.identity.public_key_bytes,
                signature=self.identity.sign(payload),
            )
        conn.queue.put_nowait(env)
        return nonce

    def _on_heartbeat(self, sender: str, heartbeat: Any) -> None:
        self._status[sender] = heartbeat

    def _on_peer_list(self, sender: str, peers: Any) -> None:
        self.gossip.heard(sender, [p.node_id for p in peers.peers])
        self.on_peer_list(peers)

    # -- receiving ----------------------------------------------------------------------

    def _open(self, conn: Connection, env: Any) -> Any:
        """Check one envelope from `conn`; return its PeerPacket or raise PeerProtocolError."""
        if len(env.payload) > MAX_PACKET:
            raise PeerProtocolError(f"a packet of {len(env.payload)} bytes", "oversized")
        if env.mac:
            sender = conn.node_id
            if not conn.mac_recv or not hmac.compare_digest(
                env.mac, hmac.digest(conn.mac_recv, env.payload, "sha256")
            ):
                raise PeerProtocolError(
                    f"a packet from {sender or 'a peer'} with a MAC that does not check", "forged"
                )
        else:
            try:
                sender = node_id_from_public_key(env.public_key)
            except Exception as e:
                raise PeerProtocolError(f"bad public key: {e}", "forged") from e
            if not verify(env.public_key, env.payload, env.signature):
                raise PeerProtocolError(f"bad signature on a packet from {sender}", "forged")
        try:
            packet = peer_pb2.PeerPacket.FromString(env.payload)
        except DecodeError as e:
            raise PeerProtocolError(f"{sender} sent an unreadable packet", "malformed") from e
        if packet.sender != sender:
            raise PeerProtocolError(
                f"{sender} sent a packet claiming to be from {packet.sender}", "forged"
            )
        # A dialer does not know whom it reached until the answer: its Hello is addressed to "".
        if packet.recipient != self.node_id and (conn.node_id or packet.recipient):
            raise PeerProtocolError(
                f"{sender} sent a packet meant for {packet.recipient}", "misaddressed"
            )
        if conn.node_id and sender != conn.node_id:
            raise PeerProtocolError(f"{sender} wrote on the stream of {conn.node_id}", "forged")
        if packet.seq <= conn.recv_seq:
            raise PeerProtocolError(f"{sender} replayed packet {packet.seq}", "replayed")
        if len(packet.nonce) != NONCE_BYTES:
            raise PeerProtocolError(f"{sender} sent a packet without a nonce", "malformed")
        verdict = self._nonces.check((sender, packet.nonce), packet.time_unix_nano, now_ns())
        if verdict == REPEATED:
            raise PeerProtocolError(f"{sender} sent a packet taken before", "replayed")
        if verdict is not None:
            off = abs(now_ns() - packet.time_unix_nano) / 1e9
            when = "ahead of" if verdict == FUTURE else "behind"
            raise PeerProtocolError(
                f"a packet from {sender} dated {off:.0f} s {when} this node's clock (peers "
                f"must be within {PACKET_WINDOW_S:.0f} s of each other)"
                if verdict != STALE or off > PACKET_WINDOW_S
                else f"a packet from {sender} dated before what this busy node still checks",
                "stale",
            )
        conn.recv_seq = packet.seq
        conn.last_recv = time.monotonic()
        return packet

    def _check_hello(self, conn: Connection, hello_env: Any) -> Any:
        """Check the peer's Hello packet (and, from a dialed node, that it answers ours)."""
        packet = self._open(conn, hello_env)
        if not packet.messages or packet.messages[0].WhichOneof("body") != "hello":
            raise PeerProtocolError("the first message on a peer stream must be Hello")
        if packet.sender == self.node_id:
            raise PeerProtocolError("connected to itself")
        if conn.outbound and packet.ack != conn.challenge:
            raise PeerProtocolError(
                f"{packet.sender}'s Hello does not answer ours (a replay?)", "replayed"
            )
        hello = packet.messages[0].hello
        if hello.api_version != API_VERSION:
            raise PeerProtocolError(
                f"peer {packet.sender} (bacalhaud {hello.version or '?'}) speaks API "
                f"{hello.api_version or 'unknown'}; this node speaks {API_VERSION}",
                "version",
            )
        return packet

    def _hello_for(self, conn: Connection) -> Any:
        """This node's Hello on `conn`: with the stream's own key share."""
        hello = peer_pb2.Hello()
        hello.CopyFrom(self._hello)
        hello.key_share = conn.key_share()
        conn.shared = True
        return hello

    def _admit(self, sender: str, source: str) -> None:
        """Whether a peer that sent a good Hello may have a stream: trusted (if a list is
        set), room under --max-peers, and not one of too many new identities from its address.
        Raises PeerProtocolError."""
        if self.trusted is not None and sender not in self.trusted:
            raise PeerProtocolError(
                f"{sender} is not one of this node's --trusted-peers", "untrusted"
            )
        if sender not in self._conns and len(self._conns) >= self.max_peers:
            raise PeerProtocolError(
                f"{sender} refused: this node has its --max-peers {self.max_peers} peers", "full"
            )
        if sender in self._seen_ids:
            return
        if len(self._seen_ids) >= _MAX_SEEN_IDS:  # bounded: forgotten, they count as new again
            self._seen_ids.clear()
        host = source.split(":", 1)[-1].rsplit(":", 1)[0] if source else ""
        now = time.monotonic()
        recent = [t for t in self._new_ids.get(host, []) if now - t < 60.0]
        if len(recent) >= NEW_IDS_PER_MINUTE:
            raise PeerProtocolError(
                f"{sender} refused: {len(recent)} new identities came from {host or '?'} in the "
                "last minute",
                "rate",
            )
        recent.append(now)
        self._new_ids[host] = recent
        if len(self._new_ids) > 4096:  # many addresses: keep those with recent arrivals
            self._new_ids = {h: ts for h, ts in self._new_ids.items() if ts and now - ts[-1] < 60.0}

    def _answer(self, conn: Connection, packet: Any) -> None:
        """Answer the peer's Hello packet: ours (dialed side) or a status (dialer), with `ack`;
        then, both Hellos having gone, make the stream's MAC keys if both carried a share (a
        Hello is always signed, so `_open` took the peer's only that way)."""
        if conn.outbound:
            status = peer_pb2.PeerMessage(heartbeat=self.status())
            self._send_packet(conn, packet.sender, [status], ack=packet.nonce)
        else:
            hello = peer_pb2.PeerMessage(hello=self._hello_for(conn))
            status = peer_pb2.PeerMessage(heartbeat=self.status())
            conn.challenge = self._send_packet(
                conn, packet.sender, [hello, status], ack=packet.nonce
            )
        conn.agree(packet.messages[0].hello.key_share)

    def _confirm(self, conn: Connection, packet: Any) -> None:
        """Check that the dialer's packet after its Hello answers ours."""
        if packet.ack != conn.challenge:
            raise PeerProtocolError(
                f"{packet.sender} did not answer this node's Hello (a replayed Hello?)",
                "replayed",
            )

    def _register(self, conn: Connection, hello_packet: Any) -> list[Any]:
        """Add the connection of a checked Hello; return messages that came with it."""
        conn.node_id = hello_packet.sender
        conn.hello = hello_packet.messages[0].hello
        conn.address = conn.hello.address or conn.address
        self._addresses[conn.node_id] = conn.address
        self._last_seen[conn.node_id] = now_ns()
        first = conn.node_id not in self._conns
        self._seen_ids.add(conn.node_id)
        self._conns.setdefault(conn.node_id, []).append(conn)
        log.info("peer %s connected (%s)", conn.node_id, conn.address)
        if first:
            self._exchange(conn.node_id)
            for cb in self.on_connect:
                cb(conn.node_id)
        extra = []
        for msg in hello_packet.messages[1:]:  # a status that came with the Hello is kept here
            if msg.WhichOneof("body") == "heartbeat":
                self._status[conn.node_id] = msg.heartbeat
            else:
                extra.append(msg)
        return extra

    def _unregister(self, conn: Connection) -> None:
        conns = self._conns.get(conn.node_id)
        if not conns or conn not in conns:
            return
        conns.remove(conn)
        if not conns:
            del self._conns[conn.node_id]
            self.gossip.forget(conn.node_id)
            log.info("peer %s disconnected", conn.node_id)
            if not self._closing:
                for cb in self.on_disconnect:
                    cb(conn.node_id)

    def refused(self, e: PeerProtocolError) -> None:
        for cb in self.on_reject:
            cb(e.reason)

    async def _read(self, conn: Connection, stream: AsyncIterator[Any]) -> None:
        async for env in stream:
            try:
                packet = self._open(conn, env)
            except PeerProtocolError as e:
                self.refused(e)
                raise
            self._last_seen[conn.node_id] = now_ns()
            for msg in packet.messages:
                self.dispatcher.dispatch(conn.node_id, msg)

    async def serve_stream(
        self, requests: AsyncIterator[Any], source: str = ""
    ) -> AsyncIterator[Any]:
        """The server side of Connect: yields what this node sends on the stream. `source` is
        the dialer's address as gRPC gives it ("ipv4:127.0.0.1:5555")."""
        conn = Connection(outbound=False)
        try:
            hello = self._check_hello(
                conn, await asyncio.wait_for(anext(requests), _HELLO_TIMEOUT_S)
            )
            self._admit(hello.sender, source)
            conn.node_id = hello.sender  # later packets must come from it
            self._answer(conn, hello)
            yield await conn.queue.get()  # our Hello, before waiting for the answer to it
            answer = self._open(conn, await asyncio.wait_for(anext(requests), _HELLO_TIMEOUT_S))
            self._confirm(conn, answer)
            extra = self._register(conn, hello)
        except PeerProtocolError as e:
            self.refused(e)
            log.warning("refused a peer stream: %s", e)
            return
        except (TimeoutError, StopAsyncIteration) as e:
            log.warning("refused a peer stream: %s", e or "its Hello, or the answer to ours, "
                        "did not come")  # fmt: skip
            return
        for msg in (*extra, *answer.messages):
            if msg.WhichOneof("body") == "heartbeat":
                self._status[conn.node_id] = msg.heartbeat
            else:
                self.dispatcher.dispatch(conn.node_id, msg)
        reader = asyncio.ensure_future(self._read_then_close(conn, requests))
        try:
            while (env := await conn.queue.get()) is not None:
                yield env
        finally:
            reader.cancel()
            self._unregister(conn)

    async def _read_then_close(self, conn: Connection, stream: AsyncIterator[Any]) -> None:
        try:
            await self._read(conn, stream)
        except PeerProtocolError as e:
            log.warning("closing the stream of %s: %s", conn.node_id, e)
        except (grpc.RpcError, asyncio.CancelledError):
            pass
        finally:
            conn.close()

    # -- dialing ------------------------------------------------------------------------

    def dial(self, address: str) -> None:
        """Keep a stream open to `address`, reconnecting with backoff while this node runs."""
        if address not in self._dialing:
            self._dialing.add(address)
            self._spawn(self._dial_forever(address, None))

    def discover(self, node_id: str, address: str) -> None:
        """Dial a node heard of from a peer (or remembered), unless already connected.

        Of two nodes that hear of each other, only the one with the smaller ID dials, so each
        pair shares one stream. Gives up on an address that stays unreachable for a minute.
        """
        if (
            node_id == self.node_id
            or node_id in self._conns
            or address in self._dialing
            or self.node_id > node_id
            or len(self._conns) >= self.max_peers
            or (self.trusted is not None and node_id not in self.trusted)
        ):
            return
        self._dialing.add(address)
        self._spawn(self._dial_forever(address, node_id))

    async def _dial_forever(self, address: str, expect: str | None) -> None:
        loop = asyncio.get_running_loop()
        backoff = _BACKOFF_MIN_S
        last_up = loop.time()
        try:
            while not self._closing:
                if expect is not None:
                    if expect in self._conns:  # reached by another stream meanwhile
                        return
                    if loop.time() - last_up > _DISCOVERED_PATIENCE_S:
                        log.info("giving up on %s (%s): unreachable", expect, address)
                        return
                started = loop.time()
                try:
                    await self._dial_once(address)
                    last_up = loop.time()
                except PeerProtocolError as e:
                    log.warning("peer %s: %s", address, e)
                except grpc.RpcError as e:
                    log.debug("peer %s: %s", address, e.code() if hasattr(e, "code") else e)
                if self._closing:
                    return
                if loop.time() - started > 5.0:
                    backoff = _BACKOFF_MIN_S  # it was up for a while: a fresh failure
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
        finally:
            self._dialing.discard(address)

    async def _dial_once(self, address: str) -> None:
        conn = Connection(outbound=True, address=address)
        channel = self.channel(address)
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        # We do not know who answers until its Hello arrives; our Hello is addressed to "".
        opening = [
            peer_pb2.PeerMessage(hello=self._hello_for(conn)),
            peer_pb2.PeerMessage(heartbeat=self.status()),  # the dialled side learns it at once
        ]
        conn.challenge = self._send_packet(conn, "", opening)

        async def outgoing() -> AsyncIterator[Any]:
            while (env := await conn.queue.get()) is not None:
                yield env

        call = stub.Connect(outgoing())
        conn.call = call
        try:
            first = await asyncio.wait_for(call.read(), _HELLO_TIMEOUT_S)
            if first is grpc.aio.EOF:
                raise PeerProtocolError("the peer closed the stream before Hello")
            hello = self._check_hello(conn, first)
            if self.trusted is not None and hello.sender not in self.trusted:
                raise PeerProtocolError(
                    f"{hello.sender} at {address} is not one of this node's --trusted-peers",
                    "untrusted",
                )
            self._answer(conn, hello)
            for msg in self._register(conn, hello):
                self.dispatcher.dispatch(conn.node_id, msg)
            try:
                await self._read(conn, _reads(call))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closing or (task is not None and task.cancelling()):
                    raise
                # The call was cancelled here (the peer stopped answering): dial again.
            finally:
                self._unregister(conn)
        finally:
            conn.close()

    def channel(self, address: str) -> grpc.aio.Channel:
        """A shared channel to `address`."""
        ch = self._channels.get(address)
        if ch is None:
            ch = (
                grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
                if self.tls is None
                else grpc.aio.secure_channel(address, self.tls, options=CHANNEL_OPTIONS)
            )
            self._channels[address] = ch
        return ch

    def channel_to(self, node_id: str) -> grpc.aio.Channel | None:
        address = self._addresses.get(node_id)
        return None if address is None else self.channel(address)

    # -- liveness and peer exchange -----------------------------------------------------

    def start(self) -> None:
        """Start the heartbeat loop (call once, on the event loop)."""
        self._spawn(self._heartbeats())

    async def _heartbeats(self) -> None:
        while not self._closing:
            await asyncio.sleep(HEARTBEAT_S)
            now = time.monotonic()
            for node_id, conns in list(self._conns.items()):
                for conn in list(conns):
                    if now - conn.last_recv > DEAD_AFTER_S:
                        log.warning("peer %s stopped answering: closing its stream", node_id)
                        self._unregister(conn)
                        conn.close()
                if node_id in self._conns:
                    self.send(node_id, heartbeat=self.status())

    def _exchange(self, new: str) -> None:
        """Tell a newly connected peer whom we know, and the others about it."""
        known = [
            peer_pb2.PeerAddress(node_id=nid, address=self._addresses.get(nid, ""))
            for nid in self._conns
            if nid != new and self._addresses.get(nid)
        ]
        if known:
            self.send(new, peer_list=peer_pb2.PeerList(peers=known))
        entry = peer_pb2.PeerList(
            peers=[peer_pb2.PeerAddress(node_id=new, address=self._addresses.get(new, ""))]
        )
        for nid in self._conns:
            if nid != new:
                self.send(nid, peer_list=entry)

    def on_peer_list(self, peers: Any) -> None:
        for p in peers.peers:
            if p.node_id and p.address and p.node_id != self.node_id:
                self._addresses.setdefault(p.node_id, p.address)
                if self.exchange:
                    self.discover(p.node_id, p.address)

    # -- state --------------------------------------------------------------------------

    def addresses(self) -> dict[str, str]:
        """Every node this one has an address for: peers, and nodes peers told it about."""
        return dict(self._addresses)

    def status_of(self, node_id: str) -> Any:
        """The last Heartbeat of a connected peer, or None."""
        return self._status.get(node_id) if node_id in self._conns else None

    def hello_of(self, node_id: str) -> Any:
        """The Hello a connected peer sent, or None."""
        conns = self._conns.get(node_id)
        return conns[0].hello if conns else None

    def last_seen(self, node_id: str) -> int:
        return self._last_seen.get(node_id, 0)

    def known(self) -> list[str]:
        """The nodes this one has an address of (connected now or before)."""
        return list(self._addresses)

    def connected(self) -> list[str]:
        return sorted(self._conns)

    def is_connected(self, node_id: str) -> bool:
        return node_id == self.node_id or node_id in self._conns

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for conns in list(self._conns.values()):
            for conn in conns:
                conn.close()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for ch in self._channels.values():
            await ch.close()


async def _reads(call: Any) -> AsyncIterator[Any]:
    """A stream call's responses via read() (grpc forbids mixing read() and iteration)."""
    while (item := await call.read()) is not grpc.aio.EOF:
        yield item
