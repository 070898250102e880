"""Verifiers: which proposed results stand for a shard (`base.py`: the interface; `noop`,
`deterministic`)."""

from __future__ import annotations

from bacalhau.errors import UsageError
from bacalhau.verifier.base import Verdict, Verifier
from bacalhau.verifier.deterministic import DeterministicVerifier
from bacalhau.verifier.noop import NoopVerifier

__all__ = ["DeterministicVerifier", "NoopVerifier", "Verdict", "Verifier", "get", "names"]

_VERIFIERS: dict[str, Verifier] = {
    "noop": NoopVerifier(),
    "deterministic": DeterministicVerifier(),
}


def names() -> tuple[str, ...]:
    return tuple(sorted(_VERIFIERS))


def get(name: str) -> Verifier:
    """The verifier called `name` ("" is noop). Raises UsageError for an unknown one."""
    verifier = _VERIFIERS.get(name or "noop")
    if verifier is None:
        raise UsageError(f"unknown verifier {name!r}", hint=f"use one of: {', '.join(names())}")
    return verifier
