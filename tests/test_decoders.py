"""Property tests of the decoders against arbitrary and mutated input (tests/_fuzz.py holds the
targets; tools/fuzz runs a million inputs through them), round trips where an encoder exists,
and one regression test for each bug the fuzzing found."""

from __future__ import annotations

import hashlib
import io
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bacalhau._fast import _dagpb_py
from bacalhau.content import car
from bacalhau.content.cid import CID, DAG_PB, MAX_CID_TEXT, RAW, b58decode, b58encode
from bacalhau.content.errors import CorruptData, InvalidCID
from bacalhau.identity import IdentityError, public_key_from_node_id
from tests import _fuzz

# Bounded and deterministic: the same examples on every run, no example database.
bounded = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def run(name: str, data: bytes) -> None:
    _fuzz.check(_fuzz.TARGETS[name], data)


def mutated(name: str) -> st.SearchStrategy[bytes]:
    """Valid inputs of a target, mutated (the same mutator as tools/fuzz)."""
    seeds = _fuzz.TARGETS[name].seeds()
    return st.randoms(use_true_random=False).map(
        lambda rnd: _fuzz.mutate(rnd, rnd.choice(seeds), rnd.choice(seeds))
    )


TARGETS = sorted(_fuzz.TARGETS)


@pytest.mark.parametrize("name", TARGETS)
def test_valid_seeds_pass(name: str) -> None:
    # The seeds decode without error (else the targets would test only error paths).
    target = _fuzz.TARGETS[name]
    for seed in target.seeds():
        target.run(seed)


@pytest.mark.parametrize("name", TARGETS)
@bounded
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_documented_errors(name: str, data: bytes) -> None:
    run(name, data)


@pytest.mark.parametrize("name", TARGETS)
@bounded
@given(data=st.data())
def test_mutated_inputs_raise_only_documented_errors(name: str, data: st.DataObject) -> None:
    run(name, data.draw(mutated(name)))


def test_the_checker_catches_what_it_should() -> None:
    # A leak of a non-documented error, and a broken property, are both reported.
    def leaky(data: bytes) -> None:
        raise IndexError("index out of range")

    def wrong(data: bytes) -> None:
        assert data == b"x"

    for fn, kind in ((leaky, "IndexError"), (wrong, "property broken")):
        with pytest.raises(AssertionError, match=kind):
            _fuzz.check(_fuzz.Target("t", fn, (CorruptData,), list), b"")


# -- round trips -------------------------------------------------------------------------------

digests = st.binary(min_size=32, max_size=32)
codecs = st.sampled_from([DAG_PB, RAW, 0x71]) | st.integers(0, (1 << 63) - 1)


@bounded
@given(digests, codecs)
def test_cid_round_trips(digest: bytes, codec: int) -> None:
    cid = CID(1, codec, digest)
    assert CID.from_bytes(bytes(cid)) == cid and CID.decode(str(cid)) == cid
    assert CID.decode(cid.encode("z")) == cid
    assert len(str(cid)) <= MAX_CID_TEXT and len("f" + bytes(cid).hex()) <= MAX_CID_TEXT
    v0 = CID(0, DAG_PB, digest)
    assert CID.decode(str(v0)) == v0 == CID.from_bytes(bytes(v0))


@bounded
@given(st.binary(max_size=80))
def test_base58_round_trips(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data


names = st.binary(min_size=0, max_size=40)
hashes = st.binary(min_size=1, max_size=40)
sizes = st.integers(0, (1 << 64) - 1)


@bounded
@given(st.lists(st.tuples(names, hashes, sizes), max_size=8))
def test_dir_node_round_trips(entries: list[tuple[bytes, bytes, int]]) -> None:
    block = _dagpb_py.dir_node(entries)
    for m in _fuzz.TWINS:
        assert m.dir_node(entries) == block
        links, data = m.decode_node(block)
        assert links == [(cid, name, tsize) for name, cid, tsize in entries]
        assert m.decode_unixfs(data)[0] == _dagpb_py.T_DIRECTORY


@bounded
@given(st.lists(st.tuples(hashes, sizes, st.integers(0, (1 << 56) - 1)), min_size=1, max_size=8))
def test_file_node_round_trips(children: list[tuple[bytes, int, int]]) -> None:
    block = _dagpb_py.file_node(children)
    for m in _fuzz.TWINS:
        assert m.file_node(children) == block
        links, data = m.decode_node(block)
        assert links == [(cid, b"", tsize) for cid, tsize, _ in children]
        utype, payload, filesize, blocksizes = m.decode_unixfs(data)
        assert (utype, payload) == (_dagpb_py.T_FILE, None)
        assert blocksizes == [f for _, _, f in children] and filesize == sum(blocksizes)


@bounded
@given(st.binary(max_size=2000))
def test_leaf_and_symlink_round_trip(chunk: bytes) -> None:
    prefix, suffix = _dagpb_py.leaf_envelope(len(chunk))
    for m in _fuzz.TWINS:
        links, data = m.decode_node(prefix + chunk + suffix)
        assert links == []
        utype, payload, filesize, _ = m.decode_unixfs(data)
        assert (utype, payload or b"", filesize) == (_dagpb_py.T_FILE, chunk, len(chunk))
        links, data = m.decode_node(m.symlink_node(chunk))
        assert m.decode_unixfs(data)[:2] == (_dagpb_py.T_SYMLINK, chunk)


@bounded
@given(st.lists(st.binary(max_size=300), max_size=6), st.integers(0, 3))
def test_car_round_trips(payloads: list[bytes], n_roots: int) -> None:
    blocks = [(bytes(CID(1, RAW, hashlib.sha256(p).digest())), p) for p in payloads]
    roots = [CID.from_bytes(c) for c, _ in blocks[:n_roots]]
    out = io.BytesIO()
    assert car.write_car(out, roots, blocks) == len(blocks)
    got_roots, sections = car.read_car(io.BytesIO(out.getvalue()))
    assert got_roots == roots and list(sections) == blocks


# -- what the fuzzing found --------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\xff" * 9 + b"\x02",  # the tenth byte adds more than the 64th bit
        b"\x80" * 9 + b"\x7f",
        b"\xff" * 10 + b"\x01",  # eleven bytes
    ],
)
def test_varints_past_64_bits_are_refused_by_both_twins(data: bytes) -> None:
    # Found by fuzzing: the pure twin returned a number over 2**64 (2**70 - 1 for the first),
    # the compiled one wrapped it to 64 bits, so a dag-pb node decoded differently in each.
    for m in _fuzz.TWINS:
        with pytest.raises(m.DecodeError, match="longer than 64 bits"):
            m.read_varint(data, 0)
        with pytest.raises(m.DecodeError):
            m.decode_unixfs(b"\x08" + data)
    assert [m.read_varint(b"\xff" * 9 + b"\x01", 0) for m in _fuzz.TWINS] == [
        ((1 << 64) - 1, 10)
    ] * len(_fuzz.TWINS)


