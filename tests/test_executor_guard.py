"""The run guard (bacalhau/executor/guard.py): one disk limit and one timeout for every engine,
on real wasmtime (wasm, python) and a real Docker engine."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

wasmtime = pytest.importorskip("wasmtime")

from bacalhau.executor import RunRequest, WasmExecutor  # noqa: E402
from bacalhau.executor.guard import ENTRY_BYTES, folder_bytes  # noqa: E402
from bacalhau.spec import size_text  # noqa: E402
from tests.test_executor_wasm import O_CREAT_TRUNC, RIGHT_WRITE, wasi_module  # noqa: E402

MIB = 1 << 20
# iovec at 0: 64 KiB from offset 65536, written for ever to fd $fd (errors ignored)
WRITE_FOREVER = """(i32.store (i32.const 0) (i32.const 65536))
  (i32.store (i32.const 4) (i32.const 65536))
  (loop $l (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
    (br $l))"""


def write_forever_to(fd: str) -> bytes:
    return wasi_module(f"(local $fd i32) (local.set $fd {fd}) {WRITE_FOREVER}", memory=2)


def write_file_forever() -> bytes:
    """Opens `big` in the output folder (fd 3) and writes to it for ever."""
    body = f"""(local $fd i32)
      (local.set $fd (call $open (i32.const 3) (i32.const 64) (i32.const 3)
        (i32.const {O_CREAT_TRUNC}) (i64.const {RIGHT_WRITE}))) {WRITE_FOREVER}"""
    return wasi_module(body, data="big", memory=2)


@pytest.fixture(scope="module")
def executor() -> WasmExecutor:
    return WasmExecutor()


def run(executor: WasmExecutor, tmp_path: Path, wasm: bytes, **kw: object):  # type: ignore[no-untyped-def]
    module = tmp_path / "m.wasm"
    module.write_bytes(wasm)
    workdir = tmp_path / "work"
    workdir.mkdir()
    return executor.run(RunRequest(module=module, workdir=workdir, **kw))  # type: ignore[arg-type]


def test_size_text() -> None:
    assert size_text(1 << 30) == "1 GiB"
    assert size_text(64 * MIB) == "64 MiB"
    assert size_text(1000) == "1000 B"


def test_folder_bytes_counts_empty_files(tmp_path: Path) -> None:
    for i in range(10):
        (tmp_path / str(i)).touch()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(bytes(5000))
    assert folder_bytes([tmp_path]) == 10 * ENTRY_BYTES + ENTRY_BYTES + 5000


@pytest.mark.parametrize("fd", ["(i32.const 1)", "(i32.const 2)"])
def test_stdout_writer_is_stopped_at_the_limit(
    executor: WasmExecutor, tmp_path: Path, fd: str
) -> None:
    started = time.monotonic()
    res = run(executor, tmp_path, write_forever_to(fd), disk_limit_bytes=8 * MIB, timeout_s=30)
    took = time.monotonic() - started
    assert res.exit_code == -1
    assert res.error is not None and res.error.startswith("output limit of 8 MiB exceeded")
    assert took < 5, took
    # only the first MiB of the stream is kept on disk, and nothing of the pipes is left
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["outputs", "stderr", "stdout"]
    assert os.path.getsize(tmp_path / "work" / ("stdout" if "1" in fd else "stderr")) == MIB


def test_folder_writer_is_stopped_and_its_files_removed(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    res = run(
        executor,
        tmp_path,
        write_file_forever(),
        outputs=[("out", "/out")],
        disk_limit_bytes=16 * MIB,
        timeout_s=30,
    )
    assert res.error is not None and res.error.startswith("output limit of 16 MiB exceeded")
    assert list((res.outputs_dir / "out").iterdir()) == []  # emptied: nothing to publish


def test_output_over_the_limit_at_exit_is_not_kept(executor: WasmExecutor, tmp_path: Path) -> None:
    """A run that writes past the limit between two looks and exits is still caught."""
    body = f"""(local $fd i32)
      (local.set $fd (call $open (i32.const 3) (i32.const 64) (i32.const 3)
        (i32.const {O_CREAT_TRUNC}) (i64.const {RIGHT_WRITE})))
      (i32.store (i32.const 0) (i32.const 65536)) (i32.store (i32.const 4) (i32.const 65536))
      (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))"""
    res = run(
        executor,
        tmp_path,
        wasi_module(body, data="big", memory=2),
        outputs=[("out", "/out")],
        disk_limit_bytes=60000,
    )
    assert res.exit_code == -1
    assert res.error is not None and res.error.startswith("output limit of 58.59 KiB exceeded")
    assert list((res.outputs_dir / "out").iterdir()) == []


def test_a_sleep_does_not_outlive_the_timeout(executor: WasmExecutor, tmp_path: Path) -> None:
    """wasmtime's own poll_oneoff blocks its thread: a guest asleep for an hour must still stop."""
    imports = (
        '(import "wasi_snapshot_preview1" "poll_oneoff" '
        "(func $poll (param i32 i32 i32 i32) (result i32)))"
    )
    wat = f"""(module {imports} (memory (export "memory") 1)
      (func (export "_start")
        ;; one relative clock subscription at 0: userdata, tag 0, clock 1, 3600 s
        (i32.store8 (i32.const 8) (i32.const 0))
        (i32.store (i32.const 16) (i32.const 1))
        (i64.store (i32.const 24) (i64.const 3600000000000))
        (drop (call $poll (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 200)))))"""
    started = time.monotonic()
    res = run(executor, tmp_path, bytes(wasmtime.wat2wasm(wat)), timeout_s=0.5)
    assert res.error == "timed out after 0.5 s"
    assert time.monotonic() - started < 5


def test_runs_one_after_another_share_one_watcher_thread(
    executor: WasmExecutor, tmp_path: Path
) -> None:
    """A run's watcher thread is kept for the next run, not started anew for each."""

    def watchers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "run-guard"}

    exit0 = wasi_module("")
    for i in range(13):
        (tmp_path / f"r{i}").mkdir()
        res = run(executor, tmp_path / f"r{i}", exit0)
        assert res.exit_code == 0, res
        if i == 2:
            kept = watchers()
            assert kept  # alive between runs, waiting for the next
    assert watchers() <= kept
