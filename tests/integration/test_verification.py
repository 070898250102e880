"""Verified results on a real 3-node network: a deterministic job's three results agree and
stand; a job whose results differ fails, naming the disagreement, and serves no result;
--min-bids more than the willing nodes fails saying so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._docker import TEST_IMAGE, docker_client
from tests.integration.conftest import Cluster, Ctl, NodeProc

DOCKER_ARGS = ("--engines", "docker", "--docker-pull", "never")
VERIFIED = ("--verifier", "deterministic", "--concurrency", "3", "--confidence", "2")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProc]]:
    docker_client()
    cluster = Cluster(tmp_path_factory.mktemp("verify-nodes"), 3, DOCKER_ARGS)
    yield cluster.nodes
    cluster.close()


def _run(ctl: Ctl, *args: str) -> tuple[Any, str]:
    res = ctl("docker", "run", *args, timeout=240)
    return res, res.stdout.split()[0] if res.stdout.split() else ""


def test_agreeing_results_stand(net: list[NodeProc], tmp_path: Path) -> None:
    ctl = Ctl(net[0].address, tmp_path)
    res, job = _run(ctl, *VERIFIED, TEST_IMAGE, "sh", "-c", "echo same > /outputs/out.txt")
    assert res.returncode == 0, res.stderr
    doc = ctl.json("describe", job)
    published = [e for e in doc["executions"] if e["state"] == "published"]
    assert len(published) == 3 and len({e["result_cid"] for e in published}) == 1
    assert {e["node_id"] for e in published} == {n.node_id for n in net}


def test_disagreeing_results_fail_the_job_and_none_is_served(
    net: list[NodeProc], tmp_path: Path
) -> None:
    ctl = Ctl(net[0].address, tmp_path)
    res, job = _run(ctl, *VERIFIED, TEST_IMAGE, "sh", "-c", "hostname > /outputs/host.txt")
    assert res.returncode != 0
    doc = ctl.json("describe", job)
    assert doc["state"] == "failed"
    assert "its results were rejected: no verified result" in doc["message"], doc["message"]
    rejected = [e for e in doc["executions"] if e["state"] == "result_rejected"]
    assert len(rejected) == 3
    assert all(e["result_cid"] in doc["message"] for e in rejected)  # each named
    got = ctl("get", job, "--output-dir", str(tmp_path / "out"))
    assert "failed without a result" in got.one_line_error()


def test_more_min_bids_than_willing_nodes_fails_saying_so(
    net: list[NodeProc], tmp_path: Path
) -> None:
    ctl = Ctl(net[0].address, tmp_path)
    res, job = _run(ctl, "--min-bids", "4", TEST_IMAGE, "true")
    assert res.returncode != 0
    doc = ctl.json("describe", job)
    assert "3 nodes willing, the job asks for 4 bids" in doc["message"], doc["message"]


def test_a_confidence_the_concurrency_cannot_reach_is_one_line(
    net: list[NodeProc], tmp_path: Path
) -> None:
    ctl = Ctl(net[0].address, tmp_path)
    res, _ = _run(ctl, "--verifier", "deterministic", "--concurrency", "2", "--confidence", "3",
                  TEST_IMAGE, "true")  # fmt: skip
    assert "confidence 3 is more than the 2 node(s)" in res.one_line_error()


def test_with_several_results_get_says_which_and_can_pick_another(
    net: list[NodeProc], tmp_path: Path
) -> None:
    ctl = Ctl(net[0].address, tmp_path)
    res, job = _run(ctl, "--concurrency", "3", TEST_IMAGE, "sh", "-c", "hostname > /outputs/h")
    assert res.returncode == 0, res.stderr
    doc = ctl.json("describe", job)
    assert doc["result"]["of"] == 3
    first = ctl("get", job, "--output-dir", str(tmp_path / "first"))
    assert f"the result of execution {doc['result']['execution_id']}" in first.stderr
    assert "one of 3 published (2 different)" in first.stderr
    other = next(e for e in doc["executions"] if e["id"] != doc["result"]["execution_id"])
    picked = ctl("get", job, "--execution", other["id"], "--output-dir", str(tmp_path / "other"))
    assert picked.returncode == 0, picked.stderr
    a = (tmp_path / "first" / "outputs" / "h").read_text()
    b = (tmp_path / "other" / "outputs" / "h").read_text()
    assert a != b  # two nodes' containers: two host names
    missing = ctl("get", job, "--execution", "e-nope", "--output-dir", str(tmp_path / "x"))
    assert "has no execution e-nope" in missing.one_line_error()


def test_nodes_with_a_long_verified_record_run_verified_jobs_alone(
    tmp_path: Path,
) -> None:
    """Adaptive replication: after TRUSTED_AFTER agreeing results, a node runs a verified job
    alone (but for spot checks); its result stands by itself."""
    from bacalhau._pb.bacalhau.v1 import types_pb2
    from bacalhau.client import Client
    from bacalhau.requester.node import TRUSTED_AFTER
    from tests.integration.conftest import ECHO_WASM

    cluster = Cluster(tmp_path / "net", 3)
    try:
        with Client(cluster[0].address, timeout=60) as c:
            module = c.add_file(ECHO_WASM).cid
            jobs = []
            for i in range(TRUSTED_AFTER + 15):
                spec = types_pb2.JobSpec(
                    engine="wasm",
                    wasm=types_pb2.WasmSpec(module_cid=module, args=["n", str(i)],
                                            deterministic=True),
                    outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
                    deal=types_pb2.Deal(concurrency=3, verifier="deterministic"),
                )  # fmt: skip
                jobs.append(c.wait(c.submit(spec).job_id).job)
        assert all(j.state == types_pb2.JOB_STATE_COMPLETED for j in jobs)
        ran = [[e for e in j.executions if e.state == types_pb2.EXECUTION_STATE_PUBLISHED]
               for j in jobs]  # fmt: skip
        assert all(len(r) == 3 and not r[0].trusted for r in ran[:TRUSTED_AFTER])
        alone = [r for r in ran[TRUSTED_AFTER:] if len(r) == 1]
        assert alone and all(r[0].trusted for r in alone)  # 90% of them, but for spot checks
    finally:
        cluster.close()
