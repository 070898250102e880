"""Data through the node: `add` uploads to it, `cat` and `Cat` read one file back (by CID/path
or by job/path), from any node, with nothing but the generated stubs on the client side."""

from __future__ import annotations

import contextlib
import os
import pty
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from bacalhau import callsign
from bacalhau._pb.bacalhau.v1 import client_pb2, client_pb2_grpc
from bacalhau.client import Client, ClientError
from bacalhau.identity import Identity
from tests.conftest import pattern
from tests.integration.conftest import ECHO_WASM, Cluster, Ctl


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"file a\n")
    (root / "sub" / "big.bin").write_bytes(pattern(600_000))
    for i in range(7):
        (root / "many" / f"f{i}").parent.mkdir(exist_ok=True)
        (root / "many" / f"f{i}").write_bytes(b"%d\n" % i)
    return root


def test_add_uploads_to_the_node_and_cat_reads_through_any_node(
    cluster: Cluster, ctl: Ctl, folder: Path, tmp_path: Path
) -> None:
    local = tmp_path / "no-local-data-dir"
    res = ctl("--data-dir", str(local), "add", str(folder))
    assert res.returncode == 0, res.stderr
    hashed = ctl("add", "--only-hash", str(folder))  # the same lines, computed locally
    assert res.stdout == hashed.stdout and res.stdout.count("\n") == 12
    root = res.stdout.splitlines()[-1].split()[1]
    assert res.stdout.splitlines()[-1] == f"added {root} data"
    assert not local.exists()  # nothing written locally
    uploads = ctl.json("uploads")["uploads"]
    assert root in [u["cid"] for u in uploads]  # pinned there as this user's upload
    v1 = ("-q", "--cid-version", "1", "--chunker", "size-1024", str(folder / "sub"))
    quiet = ctl("add", *v1)
    assert quiet.stdout == ctl("add", "--only-hash", *v1).stdout and quiet.stdout[:4] == "bafy"

    # Through the node that has it, and through one that fetches it from its peers.
    for api in (cluster[0].address, cluster[2].address):
        big = ctl("cat", f"{root}/sub/big.bin", api=api)
        assert big.returncode == 0, big.stderr
        assert big.stdout == pattern(600_000).decode(errors="replace")
    with Client(cluster[2].address) as c:
        chunks = list(c.cat(f"{root}/sub/big.bin", chunk_size=100_000))
    assert b"".join(ch.data for ch in chunks) == pattern(600_000)
    assert chunks[0].size == 600_000 and chunks[0].cid.startswith("Qm")
    assert all(len(ch.data) <= 100_000 for ch in chunks) and len(chunks) == 6

    # `run -v CID:/data` with what `add` put on the node: no local data dir, no wait.
    res = ctl("wasm", "run", "-v", f"{root}:/data", str(ECHO_WASM), "cat", "a.txt", timeout=60)
    assert res.returncode == 0, res.stderr
    assert "file a" in res.stdout


def test_cat_errors_are_one_line(cluster: Cluster, ctl: Ctl, folder: Path) -> None:
    root = ctl("add", "-q", str(folder)).stdout.strip()
    line = ctl("cat", f"{root}/sub/nope.txt").one_line_error()
    assert "sub/nope.txt not found" in line and "has no 'nope.txt'" in line
    line = ctl("cat", f"{root}/many").one_line_error()
    assert "is a folder" in line and "f0, f1, f2, f3, f4 and 2 more" in line
    line = ctl("cat", f"{root}/a.txt/x").one_line_error()
    assert "not a folder" in line
    assert "no '.', '..'" in ctl("cat", f"{root}/../x").one_line_error()
    assert "invalid CID" in ctl("cat", "Qmnotacid/x").one_line_error()
    assert "1024 bytes or more" in ctl("add", "--chunker", "size-4", str(folder)).one_line_error()
    nobody = "bafkreibjfez3ryeimujynshf4b7v6gupmpogapn52lfsvgxs56rjdnthc4"
    line = ctl("cat", nobody).one_line_error()
    assert nobody in line and "no peer could send it" in line  # at once: every peer answered


def _cat(address: str, key: Identity, req: client_pb2.CatRequest) -> tuple[str, int, bytes]:
    """Cat with the generated stub and a signature: (file CID, size, bytes)."""
    body = req.SerializeToString()
    meta = callsign.sign(key, "/bacalhau.v1.ClientService/Cat", body)
    with grpc.insecure_channel(address) as channel:
        stub = client_pb2_grpc.ClientServiceStub(channel)
        chunks = list(stub.Cat(req, metadata=meta, timeout=30))
    return chunks[0].cid, chunks[0].size, b"".join(c.data for c in chunks)


