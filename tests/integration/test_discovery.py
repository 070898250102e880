"""Nodes find each other: through peer exchange along a bootstrap chain, and by mDNS (real
bacalhaud processes inside a network namespace the test makes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import start_node, wait_connected
from tests.integration.test_mdns import NETNS_SETUP, ROOT, _can_unshare


def test_a_bootstrap_chain_connects_through_peer_exchange(tmp_path: Path) -> None:
    a = start_node(tmp_path / "a", name="a")
    b = start_node(tmp_path / "b", name="b", peers=(a.address,))
    c = start_node(tmp_path / "c", name="c", peers=(b.address,))
    d = start_node(tmp_path / "d", name="d", peers=(c.address,))
    nodes = [a, b, c, d]
    try:
        wait_connected(nodes, timeout=20)  # everyone knows everyone, alive
        for node in nodes:
            peers = {p.node_id: p for p in node.info().peers}
            others = [n for n in nodes if n is not node]
            for other in others:
                rec = peers[other.node_id]
                assert rec.alive and other.address in rec.addresses
                assert list(rec.engines) == ["wasm"] and rec.resources.cpu >= 1
    finally:
        for node in nodes:
            node.stop()


MDNS_NODES = r"""
import json, os, signal, socket, subprocess, sys, threading, time
sys.path.insert(0, os.environ["BACALHAU_ROOT"])
from bacalhau.client import Client

# Safety belt: refuse to multicast unless this is the namespace the test made (loopback only).
if [name for _, name in socket.if_nameindex()] != ["lo"]:
    sys.exit(f"not in a private network namespace: {socket.if_nameindex()}")

root = sys.argv[1]
procs, addrs = [], []
for i in range(4):
    data = os.path.join(root, f"n{i}")
    os.makedirs(data, exist_ok=True)
    log = open(os.path.join(data, "node.log"), "ab")
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "bacalhau.cli.daemon", "serve", "--data-dir", data,
         "--port", "0", "--mdns"], stdout=log, stderr=subprocess.STDOUT))
try:
    deadline = time.monotonic() + 60
    result = {}
    while time.monotonic() < deadline:
        addrs = []
        for i in range(4):
            path = os.path.join(root, f"n{i}", "api.addr")
            if os.path.exists(path):
                addrs.append(open(path).read().strip())
        if len(addrs) == 4:
            views = {}
            for addr in addrs:
                with Client(addr, timeout=5) as c:
                    info = c.node_info()
                views[info.node_id] = sorted(p.node_id for p in info.peers if p.alive)
            result = views
            if all(len(v) == 3 for v in views.values()):
                break
        threading.Event().wait(0.1)  # poll the nodes until the deadline
    print(json.dumps(result))
finally:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=30) for p in procs]
    print(json.dumps({"exit_codes": codes}))
"""


@pytest.mark.skipif(not _can_unshare(), reason="needs root, unshare and ip")
def test_four_nodes_with_mdns_and_no_peer_find_each_other(tmp_path: Path) -> None:
    script = tmp_path / "mdns_nodes.py"
    script.write_text(MDNS_NODES)
    env = dict(os.environ, BACALHAU_ROOT=str(ROOT), PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", NETNS_SETUP, sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    out = proc.stdout.decode().strip().splitlines()
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    views = json.loads(out[-2])
    assert len(views) == 4
    for node_id, peers in views.items():
        assert sorted(peers) == sorted(n for n in views if n != node_id)
    assert json.loads(out[-1]) == {"exit_codes": [0, 0, 0, 0]}


@pytest.mark.skipif(not shutil.which("ss"), reason="needs ss (iproute2)")
def test_mdns_is_off_unless_asked(tmp_path: Path) -> None:
    node = start_node(tmp_path / "a", name="a")
    try:
        sockets = subprocess.run(["ss", "-uanp"], capture_output=True, text=True, timeout=10).stdout
        mine = [line for line in sockets.splitlines() if f"pid={node.proc.pid}," in line]
        assert not [line for line in mine if ":5353" in line], mine
    finally:
        node.stop()
