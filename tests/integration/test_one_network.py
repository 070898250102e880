"""One network: any node answers for any job (the call is relayed to the job's requester, who
checks the caller itself), and `list --network` merges every node's jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bacalhau.client import Client
from bacalhau.models import node_tag, requester_tag
from tests._wait import wait_for
from tests.integration.conftest import ECHO_WASM, Cluster, Ctl, metrics


def test_a_job_is_described_followed_fetched_and_cancelled_through_another_node(
    cluster: Cluster, ctl: Ctl, tmp_path: Path
):
    res = ctl("wasm", "run", "--labels", "name=node-1", str(ECHO_WASM), "hello", "there")
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.splitlines()[0]
    assert requester_tag(job_id) == node_tag(cluster[0].node_id)  # the ID names its requester
    via_c = cluster[2].address

    doc = ctl.json("describe", job_id, api=via_c)
    assert doc["id"] == job_id and doc["state"] == "completed"
    assert doc["requester_node_id"] == cluster[0].node_id
    # a unique prefix is found by asking the peers
    assert ctl.json("describe", job_id[:13], api=via_c)["id"] == job_id

    logs = ctl("logs", job_id, api=via_c)
    assert logs.returncode == 0 and logs.stdout == "hello there\n", logs.stderr
    out = tmp_path / "got"
    got = ctl("get", job_id, "--output-dir", str(out), api=via_c)
    assert got.returncode == 0, got.stderr
    assert (out / "outputs" / "result.txt").read_bytes() == b"hello there\n"
    one = tmp_path / "one"
    cat = ctl("get", job_id, "--path", "outputs/result.txt", "--output-dir", str(one), api=via_c)
    assert cat.returncode == 0, cat.stderr  # through Cat
    assert (one / "outputs" / "result.txt").read_bytes() == b"hello there\n"

    with Client(via_c) as c:  # events, followed to the end through node C
        types = [e.type for e in c.events(job_id, follow=True)]
    assert types[0] == "JobCreated" and types[-1] == "JobCompleted"

    # a running job, cancelled through node C by its owner; not by another user
    spin = ctl("wasm", "run", "--no-wait", "--labels", "name=node-1", str(ECHO_WASM), "spin")
    assert spin.returncode == 0, spin.stderr
    spin_id = spin.stdout.splitlines()[0]

    def running() -> bool:
        doc = ctl.json("describe", spin_id, api=via_c)
        return any(e["state"] == "running" for e in doc["executions"])

    wait_for(running, 30, "the execution to start")
    stranger = ctl("--user-key", str(tmp_path / "other.key"), "cancel", spin_id, api=via_c)
    assert "belongs to user" in stranger.one_line_error()  # the requester checked the key
    cancelled = ctl("cancel", spin_id, api=via_c)
    assert cancelled.returncode == 0, cancelled.stderr
    assert ctl.json("describe", spin_id)["state"] == "cancelled"  # on its requester, node A


def test_list_network_merges_every_nodes_jobs(cluster: Cluster, ctl: Ctl):
    ids = []
    for node in (cluster[1], cluster[2]):
        res = ctl("wasm", "run", str(ECHO_WASM), "listed", api=node.address)
        assert res.returncode == 0, res.stderr
        ids.append(res.stdout.splitlines()[0])
    alone = ctl.json("list", "--all")  # node A's own jobs only
    assert not {j["id"] for j in alone} & set(ids)
    merged = ctl.json("list", "--network", "-n", "500")
    found = [j["id"] for j in merged]
    assert set(ids) <= set(found)
    assert len(found) == len(set(found))
    times = [j["created_at"] for j in merged]
    assert times == sorted(times, reverse=True)  # newest first, across nodes
    # paged: one job a page, the cursor works on every node alike
    with Client(cluster[0].address) as c:
        first = c.list_jobs(all=True, limit=1, network=True)
        second = c.list_jobs(all=True, limit=1, network=True, cursor=first.next_cursor)
    assert [first.jobs[0].id, second.jobs[0].id] == found[:2]
    text = ctl("list", "--network")
    assert text.returncode == 0 and text.stdout.startswith("ID ")


def test_unknown_job_named_by_its_requester_tag(cluster: Cluster, ctl: Ctl):
    nowhere = "j-00000000-0000-0000-0000-000000000000-" + node_tag("12D3KooWnobody")
    line = ctl("describe", nowhere, api=cluster[2].address).one_line_error()
    assert "a node this one does not know" in line
    mine = "j-00000000-0000-0000-0000-000000000000-" + node_tag(cluster[0].node_id)
    line = ctl("describe", mine, api=cluster[2].address).one_line_error()
    assert f"job {mine} not found" in line


def test_results_and_logs_outlive_the_node_that_made_them(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
):
    pair = Cluster(tmp_path_factory.mktemp("pair"), 2, args=("--metrics-port", "0"))
    try:
        ctl = Ctl(pair[0].address, tmp_path)
        ok = ctl("wasm", "run", "--labels", "name=node-1", str(ECHO_WASM), "kept", "result")
        assert ok.returncode == 0, ok.stderr
        ok_id = ok.stdout.splitlines()[0]
        bad = ctl("wasm", "run", "--labels", "name=node-1", str(ECHO_WASM), "fail")
        assert bad.returncode == 1
        bad_id = bad.stdout.splitlines()[0]
        events = [e["type"] for e in ctl.json("describe", ok_id)["events"]]
        assert events[-1] == "JobCompleted"
        # Small results came whole with their reports: the requester fetched no block.
        assert metrics(pair[0])["bacalhau_block_bytes_received_total"] == 0

        pair[1].proc.kill()  # the compute node is gone, with everything it held
        pair[1].proc.wait()

        assert ctl("logs", ok_id).stdout == "kept result\n"
        out = tmp_path / "kept"
        got = ctl("get", ok_id, "--output-dir", str(out))
        assert got.returncode == 0, got.stderr
        assert (out / "outputs" / "result.txt").read_bytes() == b"kept result\n"
        failed_logs = ctl("logs", bad_id)  # a failed run's output is kept too
        assert failed_logs.returncode == 0 and "failing as asked" in failed_logs.stderr
    finally:
        pair.close()


def test_a_result_larger_than_its_requester_keeps_fails_the_job(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
):
    pair = Cluster(tmp_path_factory.mktemp("small"), 2, args=("--max-result-size", "64"))
    try:
        ctl = Ctl(pair[0].address, tmp_path)
        res = ctl("wasm", "run", "--labels", "name=node-1", str(ECHO_WASM), "big", "enough")
        line = res.one_line_error()
        assert "could not be copied to the requester" in line, line
        assert "this node keeps results of up to 64 bytes" in line, line
        doc = ctl.json("describe", res.stdout.splitlines()[0])
        assert doc["state"] == "failed"
    finally:
        pair.close()


def test_result_replicas_keep_a_result_when_both_its_nodes_are_gone(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
):
    trio = Cluster(tmp_path_factory.mktemp("trio"), 3)
    try:
        ctl = Ctl(trio[0].address, tmp_path)
        res = ctl(
            "wasm", "run", "--result-replicas", "1", "--labels", "name=node-1",
            str(ECHO_WASM), "replicated",
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        doc = ctl.json("describe", res.stdout.splitlines()[0])
        assert doc["spec"]["result_replicas"] == 1
        (ex,) = [e for e in doc["executions"] if e["state"] == "published"]
        assert ex["replica_node_ids"] == [trio[2].node_id]  # neither requester nor runner
        for node in (trio[0], trio[1]):  # the requester and the node that ran it
            node.proc.kill()
            node.proc.wait()
        cat = ctl("cat", f"{ex['result_cid']}/stdout", api=trio[2].address)
        assert cat.returncode == 0 and cat.stdout == "replicated\n", cat.stderr
        many = ctl("wasm", "run", "--result-replicas", "9", str(ECHO_WASM), api=trio[2].address)
        assert "result replicas 9 is above 8" in many.one_line_error()
    finally:
        trio.close()