def test_cat_a_jobs_files_with_the_generated_stubs_only(cluster: Cluster, ctl: Ctl) -> None:
    res = ctl("wasm", "run", "--labels", "name=node-2", str(ECHO_WASM), "hello", "stubs")
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.splitlines()[0]
    key = Identity.generate()  # any signed caller may read a job's result by its ID
    # Through the requester (node-0), which has the job; node-2 ran it and holds its result.
    for address in (cluster[0].address,):
        cid, size, data = _cat(address, key, client_pb2.CatRequest(job_id=job_id, file="stdout"))
        assert data == b"hello stubs\n" and size == len(data) and cid
        _, _, out = _cat(
            address, key, client_pb2.CatRequest(job_id=job_id, file="outputs/result.txt")
        )
        assert out == b"hello stubs\n"
    # by a unique prefix, and errors with their codes
    with Client(cluster[0].address) as c:
        assert b"".join(x.data for x in c.cat(job_id=job_id[:12], file="exitCode")) == b"0\n"
        for req, code, fragment in (
            ({"job_id": job_id, "file": "outputs/nope.csv"}, "NOT_FOUND", "outputs/nope.csv"),
            ({"job_id": job_id, "file": "outputs"}, "INVALID_ARGUMENT", "result.txt"),
            ({"job_id": job_id}, "INVALID_ARGUMENT", "file is required"),
            ({"job_id": job_id, "file": "stdout", "shard": 3}, "INVALID_ARGUMENT", "shard 3"),
            ({"path": "x", "job_id": job_id}, "INVALID_ARGUMENT", "not both"),
            ({"job_id": job_id, "file": "stdout", "chunk_size": 5 << 20}, "INVALID_ARGUMENT", ""),
        ):
            with pytest.raises(ClientError) as err:
                list(c.cat(**req))  # type: ignore[arg-type]
            assert err.value.code.name == code and fragment in err.value.message, req
    unsigned = client_pb2.CatRequest(job_id=job_id, file="stdout")
    with grpc.insecure_channel(cluster[0].address) as channel, pytest.raises(grpc.RpcError) as rpc:
        list(client_pb2_grpc.ClientServiceStub(channel).Cat(unsigned, timeout=10))
    assert rpc.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_get_path_writes_one_file_or_stdout(cluster: Cluster, ctl: Ctl, tmp_path: Path) -> None:
    res = ctl("wasm", "run", str(ECHO_WASM), "one", "file")
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.splitlines()[0]
    got = ctl("get", job_id, "--path", "outputs/result.txt", "--output-dir", str(tmp_path / "o"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "o" / "outputs" / "result.txt").read_bytes() == b"one file\n"
    assert got.stdout.strip() == str(tmp_path / "o" / "outputs" / "result.txt")
    out = ctl("get", job_id, "--path", "stdout", "--output-dir", "-")
    assert out.returncode == 0 and out.stdout == "one file\n"
    line = ctl("get", job_id, "--path", "outputs/x.csv", "--output-dir", "-").one_line_error()
    assert "outputs/x.csv not found" in line
    assert "--shard goes with --path" in ctl("get", job_id, "--shard", "1").one_line_error()


def test_add_shows_progress_on_a_terminal_for_large_data(cluster: Cluster, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(pattern(17 << 20))  # over the 16 MiB from which progress is shown
    small = tmp_path / "small.txt"
    small.write_bytes(b"small\n")
    seen = {}
    for path in (big, small):
        leader, follower = pty.openpty()  # stderr is a terminal; stdout a pipe
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bacalhau.cli.ctl",
                "--api",
                cluster[0].address,
                "add",
                str(path),
            ],
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
        )
        os.close(follower)
        err = b""
        with contextlib.suppress(OSError):  # EIO once the terminal's other end is closed
            while chunk := os.read(leader, 65536):
                err += chunk
        os.close(leader)
        assert proc.returncode == 0, err
        assert proc.stdout.decode().startswith("added ")  # stdout stays clean
        seen[path.name] = err.decode()
    assert "17.0/17.0 MiB 100%" in seen["big.bin"]
    assert seen["small.txt"] == ""
