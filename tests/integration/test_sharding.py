"""Sharded jobs on a real 3-node network: a 100-file folder uploaded to one node, cut into 10
shards, run across the nodes (each shard seeing only its files, at their paths), merged by
`get` into what the unsharded job gives; failed shards retried elsewhere, then named."""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._docker import TEST_IMAGE, docker_client
from tests._wait import wait_for
from tests.integration.conftest import ROOT, Cluster, Ctl, NodeProc, start_node

DOCKER_ARGS = ("--engines", "docker", "--docker-pull", "never")
# Per file: its word count, in a file named after it; and the shard's own index and files.
COUNT = (
    "for f in $(find /inputs -type f | sort); do "
    "n=$(wc -w < $f); echo $n > /outputs/$(basename $f).count; done; "
    "echo shard=$BACALHAU_SHARD_INDEX/$BACALHAU_SHARD_COUNT files=$(find /inputs -type f | wc -l)"
)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProc]]:
    docker_client()
    cluster = Cluster(tmp_path_factory.mktemp("shard-nodes"), 3, DOCKER_ARGS)
    yield cluster.nodes
    cluster.close()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("texts") / "texts"
    for i in range(100):
        sub = d / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"t{i:03d}.txt").write_text(" ".join(["word"] * (i + 1)) + "\n")
    (d / "README.md").write_text("not a text file to count\n")
    return d


def _run(ctl: Ctl, *args: str) -> tuple[Any, str]:
    res = ctl("docker", "run", *args, timeout=240)
    return res, res.stdout.split()[0] if res.stdout.split() else ""


def _outputs(d: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((d / "outputs").iterdir())}


