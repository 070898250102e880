"""Signed client calls: who is calling, proved with the user's Ed25519 key, fresh and once.

Every ClientService call carries four gRPC metadata entries:

    bacalhau-user       the caller's user ID: the libp2p peer ID of its Ed25519 public key
    bacalhau-time       when the call was signed: Unix time in milliseconds, decimal
    bacalhau-nonce      16 random bytes, 32 lowercase hex characters, never reused
    bacalhau-signature  base64 (RFC 4648, padded) of the Ed25519 signature of the payload

The payload is five lines joined by "\\n" (no trailing newline), all ASCII:

    bacalhau-call-v1
    <the full gRPC method, e.g. /bacalhau.v1.ClientService/Submit>
    <bacalhau-time>
    <bacalhau-nonce>
    <SHA-256 of the request message's bytes as sent, lowercase hex; for a client-streaming
     call (AddData), SHA-256 of no bytes>

A node takes a call only if the signature is valid, the time is within `MAX_SKEW_S` of its own
clock, and it has not seen that (user, nonce) before. docs/security.md has a test vector.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from collections.abc import Mapping
from typing import Final

from bacalhau.errors import BacalhauError
from bacalhau.identity import Identity, IdentityError, public_key_from_node_id, verify
from bacalhau.replay import REPEATED, ReplayWindow

PREFIX: Final = "bacalhau-call-v1"
USER: Final = "bacalhau-user"
TIME: Final = "bacalhau-time"
NONCE: Final = "bacalhau-nonce"
SIGNATURE: Final = "bacalhau-signature"
KEYS: Final = (USER, TIME, NONCE, SIGNATURE)
NONCE_BYTES: Final = 16
MAX_SKEW_S: Final = 300.0  # how far a call's time may be from the node's clock, either way
MAX_SEEN: Final = 200_000  # nonces remembered (see bacalhau.replay)
EMPTY_DIGEST: Final = hashlib.sha256(b"").hexdigest()


class CallRefused(BacalhauError):
    """A call's signature is missing, invalid, stale or replayed; `reason` says which, in one
    word (unsigned, malformed, forged, stale, replayed), for the node's refusal counter."""

    def __init__(self, message: str, *, hint: str | None = None, reason: str = "malformed") -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


def payload(method: str, time_ms: int, nonce: str, digest: str) -> bytes:
    """The bytes a caller signs."""
    return "\n".join((PREFIX, method, str(time_ms), nonce, digest)).encode()


def sign(
    key: Identity,
    method: str,
    body: bytes | None,
    *,
    time_ms: int | None = None,
    nonce: str | None = None,
) -> list[tuple[str, str]]:
    """The metadata that signs a call of `method` with request bytes `body` (None: a
    client-streaming call)."""
    t = time.time_ns() // 1_000_000 if time_ms is None else time_ms
    n = os.urandom(NONCE_BYTES).hex() if nonce is None else nonce
    digest = EMPTY_DIGEST if body is None else hashlib.sha256(body).hexdigest()
    sig = key.sign(payload(method, t, n, digest))
    return [
        (USER, key.node_id),
        (TIME, str(t)),
        (NONCE, n),
        (SIGNATURE, base64.b64encode(sig).decode()),
    ]


class Verifier:
    """Checks signed calls: signature, clock skew, and that no (user, nonce) is taken twice
    (`bacalhau.replay.ReplayWindow`: bounded memory, a replay never taken)."""

    def __init__(self, *, max_skew_s: float = MAX_SKEW_S, max_seen: int = MAX_SEEN) -> None:
        self.max_skew_ms = int(max_skew_s * 1000)
        self.seen = ReplayWindow(self.max_skew_ms, max_seen)

    def check(
        self, metadata: Mapping[str, str], method: str, body: bytes | None, now_ms: int
    ) -> str:
        """The caller's user ID. Raises CallRefused saying what is wrong."""
        fields = {k: metadata.get(k, "") for k in KEYS}
        if not fields[USER] and not fields[SIGNATURE]:
            raise CallRefused(
                "this call is not signed: a node takes only calls signed with a user key",
                hint="sign each call with a user key as docs/security.md says",
                reason="unsigned",
            )
        missing = [k for k, v in fields.items() if not v]
        if missing:
            raise CallRefused(f"the call's signature lacks metadata {', '.join(missing)}")
        user = fields[USER]
        try:
            pub = public_key_from_node_id(user)
        except IdentityError:
            raise CallRefused(f"{USER} {user[:80]!r} is not an Ed25519 user ID") from None
        text = fields[TIME]
        if not (text.isascii() and text.isdigit() and len(text) <= 16):
            raise CallRefused(f"{TIME} {text[:40]!r} is not Unix milliseconds")
        t = int(text)
        nonce = fields[NONCE]
        if len(nonce) != 2 * NONCE_BYTES or not _is_hex(nonce):
            raise CallRefused(f"{NONCE} must be {2 * NONCE_BYTES} lowercase hex characters")
        try:
            sig = base64.b64decode(fields[SIGNATURE], validate=True)
        except (binascii.Error, ValueError):
            raise CallRefused(f"{SIGNATURE} is not base64") from None
        digest = EMPTY_DIGEST if body is None else hashlib.sha256(body).hexdigest()
        if not verify(pub, payload(method, t, nonce, digest), sig):
            raise CallRefused(
                "the call's signature does not match its user, method, time, nonce and request",
                reason="forged",
            )
        verdict = self.seen.check((user, nonce), t, now_ms)
        if verdict == REPEATED:
            raise CallRefused(
                "this call was taken already (its nonce was used); sign it again", reason="replayed"
            )
        if verdict is not None and abs(t - now_ms) > self.max_skew_ms:
            raise CallRefused(
                f"the call was signed {abs(t - now_ms) / 1000:.0f} s "
                f"{'ago' if t < now_ms else 'in the future'}; a node takes calls signed within "
                f"{self.max_skew_ms / 1000:.0f} s of its clock",
                hint="check this machine's clock",
                reason="stale",
            )
        if verdict is not None:
            raise CallRefused("the call was signed too long ago for this busy node; sign it again")
        return user


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
