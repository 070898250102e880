"""The requester role: accept jobs, place them on nodes, decide their outcome."""

from __future__ import annotations

from bacalhau.requester.node import JobStateError, Requester

__all__ = ["JobStateError", "Requester"]
