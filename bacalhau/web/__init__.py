"""The node's read-only web dashboard (`serve --web-port`): static pages and JSON views of the
node, its peers, its jobs and their results, from the node's own services."""

from __future__ import annotations

from bacalhau.web.server import Dashboard, WebError, start_web_server

__all__ = ["Dashboard", "WebError", "start_web_server"]
