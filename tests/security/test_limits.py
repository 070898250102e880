"""Numbers and sizes a client sends are bounded at the node: oversized specs, timeouts above
the node's maximum, and empty, overlong or garbled job IDs are refused with INVALID_ARGUMENT
naming the field, on a real node that keeps serving afterwards."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.client import Client, ClientError
from tests.integration.conftest import ROOT, Ctl, NodeProc, start_node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    n = start_node(
        tmp_path_factory.mktemp("limits"),
        args=("--engines", "noop", "--max-job-timeout", "60", "--max-spec-size", "64Ki"),
    )
    yield n
    n.stop()


def noop(**fields: object) -> types_pb2.JobSpec:
    return types_pb2.JobSpec(
        engine="noop", outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")], **fields
    )


def refused(node: NodeProc, call: str, *args: object) -> str:
    with Client(node.address, timeout=10) as c:
        with pytest.raises(ClientError) as err:
            getattr(c, call)(*args)
        assert c.node_info().node_id == node.node_id  # still serving
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, err.value
    return str(err.value)


def test_a_spec_larger_than_the_node_takes_is_refused(node: NodeProc) -> None:
    big = noop(annotations={"blob": "x" * (80 << 10)})  # 80 KiB, over --max-spec-size 64Ki
    assert "bytes, more than the 65536 a node takes" in refused(node, "submit", big)
    huge = noop(annotations={"blob": "x" * (4608 << 10)})  # 4.5 MiB: over any node's limit
    assert "more than the" in refused(node, "submit", huge)


def test_a_timeout_above_the_nodes_maximum_is_refused(node: NodeProc) -> None:
    line = refused(node, "submit", noop(timeout_seconds=120))
    assert "timeout 120 s is above this node's maximum of 60 s" in line
    for bad in (float("nan"), float("inf"), 1e300, -1.0):
        assert "timeout" in refused(node, "submit", noop(timeout_seconds=bad))
    with Client(node.address) as c:
        assert c.submit(noop(timeout_seconds=30)).job_id


@pytest.mark.parametrize(
    ("job_id", "says"),
    [
        ("", "job_id is required"),
        ("j" * 20_000, "job_id of 20000 characters is longer than 128"),
        ("j-\n\x00", "has characters no ID has"),
    ],
)
def test_bad_job_ids_are_refused_naming_the_field(node: NodeProc, job_id: str, says: str) -> None:
    for call in ("get_job", "cancel"):
        assert says in refused(node, call, job_id)


def test_the_cli_says_so_in_one_line(node: NodeProc, tmp_path: Path) -> None:
    line = Ctl(node.address, tmp_path)("describe", "").one_line_error()
    assert "job_id is required" in line


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--max-job-timeout", "nan", "--max-job-timeout must be above 0 and at most 86400"),
        ("--max-job-timeout", "100000", "--max-job-timeout must be above 0 and at most 86400"),
        ("--max-spec-size", "2Mi", "--max-spec-size must be above 0 and at most 1048576"),
    ],
)
def test_serve_refuses_limits_out_of_range(
    tmp_path: Path, flag: str, value: str, says: str
) -> None:
    cmd = [sys.executable, "-m", "bacalhau.cli.daemon", "serve", "--data-dir", str(tmp_path),
           "--port", "0", flag, value]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
