"""Container jobs on real nodes and the real Docker engine (images built locally, never pulled).

node-0 has no GPU; node-1 reports four (a recorded nvidia-smi output, through --nvidia-smi).
Both run with --docker-pull never.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._docker import TEST_IMAGE, containers_labelled, docker_client
from tests._wait import wait_for
from tests.conftest import VECTORS
from tests.integration.conftest import Ctl, NodeProc, start_node, wait_connected
from tests.test_capacity import fake_nvidia_smi

DOCKER_ARGS = ("--engines", "wasm,docker", "--docker-pull", "never")


@pytest.fixture(scope="module")
def engine() -> Any:
    return docker_client()


@pytest.fixture(scope="module")
def nodes(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProc]]:
    root = tmp_path_factory.mktemp("docker-nodes")
    smi = fake_nvidia_smi(root, VECTORS / "nvidia-smi" / "a100x4.csv")
    none = fake_nvidia_smi(root / "..", VECTORS / "nvidia-smi" / "no-driver.txt", status=9)
    started: list[NodeProc] = []
    try:
        started.append(
            start_node(root / "node-0", name="node-0", args=(*DOCKER_ARGS, "--nvidia-smi",
                       str(none), "--labels", "name=node-0"))
        )  # fmt: skip
        # node-1 is told its engine has the NVIDIA runtime; node-2 asks the engine (none here)
        started.append(
            start_node(root / "node-1", name="node-1", peers=(started[0].address,),
                       args=(*DOCKER_ARGS, "--nvidia-smi", str(smi), "--labels", "name=node-1",
                             "--docker-nvidia-runtime", "yes"))
        )  # fmt: skip
        started.append(
            start_node(root / "node-2", name="node-2", peers=(started[0].address,),
                       args=(*DOCKER_ARGS, "--nvidia-smi", str(smi), "--labels", "name=node-2"))
        )  # fmt: skip
        wait_connected(started)
        yield started
    finally:
        for node in started:
            node.stop()


@pytest.fixture
def ctl(nodes: list[NodeProc], tmp_path: Path) -> Ctl:
    return Ctl(nodes[0].address, tmp_path)


def docker_run(ctl: Ctl, *args: str) -> tuple[Any, str]:
    res = ctl("docker", "run", *args, timeout=120)
    return res, (res.stdout.splitlines()[0] if res.stdout else "")


def assert_no_container_left(engine: Any, job_id: str) -> None:
    wait_for(
        lambda: not containers_labelled(engine, "bacalhau.job", job_id),
        30,
        f"the containers of {job_id} to be removed",
    )


def test_input_read_only_output_returned(engine: Any, ctl: Ctl, tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("input bytes\n")
    res, job_id = docker_run(
        ctl, "-v", f"{data}:/inputs/data.txt", "-o", "results:/results", "-w", "/inputs",
        "-e", "WHO=container", TEST_IMAGE, "--", "sh", "-c",
        "cat data.txt; echo changed > data.txt || echo read-only; "
        "echo made by $WHO > /results/made.txt",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    got = ctl("get", job_id, "--output-dir", str(out))
    assert got.returncode == 0, got.stderr
    assert (out / "stdout").read_text() == "input bytes\nread-only\n"
    assert "Read-only file system" in (out / "stderr").read_text()
    assert (out / "results" / "made.txt").read_text() == "made by container\n"
    assert (out / "exitCode").read_text() == "0\n"
    assert data.read_text() == "input bytes\n"
    doc = ctl.json("describe", job_id)
    assert doc["spec"]["engine"] == "docker"
    assert_no_container_left(engine, job_id)


def test_container_sees_only_loopback(ctl: Ctl, tmp_path: Path) -> None:
    res, job_id = docker_run(ctl, TEST_IMAGE, "ls", "/sys/class/net")
    assert res.returncode == 0, res.stderr
    assert ctl("logs", job_id).stdout == "lo\n"


def test_memory_hog_fails_as_out_of_memory(engine: Any, ctl: Ctl) -> None:
    res, job_id = docker_run(
        ctl, "--memory", "32Mi", TEST_IMAGE, "dd", "if=/dev/zero", "of=/dev/null", "bs=200M",
        "count=1",
    )  # fmt: skip
    line = res.one_line_error()
    assert "failed" in line and "out of memory" in line, line
    assert_no_container_left(engine, job_id)


def test_timeout_stops_the_container(engine: Any, ctl: Ctl) -> None:
    res, job_id = docker_run(ctl, "--timeout", "2", TEST_IMAGE, "sleep", "120")
    assert "timed out after 2 s" in res.one_line_error()
    assert_no_container_left(engine, job_id)


def test_nonzero_exit_fails_with_code_and_stderr(ctl: Ctl) -> None:
    res, job_id = docker_run(ctl, TEST_IMAGE, "sh", "-c", "echo broken >&2; exit 4")
    assert "exit code 4" in res.one_line_error()
    (ex,) = [e for e in ctl.json("describe", job_id)["executions"] if e["state"] == "failed"]
    assert ex["exit_code"] == 4 and "broken" in ex["stderr_tail"]


def test_cancel_stops_the_container_and_logs_follow_live(
    engine: Any, nodes: list[NodeProc], ctl: Ctl
) -> None:
    res, job_id = docker_run(
        ctl, "--no-wait", TEST_IMAGE, "sh", "-c", "echo first line; exec sleep 120"
    )
    assert res.returncode == 0, res.stderr
    follow = subprocess.Popen(
        [sys.executable, "-m", "bacalhau.cli.ctl", "--api", nodes[0].address, "logs", "-f",
         job_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        # The line arrives while the container still runs: streamed, not read from a result.
        assert follow.stdout.readline() == b"first line\n"
        assert ctl.json("describe", job_id)["state"] == "running"
        assert containers_labelled(engine, "bacalhau.job", job_id)
        assert ctl("cancel", job_id).returncode == 0
        assert follow.wait(timeout=30) == 0
    finally:
        follow.kill()
        follow.wait()

    def stopped() -> Any:
        doc = ctl.json("describe", job_id)
        return [e for e in doc["events"] if e["type"] == "ExecutionStopped"] and doc

    doc = wait_for(stopped, 30, "the node to report the container stopped")
    assert doc["state"] == "cancelled"
    assert_no_container_left(engine, job_id)
    # What it wrote until it was stopped is kept: its logs, not a result to get.
    kept = ctl("logs", job_id)
    assert kept.returncode == 0 and kept.stdout == "first line\n", kept.stderr
    assert "cancelled without a result" in ctl("get", job_id).one_line_error()


def test_missing_image_is_not_pulled_and_fails_clearly(ctl: Ctl) -> None:
    res, _ = docker_run(ctl, "bacalhau-test/never-built:1", "true")
    line = res.one_line_error()
    assert "no node can run this job" in line
    assert "image bacalhau-test/never-built:1 is not on this node" in line


def test_unmet_gpu_request_says_what_is_missing(nodes: list[NodeProc], ctl: Ctl) -> None:
    peers = {p["id"]: p for p in ctl.json("peers")}
    assert peers[nodes[1].node_id]["resources"]["gpu"] == 4
    res, _ = docker_run(ctl, "--gpu", "5", TEST_IMAGE, "true")
    line = res.one_line_error()
    assert "needs 5 GPU, this node has none" in line
    assert "needs 5 GPU, this node has 4" in line


def test_gpu_job_goes_to_the_gpu_node_with_its_devices(nodes: list[NodeProc], ctl: Ctl) -> None:
    # node-1's GPUs are reported by a recorded nvidia-smi output and it is told its engine has
    # the NVIDIA runtime; this engine has none, so the container fails to start, which shows
    # the device request was made. node-2 has the same GPUs but asked the engine: no bid.
    res, job_id = docker_run(ctl, "--gpu", "2", TEST_IMAGE, "true")
    line = res.one_line_error()
    doc = ctl.json("describe", job_id)
    (ex,) = [e for e in doc["executions"] if e["state"] == "failed"]
    assert ex["node_id"] == nodes[1].node_id
    assert "the container did not start" in line and "[[gpu]]" in line, line


def test_gpu_jobs_need_the_nvidia_runtime(nodes: list[NodeProc], ctl: Ctl, tmp_path: Path) -> None:
    res, _ = docker_run(ctl, "--gpu", "1", "--labels", "name=node-2", TEST_IMAGE, "true")
    line = res.one_line_error()
    assert "no node can run this job" in line
    assert "GPU jobs need the NVIDIA container runtime" in line, line
    shown = Ctl(nodes[2].address, tmp_path)("node", "describe")
    assert (
        "GPUs:       4 (no NVIDIA container runtime: docker jobs asking for GPUs are declined)"
        in shown.stdout
    ), shown.stdout
    shown = Ctl(nodes[1].address, tmp_path)("node", "describe")
    assert "GPUs:       4 (docker jobs: NVIDIA container runtime)" in shown.stdout, shown.stdout
    doc = Ctl(nodes[0].address, tmp_path).json("node", "describe")
    assert doc["resources"]["gpu"] == 0 and doc["nvidia_container_runtime"] is False


def test_crashed_node_removes_its_containers_at_start(
    engine: Any, tmp_path: Path, nodes: list[NodeProc]
) -> None:
    node = start_node(tmp_path / "crashy", name="crashy", args=DOCKER_ARGS)
    ctl = Ctl(node.address, tmp_path)
    try:
        res, job_id = docker_run(ctl, "--no-wait", TEST_IMAGE, "sleep", "120")
        assert res.returncode == 0, res.stderr
        wait_for(lambda: containers_labelled(engine, "bacalhau.job", job_id), 30, "the container")
        node.stop(signal.SIGKILL)
        assert containers_labelled(engine, "bacalhau.job", job_id)  # left behind by the crash
        node = start_node(tmp_path / "crashy", name="crashy", args=DOCKER_ARGS)
        ctl = Ctl(node.address, tmp_path)
        # The restarted node removes the old container, then runs the execution again.
        wait_for(
            lambda: ctl.json("describe", job_id)["executions"][0]["state"] == "running",
            30,
            "the execution to run again",
        )
        assert ctl("cancel", job_id).returncode == 0
        assert_no_container_left(engine, job_id)
    finally:
        node.stop()
