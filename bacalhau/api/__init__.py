"""The node's gRPC API: ClientService and PeerService adapters and the error mapping."""

from __future__ import annotations

from bacalhau.api.errors import status_of
from bacalhau.api.services import ClientServicer, PeerServicer

__all__ = ["ClientServicer", "PeerServicer", "status_of"]
