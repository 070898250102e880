"""Who may send what: a stranger's peer messages about someone else's job are refused.

Two real `bacalhaud` processes run a job (requester a, compute node b); a third identity,
a real peer over real gRPC streams but party to nothing, connects to both and sends what only
the job's requester or its compute node may send. Each is refused at the dispatch, counted in
`bacalhau_peer_messages_refused_total`, and changes nothing: the execution keeps running,
nothing new is queued, and the real owner can still cancel it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bacalhau._pb.bacalhau.v1 import peer_pb2, types_pb2
from bacalhau.models import ExecutionState, JobState
from tests._peer import Stranger
from tests._wait import wait_for
from tests.integration.conftest import (
    ECHO_WASM,
    Ctl,
    NodeProc,
    metrics,
    start_node,
    wait_connected,
)


def refused(node: NodeProc, kind: str) -> float:
    return metrics(node).get(f'bacalhau_peer_messages_refused_total{{kind="{kind}"}}', 0.0)


def test_a_strangers_messages_about_someone_elses_job_are_refused(
    tmp_path: Path, stranger: Stranger
) -> None:
    a = start_node(tmp_path / "a", name="a", args=("--engines", "noop", "--metrics-port", "0"))
    b = start_node(tmp_path / "b", name="b", peers=(a.address,), args=("--metrics-port", "0"))
    try:
        wait_connected([a, b])
        ctl = Ctl(a.address, tmp_path)
        res = ctl("wasm", "run", "--no-wait", str(ECHO_WASM), "spin")
        assert res.returncode == 0, res.stderr
        job_id = res.stdout.split()[0]

        def running() -> Any:
            doc = ctl.json("describe", job_id)
            return next((e for e in doc["executions"] if e["state"] == "running"), None)

        ex = wait_for(running, 30, "the execution to run on b")
        assert ex["node_id"] == b.node_id
        queued = metrics(b)["bacalhau_executions_queued"]
        assert queued == 1

        stranger.dial(a)
        stranger.dial(b)
        spec = types_pb2.JobSpec(engine="noop")
        # To the compute node: stop it, run something else, publish a result it never made.
        stranger.send(
            b.node_id,
            cancel=peer_pb2.CancelExecution(job_id=job_id, execution_id=ex["id"], reason="mine"),
        )
        stranger.send(
            b.node_id,
            bid_decision=peer_pb2.BidDecision(
                job_id="j-forged", shard=0, execution_id="e-forged", accepted=True, spec=spec
            ),
        )
        stranger.send(
            b.node_id,
            bid_decision=peer_pb2.BidDecision(
                job_id=job_id, shard=0, execution_id=ex["id"], accepted=True, spec=spec
            ),
        )
        stranger.send(
            b.node_id,
            result_decision=peer_pb2.ResultDecision(
                job_id=job_id, execution_id=ex["id"], accepted=False, reason="mine"
            ),
        )
        # To the requester: report the execution failed, or done with a made-up result.
        for state, cid in ((ExecutionState.FAILED, ""), (ExecutionState.RESULT_PROPOSED, "Qm")):
            stranger.send(
                a.node_id,
                execution_update=peer_pb2.ExecutionUpdate(
                    job_id=job_id, execution_id=ex["id"], state=state.pb, result_cid=cid
                ),
            )
        # A bid on a job the requester never announced to it is refused too.
        stranger.send(a.node_id, bid=peer_pb2.Bid(job_id="j-forged", shard=0, willing=True))

        wait_for(
            lambda: (
                refused(b, "cancel") >= 1
                and refused(b, "bid_decision") >= 2
                and refused(b, "result_decision") >= 1
                and refused(a, "execution_update") >= 2
                and refused(a, "bid") >= 1
            ),
            20,
            "every forged message to be refused and counted",
        )
        # Nothing changed: still running, nothing queued on b, no event from the stranger.
        doc = ctl.json("describe", job_id)
        assert doc["state"] == JobState.RUNNING.value
        (now,) = [e for e in doc["executions"] if e["id"] == ex["id"]]
        assert now["state"] == "running" and now["node_id"] == b.node_id
        assert stranger.net.node_id not in {e["node_id"] for e in doc["events"]}
        assert metrics(b)["bacalhau_executions_queued"] == queued

        # Both nodes keep serving: the owner cancels the job and b stops the program.
        assert ctl("cancel", job_id).returncode == 0

        def stopped() -> bool:
            events = ctl.json("describe", job_id)["events"]
            return any(e["type"] == "ExecutionStopped" for e in events)

        wait_for(stopped, 30, "b to stop the program for the real requester")
    finally:
        a.stop()
        b.stop()
