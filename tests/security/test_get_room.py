"""`bacalhauctl get` onto a disk without room for the result: one line, nothing kept, no
traceback. The disk is a 1 MiB tmpfs in a mount namespace of the test's own (`unshare -m`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ECHO_WASM, ROOT, Ctl, start_node


def _can_mount() -> bool:
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k none /mnt"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount(), reason="needs root and unshare -m to mount a small tmpfs")
def test_get_onto_a_full_disk_is_one_line_and_keeps_nothing(tmp_path: Path) -> None:
    node = start_node(tmp_path / "n", args=("--engines", "wasm"))
    try:
        ctl = Ctl(node.address, tmp_path)
        res = ctl("wasm", "run", str(ECHO_WASM), "small", "result")
        assert res.returncode == 0, res.stderr
        job = res.stdout.split()[0]
        disk = tmp_path / "disk"
        disk.mkdir()
        script = (
            f"mount -t tmpfs -o size=1m none {disk} && "
            f"{sys.executable} -m bacalhau.cli.ctl get {job} --output-dir {disk}/out; "
            f"code=$?; ls -A {disk}; exit $code"
        )
        env = dict(os.environ, BACALHAU_API=node.address)
        proc = subprocess.run(
            ["unshare", "-m", "sh", "-c", script],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "free" in lines[0] and str(disk) in lines[0], lines[0]
        assert proc.stdout.strip() == ""  # nothing left on that disk: no out/, no out.partial/
        assert node.info().node_id == node.node_id
    finally:
        node.stop()
