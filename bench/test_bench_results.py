"""A job's result read through a node that is not its requester, against `Cat` of the same
bytes from the requester (issue: one network).

Three real `bacalhaud` processes: node-0 is the requester, node-1 runs the job (a WASM module
that writes BENCH_RESULT_MIB MiB, 256 by default, to outputs/big.bin) and node-2 is neither.
The requester copies the result from node-1 before the job completes. Then, each round:
- `get` through node-2: `bacalhauctl get`'s own download (`download_result`) into a fresh
  folder; node-2 relays the signed `GetResults` call to node-0, which streams the blocks from
  its copy, and the client checks every block against its CID and writes the files;
- the baseline, `Cat` of outputs/big.bin from node-0: the same bytes, read and checked by the
  node, streamed to a client that only counts them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from bacalhau.cli._download import download_result
from bacalhau.client import Client
from tests._bigwat import big_wat
from tests.integration.conftest import Cluster, Ctl

MIB = 1 << 20
SIZE_MIB = int(os.environ.get("BENCH_RESULT_MIB", "256"))
ROUNDS = 3


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str, str]]:
    """(the cluster, the job ID, the result CID)."""
    root = tmp_path_factory.mktemp("results")
    cluster = Cluster(root / "nodes", 3)
    try:
        module = root / "big.wasm"
        module.write_bytes(wasmtime.wat2wasm(big_wat(SIZE_MIB)))
        ctl = Ctl(cluster[0].address, root)
        res = ctl("wasm", "run", "--quiet", "--labels", "name=node-1", str(module), timeout=600)
        assert res.returncode == 0, res.stderr
        job_id = res.stdout.splitlines()[0]
        (ex,) = [e for e in ctl.json("describe", job_id)["executions"] if e["state"] == "published"]
        yield cluster, job_id, ex["result_cid"]
    finally:
        cluster.close()


def test_cat_from_the_requester_baseline(
    benchmark: Any, record: Any, network: tuple[Cluster, str, str]
) -> None:
    cluster, _, cid = network
    with Client(cluster[0].address, timeout=600) as c:

        def cat() -> None:
            n = sum(len(chunk.data) for chunk in c.cat(f"{cid}/outputs/big.bin"))
            assert n == SIZE_MIB * MIB

        benchmark.pedantic(cat, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    record("result_cat_requester", benchmark)


def test_get_through_another_node(
    benchmark: Any, record: Any, network: tuple[Cluster, str, str], tmp_path: Path
) -> None:
    cluster, job_id, cid = network
    dest = tmp_path / "out"
    with Client(cluster[2].address, timeout=600) as c:

        def get() -> None:
            shutil.rmtree(dest, ignore_errors=True)
            got = download_result(c, job_id, dest)
            assert got.root_cid == cid
            assert (dest / "outputs" / "big.bin").stat().st_size == SIZE_MIB * MIB

        benchmark.pedantic(get, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    record("result_get_relayed", benchmark)


def summary(tr: pytest.TerminalReporter, results: dict[str, float]) -> None:
    got = results["result_get_relayed"]
    line = f"{SIZE_MIB / got:8.0f} MiB/s over {SIZE_MIB} MiB, relayed by a third node, written"
    if "result_cat_requester" in results:
        cat = results["result_cat_requester"]
        line += f" ({cat / got:.2f}x Cat from the requester: {SIZE_MIB / cat:.0f} MiB/s)"
    tr.write_line(f"{'get via another node':>22}: {line}")
