"""Fuzz targets for the decoders, shared by tests/test_decoders.py (hypothesis, bounded) and
tools/fuzz (a million inputs).

Each target feeds one input to a decoder and checks what it may do: return (and then round-trip,
where an encoder exists), or raise one of its documented errors. Anything else (IndexError,
struct.error, a bare ValueError, UnicodeDecodeError, TypeError, RecursionError, MemoryError) is
a bug, and so is a compiled decoder that disagrees with its pure twin.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError as ProtobufDecodeError

from bacalhau._fast import _dagpb_py
from bacalhau.content import car, dag
from bacalhau.content.cid import CID, DAG_PB, RAW, _b32decode, b58decode, b58encode
from bacalhau.content.errors import CorruptData, InvalidCID, UnsupportedCID

try:
    from bacalhau._fast import _dagpb as _compiled  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only when built without Cython
    _compiled = None

TWINS = [m for m in (_dagpb_py, _compiled) if m is not None]


class Disagreement(AssertionError):
    """The compiled decoder and its pure twin answered differently."""


@dataclass(frozen=True)
class Target:
    """A decoder under test: `run(data)` may raise only `allowed` (and returns nothing)."""

    name: str
    run: Callable[[bytes], None]
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]


# -- CIDs and multibase ------------------------------------------------------------------------


def _digest(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(4, "big")).digest()


def _cid_seeds() -> list[bytes]:
    return [
        bytes(CID(0, DAG_PB, _digest(0))),
        bytes(CID(1, DAG_PB, _digest(1))),
        bytes(CID(1, RAW, _digest(2))),
        bytes(CID(1, 0x71, _digest(3))),
        bytes(CID(1, 0x300, _digest(4))),
    ]


def cid_bytes(data: bytes) -> None:
    """A binary CID: parsed whole, it is exactly its own encoding, in every text form too."""
    cid = CID.from_bytes(data)
    assert bytes(cid) == data, (bytes(cid), data)
    assert CID.decode(str(cid)) == cid
    if cid.version == 1:
        assert CID.decode(cid.encode("z")) == cid
        assert CID.decode("f" + bytes(cid).hex()) == cid
    # A CID read inside a longer buffer ends where it ends.
    assert CID.read(data + b"tail", 0) == (cid, len(data))


def _text(data: bytes) -> str:
    # Command lines and gRPC strings: any code point, lone surrogates too.
    return data.decode("utf-8", "surrogateescape")


def _cid_text_seeds() -> list[bytes]:
    out = []
    for raw in _cid_seeds():
        cid = CID.from_bytes(raw)
        out.append(str(cid).encode())
        if cid.version == 1:
            out += [cid.encode("z").encode(), ("f" + raw.hex()).encode(), str(cid).upper().encode()]
    return out


def cid_text(data: bytes) -> None:
    """A CID string: parsed, it prints as a string that parses to the same CID."""
    text = _text(data)
    cid = CID.parse(text)
    assert CID.decode(str(cid)) == cid
    assert CID.from_bytes(bytes(cid)) == cid


def multibase(data: bytes) -> None:
    """base58btc and base32 text, and base58 of bytes, both ways."""
    text = _text(data)[:200]  # base58 is quadratic: CID.decode refuses long text first
    try:
        raw = b58decode(text)
    except InvalidCID:
        pass
    else:
        assert b58encode(raw) == text
    with contextlib.suppress(InvalidCID):
        _b32decode(text)
    assert b58decode(b58encode(data[:64])) == data[:64]


# -- dag-pb, UnixFS and DAG nodes --------------------------------------------------------------


def _outcome(fn: Callable[[Any], Any], module: Any, data: bytes) -> Any:
    try:
        return ("ok", fn(module)(data))
    except module.DecodeError as e:
        return ("DecodeError", str(e))


def _twins(name: str, data: bytes) -> Any:
    """Run `name` on both twins; they must give the same result or the same DecodeError."""
    outcomes = [_outcome(lambda m: getattr(m, name), m, data) for m in TWINS]
    if any(o != outcomes[0] for o in outcomes):
        raise Disagreement(f"{name}: compiled and pure differ: {outcomes}")
    if outcomes[0][0] != "ok":
        raise _dagpb_py.DecodeError(outcomes[0][1])
    return outcomes[0][1]


def _node_seeds() -> list[bytes]:
    d = _digest
    cid0, cid1 = bytes(CID(0, DAG_PB, d(5))), bytes(CID(1, RAW, d(6)))
    prefix, suffix = _dagpb_py.leaf_envelope(5)
    return [
        prefix + b"hello" + suffix,
        _dagpb_py.leaf_envelope(0)[0],
        _dagpb_py.file_node([(cid0, 300, 200), (cid1, 262144, 262144)]),
        _dagpb_py.dir_node([(b"a.txt", cid0, 12), (b"sub", cid1, 3000)]),
        _dagpb_py.dir_node([]),
        _dagpb_py.symlink_node(b"../target"),
    ]


def dagpb_node(data: bytes) -> None:
    """decode_node: both twins agree; links have a hash; what a node's Data holds is the
    business of decode_unixfs."""
    links, payload = _twins("decode_node", data)
    assert all(isinstance(c, bytes) and c for c, _, _ in links)
    assert all(0 <= t < 1 << 64 for _, _, t in links)
    assert payload is None or isinstance(payload, bytes)


def _unixfs_seeds() -> list[bytes]:
    out = []
    for node in _node_seeds():
        _, data = _dagpb_py.decode_node(node)
        if data is not None:
            out.append(data)
    out.append(b"\x08\x02\x18\x05\x22\x02\x05\x00")  # packed blocksizes
    return out


def unixfs(data: bytes) -> None:
    """decode_unixfs: both twins agree; every number fits 64 bits."""
    utype, payload, filesize, blocksizes = _twins("decode_unixfs", data)
    assert 0 <= utype < 1 << 64
    assert filesize is None or 0 <= filesize < 1 << 64
    assert all(0 <= b < 1 << 64 for b in blocksizes)
    assert payload is None or isinstance(payload, bytes)


def varint(data: bytes) -> None:
    """read_varint at every position: both twins agree, and a value re-encodes to its bytes
    when it was minimally encoded."""
    for pos in range(-1, min(len(data), 12) + 1):
        try:
            value, end = _twins_call("read_varint", data, pos)
        except _dagpb_py.DecodeError:
            continue
        assert 0 <= value < 1 << 64 and pos < end <= pos + 10
        if data[end - 1] or end - pos == 1:
            assert _dagpb_py.varint(value) == data[pos:end]


def _twins_call(name: str, *args: Any) -> Any:
    outcomes = []
    for m in TWINS:
        try:
            outcomes.append(("ok", getattr(m, name)(*args)))
        except m.DecodeError as e:
            outcomes.append(("DecodeError", str(e)))
    if any(o != outcomes[0] for o in outcomes):
        raise Disagreement(f"{name}{args!r}: compiled and pure differ: {outcomes}")
    if outcomes[0][0] != "ok":
        raise _dagpb_py.DecodeError(outcomes[0][1])
    return outcomes[0][1]


def dag_node(data: bytes) -> None:
    """dag.decode of a block under a dag-pb CID (what reading a DAG back does)."""
    node = dag.decode(bytes(CID(1, DAG_PB, _digest(7))), data)
    for link in node.links:
        with contextlib.suppress(InvalidCID, UnsupportedCID):  # parsed when followed
            CID.from_bytes(link.cid)


# -- CAR ---------------------------------------------------------------------------------------


def _car_seeds() -> list[bytes]:
    out = []
    blocks = [(bytes(CID(1, RAW, hashlib.sha256(b).digest())), b) for b in (b"a", b"bc")]
    root = CID.from_bytes(blocks[0][0])
    for roots, body in (([root], blocks), ([], []), ([root, CID.from_bytes(blocks[1][0])], blocks)):
        f = io.BytesIO()
        car.write_car(f, roots, body)
        out.append(f.getvalue())
    return out


def car_file(data: bytes) -> None:
    """read_car and its sections: what reads back writes out to the same archive."""
    roots, sections = car.read_car(io.BytesIO(data))
    blocks = list(sections)
    for cid, block in blocks:
        dag.check_block(cid, block)
    out = io.BytesIO()
    car.write_car(out, roots, blocks)
    again_roots, again = car.read_car(io.BytesIO(out.getvalue()))
    assert again_roots == roots and list(again) == blocks


def car_header(data: bytes) -> None:
    """decode_header: the roots it gives encode to a header that decodes to them."""
    roots = car.decode_header(data)
    assert car.decode_header(car.encode_header(roots)) == roots


# -- signed peer envelopes ---------------------------------------------------------------------


@functools.cache
def _peers() -> tuple[Any, Any, Any]:
    """(sender identity, receiving Network, a valid envelope from sender to receiver)."""
    from bacalhau._pb.bacalhau.v1 import peer_pb2
    from bacalhau.identity import Identity
    from bacalhau.network import Network
    from bacalhau.network.dispatch import ANY_PEER
    from bacalhau.network.peers import API_VERSION

    # Fixed keys: runs are reproducible.
    sender = Identity.from_seed(hashlib.sha256(b"fuzz sender").digest())
    receiver = Identity.from_seed(hashlib.sha256(b"fuzz receiver").digest())
    hello = peer_pb2.Hello(node_id=receiver.node_id, version="fuzz", api_version=API_VERSION)
    net = Network(receiver, hello)
    for kind in ("announce", "bid", "bid_decision", "execution_update", "result_decision",
                 "cancel", "sync", "log"):  # fmt: skip
        net.dispatcher.register(kind, lambda sender, body: None, ANY_PEER)
    return sender, net, peer_pb2


def _packet_seeds() -> list[bytes]:
    sender, net, pb = _peers()
    bid = pb.PeerMessage(bid=pb.Bid(job_id="j-1", shard=2, willing=True, queued=3))
    hello = pb.PeerMessage(hello=pb.Hello(node_id=sender.node_id, api_version="v1"))
    out = []
    cases = ((net.node_id, [bid]), ("", [hello]), (net.node_id, [bid, bid]))
    for i, (recipient, messages) in enumerate(cases):
        # Fresh (a packet's time must be near the receiver's clock) with a nonce of its own.
        packet = pb.PeerPacket(sender=sender.node_id, recipient=recipient, seq=1,
                               messages=messages, message_id=f"m-{i}",
                               nonce=hashlib.sha256(b"nonce %d" % i).digest()[:16],
                               time_unix_nano=time.time_ns())  # fmt: skip
        out.append(packet.SerializeToString())
    return out


def _receiver() -> Any:
    """The receiving Network, forgetting the packets it took (every input is judged alone)."""
    from bacalhau.network.peers import _MAX_NONCES, PACKET_WINDOW_S
    from bacalhau.replay import ReplayWindow

    _, net, _ = _peers()
    net._nonces = ReplayWindow(int(PACKET_WINDOW_S * 1e9), _MAX_NONCES)
    net.gossip._seen = ReplayWindow(net.gossip._seen.window, net.gossip._seen.max_keys)
    return net


def signed_packet(data: bytes) -> None:
    """A payload signed by the key it comes with: Network._open accepts it or refuses it with
    PeerProtocolError, and never raises anything else; so does gossip carrying it."""
    from bacalhau.network.peers import Connection

    sender, _, pb = _peers()
    net = _receiver()
    env = pb.Envelope(payload=data, public_key=sender.public_key_bytes, signature=sender.sign(data))
    try:
        net._open(Connection(outbound=False), env)
    finally:
        net.gossip.receive("fuzz", pb.Gossip(envelope=env.SerializeToString(), hops=1))


def _envelope_seeds() -> list[bytes]:
    sender, _, pb = _peers()
    return [
        pb.Envelope(
            payload=p, public_key=sender.public_key_bytes, signature=sender.sign(p)
        ).SerializeToString()
        for p in _packet_seeds()
    ]


def envelope(data: bytes) -> None:
    """Envelope bytes off the wire (forged or mangled): protobuf's DecodeError, or
    PeerProtocolError from Network._open; gossip of the same bytes never raises."""
    from bacalhau.network.peers import Connection

    _, _, pb = _peers()
    net = _receiver()
    net.gossip.receive("fuzz", pb.Gossip(envelope=data, hops=1))
    net._open(Connection(outbound=False), pb.Envelope.FromString(data))


def _peer_errors() -> tuple[type[BaseException], ...]:
    from bacalhau.network import PeerProtocolError

    return (PeerProtocolError,)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("cid-bytes", cid_bytes, (InvalidCID, UnsupportedCID), _cid_seeds),
        Target("cid-text", cid_text, (InvalidCID, UnsupportedCID), _cid_text_seeds),
        Target("multibase", multibase, (), _cid_text_seeds),
        Target("varint", varint, (_dagpb_py.DecodeError,), _cid_seeds),
        Target("dagpb", dagpb_node, (_dagpb_py.DecodeError,), _node_seeds),
        Target("unixfs", unixfs, (_dagpb_py.DecodeError,), _unixfs_seeds),
        Target("dag", dag_node, (CorruptData, UnsupportedCID), _node_seeds),
        Target("car", car_file, (CorruptData,), _car_seeds),
        Target("car-header", car_header, (CorruptData,), lambda: [s[1:] for s in _car_seeds()]),
        Target("packet", signed_packet, _peer_errors(), _packet_seeds),
        Target("envelope", envelope, (ProtobufDecodeError, *_peer_errors()), _envelope_seeds),
    ]
}


def check(target: Target, data: bytes) -> None:
    """Run one input; raise AssertionError('TARGET: KIND: detail') for a bug, else return."""
    try:
        target.run(data)
    except target.allowed:
        pass
    except Disagreement as e:
        raise AssertionError(f"{target.name}: twins disagree: {e}") from e
    except AssertionError as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
        detail = f"{where.line} ({e})" if str(e) else where.line
        raise AssertionError(f"{target.name}: property broken: {detail}") from e
    except Exception as e:  # IndexError, RecursionError, MemoryError...: the bugs looked for
        raise AssertionError(f"{target.name}: {type(e).__name__}: {e}") from e


# -- mutation ----------------------------------------------------------------------------------

_INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x20, 0x70, 0x55, 0xD8, 0x2A, 0xA2]


def mutate(rnd: random.Random, seed: bytes, other: bytes) -> bytes:
    """A few random edits of `seed` (flips, interesting bytes, inserts, cuts, splices)."""
    data = bytearray(seed)
    for _ in range(rnd.choice((1, 1, 2, 3, 5))):
        op = rnd.randrange(8)
        pos = rnd.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rnd.randrange(8)
        elif op == 1 and data:
            data[min(pos, len(data) - 1)] = rnd.choice(_INTERESTING)
        elif op == 2:
            data[pos:pos] = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 8)))
        elif op == 3:
            del data[pos : pos + rnd.randint(1, 16)]
        elif op == 4:
            del data[pos:]
        elif op == 5 and other:
            i = rnd.randrange(len(other))
            data[pos:pos] = other[i : i + rnd.randint(1, 40)]
        elif op == 6:
            data[pos:pos] = bytes([rnd.choice((0x80, 0xFF))] * rnd.randint(1, 12))
        else:
            data[pos:pos] = data[pos : pos + rnd.randint(1, 32)]
    return bytes(data)


def inflate(rnd: random.Random, data: bytes) -> bytes:
    """`data` with one slice of it repeated up to about 256 KiB: slow paths (quadratic
    decoding, deep nesting, huge counts) show up only on large inputs."""
    if not data:
        return b"\x80" * rnd.randint(1, 1 << 18)
    pos = rnd.randrange(len(data))
    piece = data[pos : pos + rnd.randint(1, 8)]
    return data[:pos] + piece * (rnd.randint(1, 1 << 18) // len(piece)) + data[pos:]


def generate(rnd: random.Random, seeds: list[bytes]) -> bytes:
    """One input: a mutated seed most of the time, a large one now and then, else random."""
    r = rnd.random()
    if seeds and r < 0.8:
        return mutate(rnd, rnd.choice(seeds), rnd.choice(seeds))
    if seeds and r < 0.802:
        return inflate(rnd, rnd.choice(seeds))
    return bytes(rnd.getrandbits(8) for _ in range(rnd.choice((0, 1, 2, 4, 8, 34, 40, 64, 200))))
