"""Jobs on a 3-node devstack (real bacalhaud processes on loopback).

Latency: one trivial WASM job from Submit until the client sees it completed, against the
baseline of a unary gRPC round trip (NodeInfo) to the same node in the same run.
Throughput: 50 jobs submitted at once, until all are completed.
Beside them, in the same run on the same machine: Dask's distributed LocalCluster (two
worker processes on 127.0.0.1, `bench/_dask_jobs.py`) on equivalent trivial tasks, measured
the same two ways; the summary gives the ratios. It runs in a network namespace of its own
(`unshare -n`, loopback only) where the machine permits, else plainly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.client import Client
from tests.integration.conftest import ECHO_WASM, Cluster

Record = Callable[[str, object], None]
Note = Callable[[str, float], None]
BATCH = 50
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def devstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("devstack"), 3)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def client(devstack: Cluster) -> Iterator[Client]:
    with Client(devstack[0].address) as c:
        yield c


@pytest.fixture(scope="module")
def spec(client: Client) -> Any:
    cid = client.add_file(ECHO_WASM).cid
    return types_pb2.JobSpec(
        engine="wasm",
        wasm=types_pb2.WasmSpec(module_cid=cid, args=["bench"]),
        outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
    )


def one_job(client: Client, spec: Any) -> None:
    job_id = client.submit(spec).job_id
    job = client.wait(job_id).job
    assert job.state == types_pb2.JOB_STATE_COMPLETED, job.message


def test_grpc_roundtrip_baseline(benchmark: Any, client: Client, record: Record) -> None:
    benchmark.pedantic(client.node_info, rounds=300, iterations=1, warmup_rounds=30)
    record("grpc_roundtrip", benchmark)


def test_job_latency(benchmark: Any, client: Client, spec: Any, record: Record) -> None:
    benchmark.pedantic(one_job, args=(client, spec), rounds=60, iterations=1, warmup_rounds=5)
    record("job_latency", benchmark)


def test_jobs_per_second(benchmark: Any, client: Client, spec: Any, record: Record) -> None:
    pool = ThreadPoolExecutor(BATCH)

    def batch() -> None:
        for fut in [pool.submit(one_job, client, spec) for _ in range(BATCH)]:
            fut.result()

    try:
        benchmark.pedantic(batch, rounds=5, iterations=1, warmup_rounds=1)
    finally:
        pool.shutdown()
    record("jobs_batch", benchmark)


def test_memoized_job_latency(benchmark: Any, client: Client, spec: Any, record: Record) -> None:
    """An equal deterministic, verified job answered from the memo (nothing runs)."""
    memo = types_pb2.JobSpec()
    memo.CopyFrom(spec)
    memo.wasm.deterministic = True
    memo.wasm.args[:] = ["memo"]
    memo.deal.verifier = "deterministic"
    one_job(client, memo)  # the verified run the others are answered with
    benchmark.pedantic(one_job, args=(client, memo), rounds=60, iterations=1, warmup_rounds=5)
    record("memo_latency", benchmark)


def _run_dask(isolated: bool) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "bench._dask_jobs"]
    if isolated:
        cmd = ["unshare", "-n", *cmd, "--isolated"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_dask_baseline(note: Note) -> None:
    """Dask's LocalCluster on equivalent trivial tasks (`bench/_dask_jobs.py`), for the
    summary's ratios; inside `unshare -n` where that is permitted."""
    pytest.importorskip("distributed", reason="Dask is the bench extra: ./dev setup installs it")
    isolated = shutil.which("unshare") is not None
    proc = _run_dask(isolated) if isolated else None
    if proc is None or proc.returncode != 0:
        isolated = False  # not permitted here (no CAP_SYS_ADMIN, say): plainly, on loopback
        proc = _run_dask(False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    note("dask_latency", figures["latency_p50"])
    note("dask_rate", figures["rate"])
    note("dask_isolated", float(isolated))
