"""A job's output stays under its disk limit and its timeout always fires, on a real node:
a WASM job that writes stdout (or a file) for ever, or sleeps for an hour, is stopped and
failed with one reason, its files are removed and closed (the space comes back), and the
next job on that node runs normally. Issue 14, item 6."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

wasmtime = pytest.importorskip("wasmtime")

from tests.integration.conftest import ECHO_WASM, Ctl, NodeProc, start_node  # noqa: E402
from tests.test_executor_guard import write_file_forever, write_forever_to  # noqa: E402
from tests.test_executor_wasm import wasi_module  # noqa: E402


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    n = start_node(tmp_path_factory.mktemp("output"), args=("--limit-job-disk", "32Mi"))
    yield n
    n.stop()


@pytest.fixture
def ctl(node: NodeProc, tmp_path: Path) -> Ctl:
    return Ctl(node.address, tmp_path)


def failed_with(ctl: Ctl, tmp_path: Path, wasm: bytes, *args: str) -> tuple[str, float]:
    module = tmp_path / "hostile.wasm"
    module.write_bytes(wasm)
    started = time.monotonic()
    res = ctl("wasm", "run", *args, str(module), timeout=120)
    took = time.monotonic() - started
    assert res.returncode != 0, res.stdout
    job_id = res.stdout.split()[0]
    doc = ctl.json("describe", job_id)
    assert doc["state"] == "failed"
    return doc["message"], took


def still_serving(ctl: Ctl, node: NodeProc) -> None:
    """The next job on that node runs normally, and nothing of the last one is left open."""
    res = ctl("wasm", "run", str(ECHO_WASM), "after", timeout=60)
    assert res.returncode == 0, res.stderr
    scratch = node.data_dir / "scratch"
    assert not [p for p in scratch.iterdir() if p.name.startswith("exec-")]
    fds = Path(f"/proc/{node.proc.pid}/fd")
    deleted = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(node.data_dir)) and target.endswith("(deleted)"):
            deleted.append(target)
    assert deleted == []  # a removed file still open would keep its space


def test_stdout_written_for_ever_is_stopped_at_the_disk_limit(
    ctl: Ctl, node: NodeProc, tmp_path: Path
) -> None:
    message, took = failed_with(ctl, tmp_path, write_forever_to("(i32.const 1)"))
    assert "output limit of 32 MiB exceeded" in message
    assert took < 30
    still_serving(ctl, node)


def test_a_file_written_for_ever_is_stopped_and_removed(
    ctl: Ctl, node: NodeProc, tmp_path: Path
) -> None:
    message, _ = failed_with(ctl, tmp_path, write_file_forever())
    assert "output limit of 32 MiB exceeded" in message
    still_serving(ctl, node)


def test_an_hour_long_sleep_is_stopped_at_the_timeout(
    ctl: Ctl, node: NodeProc, tmp_path: Path
) -> None:
    imports = (
        '(import "wasi_snapshot_preview1" "poll_oneoff" '
        "(func $poll (param i32 i32 i32 i32) (result i32)))"
    )
    wat = f"""(module {imports} (memory (export "memory") 1)
      (func (export "_start")
        (i32.store (i32.const 16) (i32.const 1))
        (i64.store (i32.const 24) (i64.const 3600000000000))
        (drop (call $poll (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 200)))))"""
    message, took = failed_with(ctl, tmp_path, bytes(wasmtime.wat2wasm(wat)), "--timeout", "1")
    assert "timed out after 1 s" in message
    assert took < 30
    still_serving(ctl, node)


def test_a_loop_past_its_timeout_is_stopped(ctl: Ctl, node: NodeProc, tmp_path: Path) -> None:
    message, _ = failed_with(ctl, tmp_path, wasi_module("(loop $l (br $l))"), "--timeout", "1")
    assert "timed out after 1 s" in message
    still_serving(ctl, node)