def test_a_sharded_job_gives_the_unsharded_jobs_output(
    net: list[NodeProc], folder: Path, tmp_path: Path
) -> None:
    ctl = Ctl(net[0].address, tmp_path)
    res, whole = _run(ctl, "-v", f"{folder}:/inputs", TEST_IMAGE, "sh", "-c", COUNT)
    assert res.returncode == 0, res.stderr
    res, sharded = _run(
        ctl, "-v", f"{folder}:/inputs", "--sharding-glob-pattern", "**/*.txt",
        "--sharding-batch-size", "10", TEST_IMAGE, "sh", "-c", COUNT,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    doc = ctl.json("describe", sharded)
    assert doc["shards"]["count"] == 10 and doc["shards"]["by_state"] == {"completed": 10}
    ran_on = {e["node_id"] for e in doc["executions"] if e["state"] == "published"}
    assert len(ran_on) >= 2  # spread over the network
    # One announcement for the ten shards: one answer from each node (not one per shard),
    # and an execution only for each shard's chosen node (none for the bids not taken).
    answers = [e for e in doc["events"] if e["type"] in ("BidReceived", "BidDeclined")]
    assert sorted(e["node_id"] for e in answers) == sorted(n.node_id for n in net), answers
    assert all("willing to run 10 shard(s)" in e["detail"] for e in answers), answers
    assert len(doc["executions"]) == 10

    assert ctl("get", whole, "--output-dir", str(tmp_path / "whole")).returncode == 0
    got = ctl("get", sharded, "--output-dir", str(tmp_path / "sharded"))
    assert got.returncode == 0, got.stderr
    merged = _outputs(tmp_path / "sharded")
    expected = {k: v for k, v in _outputs(tmp_path / "whole").items() if k.endswith(".txt.count")}
    assert merged == expected and len(merged) == 100  # README.md matched no shard
    stdout = (tmp_path / "sharded" / "stdout").read_text().splitlines()
    assert stdout == [f"shard={i}/10 files=10" for i in range(10)]  # in shard order
    for i in range(10):
        own = tmp_path / "sharded" / "per_shard" / str(i)
        assert len(list((own / "outputs").iterdir())) == 10
    logs = ctl("logs", sharded, "--shard", "3")
    assert logs.stdout.strip() == "shard=3/10 files=10"
    # run printed every shard's stdout in shard order after the ID; Cat reads one shard's
    assert res.stdout.splitlines()[1:] == stdout
    one = ctl("get", sharded, "--path", "stdout", "--shard", "7", "--output-dir", "-")
    assert one.returncode == 0 and one.stdout == "shard=7/10 files=10\n", one.stderr


def test_no_matching_file_is_one_line_naming_the_pattern(
    net: list[NodeProc], folder: Path, tmp_path: Path
) -> None:
    ctl = Ctl(net[0].address, tmp_path)
    res, _ = _run(ctl, "-v", f"{folder}:/inputs", "--sharding-glob-pattern", "*.csv",
                  TEST_IMAGE, "true")  # fmt: skip
    line = res.one_line_error()
    assert "no file under /inputs matches '*.csv'" in line and "README.md" in line


def test_a_shard_that_fails_everywhere_fails_the_job_by_name(
    net: list[NodeProc], folder: Path, tmp_path: Path
) -> None:
    ctl = Ctl(net[0].address, tmp_path)
    script = 'if [ "$BACALHAU_SHARD_INDEX" = 2 ]; then echo broken >&2; exit 7; fi'
    res, job = _run(
        ctl, "-v", f"{folder}:/inputs", "--sharding-glob-pattern", "a/*.txt",
        "--sharding-batch-size", "10", TEST_IMAGE, "sh", "-c", script,
    )  # fmt: skip
    assert res.returncode != 0
    doc = ctl.json("describe", job)
    assert doc["state"] == "failed"
    assert "shard 2 of 5 failed (3 tries)" in doc["message"], doc["message"]
    tried = {e["node_id"] for e in doc["executions"] if e["shard"] == 2}
    assert len(tried) == 3  # once on each node: a retry goes elsewhere
    assert json.dumps(doc).count("ShardRequeued") == 2


def test_killing_a_node_re_places_only_its_shards(folder: Path, tmp_path: Path) -> None:
    """A node that runs some shards dies: after --node-lost-timeout only those shards are
    placed again; shards done or running elsewhere are not run twice."""
    docker_client()
    cluster = Cluster(tmp_path / "net", 3, (*DOCKER_ARGS, "--node-lost-timeout", "2"))
    nodes = cluster.nodes
    try:
        ctl = Ctl(nodes[0].address, tmp_path)
        res, job = _run(
            ctl, "--no-wait", "-v", f"{folder}:/inputs", "--sharding-glob-pattern", "a/*.txt",
            "--sharding-batch-size", "5", TEST_IMAGE, "sh", "-c", "sleep 3; echo done",
        )  # fmt: skip
        assert res.returncode == 0, res.stderr

        def running_elsewhere() -> Any:
            doc = ctl.json("describe", job)
            on = {e["node_id"] for e in doc["executions"] if e["state"] == "running"}
            return nodes[2].node_id in on and doc

        wait_for(running_elsewhere, 60, "a shard to run on n2")
        nodes[2].stop(signal.SIGKILL)
        done = wait_for(
            lambda: (d := ctl.json("describe", job))["state"] in ("completed", "failed") and d,
            120,
            "the job to end",
        )
        assert done["state"] == "completed", done["message"]
        victim = {
            e["shard"]
            for e in done["executions"]
            if e["node_id"] == nodes[2].node_id and "did not come back" in (e["message"] or "")
        }
        assert victim  # what n2 was running when it died
        runs = Counter(e["shard"] for e in done["executions"] if e["state"] != "bid_rejected")
        assert all(runs[s] == 2 for s in victim), runs  # placed again, once
        assert all(n == 1 for s, n in runs.items() if s not in victim), runs
        requeued = [e for e in done["events"] if e["type"] == "JobRequeued"]
        assert requeued and all(str(sorted(victim)[0]) in e["detail"] for e in requeued)
    finally:
        cluster.close()


def test_the_wordcount_example_runs_as_the_readme_says(tmp_path: Path) -> None:
    """examples/wordcount, sharded by 2 on a python node: every file counted once, in order."""
    node = start_node(tmp_path / "n", args=("--engines", "python"))
    try:
        ctl = Ctl(node.address, ROOT)
        res = ctl(
            "run", "python", "--sharding-glob-pattern", "*.txt", "--sharding-batch-size", "2",
            "-v", "examples/wordcount/texts:/inputs", "examples/wordcount/count.py", timeout=300,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        out = tmp_path / "out"
        assert ctl("get", res.stdout.split()[0], "--output-dir", str(out)).returncode == 0
        texts = sorted((ROOT / "examples" / "wordcount" / "texts").iterdir())
        lines = (out / "stdout").read_text().splitlines()
        assert lines == [f"{t.name}: {len(t.read_text().split())}" for t in texts]
        assert sorted(p.name for p in (out / "outputs").iterdir()) == [
            f"{t.name}.count" for t in texts
        ]
        shards = -(-len(texts) // 2)
        assert sorted(p.name for p in (out / "per_shard").iterdir()) == sorted(
            str(i) for i in range(shards)
        )
        assert (out / "stderr").read_text().count(f"of {shards}: ") == shards
    finally:
        node.stop()
