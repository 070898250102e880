"""Node identity: the key file, libp2p peer IDs, signatures."""

from __future__ import annotations

import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bacalhau.errors import BacalhauError
from bacalhau.identity import (
    KEY_FILE,
    Identity,
    IdentityError,
    node_id_from_public_key,
    public_key_from_node_id,
    verify,
)

# libp2p specs, peer-ids/peer-ids.md, "Test vectors": the Ed25519 private key (PrivateKey protobuf,
# Data = seed || public key) and its public key (PublicKey protobuf).
SPEC_PRIVATE_KEY = bytes.fromhex(
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"
    "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
SPEC_PUBLIC_KEY = bytes.fromhex(
    "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
# The peer ID of that key, as other libp2p implementations (rust-libp2p's vector) derive it.
SPEC_PEER_ID = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"
# The spec's example of an Ed25519 peer ID ("String representation").
SPEC_EXAMPLE_ID = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"


def test_spec_vector() -> None:
    seed, pub = SPEC_PRIVATE_KEY[4:36], SPEC_PRIVATE_KEY[36:]
    identity = Identity.from_seed(seed)
    assert identity.public_key_bytes == pub == SPEC_PUBLIC_KEY[4:]
    assert identity.node_id == SPEC_PEER_ID
    assert node_id_from_public_key(pub) == SPEC_PEER_ID
    assert public_key_from_node_id(SPEC_PEER_ID) == pub


def test_spec_example_id_roundtrips() -> None:
    pub = public_key_from_node_id(SPEC_EXAMPLE_ID)
    assert len(pub) == 32
    assert node_id_from_public_key(pub) == SPEC_EXAMPLE_ID


def test_key_created_with_mode_0600_and_persists(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    first = Identity.load_or_create(data_dir)
    key = data_dir / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 32
    second = Identity.load_or_create(data_dir)
    assert second.node_id == first.node_id
    assert second.public_key_bytes == first.public_key_bytes
    assert [p.name for p in data_dir.iterdir()] == [KEY_FILE]  # no temp file left behind


def test_existing_key_is_loaded_not_overwritten(tmp_path: Path) -> None:
    seed = SPEC_PRIVATE_KEY[4:36]
    (tmp_path / KEY_FILE).write_bytes(seed)
    assert Identity.load_or_create(tmp_path).node_id == SPEC_PEER_ID
    assert (tmp_path / KEY_FILE).read_bytes() == seed


def test_loser_of_a_creation_race_loads_the_winners_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner = SPEC_PRIVATE_KEY[4:36]
    real_generate = Identity.generate

    def generate_after_competitor() -> Identity:
        # Another process writes its key after our failed read and before our link.
        (tmp_path / KEY_FILE).write_bytes(winner)
        return real_generate()

    monkeypatch.setattr(Identity, "generate", generate_after_competitor)
    assert Identity.load_or_create(tmp_path).node_id == SPEC_PEER_ID
    assert (tmp_path / KEY_FILE).read_bytes() == winner
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]


def test_concurrent_creators_agree(tmp_path: Path) -> None:
    n = 8
    barrier = threading.Barrier(n)

    def create(_: int) -> str:
        barrier.wait()
        return Identity.load_or_create(tmp_path).node_id

    with ThreadPoolExecutor(n) as pool:
        ids = set(pool.map(create, range(n)))
    assert len(ids) == 1
    assert Identity.load_or_create(tmp_path).node_id in ids


@pytest.mark.parametrize("content", [b"", b"short", b"x" * 33, b"-----BEGIN PRIVATE KEY-----\n"])
def test_corrupt_key_file_is_a_one_line_error(tmp_path: Path, content: bytes) -> None:
    key = tmp_path / KEY_FILE
    key.write_bytes(content)
    with pytest.raises(IdentityError) as info:
        Identity.load_or_create(tmp_path)
    err = info.value
    assert isinstance(err, BacalhauError)
    assert str(key) in err.message and "corrupt" in err.message
    assert err.hint and "\n" not in str(err)
    assert key.read_bytes() == content  # never replaced


def test_unreadable_key_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).mkdir()
    with pytest.raises(IdentityError, match="cannot read node key") as info:
        Identity.load_or_create(tmp_path)
    assert "\n" not in str(info.value)


def test_node_id_shape_and_roundtrip() -> None:
    identity = Identity.generate()
    node_id = identity.node_id
    assert node_id.startswith("12D3KooW")
    assert len(node_id) == 52
    assert public_key_from_node_id(node_id) == identity.public_key_bytes


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "12D3KooW",
        "12D3KooW0OIl" + "1" * 40,  # characters outside base58
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",  # an RSA (sha256) peer ID
        SPEC_PEER_ID + "1",
        "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pé",
    ],
)
def test_malformed_node_id(bad: str) -> None:
    with pytest.raises(IdentityError):
        public_key_from_node_id(bad)


def test_public_key_length_checked() -> None:
    with pytest.raises(IdentityError):
        node_id_from_public_key(b"\x01" * 31)


def test_sign_and_verify() -> None:
    identity = Identity.generate()
    data = b"job 42 completed"
    sig = identity.sign(data)
    assert len(sig) == 64
    pub = identity.public_key_bytes
    assert verify(pub, data, sig)
    assert not verify(pub, data + b"!", sig)
    assert not verify(pub, data, bytes([sig[0] ^ 1]) + sig[1:])
    assert not verify(Identity.generate().public_key_bytes, data, sig)


@pytest.mark.parametrize(
    ("pub", "sig"), [(b"", b"x" * 64), (b"\x00" * 31, b"x" * 64), (b"\x00" * 32, b""), (b"", b"")]
)
def test_verify_never_raises_on_malformed_input(pub: bytes, sig: bytes) -> None:
    assert verify(pub, b"data", sig) is False
