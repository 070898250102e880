"""Memoized results and lineage on real nodes: an equal deterministic, verified job is answered
with the first one's result without running (on another node too, by asking peers);
--no-memo runs it; a two-step pipeline shows in `lineage`, back to the first job's inputs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ECHO_WASM, Ctl, NodeProc, start_node, wait_connected

VERIFIED = ("--deterministic", "--verifier", "deterministic", "--concurrency", "2",
            "--confidence", "2")  # fmt: skip


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProc]]:
    root = tmp_path_factory.mktemp("memo-nodes")
    a = start_node(root / "a", name="a")
    b = start_node(root / "b", name="b", peers=(a.address,))
    try:
        wait_connected([a, b])
        yield [a, b]
    finally:
        b.stop()
        a.stop()


def _run(ctl: Ctl, *args: str) -> tuple[str, dict[str, Any]]:
    res = ctl("wasm", "run", *args, timeout=120)
    assert res.returncode == 0, res.stderr
    job = res.stdout.split()[0]
    return job, ctl.json("describe", job)


def test_an_equal_job_is_answered_with_the_verified_result(
    net: list[NodeProc], tmp_path: Path
) -> None:
    ctl = Ctl(net[0].address, tmp_path)
    first, doc = _run(ctl, *VERIFIED, str(ECHO_WASM), "memo", "me")
    assert doc["memoized_from"] is None and doc["result"]["of"] == 2
    result = doc["result"]["cid"]
    again, doc2 = _run(ctl, *VERIFIED, str(ECHO_WASM), "memo", "me")
    assert doc2["memoized_from"] == first and doc2["result"]["cid"] == result
    assert [e["type"] for e in doc2["events"]] == ["JobCreated", "JobMemoized", "JobCompleted"]
    assert "Memoized:   from " + first in ctl("describe", again).stdout
    # the other node does not know it, and asks its peer
    other = Ctl(net[1].address, tmp_path)
    _, doc3 = _run(other, *VERIFIED, str(ECHO_WASM), "memo", "me")
    assert doc3["memoized_from"] == first and doc3["result"]["cid"] == result
    got = other("get", doc3["id"], "--output-dir", str(tmp_path / "out"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out" / "stdout").read_text() == "memo me\n"
    # not equal (other args), and --no-memo: run for real
    _, doc4 = _run(ctl, *VERIFIED, str(ECHO_WASM), "memo", "you")
    _, doc5 = _run(ctl, *VERIFIED, "--no-memo", str(ECHO_WASM), "memo", "me")
    assert doc4["memoized_from"] is None and doc5["memoized_from"] is None
    assert doc5["result"]["cid"] == result  # deterministic: the same bytes again


def test_lineage_follows_a_pipeline_back_to_its_inputs(net: list[NodeProc], tmp_path: Path) -> None:
    ctl = Ctl(net[0].address, tmp_path)
    job_a, doc_a = _run(ctl, *VERIFIED, str(ECHO_WASM), "step", "one")
    result_a = doc_a["result"]["cid"]
    job_b, doc_b = _run(
        ctl, *VERIFIED, "-v", f"{result_a}:/inputs", str(ECHO_WASM), "cat", "stdout"
    )
    result_b = doc_b["result"]["cid"]
    tree = ctl.json("lineage", result_b, "--depth", "2")
    by_cid = {n["cid"]: n for n in tree}
    assert by_cid[result_b]["job_id"] == job_b and by_cid[result_b]["inputs"] == [result_a]
    assert by_cid[result_a]["job_id"] == job_a and by_cid[result_a]["depth"] == 1
    assert by_cid[result_a]["used_by"] == [job_b]
    assert by_cid[result_b]["function"]["engine"] == "wasm"
    assert by_cid[result_a]["function"]["args"] == ["step", "one"]
    text = ctl("lineage", result_b, "--depth", "2").stdout
    assert f"made by {job_b}" in text and f"  {result_a}  made by {job_a}" in text
    unknown = ctl.json("lineage", "bafkreicecnx2gvntm6fbcrvnc336qze6st5u7qq7457igegamd3bzkx7ri")
    assert unknown[0]["job_id"] is None
    assert "invalid CID 'nope'" in ctl("lineage", "nope").one_line_error()
