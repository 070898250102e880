"""Real multi-node networks: `bacalhaud serve` processes on loopback, driven by `bacalhauctl`."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bacalhau.cli._job_cmds import STDERR_TAIL, TAIL_MARK
from bacalhau.client import Client
from tests._wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
ECHO_WASM = ROOT / "examples" / "wasm" / "echo.wasm"
START_TIMEOUT_S = 30.0


@dataclass
class NodeProc:
    name: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    address: str
    node_id: str
    tls_ca: bytes | None = None  # PEM: the node serves TLS, its certificate from this CA

    @property
    def log(self) -> str:
        return (self.data_dir / "node.log").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not stop on signal {sig}") from None

    def info(self) -> Any:
        with Client(self.address, timeout=5, tls_ca=self.tls_ca) as c:
            return c.node_info()


def start_node(
    data_dir: Path,
    *,
    name: str = "node",
    peers: tuple[str, ...] = (),
    args: tuple[str, ...] = (),
    tls_ca: bytes | None = None,
) -> NodeProc:
    data_dir.mkdir(parents=True, exist_ok=True)
    addr_file = data_dir / "api.addr"
    addr_file.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "bacalhau.cli.daemon", "serve",
        "--data-dir", str(data_dir), "--port", "0", *args,
    ]  # fmt: skip
    for peer in peers:
        cmd += ["--peer", peer]
    log = open(data_dir / "node.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    log.close()
    try:
        wait_for(
            lambda: addr_file.exists() or proc.poll() is not None,
            START_TIMEOUT_S,
            f"{name} to start",
        )
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited: {(data_dir / 'node.log').read_text()}")
        address = addr_file.read_text().strip()
        with Client(address, timeout=5, tls_ca=tls_ca) as c:
            node_id = c.node_info().node_id
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return NodeProc(name, data_dir, proc, address, node_id, tls_ca)


def metrics(node: NodeProc) -> dict[str, float]:
    """The node's Prometheus samples (started with --metrics-port; over loopback, no proxy)."""
    ports = re.findall(r"metrics on http://[^:]+:(\d+)/", node.log)  # the last start's
    assert ports, node.log
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{ports[-1]}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_connected(nodes: list[NodeProc], timeout: float = 15.0) -> None:
    for node in nodes:
        want = {n.node_id for n in nodes if n is not node}

        def connected(node: NodeProc = node, want: set[str] = want) -> bool:
            return want <= {p.node_id for p in node.info().peers if p.connected}

        wait_for(connected, timeout, f"{node.name} to see its peers")


class Cluster:
    """N nodes; node i has the label name=node-i and dials the nodes before it."""

    def __init__(self, root: Path, n: int, args: tuple[str, ...] = ()) -> None:
        self.nodes: list[NodeProc] = []
        try:
            for i in range(n):
                self.nodes.append(
                    start_node(
                        root / f"node-{i}",
                        name=f"node-{i}",
                        peers=tuple(x.address for x in self.nodes),
                        args=("--labels", f"name=node-{i}", *args),
                    )
                )
            wait_connected(self.nodes)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()

    def __getitem__(self, i: int) -> NodeProc:
        return self.nodes[i]


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"), 3)
    yield c
    c.close()


class Ctl:
    """The real bacalhauctl, pointed at one node by BACALHAU_API."""

    def __init__(self, api: str, cwd: Path) -> None:
        self.api = api
        self.cwd = cwd

    def __call__(
        self, *args: str, api: str | None = None, timeout: float = 60, stdin: bytes | None = None
    ) -> Any:
        env = dict(os.environ, BACALHAU_API=api or self.api)
        proc = subprocess.run(
            [sys.executable, "-m", "bacalhau.cli.ctl", *args],
            input=stdin,
            capture_output=True,
            env=env,
            cwd=self.cwd,
            timeout=timeout,
        )
        return Result(proc)

    def json(self, *args: str, api: str | None = None) -> Any:
        res = self("--output", "json", *args, api=api)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)


class Result:
    def __init__(self, proc: subprocess.CompletedProcess[bytes]) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout.decode(errors="replace")
        self.stderr = proc.stderr.decode(errors="replace")

    def one_line_error(self) -> str:
        """The error line; fails unless bacalhauctl's stderr is exactly one line and the exit
        non-zero. A failed job's own stderr tail, which `run` prints first (a header, then
        each line marked), is not bacalhauctl's and is left out."""
        assert self.returncode != 0, self.stdout
        lines = self.stderr.strip().splitlines()
        while lines and lines[0] == STDERR_TAIL:
            lines = list(itertools.dropwhile(lambda t: t.startswith(TAIL_MARK), lines[1:]))
        assert len(lines) == 1 and "Traceback" not in lines[0], self.stderr
        return lines[0]

    def job_stderr_tail(self) -> list[str]:
        """The lines of a failed job's stderr tail that `run` printed (unmarked)."""
        lines = self.stderr.splitlines()
        return [t.removeprefix(TAIL_MARK) for t in lines if t.startswith(TAIL_MARK)]


@pytest.fixture
def ctl(cluster: Cluster, tmp_path: Path) -> Ctl:
    return Ctl(cluster[0].address, tmp_path)
