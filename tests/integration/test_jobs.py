"""Jobs across real nodes: placement, results, failures, cancel, and the describe document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from bacalhau.client import Client
from bacalhau.content import Importer
from bacalhau.content.cid import CID
from bacalhau.datastore.lmdbstore import LmdbDatastore
from bacalhau.models import ExecutionState
from tests._wait import wait_for
from tests.integration.conftest import ECHO_WASM, Cluster, Ctl, start_node


def run_job(ctl: Ctl, *args: str) -> tuple[Any, str]:
    res = ctl("wasm", "run", *args)
    job_id = res.stdout.splitlines()[0] if res.stdout else ""
    return res, job_id


def test_job_submitted_to_one_node_runs_on_another(cluster: Cluster, ctl: Ctl, tmp_path: Path):
    res, job_id = run_job(ctl, "--labels", "name=node-2", str(ECHO_WASM), "hello", "world")
    assert res.returncode == 0, res.stderr
    assert job_id.startswith("j-")
    assert res.stdout == f"{job_id}\nhello world\n"  # the ID, then the job's stdout

    doc = ctl.json("describe", job_id)
    assert doc["id"] == job_id and doc["state"] == "completed"
    assert doc["requester_node_id"] == cluster[0].node_id
    (ex,) = [e for e in doc["executions"] if e["state"] == "published"]
    assert ex["node_id"] == cluster[2].node_id
    assert ex["exit_code"] == 0 and ex["result_cid"].startswith("Qm")

    # The result lives on node-2; node-0 fetches it for the client, byte-exact.
    out = tmp_path / "result"
    got = ctl("get", job_id, "--output-dir", str(out))
    assert got.returncode == 0, got.stderr
    assert (out / "stdout").read_bytes() == b"hello world\n"
    assert (out / "stderr").read_bytes() == b""
    assert (out / "exitCode").read_text() == "0\n"
    assert (out / "outputs" / "result.txt").read_bytes() == b"hello world\n"
    with Importer() as imp:  # the downloaded tree hashes to the proposed result CID
        assert str(CID.from_bytes(imp.add_path(out).cid)) == ex["result_cid"]

    logs = ctl("logs", job_id)
    assert logs.returncode == 0 and logs.stdout == "hello world\n"


def test_events_follow_the_lifecycle(cluster: Cluster, ctl: Ctl):
    res, job_id = run_job(ctl, "--labels", "name=node-1", str(ECHO_WASM), "x")
    assert res.returncode == 0, res.stderr
    doc = ctl.json("describe", job_id)
    types = [e["type"] for e in doc["events"]]
    assert [e["seq"] for e in doc["events"]] == list(range(1, len(types) + 1))
    order = ["JobCreated", "BidAccepted", "ExecutionRunning", "ResultProposed",
             "ResultAccepted", "ResultPublished", "JobCompleted"]  # fmt: skip
    assert [t for t in types if t in order] == order
    # every node answered the announcement: node-1 with a bid, the others declined the label
    declined = [e for e in doc["events"] if e["type"] == "BidDeclined"]
    assert {e["node_id"] for e in declined} == {cluster[0].node_id, cluster[2].node_id}


def test_an_idle_requester_takes_its_own_bid_without_asking_the_others(tmp_path: Path):
    """A job for one node, without inputs by CID, submitted to an idle node runs there at once
    (no bid can beat an empty queue): only that node is asked. While a job it placed on
    itself still runs, the next one is announced to every node and goes to the idle one."""
    two = Cluster(tmp_path / "two", 2)
    try:
        ctl = Ctl(two[0].address, tmp_path)
        for _ in range(2):
            res, job_id = run_job(ctl, str(ECHO_WASM), "mine")
            assert res.returncode == 0, res.stderr
            doc = ctl.json("describe", job_id)
            assert doc["state"] == "completed"
            assert [e["node_id"] for e in doc["executions"]] == [two[0].node_id]
            answers = [e for e in doc["events"] if e["type"] in ("BidReceived", "BidDeclined")]
            assert [e["node_id"] for e in answers] == [two[0].node_id], doc["events"]
        spin = ctl("wasm", "run", "--no-wait", str(ECHO_WASM), "spin")
        assert spin.returncode == 0, spin.stderr
        spin_id = spin.stdout.strip()
        wait_for(
            lambda: ctl.json("describe", spin_id)["state"] == "running", what="the spin job runs"
        )
        res, job_id = run_job(ctl, str(ECHO_WASM), "next")
        assert res.returncode == 0, res.stderr
        doc = ctl.json("describe", job_id)
        ran = [e["node_id"] for e in doc["executions"] if e["state"] == "published"]
        assert ran == [two[1].node_id], doc["executions"]
        bids = {e["node_id"] for e in doc["events"] if e["type"] == "BidReceived"}
        assert bids == {two[0].node_id, two[1].node_id}, doc["events"]
        assert ctl("cancel", spin_id).returncode == 0
    finally:
        two.close()


def test_a_job_run_on_its_requester_leaves_both_roles_records_final(tmp_path: Path):
    """The requester writes its own node's compute record with the choice, the report and
    the decision (one commit each instead of several): after a job ran there, both the job
    and the node's record of its execution are final, and a restart takes nothing up again."""
    node = start_node(tmp_path / "solo", name="solo")
    try:
        ctl = Ctl(node.address, tmp_path)
        ok, ok_id = run_job(ctl, str(ECHO_WASM), "fine")
        failed, failed_id = run_job(ctl, str(ECHO_WASM), "fail")
        assert ok.returncode == 0 and failed.returncode == 1, (ok.stderr, failed.stderr)
        order = ["JobCreated", "BidAccepted", "ExecutionRunning", "ResultProposed",
                 "ResultAccepted", "ResultPublished", "JobCompleted"]  # fmt: skip
        types = [e["type"] for e in ctl.json("describe", ok_id)["events"]]
        assert [t for t in types if t in order] == order, types
        assert node.stop() == 0
        store = LmdbDatastore(node.data_dir / "datastore")
        try:
            states = {r.execution.job_id: r.execution.state for r in store.list_local()}
        finally:
            store.close()
        assert states == {
            ok_id: ExecutionState.PUBLISHED.pb,
            failed_id: ExecutionState.FAILED.pb,
        }, states
        node = start_node(node.data_dir, name="solo")
        assert ctl.json("describe", ok_id, api=node.address)["state"] == "completed"
        assert "still wanted" not in node.log and "finishing execution" not in node.log
    finally:
        node.stop()


