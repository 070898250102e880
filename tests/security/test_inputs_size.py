"""Inputs and uploads are bounded on a real node: a small CAR whose DAG expands to 1 GiB (one
block named 4096 times), one whose root lies about its size, and one that expands to millions
of files fail the job that mounts them with one reason naming the CID and the sizes, without
filling the node's disk; an upload over `--max-upload-size` is refused as it streams in, and
nothing of it is kept. The node keeps serving. Issue 14, item 6."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from bacalhau._fast._dagpb_py import dir_node, file_node
from bacalhau.client import Client
from bacalhau.content import car
from bacalhau.content.cid import CID, DAG_PB, RAW
from tests.integration.conftest import ECHO_WASM, Ctl, NodeProc, start_node

LEAF = bytes(256 << 10)


def cid_of(codec: int, block: bytes) -> bytes:
    version = 0 if codec == DAG_PB else 1
    return bytes(CID(version, codec, hashlib.sha256(block).digest()))


def upload_car(node: NodeProc, root: bytes, blocks: list[tuple[bytes, bytes]]) -> str:
    buf = io.BytesIO()
    car.write_car(buf, [CID.from_bytes(root)], blocks)
    assert len(buf.getvalue()) < 1 << 20  # the archive itself is small
    buf.seek(0)
    with Client(node.address, timeout=30) as c:
        return str(c.add_stream(buf, "bomb.car", car=True).cid)


def repeated_file(times: int, *, honest: bool) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A file node naming one 256 KiB leaf `times` times; a lying one says 1 byte each."""
    leaf = cid_of(RAW, LEAF)
    size = len(LEAF) if honest else 1
    root_block = file_node([(leaf, size, size)] * times)
    root = cid_of(DAG_PB, root_block)
    return root, [(root, root_block), (leaf, LEAF)]


def many_files(per_level: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A folder of `per_level` folders of `per_level` (the same) empty files, each link
    saying 1 byte: per_level squared files from three small blocks."""
    empty = b"\x0a\x04\x08\x02\x18\x00"
    empty_cid = cid_of(DAG_PB, empty)
    inner = dir_node([(str(i).encode(), empty_cid, 1) for i in range(per_level)])
    inner_cid = cid_of(DAG_PB, inner)
    outer = dir_node([(str(i).encode(), inner_cid, 1) for i in range(per_level)])
    root = cid_of(DAG_PB, outer)
    return root, [(root, outer), (inner_cid, inner), (empty_cid, empty)]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    n = start_node(
        tmp_path_factory.mktemp("inputs"),
        args=("--limit-job-disk", "32Mi", "--max-upload-size", "4Mi"),
    )
    yield n
    n.stop()


@pytest.fixture
def ctl(node: NodeProc, tmp_path: Path) -> Ctl:
    return Ctl(node.address, tmp_path)


def failed_message(ctl: Ctl, cid: str) -> str:
    res = ctl("wasm", "run", "-v", f"{cid}:/data", str(ECHO_WASM), "hi", timeout=120)
    assert res.returncode != 0, res.stdout
    doc = ctl.json("describe", res.stdout.split()[0])
    assert doc["state"] == "failed"
    return str(doc["message"])


def nothing_written_out(node: NodeProc, cid: str) -> None:
    inputs = node.data_dir / "scratch" / "inputs"
    assert not (inputs / cid).exists()
    assert list((inputs / ".tmp").iterdir()) == []  # the half-written folder went too


def still_serving(ctl: Ctl) -> None:
    res = ctl("wasm", "run", str(ECHO_WASM), "after", timeout=60)
    assert res.returncode == 0, res.stderr


def test_a_dag_declaring_1_gib_is_refused_before_it_is_written(ctl: Ctl, node: NodeProc) -> None:
    cid = upload_car(node, *repeated_file(4096, honest=True))
    message = failed_message(ctl, cid)
    assert f"input {cid} is 1 GiB, above the job's disk limit of 32 MiB" in message
    nothing_written_out(node, cid)
    still_serving(ctl)


def test_a_root_that_lies_stops_at_the_limit(ctl: Ctl, node: NodeProc) -> None:
    cid = upload_car(node, *repeated_file(4096, honest=False))
    message = failed_message(ctl, cid)
    assert f"input {cid} expands to more than that (its root says 4 KiB)" in message
    assert "above the job's disk limit of 32 MiB" in message
    nothing_written_out(node, cid)
    still_serving(ctl)


def test_millions_of_files_stop_at_the_limit(ctl: Ctl, node: NodeProc) -> None:
    cid = upload_car(node, *many_files(1800))  # 3.24 million files
    message = failed_message(ctl, cid)
    assert f"input {cid} expands to more than that" in message
    nothing_written_out(node, cid)
    still_serving(ctl)


def test_an_upload_over_the_limit_is_refused_and_not_kept(
    ctl: Ctl, node: NodeProc, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(5 << 20))
    line = ctl("wasm", "run", "-v", f"{big}:/data", str(ECHO_WASM), "hi").one_line_error()
    assert "upload refused: more than this node's limit of 4194304 bytes" in line
    assert list((node.data_dir / "tmp").iterdir()) == []
    small = tmp_path / "small.bin"
    small.write_bytes(bytes(1 << 20))
    res = ctl("wasm", "run", "-v", f"{small}:/data", str(ECHO_WASM), "hi")
    assert res.returncode == 0, res.stderr
