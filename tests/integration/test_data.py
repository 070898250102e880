"""Data movement across real nodes: inputs by CID from peers, URLs from a loopback web server,
local folders; one download per CID per node; results fetched through another node."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.cli._download import download_result
from bacalhau.client import Client, ClientStub, load_user_key
from bacalhau.content import Importer
from bacalhau.content.cid import CID
from tests._bigwat import big_wat
from tests._wait import wait_for
from tests._web import QuietHandler, serve, stop
from tests.integration.conftest import ECHO_WASM, Cluster, Ctl, NodeProc, metrics

MIB = 1 << 20
URL_MAX = 8 * MIB

# Writes 64 MiB of pseudo-random words (an LCG, seed 1) to big.bin in its first preopen.
BIG_WAT = big_wat(64)  # a 64 MiB output file, outputs/big.bin


# -- a web server on loopback ----------------------------------------------------------------


class Web:
    """http.server on 127.0.0.1 in a thread: /f/NAME (files), /status/CODE, /endless,
    /redirect/NAME, /flaky/NAME (503 the first time); counts requests per path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        web = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                with web.lock:
                    n = web.hits[self.path] = web.hits.get(self.path, 0) + 1
                parts = self.path.split("/")
                kind, arg = parts[1], "/".join(parts[2:])
                if kind == "f" and arg in web.files:
                    self._send(200, web.files[arg])
                elif kind == "flaky" and arg in web.files:
                    self._send(503 if n == 1 else 200, web.files[arg])
                elif kind == "redirect":
                    self.send_response(302)
                    self.send_header("Location", f"/f/{arg}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif kind == "status":
                    self._send(int(arg), b"no\n")
                elif kind == "endless":
                    self._endless(b"x" * 65536)
                else:
                    self._send(404, b"not here\n")

        self.server, self.base = serve(Handler)

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        stop(self.server)


@pytest.fixture(scope="module")
def web() -> Iterator[Web]:
    w = Web()
    yield w
    w.close()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path_factory.mktemp("data"),
        3,
        args=("--metrics-port", "0", "--url-max-size", str(URL_MAX), "--allow-private-urls"),
    )
    yield c
    c.close()


@pytest.fixture
def dctl(net: Cluster, tmp_path: Path) -> Ctl:
    return Ctl(net[0].address, tmp_path)


def run(ctl: Ctl, *args: str, timeout: float = 120) -> tuple[Any, str]:
    res = ctl("wasm", "run", *args, timeout=timeout)
    return res, (res.stdout.splitlines()[0] if res.stdout else "")


def stdout_of(node: NodeProc, job_id: str) -> bytes:
    with Client(node.address) as c:
        return b"".join(ch.data for ch in c.logs(job_id, follow=False) if ch.stream == 1)


def cache_dir(node: NodeProc) -> Path:
    return node.data_dir / "scratch" / "inputs"


