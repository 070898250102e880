"""examples/node/client.js (Node.js, @grpc/grpc-js) against a real node started here: signed
calls, upload, submit, events, logs, a result file read through GetResults and one through Cat,
an error's reason.

`./dev test` installs nodejs and npm (apt-get, as root) and runs `npm ci` in examples/node. With
CI=true a missing node or node_modules fails the test; elsewhere it skips."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, start_node

EXAMPLE = ROOT / "examples" / "node"


def _node_or_skip() -> str:
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not installed (./dev test installs nodejs and npm as root)"
    elif not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        missing = "examples/node has no node_modules: run `npm ci` there (./dev test does)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing} (CI=true: the Node.js example must run)")
        pytest.skip(missing)
    assert node is not None
    return node


def test_node_client_submits_follows_and_reads_its_result(tmp_path: Path):
    node_bin = _node_or_skip()
    node = start_node(tmp_path / "node")
    try:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "BACALHAU_API": node.address,
            "BACALHAU_USER_KEY": str(tmp_path / "user.key"),
        }
        proc = subprocess.run(
            [node_bin, "client.js"],
            cwd=EXAMPLE,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].startswith(f"node {node.node_id} ")
        job_id = lines[1].removeprefix("job ")
        events = [line.split()[2] for line in lines if line.startswith("event ")]
        assert events[0] == "JobCreated" and events[-1] == "JobCompleted"
        assert "log stdout: hello from node.js" in lines
        assert "state JOB_STATE_COMPLETED" in lines
        assert "result stdout: hello from node.js" in lines
        assert "cat outputs/result.txt: hello from node.js" in lines  # Cat: no decoding
        assert "empty job_id: INVALID_ARGUMENT FIELD_REQUIRED: job_id is required" in lines
        # The job is the user's whose key file the example made: the Python client agrees.
        from bacalhau.client import Client

        with Client(node.address, user_key=tmp_path / "user.key") as c:
            assert c.get_job(job_id).job.client_id == c.user_id
    finally:
        node.stop()
