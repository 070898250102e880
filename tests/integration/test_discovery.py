"""Nodes find each other: through peer exchange along a bootstrap chain, and by mDNS (real
bacalhaud processes inside a network namespace the test makes)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import wasmtime

from bacalhau._pb.bacalhau.v1 import peer_pb2, peer_pb2_grpc
from bacalhau.client import Client
from bacalhau.identity import Identity
from bacalhau.network.peers import API_VERSION, MAX_PACKET
from tests._bigwat import big_wat
from tests._wait import wait_for
from tests.integration.conftest import ECHO_WASM, Ctl, start_node, wait_connected
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
        doc = {p["id"]: p for p in Ctl(a.address, tmp_path).json("peers")}[d.node_id]
        assert doc["alive"] and doc["addresses"] == [d.address] and doc["engines"] == ["wasm"]
        assert doc["resources"]["cpu"] >= 1 and doc["resources"]["disk_bytes"] > 0
        assert doc["resources"]["free"]["cpu"] == doc["resources"]["cpu"]  # nothing running
        assert doc["queued"] == 0 and doc["last_seen"]
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


def _envelope(ident: Identity, packet: Any) -> Any:
    payload = packet.SerializeToString()
    return peer_pb2.Envelope(
        payload=payload, public_key=ident.public_key_bytes, signature=ident.sign(payload)
    )


def _hello_packet(ident: Identity, seq: int) -> Any:
    hello = peer_pb2.Hello(
        node_id=ident.node_id, version="test", address="127.0.0.1:9", api_version=API_VERSION
    )
    return peer_pb2.PeerPacket(
        sender=ident.node_id,
        seq=seq,
        messages=[peer_pb2.PeerMessage(hello=hello)],
        nonce=os.urandom(16),
        time_unix_nano=time.time_ns(),
    )


def test_bad_packets_are_refused_counted_and_the_node_keeps_serving(tmp_path: Path) -> None:
    node = start_node(tmp_path / "n", name="n", args=("--metrics-port", "0"))
    try:
        me, other = Identity.generate(), Identity.generate()
        good = _envelope(me, _hello_packet(me, 1))
        forged = peer_pb2.Envelope()
        forged.CopyFrom(good)
        forged.public_key = other.public_key_bytes  # signed by me, claims to be the other
        malformed = peer_pb2.Envelope(
            payload=b"\xff\x01", public_key=me.public_key_bytes, signature=me.sign(b"\xff\x01")
        )
        replay = peer_pb2.PeerPacket(
            sender=me.node_id,
            recipient=node.node_id,
            seq=1,
            messages=[peer_pb2.PeerMessage(heartbeat=peer_pb2.Heartbeat())],
            nonce=os.urandom(16),
            time_unix_nano=time.time_ns(),
        )
        stale = _hello_packet(me, 1)
        stale.time_unix_nano -= 600 * 10**9  # signed ten minutes ago
        oversized = _envelope(me, peer_pb2.PeerPacket(sender=me.node_id, seq=1))
        oversized.payload += b"\x00" * (MAX_PACKET + 1)
        streams = {
            "forged": [forged],
            "malformed": [malformed],
            "oversized": [oversized],
            # a packet whose sequence number does not grow on the stream
            "replayed": [good, _envelope(me, replay)],
            "stale": [_envelope(me, stale)],
        }
        with grpc.insecure_channel(node.address, options=[
            ("grpc.max_send_message_length", 16 << 20)
        ]) as ch:  # fmt: skip
            stub = peer_pb2_grpc.PeerServiceStub(ch)
            for envelopes in streams.values():
                # The node answers a good Hello with its own, then closes the stream on the bad.
                list(stub.Connect(iter(envelopes), timeout=10))
        port = int(wait_for(lambda: re.search(r"metrics on http://[^:]+:(\d+)", node.log), 10)[1])

        def counted() -> dict[str, float]:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            found = re.findall(
                r'bacalhau_peer_packets_rejected_total\{reason="(\w+)"\} (\d+)', text.decode()
            )
            return {reason: float(n) for reason, n in found}

        got = wait_for(lambda: len(counted()) >= 5 and counted(), 10, "the refusals counted")
        assert got == {reason: 1.0 for reason in streams}
        assert node.info().node_id  # still serving
        assert node.proc.poll() is None
    finally:
        node.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_job_reaches_a_node_without_a_stream_to_the_requester_through_gossip(
    tmp_path: Path,
) -> None:
    # a and c advertise an address nobody listens on, so they cannot dial each other: the only
    # way between them is through b (b dialled a, c dialled b, by their real addresses).
    a = start_node(tmp_path / "a", name="a", args=("--advertise", f"127.0.0.1:{_closed_port()}"))
    b = start_node(tmp_path / "b", name="b", peers=(a.address,))
    c = start_node(
        tmp_path / "c",
        name="c",
        peers=(b.address,),
        args=("--advertise", f"127.0.0.1:{_closed_port()}", "--labels", "name=c"),
    )
    nodes = [a, b, c]
    try:
        wait_connected([a, b])
        wait_connected([b, c])
        # a hears of c from b (peer exchange), but has no stream to it
        wait_for(lambda: c.node_id in {p.node_id for p in a.info().peers}, 20, "a to hear of c")
        assert not [p for p in a.info().peers if p.node_id == c.node_id and p.alive]
        for node in (a, c):  # the module is where it is needed (block exchange needs a stream)
            with Client(node.address) as cl:
                cid = cl.add_file(ECHO_WASM).cid
        ctl = Ctl(a.address, tmp_path)
        res = ctl("wasm", "run", "--labels", "name=c", cid, "via", "gossip")
        assert res.returncode == 0, res.stderr
        # a has no stream to c, but c's small result came whole with its report (through b):
        # a kept it, so the run prints the job's output
        assert res.stdout.splitlines()[1:] == ["via gossip"], res.stdout
        doc = ctl.json("describe", res.stdout.split()[0])
        (ex,) = [e for e in doc["executions"] if e["state"] == "published"]
        assert ex["node_id"] == c.node_id
        # A larger result (1 MiB) is fetched, which needs a stream: it stays on c, the
        # execution says so, and the run still succeeds.
        module = tmp_path / "big.wasm"
        module.write_bytes(wasmtime.wat2wasm(big_wat(1)))
        for node in (a, c):
            with Client(node.address) as cl:
                big = cl.add_file(module).cid
        res = ctl("wasm", "run", "--labels", "name=c", big)
        assert res.returncode == 0, res.stderr
        assert "the job completed, but its output could not be read" in res.stderr, res.stderr
        doc = ctl.json("describe", res.stdout.split()[0])
        (ex,) = [e for e in doc["executions"] if e["state"] == "published"]
        assert "not kept on the requester (no stream to its node)" in ex["message"]
        # c's stdout, straight from c
        assert Ctl(c.address, tmp_path)("--output", "json", "id").returncode == 0
    finally:
        for node in nodes:
            node.stop()
