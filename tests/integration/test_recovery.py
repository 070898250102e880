"""Nodes killed with SIGKILL at random points while jobs are submitted and run: after a
restart every acknowledged job is there, and the ones in flight go on to complete."""

from __future__ import annotations

import json
import random
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.client import Client, ClientError
from tests._wait import wait_for
from tests.integration.conftest import ECHO_WASM, Ctl, NodeProc, start_node, wait_connected


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Submitter(threading.Thread):
    """Submits jobs to one address until stopped; keeps the IDs the node acknowledged."""

    def __init__(self, address: str, cid: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.acked: list[str] = []
        self.stop = threading.Event()
        self.spec = types_pb2.JobSpec(
            engine="wasm",
            wasm=types_pb2.WasmSpec(module_cid=cid),
            outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
        )

    def run(self) -> None:
        rng = random.Random(5)
        with Client(self.address, timeout=5) as c:
            while not self.stop.is_set():
                spec = types_pb2.JobSpec()
                spec.CopyFrom(self.spec)
                n = len(self.acked)
                spec.wasm.args[:] = ["slow", str(n)] if rng.random() < 0.3 else ["quick", str(n)]
                try:
                    self.acked.append(c.submit(spec).job_id)
                except ClientError:
                    self.stop.wait(0.05)  # the node is down: try again shortly


def restart(node: NodeProc, port: int, peers: tuple[str, ...] = ()) -> NodeProc:
    assert node.stop(signal.SIGKILL) == -signal.SIGKILL
    return start_node(node.data_dir, name=node.name, peers=peers, args=("--port", str(port)))


def test_sigkill_at_random_points_loses_no_acknowledged_job(tmp_path: Path) -> None:
    rng = random.Random(20261127)
    port_a, port_b = free_port(), free_port()
    a = start_node(tmp_path / "a", name="a", args=("--port", str(port_a)))
    b = start_node(tmp_path / "b", name="b", peers=(a.address,), args=("--port", str(port_b)))
    submitter = None
    try:
        wait_connected([a, b])
        with Client(a.address) as c:
            cid = c.add_file(ECHO_WASM).cid
        submitter = Submitter(a.address, cid)
        submitter.start()
        # Kill the requester (a) twice and the other compute node (b) once, each time after
        # a random number of further acknowledged submissions.
        for victim in ("a", "b", "a"):
            target = len(submitter.acked) + rng.randint(3, 12)
            wait_for(lambda t=target: len(submitter.acked) >= t, 60, "submissions")
            if victim == "a":
                a = restart(a, port_a)
            else:
                b = restart(b, port_b, peers=(a.address,))
            wait_connected([a, b], timeout=30)
        submitter.stop.set()
        submitter.join(10)
        acked = submitter.acked
        assert len(acked) >= 9

        with Client(a.address, timeout=10) as c:

            def all_final() -> bool:
                return all(c.get_job(j).job.state >= types_pb2.JOB_STATE_COMPLETED for j in acked)

            wait_for(all_final, 120, "every acknowledged job to finish")
            states = {j: c.get_job(j).job.state for j in acked}
        not_completed = {j: s for j, s in states.items() if s != types_pb2.JOB_STATE_COMPLETED}
        assert not not_completed, _describe(a, not_completed)

        # Completed jobs read back identically after a clean restart.
        ctl = Ctl(a.address, tmp_path)
        before = {j: ctl.json("describe", j) for j in acked[:5]}
        a.stop(signal.SIGTERM)
        a = start_node(tmp_path / "a", name="a", args=("--port", str(port_a)))
        after = {j: Ctl(a.address, tmp_path).json("describe", j) for j in acked[:5]}
        assert after == before
    finally:
        if submitter is not None:
            submitter.stop.set()
        a.stop()
        b.stop()


def _describe(node: NodeProc, jobs: dict[str, Any]) -> str:
    with Client(node.address) as c:
        docs = []
        for job_id in list(jobs)[:3]:
            resp = c.get_job(job_id)
            docs.append(
                {
                    "id": job_id,
                    "state": resp.job.state,
                    "message": resp.job.message,
                    "events": [f"{e.type} {e.node_id[-6:]} {e.detail}" for e in resp.events],
                }
            )
    return json.dumps(docs, indent=1)
