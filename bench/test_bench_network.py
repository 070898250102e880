"""The peer network: how fast N nodes come to know each other, and messages per job.

Each size starts N real bacalhaud processes, every one given only the first as --peer (peer
exchange does the rest). Convergence is timed from the start of the last node until every node
lists every other as alive. Messages per job: the peer messages all nodes sent while 20 trivial
jobs ran, divided by 20; O(N) means the ratio to N stays flat as N grows.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.client import Client
from tests._wait import wait_for
from tests.integration.conftest import ECHO_WASM, NodeProc, start_node

Record = Callable[[str, object], None]
SIZES = (5, 10, 20)
JOBS = 20


def alive_everywhere(nodes: list[NodeProc]) -> bool:
    for node in nodes:
        alive = {p.node_id for p in node.info().peers if p.alive}
        if len(alive & {n.node_id for n in nodes}) < len(nodes) - 1:
            return False
    return True


def messages_sent(node: NodeProc) -> float:
    port = re.search(r"metrics on http://[^:]+:(\d+)", node.log)
    assert port is not None
    text = urllib.request.urlopen(f"http://127.0.0.1:{port[1]}/metrics", timeout=5).read()
    found = re.search(r'bacalhau_peer_messages_sent\{kind="messages"\} (\d+)', text.decode())
    assert found is not None
    return float(found[1])


@pytest.mark.parametrize("n", SIZES)
def test_convergence_and_messages_per_job(
    benchmark: Any, record: Record, note: Callable[[str, float], None], n: int
) -> None:
    root = Path(tempfile.mkdtemp(prefix=f"bench-net-{n}-"))
    nodes: list[NodeProc] = []
    try:
        for i in range(n - 1):
            peers = (nodes[0].address,) if nodes else ()
            nodes.append(start_node(root / f"n{i}", name=f"n{i}", peers=peers,
                                    args=("--metrics-port", "0")))  # fmt: skip

        def last_start_until_converged() -> None:
            last = root / f"n{n - 1}"
            args = ("--metrics-port", "0")
            nodes.append(start_node(last, name=last.name, peers=(nodes[0].address,), args=args))
            wait_for(lambda: alive_everywhere(nodes), 60, f"{n} nodes to converge")

        benchmark.pedantic(last_start_until_converged, rounds=1, iterations=1)
        record(f"converge_{n}", benchmark)

        with Client(nodes[0].address) as c:
            cid = c.add_file(ECHO_WASM).cid
            spec = types_pb2.JobSpec(engine="wasm", wasm=types_pb2.WasmSpec(module_cid=cid))
            before = sum(messages_sent(node) for node in nodes)
            with ThreadPoolExecutor(4) as pool:
                jobs = list(pool.map(lambda _: c.submit(spec).job_id, range(JOBS)))
                states = list(pool.map(lambda j: c.wait(j).job.state, jobs))
            after = sum(messages_sent(node) for node in nodes)
        assert states == [types_pb2.JOB_STATE_COMPLETED] * JOBS
        note(f"messages_per_job_{n}", (after - before) / JOBS)
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)
