"""A node's identity: an Ed25519 key kept in the data directory, and its libp2p peer ID.

The key file `DATA_DIR/node.key` holds the raw 32-byte Ed25519 private seed (RFC 8032), nothing
else: no PEM, no protobuf wrapper. It is created once, with mode 0600, and never overwritten.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from bacalhau.content.cid import b58decode, b58encode
from bacalhau.content.errors import InvalidCID
from bacalhau.errors import BacalhauError

KEY_FILE: Final = "node.key"
SEED_LEN: Final = 32
PUBLIC_KEY_LEN: Final = 32

# libp2p `PublicKey` protobuf {Type: Ed25519 (field 1 varint = 1), Data (field 2, 32 bytes)},
# behind an identity multihash (code 0x00, length 36): the 6 bytes before the raw key.
_PROTOBUF_PREFIX: Final = b"\x08\x01\x12\x20"
_PEER_ID_PREFIX: Final = b"\x00\x24" + _PROTOBUF_PREFIX


class IdentityError(BacalhauError):
    """The node key could not be read or created, or a node ID is malformed."""


class Identity:
    """A node's Ed25519 key pair; its public half names the node."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity, not stored anywhere."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity whose 32-byte private seed is `seed`; raises IdentityError otherwise."""
        if len(seed) != SEED_LEN:
            raise IdentityError(f"an Ed25519 seed is {SEED_LEN} bytes, not {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Identity:
        """Load `data_dir/node.key`, creating it (and `data_dir`) if missing; IdentityError."""
        return cls.load_or_create_file(data_dir / KEY_FILE)

    @classmethod
    def load_or_create_file(cls, path: Path, what: str = "node key") -> Identity:
        """Load the key file `path`, creating it (and its folder) if missing; IdentityError
        naming `what` (e.g. "user key")."""
        try:
            return cls._load(path, what)
        except FileNotFoundError:
            pass
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise IdentityError(
                f"cannot create the folder of {what} {path}: {e.strerror}",
                hint="check its permissions, or choose another place for the key",
            ) from None
        identity = cls.generate()
        if identity._store(path, what):
            return identity
        # Another process created the key between our read and our link: use theirs.
        try:
            return cls._load(path, what)
        except FileNotFoundError:
            raise IdentityError(f"{what} {path} vanished while being created") from None

    @property
    def public_key_bytes(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public

    @property
    def node_id(self) -> str:
        """The libp2p peer ID of this key (base58btc, starting with "12D3KooW")."""
        return node_id_from_public_key(self._public)

    def sign(self, data: bytes) -> bytes:
        """A 64-byte Ed25519 signature of `data`."""
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"Identity({self.node_id})"

    def _seed(self) -> bytes:
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @classmethod
    def _load(cls, path: Path, what: str = "node key") -> Identity:
        """Read a key file; FileNotFoundError passes through, anything else is IdentityError."""
        hint = "restore it from a backup, or delete it to get a new identity"
        try:
            seed = path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as e:
            raise IdentityError(f"cannot read {what} {path}: {e.strerror}", hint=hint) from None
        if len(seed) != SEED_LEN:
            raise IdentityError(
                f"{what} {path} is corrupt: {len(seed)} bytes, expected a {SEED_LEN}-byte seed",
                hint=hint,
            )
        return cls.from_seed(seed)

    def _store(self, path: Path, what: str = "node key") -> bool:
        """Write the key to `path` durably; False if a key file already exists there."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.fchmod(fd, 0o600)  # whatever the umask
                os.write(fd, self._seed())
                os.fsync(fd)
            finally:
                os.close(fd)
            # link(), unlike rename(), fails rather than replace a key that appeared meanwhile.
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            _fsync_dir(path.parent)
            return True
        except OSError as e:
            raise IdentityError(
                f"cannot create {what} {path}: {e.strerror}",
                hint="check the folder's permissions and free space",
            ) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()


def node_id_from_public_key(pub: bytes) -> str:
    """The libp2p peer ID of a raw Ed25519 public key: base58btc of its identity multihash."""
    if len(pub) != PUBLIC_KEY_LEN:
        raise IdentityError(f"an Ed25519 public key is {PUBLIC_KEY_LEN} bytes, not {len(pub)}")
    return b58encode(_PEER_ID_PREFIX + pub)


def public_key_from_node_id(node_id: str) -> bytes:
    """The raw Ed25519 public key named by a peer ID; raises IdentityError if malformed."""
    hint = "an Ed25519 node ID is 52 base58 characters starting with 12D3KooW"
    if len(node_id) > 64:  # base58 decoding is quadratic: refuse a huge one before decoding
        raise IdentityError(f"node ID {node_id[:60]!r}... is too long", hint=hint)
    try:
        raw = b58decode(node_id)
    except InvalidCID:
        raise IdentityError(f"node ID {node_id!r} is not base58btc", hint=hint) from None
    if len(raw) != len(_PEER_ID_PREFIX) + PUBLIC_KEY_LEN or not raw.startswith(_PEER_ID_PREFIX):
        raise IdentityError(f"node ID {node_id!r} is not an Ed25519 peer ID", hint=hint)
    return raw[len(_PEER_ID_PREFIX) :]


def verify(pub: bytes, data: bytes, signature: bytes) -> bool:
    """Whether `signature` is a valid Ed25519 signature of `data` by `pub`; never raises."""
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(signature, data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
