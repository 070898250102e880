"""Bad input gets one clear line and a non-zero exit; the node keeps serving."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import grpc
import pytest

from bacalhau.client import Client, ClientError
from tests.integration.conftest import ECHO_WASM, Cluster, Ctl


def test_not_a_wasm_file(ctl: Ctl, tmp_path: Path):
    bogus = tmp_path / "notes.wasm"
    bogus.write_text("just text\n")
    line = ctl("wasm", "run", str(bogus)).one_line_error()
    assert "is not a WebAssembly module" in line


def test_not_a_wasm_cid_refused_by_the_node(cluster: Cluster, ctl: Ctl):
    with Client(cluster[0].address) as c:
        cid = c.add_stream(io.BytesIO(b"plain text, not wasm\n"), "notes.txt").cid
    line = ctl("wasm", "run", cid).one_line_error()
    assert "is not a WebAssembly module" in line


def test_missing_module_file(ctl: Ctl):
    assert "no such file" in ctl("wasm", "run", "missing.wasm").one_line_error()


def test_unknown_job_id(ctl: Ctl):
    for cmd in ("describe", "logs", "get", "cancel"):
        line = ctl(cmd, "j-00000000-0000-0000-0000-000000000000").one_line_error()
        assert "not found" in line, cmd


def test_unreachable_api(ctl: Ctl):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = ctl("id", api=f"127.0.0.1:{port}").one_line_error()
    assert f"cannot reach a node at 127.0.0.1:{port}" in line


@pytest.mark.parametrize(
    "volume", ["outputs", "outputs:relative/path", ":/outputs", "stdout:/outputs", "a b:/x"]
)
def test_malformed_output_volume(ctl: Ctl, volume: str):
    res = ctl("wasm", "run", "-o", volume, str(ECHO_WASM))
    assert res.returncode == 2
    assert "bad output" in res.one_line_error()


def test_bad_output_format(ctl: Ctl):
    res = ctl("--output", "xml", "list")
    assert res.returncode == 2 and "invalid choice" in res.one_line_error()


def test_node_refuses_bad_specs_with_invalid_argument(cluster: Cluster):
    from bacalhau._pb.bacalhau.v1 import types_pb2

    with Client(cluster[0].address) as c:
        cid = c.add_file(ECHO_WASM).cid
        bad = [
            types_pb2.JobSpec(engine="fortran"),
            types_pb2.JobSpec(engine="wasm"),
            types_pb2.JobSpec(engine="wasm", wasm=types_pb2.WasmSpec(module_cid="nonsense")),
            types_pb2.JobSpec(
                engine="wasm",
                wasm=types_pb2.WasmSpec(module_cid=cid),
                outputs=[types_pb2.OutputSpec(name="../up", path="/o")],
            ),
        ]
        for spec in bad:
            with pytest.raises(ClientError) as err:
                c.submit(spec)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, spec
            assert "\n" not in str(err.value)


def test_node_keeps_serving(cluster: Cluster, ctl: Ctl):
    for node in cluster.nodes:
        assert node.proc.poll() is None, node.log
    assert ctl("id").stdout.strip() == cluster[0].node_id
    assert "Traceback" not in cluster[0].log