def test_read_varint_refuses_a_negative_position() -> None:
    # The compiled twin indexes without bounds checks: a negative position read memory before
    # the buffer; the pure one read from its end. Both refuse it now.
    for m in _fuzz.TWINS:
        with pytest.raises(m.DecodeError, match="negative position"):
            m.read_varint(b"\x01\x02", -1)


def test_unixfs_type_over_63_bits_decodes_the_same_in_both_twins() -> None:
    # Found by fuzzing: the compiled twin kept Type in a signed 64-bit integer, so 2**63 and
    # above read as negative, i.e. "no Type", while the pure twin returned the number.
    data = b"\x08" + _dagpb_py.varint(1 << 63) + b"\x18\x00"
    assert [m.decode_unixfs(data)[0] for m in _fuzz.TWINS] == [1 << 63] * len(_fuzz.TWINS)
    for m in _fuzz.TWINS:
        with pytest.raises(m.DecodeError, match="without a Type"):
            m.decode_unixfs(b"\x18\x00")


@pytest.mark.parametrize(
    ("header", "says"),
    [
        # {"roots": [], [] : 1}: a list as a map key (TypeError: unhashable type: 'list')
        (b"\xa2\x65roots\x80\x80\x01", "map key that is not a string"),
        # {{}: 1}: a map as a key (unhashable type: 'dict')
        (b"\xa1\xa0\x01", "map key that is not a string"),
        # {1: 1}: an integer key, legal CBOR but not dag-cbor
        (b"\xa1\x01\x01", "map key that is not a string"),
        # {"version": 1, "version": 1, "roots": []}: a repeated key
        (b"\xa3\x67version\x01\x67version\x01\x65roots\x80", "repeats the key 'version'"),
        # {"roots": [], "version": true}: true == 1 in Python, but it is not version 1
        (b"\xa2\x65roots\x80\x67version\xf5", "no version 1"),
    ],
)
def test_malformed_car_headers_are_corrupt_data(header: bytes, says: str) -> None:
    with pytest.raises(CorruptData, match=says):
        car.decode_header(header)
    with pytest.raises(CorruptData, match=says):
        car.read_car(io.BytesIO(_dagpb_py.varint(len(header)) + header))


@pytest.mark.parametrize(
    "raw",
    [
        b"\x81\x00\x70\x12\x20",  # version 1 written in two bytes
        b"\x01\xf0\x00\x12\x20",  # codec dag-pb written in two bytes
        b"\x01\x70\x92\x00\x20",  # hash function in two bytes
        b"\x01\x70\x12\xa0\x00",  # digest length in two bytes
    ],
)
def test_cids_with_non_minimal_varints_are_invalid(raw: bytes) -> None:
    # Found by fuzzing (the round-trip property): these parsed, as a CID whose bytes differ
    # from the input, so one CID had several binary forms. Multiformats varints are minimal.
    with pytest.raises(InvalidCID, match="not minimally encoded"):
        CID.from_bytes(raw + bytes(32))


def test_long_cid_text_is_refused_before_decoding() -> None:
    # Found by fuzzing (a hang): base58 decoding is quadratic, and 300,000 characters of a
    # 'z' CID took 17 s (a megabyte: minutes) before failing. Refused at once now.
    for text in ("z" + "2" * 1_000_000, "b" + "a" * 1_000_000, "Qm" + "2" * (MAX_CID_TEXT - 1)):
        with pytest.raises(InvalidCID, match="too long for a CID"):
            CID.decode(text)
        with pytest.raises(InvalidCID, match="too long for a CID"):
            CID.parse(text)
    with pytest.raises(IdentityError, match="too long"):
        public_key_from_node_id("1" * 1_000_000)


def test_fuzz_generate_is_reproducible() -> None:
    seeds = _fuzz.TARGETS["car"].seeds()
    a = [_fuzz.generate(random.Random("x"), seeds) for _ in range(50)]
    b = [_fuzz.generate(random.Random("x"), seeds) for _ in range(50)]
    assert a == b