def random_file(path: Path, size: int, seed: bytes) -> bytes:
    """`size` bytes that do not repeat (so no two blocks are the same)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha512(seed + counter.to_bytes(8, "big")).digest() * 64
        counter += 1
    data = bytes(out[:size])
    path.write_bytes(data)
    return data


# -- inputs by CID across nodes ------------------------------------------------------------


def test_job_on_b_uses_64mib_input_held_only_by_a(net: Cluster, dctl: Ctl, tmp_path: Path):
    data = random_file(tmp_path / "big.bin", 64 * MIB, b"held by node-1")
    with Client(net[1].address) as c:
        cid = c.add_file(tmp_path / "big.bin").cid
    before = metrics(net[2])["bacalhau_block_bytes_received_total"]
    sent_before = metrics(net[1])["bacalhau_block_bytes_sent_total"]
    res, job_id = run(
        dctl, "--labels", "name=node-2", "-v", f"{cid}:/inputs/big.bin", str(ECHO_WASM),
        "cat", "big.bin",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert stdout_of(net[0], job_id) == data[:4096]
    got = metrics(net[2])["bacalhau_block_bytes_received_total"] - before
    assert 64 * MIB <= got < 65 * MIB  # the file once, plus the DAG's few link blocks
    assert metrics(net[1])["bacalhau_block_bytes_sent_total"] - sent_before >= 64 * MIB
    # written out once in node-2's cache, byte for byte
    assert (cache_dir(net[2]) / cid).read_bytes() == data


def test_four_jobs_at_once_download_a_new_cid_once(net: Cluster, tmp_path: Path):
    data = random_file(tmp_path / "shared.bin", 16 * MIB, b"four jobs")
    with Client(net[0].address) as c:
        cid = c.add_file(tmp_path / "shared.bin").cid
        module = c.add_file(ECHO_WASM).cid
    node = net[1]
    before = metrics(node)
    spec = types_pb2.JobSpec(
        engine="wasm",
        wasm=types_pb2.WasmSpec(module_cid=module, args=["cat", "shared.bin"]),
        inputs=[types_pb2.InputSpec(source="ipfs", cid=cid, mount_path="/inputs/shared.bin")],
        outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
        node_selector={"name": "node-1"},
    )

    def one(_: int) -> Any:
        with Client(net[0].address) as c:
            return c.wait(c.submit(spec).job_id).job

    with ThreadPoolExecutor(4) as pool:
        jobs = list(pool.map(one, range(4)))
    assert [j.state for j in jobs] == [types_pb2.JOB_STATE_COMPLETED] * 4
    after = metrics(node)
    received = (
        after["bacalhau_block_bytes_received_total"] - before["bacalhau_block_bytes_received_total"]
    )
    assert 16 * MIB <= received < 17 * MIB, received  # once, not four times
    misses, hits = (
        after[f"bacalhau_input_cache_{k}_total"] - before[f"bacalhau_input_cache_{k}_total"]
        for k in ("misses", "hits")
    )
    # the input: one miss and three hits; the module: a hit or a miss for each job
    assert misses >= 1 and hits >= 3 and misses + hits == 8
    assert (cache_dir(node) / cid).read_bytes() == data
    for job in jobs:
        assert stdout_of(net[0], job.id) == data[:4096]


def test_bids_prefer_the_node_holding_the_inputs(net: Cluster, dctl: Ctl, tmp_path: Path):
    (tmp_path / "local.txt").write_bytes(b"only node-2 has me\n")
    with Client(net[2].address) as c:
        cid = c.add_file(tmp_path / "local.txt").cid
    # The job does not print its input: its requester, node-0, keeps every result, and a
    # result holding the input's bytes would give node-0 the input too.
    for _ in range(3):  # not a coin toss: every time
        res, job_id = run(dctl, "-v", f"{cid}:/in/local.txt", str(ECHO_WASM), "unread")
        assert res.returncode == 0, res.stderr
        doc = dctl.json("describe", job_id)
        (ex,) = [e for e in doc["executions"] if e["state"] == "published"]
        assert ex["node_id"] == net[2].node_id
        (bid,) = [
            e for e in doc["events"] if e["type"] == "BidReceived" and e["node_id"] == ex["node_id"]
        ]
        assert "holds 1 input(s), 19 bytes" in bid["detail"]


# -- URL inputs --------------------------------------------------------------------------------


def test_url_input_is_mounted_and_recorded_by_cid(net: Cluster, dctl: Ctl, web: Web):
    web.files["hello.txt"] = b"hello from the web\n"
    res, job_id = run(dctl, "-u", web.url("/f/hello.txt"), str(ECHO_WASM), "cat", "hello.txt")
    assert res.returncode == 0, res.stderr
    assert dctl("logs", job_id).stdout == "hello from the web\n"
    doc = dctl.json("describe", job_id)
    assert doc["spec"]["inputs"] == [
        {"source": "url", "cid": None, "mount_path": "/inputs/hello.txt",
         "url": web.url("/f/hello.txt")},
    ]  # fmt: skip
    (ex,) = [e for e in doc["executions"] if e["state"] == "published"]
    (rec,) = ex["inputs"]
    with Importer() as imp:
        want = str(CID.from_bytes(imp.add_bytes(b"hello from the web\n").cid))
    assert rec["cid"] == want and rec["mount_path"] == "/inputs/hello.txt"
    # the content is in that node's blockstore: any node can now use it by CID
    res, job_id = run(dctl, "-v", f"{want}:/x/h.txt", str(ECHO_WASM), "cat", "h.txt")
    assert res.returncode == 0 and dctl("logs", job_id).stdout == "hello from the web\n"


def test_url_list_redirects_retries_and_name_collisions(
    net: Cluster, dctl: Ctl, web: Web, tmp_path: Path
):
    web.files["a.txt"] = b"first a\n"
    web.files["sub/a.txt"] = b"second a\n"
    web.files["b.txt"] = b"bee\n"
    web.files["retry.txt"] = b"after a 503\n"
    urls = tmp_path / "urls.txt"
    urls.write_text(
        f"# inputs\n{web.url('/f/a.txt')}\n\n{web.url('/f/sub/a.txt')}\n"
        f"{web.url('/redirect/b.txt')}\n{web.url('/flaky/retry.txt')}\n"
    )
    res, job_id = run(
        dctl, "--labels", "name=node-1", "-U", str(urls), str(ECHO_WASM), "cat", "a_1.txt"
    )
    assert res.returncode == 0, res.stderr
    assert dctl("logs", job_id).stdout == "second a\n"
    doc = dctl.json("describe", job_id)
    (ex,) = [e for e in doc["executions"] if e["state"] == "published"]
    mounts = {i["mount_path"]: i["url"] for i in ex["inputs"]}
    assert mounts == {
        "/inputs/a.txt": web.url("/f/a.txt"),
        "/inputs/a_1.txt": web.url("/f/sub/a.txt"),
        "/inputs/b.txt": web.url("/redirect/b.txt"),
        "/inputs/retry.txt": web.url("/flaky/retry.txt"),
    }
    assert web.hits["/flaky/retry.txt"] == 2  # a 503, then success
    for name, want in (("b.txt", "bee\n"), ("retry.txt", "after a 503\n")):
        res, job_id = run(
            dctl, "--labels", "name=node-1", "-U", str(urls), str(ECHO_WASM), "cat", name
        )
        assert res.returncode == 0, res.stderr
        assert dctl("logs", job_id).stdout == want


def test_a_thousand_urls(net: Cluster, dctl: Ctl, web: Web, tmp_path: Path):
    for i in range(1000):
        web.files[f"many/{i}.txt"] = f"file {i}\n".encode()
    urls = tmp_path / "many.txt"
    urls.write_text("".join(web.url(f"/f/many/{i}.txt") + "\n" for i in range(1000)))
    res, job_id = run(dctl, "--labels", "name=node-2", "-U", str(urls), str(ECHO_WASM),
                      "cat", "999.txt")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert dctl("logs", job_id).stdout == "file 999\n"
    doc = dctl.json("describe", job_id)
    (ex,) = [e for e in doc["executions"] if e["state"] == "published"]
    assert len(ex["inputs"]) == 1000 and all(i["cid"] for i in ex["inputs"])


def _no_leftovers(node: NodeProc) -> None:
    tmp = cache_dir(node) / ".tmp"
    assert sorted(p.name for p in tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/status/404", "HTTP 404"),
        ("/status/500", "HTTP 500"),
        ("/endless", f"larger than the limit of {URL_MAX} bytes"),
        ("/f/missing.txt", "HTTP 404"),
    ],
)
def test_bad_urls_fail_the_job_with_the_reason(
    net: Cluster, dctl: Ctl, web: Web, path: str, reason: str
):
    entries = sorted(p.name for p in cache_dir(net[1]).iterdir())
    res, job_id = run(dctl, "--labels", "name=node-1", "-u", web.url(path), str(ECHO_WASM))
    line = res.one_line_error()
    assert job_id and "failed" in line and reason in line and web.url(path) in line
    if path == "/status/500":
        assert web.hits[path] == 4  # tried, then retried 3 times with backoff
    _no_leftovers(net[1])
    assert sorted(p.name for p in cache_dir(net[1]).iterdir()) == entries


def test_malformed_url_inputs_are_refused_by_the_client(dctl: Ctl, tmp_path: Path):
    bad = tmp_path / "bad.txt"
    bad.write_text("http://127.0.0.1:1/ok\nftp://127.0.0.1/no\n")
    line = dctl("wasm", "run", "-U", str(bad), str(ECHO_WASM)).one_line_error()
    assert "line 2" in line and "bad URL" in line
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    assert "has no URLs" in dctl("wasm", "run", "-U", str(empty), str(ECHO_WASM)).one_line_error()
    missing = tmp_path / "nope.txt"
    line = dctl("wasm", "run", "-U", str(missing), str(ECHO_WASM)).one_line_error()
    assert "no such file" in line
    assert "bad URL" in dctl("wasm", "run", "-u", "not a url", str(ECHO_WASM)).one_line_error()


# -- local files and folders -----------------------------------------------------------------


def test_local_folder_is_uploaded_and_mounted(dctl: Ctl, tmp_path: Path):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"file a\n")
    (folder / "sub" / "b.txt").write_bytes(b"file b\n")
    (folder / ".hidden").write_bytes(b"hidden\n")
    (folder / "empty").mkdir()
    res, job_id = run(dctl, "-v", f"{folder}:/data", str(ECHO_WASM), "cat", "sub/b.txt")
    assert res.returncode == 0, res.stderr
    assert dctl("logs", job_id).stdout == "file b\n"
    doc = dctl.json("describe", job_id)
    with Importer() as imp:  # the same CID as `ipfs add -r --hidden` of the folder
        want = str(CID.from_bytes(imp.add_path(folder).cid))
    assert doc["spec"]["inputs"] == [{"source": "ipfs", "cid": want, "mount_path": "/data"}]


def test_local_path_that_does_not_exist(dctl: Ctl, tmp_path: Path):
    line = dctl("wasm", "run", "-v", f"{tmp_path}/nope:/in", str(ECHO_WASM)).one_line_error()
    assert "no such file or folder" in line and "check the path" in line


def test_cid_nobody_holds_fails_naming_it(net: Cluster, dctl: Ctl):
    missing = "bafkreibjfez3ryeimujynshf4b7v6gupmpogapn52lfsvgxs56rjdnthc4"
    res, _ = run(dctl, "--labels", "name=node-2", "-v", f"{missing}:/in/x", str(ECHO_WASM))
    line = res.one_line_error()
    assert f"input {missing} is on no node" in line and "not there" in line
    assert "add the data first" not in line  # a peer's own advice is not passed on
    assert not (cache_dir(net[2]) / missing).exists()
    _no_leftovers(net[2])
    bad = dctl("wasm", "run", "-v", "Qmnotacid:/in/x", str(ECHO_WASM)).one_line_error()
    assert "not a CID" in bad


@pytest.mark.parametrize("runner", [0, 2])  # the requester itself, another node
def test_cid_nobody_holds_fails_at_once(net: Cluster, dctl: Ctl, runner: int):
    """No waiting for the fetch's patience (30 s, for a requester that restarts) when every
    node answered "not here", also when the node that runs the job is its requester."""
    missing = "bafkreiflw6ndfzwoanrd7p2kcqodtjitiqrkwvhevejzmqo7pqdamrjd6e"
    res, job_id = run(
        dctl, "--no-wait", "--labels", f"name=node-{runner}", "-v", f"{missing}:/x", str(ECHO_WASM)
    )
    assert res.returncode == 0, res.stderr

    def failed() -> Any:
        doc = dctl.json("describe", job_id)
        return doc if doc["state"] == "failed" else None

    doc = wait_for(failed, 10, "the job to fail well within the fetch's 30 s patience")
    assert f"input {missing} is on no node" in doc["message"]


# -- results -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_result(net: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A job whose 64 MiB result is made (and held) by node-2 only: (job ID, result CID)."""
    module = tmp_path_factory.mktemp("big") / "big.wasm"
    module.write_bytes(wasmtime.wat2wasm(BIG_WAT))
    ctl = Ctl(net[0].address, module.parent)
    res, job_id = run(ctl, "--labels", "name=node-2", str(module))
    assert res.returncode == 0, res.stderr
    (ex,) = [e for e in ctl.json("describe", job_id)["executions"] if e["state"] == "published"]
    return job_id, ex["result_cid"]


