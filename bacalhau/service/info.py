"""What a node says of itself and of its peers (`bacalhauctl id`, `peers`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bacalhau.version import __version__


@dataclass(frozen=True)
class PeerView:
    record: Any  # records_pb2.PeerRecord
    alive: bool
    last_seen_unix_nano: int
    status: Any  # the peer's last Heartbeat, or None


@dataclass(frozen=True)
class NodeView:
    node_id: str
    address: str
    engines: list[str]
    labels: dict[str, str]
    peers: list[PeerView] = field(default_factory=list)
    version: str = __version__
    resources: Any = None  # types_pb2.Resources: what it lends to jobs in all
    nvidia_container_runtime: bool = False


class InfoService:
    """This node and its peer table, as the API shows them."""

    def __init__(
        self,
        *,
        node_id: str,
        address: Callable[[], str],
        engines: list[str],
        labels: dict[str, str],
        peers: Callable[[], list[tuple[Any, bool, int, Any]]],
        resources: Any = None,
        nvidia_container_runtime: bool = False,
    ) -> None:
        self._resources = resources
        self._nvidia = nvidia_container_runtime
        self._node_id = node_id
        self._address = address
        self._engines = engines
        self._labels = labels
        self._peers = peers

    def node(self) -> NodeView:
        return NodeView(
            node_id=self._node_id,
            address=self._address(),
            engines=list(self._engines),
            labels=dict(self._labels),
            peers=[PeerView(*row) for row in self._peers()],
            resources=self._resources,
            nvidia_container_runtime=self._nvidia,
        )
