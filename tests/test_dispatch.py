"""The dispatch table: each kind to one handler, only from whom its registration allows."""

from __future__ import annotations

from typing import Any

import pytest

from bacalhau._pb.bacalhau.v1 import peer_pb2
from bacalhau.network.dispatch import ANY_PEER, KINDS, NOBODY, Dispatcher, MayFrom


def msg(**body: Any) -> Any:
    return peer_pb2.PeerMessage(**body)


def test_a_kind_goes_to_its_handler_only_from_whom_it_allows() -> None:
    d = Dispatcher()
    got: list[tuple[str, str]] = []
    refused: list[str] = []
    d.on_refuse.append(refused.append)
    owner = MayFrom("the owner of the execution", lambda s, body: s == f"owner-{body.execution_id}")
    d.register("cancel", lambda s, body: got.append((s, body.execution_id)), owner)
    d.dispatch("owner-e1", msg(cancel=peer_pb2.CancelExecution(execution_id="e1")))
    d.dispatch("stranger", msg(cancel=peer_pb2.CancelExecution(execution_id="e1")))
    d.dispatch("owner-e1", msg(cancel=peer_pb2.CancelExecution(execution_id="e2")))
    assert got == [("owner-e1", "e1")]
    assert refused == ["cancel", "cancel"] and d.refused == {"cancel": 2}


def test_unrouted_and_relayed_kinds_are_refused() -> None:
    d = Dispatcher()
    got: list[str] = []
    d.register("heartbeat", lambda s, body: got.append(s), ANY_PEER, relayable=False)
    d.register("announce", lambda s, body: got.append(s), ANY_PEER)
    d.dispatch("p", msg(heartbeat=peer_pb2.Heartbeat()), relayed=True)  # never as gossip
    d.dispatch("p", msg(bid=peer_pb2.Bid()))  # nobody takes bids here
    d.dispatch("p", peer_pb2.PeerMessage())  # no body at all
    d.dispatch("q", msg(announce=peer_pb2.JobAnnouncement()), relayed=True)
    d.dispatch("r", msg(heartbeat=peer_pb2.Heartbeat()))
    assert got == ["q", "r"]
    assert d.refused == {"heartbeat": 1, "bid": 1, "empty": 1}


def test_failing_checks_refuse_and_failing_handlers_are_contained() -> None:
    d = Dispatcher()

    def boom(sender: str, body: Any) -> bool:
        raise RuntimeError("a broken check")

    def fail(sender: str, body: Any) -> None:
        raise RuntimeError("a broken handler")

    d.register("sync", fail, ANY_PEER)
    d.register("cancel", fail, MayFrom("a broken rule", boom))
    d.register("hello", fail, NOBODY)
    d.dispatch("p", msg(sync=peer_pb2.SyncExecutions()))  # logged, not raised
    d.dispatch("p", msg(cancel=peer_pb2.CancelExecution()))
    d.dispatch("p", msg(hello=peer_pb2.Hello()))
    assert d.refused == {"cancel": 1, "hello": 1}


def test_registrations_are_checked() -> None:
    d = Dispatcher()
    d.register("bid", lambda s, b: None, ANY_PEER)
    with pytest.raises(ValueError, match="registered twice"):
        d.register("bid", lambda s, b: None, ANY_PEER)
    with pytest.raises(ValueError, match="no peer message kind"):
        d.register("teleport", lambda s, b: None, ANY_PEER)
    assert "bid" in KINDS and [r.kind for r in d.routes()] == ["bid"]
