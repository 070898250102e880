"""Sharded jobs on a 3-node devstack (real bacalhaud processes on loopback).

Locality: 300 small files, 100 held by each node (uploaded there), one sharded job over all of
them (a file a shard) submitted to the first node: the share of shards that ran on the node
holding their file. Throughput: the same job's shard executions per second, submit to
completed, against one unsharded trivial job's latency in the same run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.client import Client
from tests.integration.conftest import ECHO_WASM, Cluster

Note = Callable[[str, float], None]
PER_NODE = int(os.environ.get("BENCH_SHARDS_PER_NODE", "100"))


@pytest.fixture(scope="module")
def devstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("shard-devstack"), 3)
    yield cluster
    cluster.close()


def _job(folders: list[str], module: str) -> Any:
    return types_pb2.JobSpec(
        engine="wasm",
        wasm=types_pb2.WasmSpec(module_cid=module, args=["shard"]),
        inputs=[
            types_pb2.InputSpec(source="ipfs", cid=cid, mount_path=f"/inputs/n{i}")
            for i, cid in enumerate(folders)
        ],
        outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
        sharding=types_pb2.ShardingSpec(glob_pattern="**", batch_size=1),
    )


def test_sharded_job_locality_and_throughput(devstack: Cluster, tmp_path: Path, note: Note) -> None:
    folders = []
    for i, node in enumerate(devstack.nodes):
        d = tmp_path / f"data{i}"
        d.mkdir()
        for j in range(PER_NODE):
            (d / f"f{j:03d}.txt").write_text(f"node {i} file {j}\n")
        with Client(node.address) as c:
            folders.append(c.add_directory(d).cid)
    with Client(devstack[0].address, timeout=120) as c:
        module = c.add_file(ECHO_WASM).cid
        one = types_pb2.JobSpec(
            engine="wasm",
            wasm=types_pb2.WasmSpec(module_cid=module, args=["one"]),
            outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
        )
        for _ in range(3):  # warm: every node has compiled the module
            c.wait(c.submit(one).job_id)
        start = time.perf_counter()
        c.wait(c.submit(one).job_id)
        single = time.perf_counter() - start

        start = time.perf_counter()
        job_id = c.submit(_job(folders, module)).job_id
        job = c.wait(job_id).job
        took = time.perf_counter() - start
    assert job.state == types_pb2.JOB_STATE_COMPLETED, job.message
    holder = {n.node_id: i for i, n in enumerate(devstack.nodes)}
    ran = {
        ex.shard: ex.node_id
        for ex in job.executions
        if ex.state == types_pb2.EXECUTION_STATE_PUBLISHED
    }
    assert len(ran) == 3 * PER_NODE
    with Client(devstack[0].address) as c:  # which folder (node) each shard's file is in
        shards = job.shard_count
    # Files sort as n0/..., n1/..., n2/...: shard s holds a file of node s // PER_NODE.
    local = sum(holder[ran[s]] == s // PER_NODE for s in range(shards))
    note("shard_locality", local / shards)
    note("shard_rate", shards / took)
    note("shard_single_job", single)
