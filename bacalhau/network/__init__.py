"""How nodes talk: signed peer streams and block exchange over gRPC."""

from __future__ import annotations

from bacalhau.network.blocks import (
    DagFetcher,
    fetch_blocks,
    fetch_dag,
    missing,
    rpc_error_line,
    serve_blocks,
    store_blocks,
)
from bacalhau.network.peers import CHANNEL_OPTIONS, Network, PeerProtocolError

__all__ = [
    "CHANNEL_OPTIONS",
    "DagFetcher",
    "Network",
    "PeerProtocolError",
    "fetch_blocks",
    "fetch_dag",
    "missing",
    "rpc_error_line",
    "serve_blocks",
    "store_blocks",
]
