"""Bid rounds close on their own deadline: a job nobody takes fails after --queue-timeout with
every node's reason (also one that never answers), and a willing bid that comes after the bid
window closed empty is accepted while the job still waits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests._peer import Stranger
from tests._wait import wait_for
from tests.integration.conftest import ECHO_WASM, Ctl, start_node, wait_connected


def test_a_job_nobody_takes_fails_after_the_queue_timeout(
    tmp_path: Path, stranger: Stranger
) -> None:
    args = ("--engines", "noop", "--queue-timeout", "2", "--bid-window", "0.2")
    a = start_node(tmp_path / "a", name="a", args=args)
    try:
        stranger.dial(a)  # asked to bid, it never answers
        ctl = Ctl(a.address, tmp_path)
        res = ctl("wasm", "run", str(ECHO_WASM), "hi", timeout=60)
        line = res.one_line_error()
        assert "no node can run this job within 2 s" in line, line
        assert "engine 'wasm' is not enabled" in line
        assert f"{stranger.net.node_id[-8:]}: did not answer" in line
    finally:
        a.stop()


def test_a_late_willing_bid_is_accepted_while_the_job_waits(
    tmp_path: Path, stranger: Stranger
) -> None:
    args = ("--engines", "noop", "--queue-timeout", "120", "--bid-window", "0.2")
    a = start_node(tmp_path / "a", name="a", args=args)
    b = None
    try:
        stranger.dial(a)  # keeps the round open: asked, never answers
        ctl = Ctl(a.address, tmp_path)
        res = ctl("wasm", "run", "--no-wait", str(ECHO_WASM), "late")
        job_id = res.stdout.split()[0]

        def declined() -> Any:
            doc = ctl.json("describe", job_id)
            return any(e["type"] == "BidDeclined" for e in doc["events"]) and doc

        doc = wait_for(declined, 15, "a to decline")
        assert doc["state"] == "pending"
        # A node that can run it comes along later: a asks it, and its bid is taken at once.
        b = start_node(tmp_path / "b", name="b", peers=(a.address,))
        wait_connected([a, b])
        done = wait_for(
            lambda: (d := ctl.json("describe", job_id))["state"] == "completed" and d,
            30,
            "the job to complete on b",
        )
        assert [e["node_id"] for e in done["executions"] if e["state"] == "published"] == [
            b.node_id
        ]
        assert ctl("logs", job_id).stdout == "late\n"
    finally:
        a.stop()
        if b is not None:
            b.stop()
