"""A 5-node devstack with a bad actor: 200 deterministic jobs, each run on three nodes with a
confidence of two, never accept its wrong results, and after its first caught lie it gets no
more work for the penalty time (peers shows it penalised)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.client import Client
from tests._wait import wait_for
from tests.integration.conftest import ECHO_WASM, ROOT, Ctl

JOBS = 200
NODES = 5


def test_a_bad_actor_is_caught_and_gets_no_more_work(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bacalhau.cli.daemon", "devstack", "--nodes", str(NODES),
         "--bad-actors", "1", "--data-dir", str(tmp_path / "stack"), "--engines", "wasm"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env=dict(os.environ),
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stdout is not None

        def started() -> bool:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            lines.append(line)
            return "export BACALHAU_API=" in line or not line

        wait_for(started, 120, "the devstack to start")
        text = "".join(lines)
        api = re.search(r"export BACALHAU_API=(\S+)", text)
        assert api, text
        bad_address = re.search(rf"node-{NODES - 1}\s+(\S+)\s+log: .*BAD ACTOR", text)
        assert bad_address, text
        with Client(bad_address[1]) as c:
            bad = c.node_info().node_id
        assert (
            "THIS NODE IS A BAD ACTOR"
            in (tmp_path / "stack" / f"node-{NODES - 1}" / "node.log").read_text()
        )

        with Client(api[1], timeout=60) as c:
            alive = NODES - 1
            wait_for(lambda: len([p for p in c.node_info().peers if p.alive]) == alive, 30, "peers")
            module = c.add_file(ECHO_WASM).cid
            results: list[Any] = []
            for i in range(JOBS):
                spec = types_pb2.JobSpec(
                    engine="wasm",
                    wasm=types_pb2.WasmSpec(module_cid=module, args=["job", str(i)],
                                            deterministic=True),
                    outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
                    deal=types_pb2.Deal(concurrency=3, confidence=2, verifier="deterministic"),
                )  # fmt: skip
                results.append(c.wait(c.submit(spec).job_id).job)
            peers = {p.node_id: p for p in c.node_info().peers}
        published = types_pb2.EXECUTION_STATE_PUBLISHED
        for job in results:  # zero wrong results accepted
            assert job.state == types_pb2.JOB_STATE_COMPLETED, job.message
            good = [ex for ex in job.executions if ex.state == published]
            assert len(good) >= 2 and len({ex.result_cid for ex in good}) == 1
            assert bad not in {ex.node_id for ex in good}
        chosen = (types_pb2.EXECUTION_STATE_BID_PROPOSED, types_pb2.EXECUTION_STATE_BID_REJECTED)
        ran = [
            i
            for i, job in enumerate(results)
            if any(e.node_id == bad and e.state not in chosen for e in job.executions)
        ]
        # It runs until its first lie is caught (each job goes to 3 of 5 nodes), then never.
        assert len(ran) == 1, [
            (i, [(e.node_id[-6:], e.state) for e in results[i].executions]) for i in ran
        ]
        lie = next(e for e in results[ran[0]].executions if e.node_id == bad)
        assert lie.state == types_pb2.EXECUTION_STATE_RESULT_REJECTED
        assert peers[bad].results_rejected == 1 and peers[bad].penalized_until_unix_nano > 0
        out = Ctl(api[1], tmp_path)("peers").stdout
        assert "PENALISED until" in out and "1 rejected" in out
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
