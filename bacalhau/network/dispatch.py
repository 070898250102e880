"""One dispatch table for peer messages: {message kind -> handler, who may send it}.

Each role registers a handler for the kinds it takes, and with each registration it says who
may send that kind (`MayFrom`: a name, for logs, metrics and docs, and a check of the sender
against the message). The network runs the check before the handler; a message that fails it
is refused, counted by kind, and changes nothing. A kind nobody registered is refused too.
Kinds registered `relayable=False` (the stream's own Hello, heartbeats, peer lists, gossip
envelopes) are taken only from the peer at the other end of a stream, never out of gossip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bacalhau._pb.bacalhau.v1 import peer_pb2

log = logging.getLogger(__name__)

Handler = Callable[[str, Any], None]  # (sender node ID, the message's body)
KINDS = frozenset(f.name for f in peer_pb2.PeerMessage.DESCRIPTOR.oneofs_by_name["body"].fields)


@dataclass(frozen=True)
class MayFrom:
    """Who may send a kind of message: `check(sender, body)` says whether this sender may."""

    name: str
    check: Callable[[str, Any], bool]


ANY_PEER = MayFrom("any peer", lambda sender, body: True)
NOBODY = MayFrom("nobody (only as the first message of a stream)", lambda sender, body: False)


@dataclass(frozen=True)
class Route:
    kind: str
    handler: Handler
    may_send: MayFrom
    relayable: bool


class Dispatcher:
    """Routes checked peer messages to the handler registered for their kind."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self.refused: dict[str, int] = {}  # kind -> messages refused since start
        self.on_refuse: list[Callable[[str], None]] = []  # called with each refused kind

    def register(
        self, kind: str, handler: Handler, may_send: MayFrom, *, relayable: bool = True
    ) -> None:
        """Route `kind` to `handler` once `may_send` allows the sender.

        Raises ValueError for a kind the protocol does not have or one already registered.
        """
        if kind not in KINDS:
            raise ValueError(f"no peer message kind {kind!r}")
        if kind in self._routes:
            raise ValueError(f"peer message kind {kind!r} is registered twice")
        self._routes[kind] = Route(kind, handler, may_send, relayable)

    def routes(self) -> list[Route]:
        return sorted(self._routes.values(), key=lambda r: r.kind)

    def dispatch(self, sender: str, msg: Any, *, relayed: bool = False) -> None:
        """Hand `msg` from `sender` to its handler, or refuse it; never raises."""
        kind = msg.WhichOneof("body") or ""
        route = self._routes.get(kind)
        if route is None or (relayed and not route.relayable):
            self._refuse(kind or "empty", sender, "no handler takes it this way")
            return
        body = getattr(msg, kind)
        try:
            allowed = route.may_send.check(sender, body)
        except Exception:
            log.exception("checking who sent %s failed", kind)
            allowed = False
        if not allowed:
            self._refuse(kind, sender, f"only {route.may_send.name} may send it")
            return
        try:
            route.handler(sender, body)
        except Exception:
            log.exception("handling %s from %s failed", kind, sender)

    def _refuse(self, kind: str, sender: str, why: str) -> None:
        self.refused[kind] = self.refused.get(kind, 0) + 1
        log.debug("refused %s from %s: %s", kind, sender, why)
        for cb in self.on_refuse:
            cb(kind)
