"""Node settings users asked for: a default job timeout, a relative --data-dir that docker jobs
still work with, and a job's --disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests._docker import TEST_IMAGE, docker_client
from tests._wait import wait_for
from tests.integration.conftest import ECHO_WASM, ROOT, Ctl, start_node


def test_a_job_without_a_timeout_gets_the_nodes_default(tmp_path: Path) -> None:
    node = start_node(tmp_path / "n", args=("--default-job-timeout", "1"))
    try:
        res = Ctl(node.address, tmp_path)("wasm", "run", str(ECHO_WASM), "spin", timeout=60)
        assert "timed out after 1 s" in res.one_line_error()
    finally:
        node.stop()


def test_a_default_above_the_maximum_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bacalhau.cli.daemon", "serve", "--data-dir", str(tmp_path),
         "--port", "0", "--default-job-timeout", "100", "--max-job-timeout", "60"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "--default-job-timeout must be above 0 and at most --max-job-timeout (60 s)" in lines[0]


def test_docker_jobs_run_on_a_node_started_with_a_relative_data_dir(tmp_path: Path) -> None:
    docker_client()
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        [sys.executable, "-m", "bacalhau.cli.daemon", "serve", "--data-dir", "rel/node",
         "--port", "0", "--engines", "docker", "--docker-pull", "never"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    log.close()
    try:
        addr = tmp_path / "rel" / "node" / "api.addr"
        wait_for(lambda: addr.exists() or proc.poll() is not None, 30, "the node to start")
        assert proc.poll() is None, (tmp_path / "node.log").read_text()
        ctl = Ctl(addr.read_text().strip(), tmp_path)
        (tmp_path / "in.txt").write_text("relative\n")
        res = ctl("docker", "run", "-v", f"{tmp_path / 'in.txt'}:/inputs/in.txt", TEST_IMAGE,
                  "cat", "/inputs/in.txt", timeout=120)  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert ctl("logs", res.stdout.split()[0]).stdout == "relative\n"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_disk_is_part_of_the_spec_and_checked(tmp_path: Path) -> None:
    ctl = Ctl("127.0.0.1:1", tmp_path)  # a dry run asks no node
    res = ctl("--output", "json", "wasm", "run", "--dry-run", "--disk", "1Gi", str(ECHO_WASM))
    assert res.returncode == 0, res.stderr
    assert '"disk_bytes": 1073741824' in res.stdout
    assert (
        "--disk"
        in ctl("wasm", "run", "--dry-run", "--disk", "lots", str(ECHO_WASM)).one_line_error()
    )