def _check_big(out: Path, result_cid: str) -> None:
    big = out / "outputs" / "big.bin"
    assert big.stat().st_size == 64 * MIB
    with open(big, "rb") as f:
        head = f.read(8)
    assert head == (1015568748).to_bytes(4, "little") + (1586005467).to_bytes(4, "little")
    with Importer() as imp:  # byte-exact: the tree hashes to the result CID node-2 proposed
        assert str(CID.from_bytes(imp.add_path(out).cid)) == result_cid


def test_64mib_result_kept_by_the_requester(
    net: Cluster, big_result: tuple[str, str], tmp_path: Path
):
    job_id, result_cid = big_result
    before = metrics(net[0])["bacalhau_block_bytes_received_total"]
    # The requester copied the result from node-2 before the job completed: it serves it
    # from that copy, fetching nothing now.
    ctl = Ctl(net[0].address, tmp_path)
    got = ctl("get", job_id, "--output-dir", str(tmp_path / "out"), timeout=120)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == str(tmp_path / "out")
    _check_big(tmp_path / "out", result_cid)
    assert not (tmp_path / "out.partial").exists()
    assert metrics(net[0])["bacalhau_block_bytes_received_total"] - before < MIB


def test_interrupted_get_resumes(net: Cluster, big_result: tuple[str, str], tmp_path: Path):
    job_id, result_cid = big_result
    dest = tmp_path / "resumed"

    def interrupt(done: int, total: int) -> None:
        if done >= 24 * MIB:
            raise KeyboardInterrupt  # what Ctrl-C does mid-download

    with Client(net[0].address) as c:
        with pytest.raises(KeyboardInterrupt):
            download_result(c, job_id, dest, progress=interrupt)
        assert not dest.exists()
        kept = (tmp_path / "resumed.partial" / "blocks").stat().st_size
        assert kept >= 24 * MIB
        # a torn record at the end (a crash mid-write) is cut off, not trusted
        with open(tmp_path / "resumed.partial" / "blocks", "ab") as f:
            f.write(os.urandom(1000))
    # the command line picks up where it stopped
    ctl = Ctl(net[0].address, tmp_path)
    got = ctl("get", job_id, "--output-dir", str(dest), timeout=120)
    assert got.returncode == 0, got.stderr
    found = re.search(r"resumed: (\d+) bytes were here already, (\d+) fetched", got.stderr)
    assert found, got.stderr
    resumed, fetched = int(found[1]), int(found[2])
    assert resumed >= 24 * MIB and resumed + fetched < 66 * MIB  # nothing fetched twice
    _check_big(dest, result_cid)
    assert not (tmp_path / "resumed.partial").exists()
    again = ctl("get", job_id, "--output-dir", str(dest))
    assert "exists and is not an empty folder" in again.one_line_error()


