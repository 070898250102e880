"""Spec files and Bacalhau's verbs on a real node: docs/spec.md's examples run, `describe |
job run -` gives the same job, `job ...` and `node ...`, and one run per flag form."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml

from bacalhau.client import Client
from tests._docker import TEST_IMAGE, docker_client
from tests._wait import wait_for
from tests._web import QuietHandler, serve, stop
from tests.integration.conftest import ECHO_WASM, Ctl, NodeProc, start_node
from tests.test_specfile import doc_examples

ECHO_CID = "QmWhtTR7hn1PTrLH6j2u1GLa4C19Zrz1FZyuNoYmP3JQpQ"  # docs/spec.md's module


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    n = start_node(
        tmp_path_factory.mktemp("spec-node"),
        name="spec-node",
        args=("--engines", "wasm,noop", "--allow-private-urls", "--labels", "role=spec"),
    )
    try:
        with Client(n.address) as c:
            data = c.add_file(ECHO_WASM).cid, c.add_file(ECHO_WASM.with_suffix(".wat")).cid
        assert data[0] == ECHO_CID
        yield n
    finally:
        n.stop()


@pytest.fixture
def sctl(node: NodeProc, tmp_path: Path) -> Ctl:
    return Ctl(node.address, tmp_path)


def _run(ctl: Ctl, *args: str, stdin: bytes | None = None) -> str:
    res = ctl(*args, stdin=stdin)
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.splitlines()[0]
    assert job_id.startswith("j-")
    return job_id


def _round_trip(ctl: Ctl, job_id: str) -> None:
    """describe --output yaml | job run - : a new job, with the same spec section."""
    described = ctl("describe", job_id, "--output", "yaml")
    assert described.returncode == 0, described.stderr
    again = _run(ctl, "job", "run", "-", stdin=described.stdout.encode())
    assert again != job_id
    old = yaml.safe_load(described.stdout)
    new = ctl.json("describe", again)
    assert new["state"] == "completed"
    assert new["spec"] == old["spec"]


@pytest.mark.parametrize("engine", ["wasm", "noop"])
def test_docs_example_runs_and_round_trips(sctl: Ctl, tmp_path: Path, engine: str) -> None:
    spec = tmp_path / f"{engine}.yaml"
    spec.write_text(doc_examples()[engine])
    job_id = _run(sctl, "job", "run", str(spec))
    doc = sctl.json("describe", job_id)
    assert doc["state"] == "completed"
    if engine == "wasm":
        assert sctl("logs", job_id).stdout == "hello from a spec\n"
        assert doc["spec"]["resources"]["cpu"] == 0.5
        assert doc["spec"]["timeout_seconds"] == 60
    _round_trip(sctl, job_id)


def test_create_takes_a_whole_describe_document_and_bacalhau_keys(
    sctl: Ctl, tmp_path: Path
) -> None:
    job_id = _run(sctl, "wasm", "run", str(ECHO_WASM), "first")
    whole = sctl("describe", job_id, "--output", "json").stdout.encode()
    again = _run(sctl, "create", "-", stdin=whole)
    assert sctl("logs", again).stdout == "first\n"
    old_style = tmp_path / "job.yaml"
    old_style.write_text(
        "APIVersion: V1beta1\nSpec:\n  Engine: Wasm\n  Verifier: Noop\n  Publisher: IPFS\n"
        f"  Wasm:\n    EntryModule: {{StorageSource: IPFS, CID: {ECHO_CID}}}\n"
        "    Parameters: [from, '2022']\n  Deal: {Concurrency: 1}\n  Timeout: 60\n"
    )
    job = _run(sctl, "create", str(old_style))
    assert sctl("logs", job).stdout == "from 2022\n"


def test_a_spec_with_a_local_file_uploads_nothing(sctl: Ctl, tmp_path: Path) -> None:
    spec = tmp_path / "local.yaml"
    spec.write_text(
        f"engine: wasm\nwasm: {{module_cid: {ECHO_CID}}}\n"
        "inputs:\n  - {source: local, path: ./data, mount_path: /data}\n"
    )
    err = sctl("job", "run", str(spec)).one_line_error()
    assert "job run uploads nothing" in err


@pytest.fixture(scope="module")
def docker_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    docker_client()  # skips without an engine and the test image
    n = start_node(
        tmp_path_factory.mktemp("spec-docker"),
        name="spec-docker",
        args=("--engines", "docker", "--docker-pull", "never"),
    )
    yield n
    n.stop()


def test_docker_docs_example_runs_and_round_trips(docker_node: NodeProc, tmp_path: Path) -> None:
    ctl = Ctl(docker_node.address, tmp_path)
    doc = yaml.safe_load(doc_examples()["docker"])
    doc["docker"]["image"] = TEST_IMAGE  # the suite's local image; nothing is pulled
    spec = tmp_path / "docker.yaml"
    spec.write_text(yaml.safe_dump(doc))
    job_id = _run(ctl, "job", "run", str(spec))
    assert ctl("logs", job_id).stdout == "hello\n"
    _round_trip(ctl, job_id)


def test_job_and_node_verbs(sctl: Ctl, node: NodeProc) -> None:
    done = _run(sctl, "wasm", "run", str(ECHO_WASM), "verbs")
    listed = sctl.json("job", "list", "--all")
    assert done in [j["id"] for j in listed]
    assert sctl.json("job", "describe", done)["id"] == done
    assert sctl("job", "logs", done).stdout == "verbs\n"
    executions = sctl.json("job", "executions", done)
    assert [e["state"] for e in executions] == ["published"]
    assert executions[0]["node_id"] == node.node_id
    text = sctl("job", "executions", done).stdout
    assert executions[0]["id"] in text and "published" in text and "exit 0" in text
    history = sctl.json("job", "history", done)
    types = [e["type"] for e in history]
    assert types[0] == "JobCreated" and types[-1] == "JobCompleted"
    assert [e["seq"] for e in history] == list(range(1, len(history) + 1))
    assert "JobCompleted" in sctl("job", "history", done).stdout

    spinning = _run(sctl, "wasm", "run", "--no-wait", str(ECHO_WASM), "spin")

    def running() -> bool:
        return any(e["state"] == "running" for e in sctl.json("job", "executions", spinning))

    wait_for(running, 30, "the execution to start")
    stopped = sctl("job", "stop", spinning)
    assert stopped.returncode == 0, stopped.stderr
    assert sctl.json("job", "describe", spinning)["state"] == "cancelled"

    nodes = sctl.json("node", "list")
    assert nodes[0]["id"] == node.node_id and nodes[0]["self"] is True
    assert nodes[0]["labels"]["role"] == "spec"
    assert node.node_id in sctl("node", "list").stdout
    me = sctl.json("node", "describe")
    assert me["id"] == node.node_id and "wasm" in me["engines"]
    assert sctl.json("node", "describe", node.node_id[-8:])["id"] == node.node_id
    assert "not known" in sctl("node", "describe", "nosuchnode").one_line_error()


class _Files(QuietHandler):
    def do_GET(self) -> None:
        self._send(200, b"web data\n")


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    handler: type[BaseHTTPRequestHandler] = _Files
    server, url = serve(handler)
    yield url
    stop(server)


FORMS = [
    (("-i", "src=ipfs://{cid},dst=/data"), "inputs", [("ipfs", "/data")]),
    (("-i", "ipfs://{cid}:/data"), "inputs", [("ipfs", "/data")]),
    (("-i", "ipfs://{cid}"), "inputs", [("ipfs", "/inputs")]),
    (("-i", "{web}/file.txt"), "inputs", [("url", "/inputs/file.txt")]),
    (("-u", "{web}/file.txt:/web/in.txt"), "inputs", [("url", "/web/in.txt")]),
    (("--cpu", "500m"), "cpu", 0.5),
    (("--memory", "64Mb"), "memory", 64 * 10**6),
    (("--memory", "64MiB"), "memory", 64 << 20),
    (("--timeout", "1m30s"), "timeout", 90),
    (("--timeout", "90s"), "timeout", 90),
    (("--timeout", "1h"), "timeout", 3600),
    (("--count", "1"), "concurrency", 1),
]


@pytest.mark.parametrize(("flags", "what", "want"), FORMS, ids=[" ".join(f[0]) for f in FORMS])
def test_each_flag_form_runs(
    sctl: Ctl, node: NodeProc, web: str, flags: tuple[str, str], what: str, want: Any
) -> None:
    with Client(node.address) as c:
        cid = c.add_file(ECHO_WASM.with_suffix(".wat")).cid
    args = [a.replace("{cid}", cid).replace("{web}", web) for a in flags]
    job_id = _run(sctl, "wasm", "run", *args, str(ECHO_WASM), "form")
    doc = sctl.json("describe", job_id)
    assert doc["state"] == "completed"
    spec = doc["spec"]
    got = {
        "inputs": [(i["source"], i["mount_path"]) for i in spec["inputs"]],
        "cpu": spec["resources"]["cpu"],
        "memory": spec["resources"]["memory_bytes"],
        "timeout": spec["timeout_seconds"],
        "concurrency": spec["concurrency"],
    }[what]
    assert got == want
    if what == "inputs" and want[0][0] == "url":
        assert doc["executions"][0]["inputs"][0]["cid"]  # the node downloaded it