def test_describe_json_fields(ctl: Ctl):
    res, job_id = run_job(ctl, str(ECHO_WASM), "fields")
    assert res.returncode == 0, res.stderr
    doc = ctl.json("describe", job_id)
    assert {"id", "state", "message", "requester_node_id", "created_at", "updated_at", "spec",
            "executions", "events"} <= doc.keys()  # fmt: skip
    for ex in doc["executions"]:
        assert {"id", "node_id", "shard", "state", "exit_code", "result_cid", "stderr_tail",
                "message", "created_at", "updated_at"} <= ex.keys()  # fmt: skip
    for ev in doc["events"]:
        assert {"seq", "time", "type", "job_state", "node_id", "execution_id",
                "execution_state", "detail"} <= ev.keys()  # fmt: skip
    assert doc["spec"]["wasm"]["args"] == ["fields"]
    yaml_out = ctl("--output", "yaml", "describe", job_id)
    assert yaml_out.returncode == 0 and f"id: {job_id}" in yaml_out.stdout


def test_nonzero_exit_fails_the_job(ctl: Ctl, tmp_path: Path):
    res, job_id = run_job(ctl, str(ECHO_WASM), "fail")
    # the tail of the job's stderr, then one line saying what happened; stdout: the ID only
    assert res.returncode == 1 and res.stdout == f"{job_id}\n"
    assert res.job_stderr_tail() == ["failing as asked"]
    line = res.one_line_error()
    assert job_id and "failed" in line and "exit code 3" in line
    doc = ctl.json("describe", job_id)
    assert doc["state"] == "failed"
    assert "exit code 3" in doc["message"] and "failing as asked" in doc["message"]
    (ex,) = [e for e in doc["executions"] if e["state"] == "failed"]
    assert ex["exit_code"] == 3 and ex["stderr_tail"] == "failing as asked"
    # stdout, stderr and exitCode of a failed run can still be fetched
    out = tmp_path / "failed"
    assert ctl("get", job_id, "--output-dir", str(out)).returncode == 0
    assert (out / "exitCode").read_text() == "3\n"
    assert (out / "stderr").read_bytes() == b"failing as asked\n"