def test_folder_upload_refuses_unsafe_paths(net: Cluster, tmp_path: Path):
    import grpc

    from bacalhau._pb.bacalhau.v1 import client_pb2

    def upload(path: str) -> Any:
        reqs = [
            client_pb2.AddDataRequest(header=client_pb2.AddDataHeader(name="f", folder=True)),
            client_pb2.AddDataRequest(entry=client_pb2.AddDataEntry(path=path)),
            client_pb2.AddDataRequest(chunk=b"escaped"),
        ]
        with grpc.insecure_channel(net[0].address) as ch:
            return ClientStub(ch, load_user_key()).AddData(iter(reqs), timeout=10)

    for bad in ("../escape", "a/../../escape", "/etc/x", "a//b", "."):
        with pytest.raises(grpc.RpcError) as err:
            upload(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unsafe path" in (err.value.details() or "")
    assert not (net[0].data_dir / "tmp" / "escape").exists()
    assert list((net[0].data_dir / "tmp").iterdir()) == []
    assert upload("ok/file.txt").cid
    # a symlink in a folder is refused by the client before anything is sent
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "link").symlink_to("/etc/hostname")
    ctl = Ctl(net[0].address, tmp_path)
    line = ctl("wasm", "run", "-v", f"{tmp_path / 'f'}:/in", str(ECHO_WASM)).one_line_error()
    assert "not a regular file or folder" in line


