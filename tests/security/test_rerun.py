"""A compute node restarted after its requester gave up on an execution (the node was lost
for longer than --node-lost-timeout, so the execution failed there) does not run it again:
before resuming, it asks the requester (`still_wanted`), which answers with a cancel. Without
that question the node ran the job again at 100% CPU until its own timeout. Issue 14, item 6."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from tests._wait import wait_for
from tests.integration.conftest import ECHO_WASM, Ctl, metrics, start_node, wait_connected


def test_an_execution_failed_at_its_requester_is_not_run_again(tmp_path: Path) -> None:
    a = start_node(
        tmp_path / "a",
        name="a",
        args=("--engines", "noop", "--node-lost-timeout", "1", "--queue-timeout", "1"),
    )
    b = start_node(tmp_path / "b", name="b", peers=(a.address,), args=("--metrics-port", "0"))
    try:
        wait_connected([a, b])
        ctl = Ctl(a.address, tmp_path)
        res = ctl("wasm", "run", "--no-wait", "--timeout", "600", str(ECHO_WASM), "spin")
        assert res.returncode == 0, res.stderr
        job_id = res.stdout.split()[0]

        def running() -> Any:
            doc = ctl.json("describe", job_id)
            return next((e for e in doc["executions"] if e["state"] == "running"), None)

        ex = wait_for(running, 30, "the execution to run on b")
        assert ex["node_id"] == b.node_id
        b.stop(signal.SIGKILL)
        failed = wait_for(
            lambda: ctl.json("describe", job_id)["state"] == "failed", 30, "a to give up on b"
        )
        assert failed

        b = start_node(b.data_dir, name="b", peers=(a.address,), args=("--metrics-port", "0"))

        def answered() -> Any:
            events = ctl.json("describe", job_id)["events"]
            return next((e for e in events if "not run again" in (e["detail"] or "")), None)

        event = wait_for(answered, 30, "b to ask a and be told no")
        assert event["type"] == "LateUpdate", event  # b's report crossed a's decision
        assert event["execution_id"] == ex["id"] and event["execution_state"] == "failed"
        assert "the execution is failed at its requester" in event["detail"]
        assert metrics(b)["bacalhau_executions_queued"] == 0
        assert b.info().node_id == b.node_id  # still serving
    finally:
        b.stop()
        a.stop()
