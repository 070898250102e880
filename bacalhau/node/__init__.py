"""A whole node: the parts wired together and served."""

from __future__ import annotations

from bacalhau.node.node import ADDRESS_FILE, Node, NodeConfig

__all__ = ["ADDRESS_FILE", "Node", "NodeConfig"]