def test_cancel_stops_a_running_job(cluster: Cluster, ctl: Ctl):
    res, job_id = run_job(ctl, "--no-wait", "--labels", "name=node-1", str(ECHO_WASM), "spin")
    assert res.returncode == 0, res.stderr

    def running() -> bool:
        doc = ctl.json("describe", job_id)
        return any(e["state"] == "running" for e in doc["executions"])

    wait_for(running, 30, "the execution to start")
    cancelled = ctl("cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr

    def stopped() -> Any:
        doc = ctl.json("describe", job_id)
        return [e for e in doc["events"] if e["type"] == "ExecutionStopped"] and doc

    doc = wait_for(stopped, 30, "node-1 to report the program stopped")
    assert doc["state"] == "cancelled"
    (ev,) = [e for e in doc["events"] if e["type"] == "ExecutionStopped"]
    assert ev["node_id"] == cluster[1].node_id
    assert "cancelled while running" in ev["detail"]
    again = ctl("cancel", job_id)
    assert "already cancelled" in again.one_line_error()


def test_no_matching_node_fails_with_reasons(ctl: Ctl):
    res, _ = run_job(ctl, "--labels", "name=nowhere", str(ECHO_WASM))
    line = res.one_line_error()
    assert "no node can run this job" in line and "label name=nowhere" in line


def test_concurrency_runs_on_several_nodes(cluster: Cluster, ctl: Ctl):
    res, job_id = run_job(ctl, "--concurrency", "3", str(ECHO_WASM), "three")
    assert res.returncode == 0, res.stderr
    doc = ctl.json("describe", job_id)
    published = [e for e in doc["executions"] if e["state"] == "published"]
    assert {e["node_id"] for e in published} == {n.node_id for n in cluster.nodes}
    assert len({e["result_cid"] for e in published}) == 1  # deterministic module


def test_run_quiet_and_one_document(ctl: Ctl):
    res, job_id = run_job(ctl, "--quiet", str(ECHO_WASM), "shh")
    assert res.returncode == 0 and res.stdout == f"{job_id}\n"
    for fmt in ("json", "yaml"):
        res = ctl("--output", fmt, "wasm", "run", str(ECHO_WASM), "doc")
        assert res.returncode == 0, res.stderr
        doc = yaml.safe_load(res.stdout)  # the whole of stdout is one document
        assert doc["state"] == "completed" and doc["id"].startswith("j-")
    res = ctl("--output", "json", "wasm", "run", "--no-wait", str(ECHO_WASM), "later")
    assert json.loads(res.stdout)["state"] == "pending"
    res = ctl("--output", "json", "wasm", "run", str(ECHO_WASM), "fail")
    assert res.returncode == 1 and json.loads(res.stdout)["state"] == "failed"
    assert "exit code 3" in res.stderr.splitlines()[-1]
    res = ctl("--output", "json", "wasm", "run", "--id-only", str(ECHO_WASM), "id")
    assert res.stdout.strip().startswith("j-") and res.stdout.count("\n") == 1


def test_list_shows_recent_jobs_with_a_header(ctl: Ctl):
    res, job_id = run_job(ctl, str(ECHO_WASM), "listed")
    assert res.returncode == 0, res.stderr
    lines = ctl("list").stdout.splitlines()
    assert lines[0].split() == ["ID", "CREATED", "STATE", "ENGINE", "NODES"]
    assert lines[1].startswith(job_id) and "completed" in lines[1]  # newest first
    assert len(lines) <= 21
    active = ctl("list", "--active").stdout.splitlines()
    assert active[0].startswith("ID") and job_id not in "".join(active)
    assert len(ctl("list", "-n", "1").stdout.splitlines()) == 2
    assert "--active" in ctl("list", "--active", "--all").one_line_error()


def test_module_by_cid_and_list(cluster: Cluster, ctl: Ctl):
    with Client(cluster[0].address) as c:
        cid = c.add_file(ECHO_WASM).cid
    res, job_id = run_job(ctl, cid, "by", "cid")
    assert res.returncode == 0, res.stderr
    listed = ctl.json("list")
    assert job_id in [j["id"] for j in listed]
    active = ctl.json("list", "--active")
    assert job_id not in [j["id"] for j in active]
    assert ctl("describe", job_id[:12]).returncode == 0  # a unique prefix is enough


def test_logs_follow_waits_for_the_job(ctl: Ctl):
    res, job_id = run_job(ctl, "--no-wait", str(ECHO_WASM), "followed")
    assert res.returncode == 0
    logs = ctl("logs", "-f", job_id)
    assert logs.returncode == 0 and logs.stdout == "followed\n"


def test_only_nodes_with_the_resources_bid(ctl: Ctl):
    res, _ = run_job(ctl, "--cpu", "512", str(ECHO_WASM))
    line = res.one_line_error()
    assert "no node can run this job" in line and "needs 512 cpu, this node has" in line
    res, _ = run_job(ctl, "--gpu", "1", str(ECHO_WASM))
    assert "needs 1 GPU, this node has none" in res.one_line_error()
    res, _ = run_job(ctl, "--cpu", "1", "--memory", "16Mi", str(ECHO_WASM), "fits")
    assert res.returncode == 0, res.stderr


def test_inputs_by_cid_and_local_file_are_mounted_read_only(
    cluster: Cluster, ctl: Ctl, tmp_path: Path
):
    data = tmp_path / "data.txt"
    data.write_bytes(b"input held by node-0\n")
    with Client(cluster[0].address) as c:
        cid = c.add_file(data).cid
    # by CID: the input is on node-0 only; node-2 fetches it by block exchange
    res, job_id = run_job(
        ctl, "--labels", "name=node-2", "-v", f"{cid}:/inputs/data.txt", str(ECHO_WASM),
        "cat", "data.txt",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert ctl("logs", job_id).stdout == "input held by node-0\n"
    # a local file is uploaded first
    local = tmp_path / "local.txt"
    local.write_bytes(b"from the laptop\n")
    res, job_id = run_job(ctl, "-v", f"{local}:/in/local.txt", str(ECHO_WASM), "cat", "local.txt")
    assert res.returncode == 0, res.stderr
    assert ctl("logs", job_id).stdout == "from the laptop\n"
    # read-only: the module's own output file goes to fd 3, the input folder, and fails
    res, job_id = run_job(ctl, "-v", f"{cid}:/inputs/data.txt", str(ECHO_WASM), "write")
    assert res.returncode == 0
    out = tmp_path / "ro"
    assert ctl("get", job_id, "--output-dir", str(out)).returncode == 0
    assert not (out / "outputs" / "result.txt").exists()
    assert sorted(p.name for p in (out / "outputs").iterdir()) == []


def test_bad_inputs_fail_with_one_line(ctl: Ctl, tmp_path: Path):
    assert (
        "no such file or folder, and not a CID"
        in ctl("wasm", "run", "-v", "nonsense:/in", str(ECHO_WASM)).one_line_error()
    )
    assert "bad input" in ctl("wasm", "run", "-v", "no-colon", str(ECHO_WASM)).one_line_error()
    # a CID nobody holds: the execution fails naming it
    missing = "QmNLei78zWmzUdbeRB3CiUfAizWUrbeeZh5K1rhAQKCh51"
    res, job_id = run_job(ctl, "-v", f"{missing}:/in/x", str(ECHO_WASM))
    assert missing in res.one_line_error() or missing in ctl("describe", job_id).stdout
