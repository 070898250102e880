"""What a node says about itself: duration histograms and build info on /metrics, /livez,
/readyz and /healthz, and --log-format json, on real nodes."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

from tests._wait import wait_for
from tests.integration.conftest import ECHO_WASM, Ctl, NodeProc, start_node


def _get(node: NodeProc, path: str) -> tuple[int, str]:
    port = re.findall(r"metrics on http://[^:]+:(\d+)/", node.log)[-1]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_health_and_json_logs(tmp_path: Path) -> None:
    node = start_node(tmp_path / "n", args=("--metrics-port", "0", "--log-format", "json"))
    try:
        res = Ctl(node.address, tmp_path)("wasm", "run", str(ECHO_WASM), "observed")
        assert res.returncode == 0, res.stderr
        job = res.stdout.split()[0]
        nowhere = ("wasm", "run", "--no-wait", "--labels", "name=nowhere", str(ECHO_WASM))
        assert Ctl(node.address, tmp_path)(*nowhere).returncode == 0
        declined = 'bacalhau_bids_declined_total{reason="labels"} 1'
        wait_for(lambda: declined in _get(node, "/metrics")[1], 10, "a declined bid counted")
        code, text = _get(node, "/metrics")
        assert code == 200
        assert re.search(r'bacalhau_build_info\{version="[^"]+",python="3\.\d+\.\d+"\} 1', text)
        for what in (
            "job",
            "bid_round",
            "queue_wait",
            "input_fetch",
            "execution",
            "result_storage",
        ):
            count = re.search(
                rf'bacalhau_duration_seconds_count\{{what="{what}",engine="wasm"\}} (\d+)', text
            )
            assert count and int(count[1]) >= 1, what
        assert 'bacalhau_duration_seconds_bucket{what="execution",engine="wasm",le="+Inf"}' in text
        assert 'bacalhau_peers{state="alive"} 0' in text
        for path in ("/livez", "/readyz", "/healthz"):
            assert _get(node, path) == (200, "ok\n"), path
        assert _get(node, "/nope")[0] == 404
        records = [json.loads(line) for line in node.log.splitlines() if line.startswith("{")]
        assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
        assert any(r.get("job_id") == job for r in records), [r["message"] for r in records][-5:]
    finally:
        node.stop()


def test_a_node_whose_peers_are_unreachable_is_live_but_not_ready(tmp_path: Path) -> None:
    node = start_node(
        tmp_path / "n",
        args=("--metrics-port", "0", "--peer", f"127.0.0.1:{_closed_port()}"),
    )
    try:
        assert _get(node, "/livez") == (200, "ok\n")
        code, text = _get(node, "/readyz")
        assert code == 503 and "none of its 1 --peer nodes is connected" in text
        assert _get(node, "/healthz")[0] == 503
    finally:
        node.stop()


DOCS = Path(__file__).resolve().parents[2] / "docs"
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def _exported(node: NodeProc) -> dict[str, str]:
    """{metric name: type} of what the node's /metrics declares."""
    code, text = _get(node, "/metrics")
    assert code == 200
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


def _metric_names(text: str, exported: dict[str, str]) -> set[str]:
    """The metric families named in `text` (a histogram's _bucket, _sum, _count as itself)."""
    names = set()
    for name in re.findall(r"\bbacalhau_[a-z0-9_]*[a-z0-9]", text):
        for suffix in _HISTOGRAM_SERIES:
            base = name.removesuffix(suffix)
            if base != name and exported.get(base) == "histogram":
                name = base
        names.add(name)
    return names


def test_the_docs_and_the_grafana_dashboard_name_exactly_what_a_node_exports(
    tmp_path: Path,
) -> None:
    node = start_node(tmp_path / "n", args=("--metrics-port", "0"))
    try:
        exported = _exported(node)
    finally:
        node.stop()
    assert len(exported) >= 18, exported

    board = json.loads((DOCS / "grafana" / "bacalhau.json").read_text())
    queries = [t["expr"] for p in board["panels"] for t in p["targets"]]
    queries += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    assert len(queries) >= len(board["panels"])
    used = _metric_names("\n".join(queries), exported)
    assert used, queries
    assert used <= exported.keys(), f"the dashboard asks for {sorted(used - exported.keys())}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))

    # docs/observability.md: one table row per metric, with its type.
    doc = (DOCS / "observability.md").read_text()
    rows = dict(re.findall(r"^\| `(bacalhau_[a-z0-9_]+)` \| (\w+) \|", doc, re.MULTILINE))
    assert rows.keys() == exported.keys(), (
        f"exported but not documented: {sorted(exported.keys() - rows.keys())}; "
        f"documented but not exported: {sorted(rows.keys() - exported.keys())}"
    )
    assert rows == exported
    assert _metric_names(doc, exported) <= exported.keys()
