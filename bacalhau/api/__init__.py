"""The node's gRPC API: ClientService and PeerService adapters, validation, error mapping."""

from __future__ import annotations

from bacalhau.api.errors import status_of
from bacalhau.api.services import ClientServicer, PeerServicer
from bacalhau.api.validate import validate_spec

__all__ = ["ClientServicer", "PeerServicer", "status_of", "validate_spec"]