def test_a_dag_held_by_two_peers_comes_from_both_and_held_blocks_are_not_fetched(
    net: Cluster, dctl: Ctl, tmp_path: Path
):
    data = random_file(tmp_path / "two.bin", 32 * MIB, b"held by two")
    (tmp_path / "prefix.bin").write_bytes(data[: 8 * MIB])
    with Client(net[0].address) as c0, Client(net[1].address) as c1:
        cid = c0.add_file(tmp_path / "two.bin").cid
        assert c1.add_file(tmp_path / "two.bin").cid == cid
    # node-2 holds the first 8 MiB already (the same 256 KiB blocks, under another root)
    with Client(net[2].address) as c2:
        c2.add_file(tmp_path / "prefix.bin")
    sent = [metrics(n)["bacalhau_block_bytes_sent_total"] for n in net.nodes[:2]]
    got = metrics(net[2])["bacalhau_block_bytes_received_total"]
    res, job_id = run(
        dctl, "--labels", "name=node-2", "-v", f"{cid}:/inputs/two.bin", str(ECHO_WASM),
        "cat", "two.bin",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert stdout_of(net[0], job_id) == data[:4096]
    received = metrics(net[2])["bacalhau_block_bytes_received_total"] - got
    assert 24 * MIB <= received < 25 * MIB, received  # only the 24 MiB it did not hold
    for node, before in zip(net.nodes[:2], sent, strict=True):
        assert metrics(node)["bacalhau_block_bytes_sent_total"] - before >= 8 * MIB, node.name
    assert (cache_dir(net[2]) / cid).read_bytes() == data


def test_concurrent_gets_of_one_dag_fetch_it_once(net: Cluster, tmp_path: Path):
    data = random_file(tmp_path / "twice.bin", 16 * MIB, b"two gets at once")
    with Client(net[1].address) as c:
        cid = c.add_file(tmp_path / "twice.bin").cid
    before = metrics(net[0])["bacalhau_block_bytes_received_total"]

    def fetch(_: int) -> bytes:
        from bacalhau.content import dag as dag_

        with Client(net[0].address) as c:
            blocks = {bytes(ch.cid): ch.data for ch in c.results(cid=cid) if not ch.root_cid}
        return b"".join(dag_.cat(blocks.__getitem__, bytes(CID.parse(cid))))

    with ThreadPoolExecutor(3) as pool:  # three clients ask node-0, which has none of it
        got = list(pool.map(fetch, range(3)))
    assert got == [data] * 3
    received = metrics(net[0])["bacalhau_block_bytes_received_total"] - before
    assert 16 * MIB <= received < 17 * MIB, received  # fetched from node-1 once, not 3 times
