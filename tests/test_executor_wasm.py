"""The wasm executor against real wasmtime, with WASI modules written in WAT here."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

wasmtime = pytest.importorskip("wasmtime")

from bacalhau.executor import (  # noqa: E402
    Executor,
    ExecutorError,
    InvalidModule,
    NoopExecutor,
    RunRequest,
    RunResult,
    WasmExecutor,
    get_executor,
)
from tests._wait import wait_for  # noqa: E402

WASI = "wasi_snapshot_preview1"
IMPORTS = f"""
  (import "{WASI}" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "{WASI}" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "{WASI}" "proc_exit" (func $proc_exit (param i32)))
  (import "{WASI}" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "{WASI}" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "{WASI}" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "{WASI}" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "{WASI}" "environ_get" (func $environ_get (param i32 i32) (result i32)))
"""
# Helpers every module gets. Memory map: 0..64 scratch (iovecs, out-params), 64..1024 string
# data, 1024.. buffers.
HELPERS = """
  ;; write(fd, ptr, len): one fd_write, exit 90 on error
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (if (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (call $proc_exit (i32.const 90)))))
  ;; open(dirfd, path, len, oflags, rights) -> fd; exit 40+errno on error
  (func $open (param $dir i32) (param $p i32) (param $n i32) (param $of i32) (param $r i64)
    (result i32) (local $err i32)
    (local.set $err (call $path_open (local.get $dir) (i32.const 0) (local.get $p)
      (local.get $n) (local.get $of) (local.get $r) (i64.const 0) (i32.const 0)
      (i32.const 12)))
    (if (local.get $err) (then (call $proc_exit (i32.add (i32.const 40) (local.get $err)))))
    (i32.load (i32.const 12)))
"""
O_CREAT_TRUNC = 1 | 8
RIGHT_READ = 2
RIGHT_WRITE = 64


def wasi_module(body: str, *, data: str = "", memory: int = 1) -> bytes:
    """A WASI command whose `_start` is `body`; `data` is placed at offset 64."""
    wat = f"""(module {IMPORTS}
      (memory (export "memory") {memory})
      (data (i32.const 64) "{data}")
      {HELPERS}
      (func (export "_start") {body}))"""
    return bytes(wasmtime.wat2wasm(wat))


Runner = Callable[..., RunResult]


@pytest.fixture(scope="module")
def executor() -> WasmExecutor:
    return WasmExecutor()


@pytest.fixture
def run(tmp_path: Path, executor: WasmExecutor) -> Runner:
    """run(wasm_bytes, **RunRequest fields) with a fresh workdir and short default timeout."""
    counter = iter(range(1000))

    def _run(wasm: bytes, cancel: threading.Event | None = None, **kw: object) -> RunResult:
        n = next(counter)
        module = tmp_path / f"job{n}" / "hello.wasm"
        module.parent.mkdir()
        module.write_bytes(wasm)
        kw.setdefault("timeout_s", 10.0)
        kw.setdefault("workdir", tmp_path / f"job{n}" / "work")
        req = RunRequest(module=module, **kw)  # type: ignore[arg-type]
        return executor.run(req, cancel=cancel)

    return _run


HELLO = wasi_module("(call $write (i32.const 1) (i32.const 64) (i32.const 6))", data="hello\\n")
LOOP = "(loop $l (br $l))"


def test_hello_stdout(run: Runner) -> None:
    result = run(HELLO)
    assert result.exit_code == 0 and result.error is None and result.ok
    assert result.stdout == b"hello\n"
    assert result.stderr == b""
    assert not result.stdout_truncated and not result.stderr_truncated


def test_stderr(run: Runner) -> None:
    result = run(
        wasi_module("(call $write (i32.const 2) (i32.const 64) (i32.const 3))", data="oops")
    )
    assert (result.stdout, result.stderr) == (b"", b"oop")


def test_args_and_env(run: Runner) -> None:
    # Print the NUL-separated argv buffer, then the environ buffer.
    body = """
      (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
      (drop (call $args_get (i32.const 1024) (i32.const 2048)))
      (call $write (i32.const 1) (i32.const 2048) (i32.load (i32.const 20)))
      (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
      (drop (call $environ_get (i32.const 1024) (i32.const 2048)))
      (call $write (i32.const 1) (i32.const 2048) (i32.load (i32.const 20)))
    """
    result = run(wasi_module(body), args=["a", "b c"], env={"K": "V=1", "EMPTY": ""})
    assert result.ok
    assert result.stdout == b"hello.wasm\0a\0b c\0" + b"K=V=1\0EMPTY=\0"


def test_exit_code(run: Runner) -> None:
    result = run(wasi_module("(call $proc_exit (i32.const 7))"))
    assert result.exit_code == 7
    assert result.error is None and not result.ok


def test_exit_zero(run: Runner) -> None:
    result = run(wasi_module("(call $proc_exit (i32.const 0))"))
    assert result.exit_code == 0 and result.ok


def test_writes_output_file(run: Runner) -> None:
    body = f"""
      (call $write
        (call $open (i32.const 3) (i32.const 64) (i32.const 7) (i32.const {O_CREAT_TRUNC})
          (i64.const {RIGHT_WRITE}))
        (i32.const 71) (i32.const 5))
    """
    result = run(wasi_module(body, data="out.txtdata!"), outputs=[("results", "/outputs")])
    assert result.ok, result
    assert (result.outputs_dir / "results" / "out.txt").read_bytes() == b"data!"


def test_reads_input_and_fd_order(run: Runner, tmp_path: Path) -> None:
    # fd 3 = first input (a folder), fd 4 = second input (a single file), fd 5 = the output.
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"AAAA")
    single = tmp_path / "b-on-host.txt"
    single.write_bytes(b"BB")

    def copy(dirfd: int, path_off: int, path_len: int) -> str:
        return f"""
          (local.set $fd (call $open (i32.const {dirfd}) (i32.const {path_off})
            (i32.const {path_len}) (i32.const 0) (i64.const {RIGHT_READ})))
          (i32.store (i32.const 16) (i32.const 1024))
          (i32.store (i32.const 20) (i32.const 64))
          (drop (call $fd_read (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24)))
          (call $write (local.get $out) (i32.const 1024) (i32.load (i32.const 24)))
        """

    body = f"""(local $fd i32) (local $out i32)
      (local.set $out (call $open (i32.const 5) (i32.const 69) (i32.const 3)
        (i32.const {O_CREAT_TRUNC}) (i64.const {RIGHT_WRITE})))
      {copy(3, 64, 5)}
      {copy(4, 72, 5)}
      (local.set $out (i32.const 1))
      {copy(3, 64, 5)}
    """
    result = run(
        wasi_module(body, data="a.txtcatb.txt"),
        inputs=[(folder, "/in"), (single, "/single/b.txt")],
        outputs=[("o", "/out")],
    )
    assert result.ok, result
    assert result.stdout == b"AAAA"
    assert (result.outputs_dir / "o" / "cat").read_bytes() == b"AAAABB"


def test_inputs_are_read_only(run: Runner, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    body = f"""(drop (call $open (i32.const 3) (i32.const 64) (i32.const 3)
      (i32.const {O_CREAT_TRUNC}) (i64.const {RIGHT_WRITE})))"""
    result = run(wasi_module(body, data="new"), inputs=[(folder, "/in")])
    assert result.exit_code > 40  # 40 + the WASI errno from path_open
    assert not (folder / "new").exists()


def test_timeout(run: Runner) -> None:
    result = run(wasi_module(LOOP), timeout_s=0.5)
    assert result.error == "timed out after 0.5 s"
    assert result.exit_code == -1


def test_fuel_exhaustion(run: Runner) -> None:
    result = run(wasi_module(LOOP), fuel=10_000)
    assert result.error == "out of fuel"
    assert result.exit_code == -1


def test_enough_fuel(run: Runner) -> None:
    assert run(HELLO, fuel=10_000).ok


def test_memory_grow_refused_beyond_limit(run: Runner) -> None:
    # 1 MiB limit = 16 pages; growing to 1 + 100 pages must fail (memory.grow gives -1).
    body = """(if (i32.eq (memory.grow (i32.const 100)) (i32.const -1))
      (then (call $proc_exit (i32.const 3))))"""
    assert run(wasi_module(body), memory_limit_bytes=1 << 20).exit_code == 3
    assert run(wasi_module(body), memory_limit_bytes=16 << 20).exit_code == 0


def test_initial_memory_beyond_limit(run: Runner) -> None:
    result = run(wasi_module("", memory=100), memory_limit_bytes=1 << 20)
    assert result.exit_code == -1
    assert result.error is not None and result.error.startswith("memory limit exceeded")


def test_trap_reported(run: Runner) -> None:
    result = run(wasi_module("unreachable"))
    assert result.exit_code == -1
    assert result.error is not None and result.error.startswith("trap:")
    assert "unreachable" in result.error


def test_stdout_cap(run: Runner) -> None:
    body = """(local $i i32)
      (loop $l
        (call $write (i32.const 1) (i32.const 64) (i32.const 10))
        (call $write (i32.const 2) (i32.const 64) (i32.const 10))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))"""
    result = run(wasi_module(body, data="0123456789"), stdout_limit_bytes=995)
    assert result.ok
    assert result.stdout == (b"0123456789" * 100)[:995] and result.stdout_truncated
    assert len(result.stderr) == 995 and result.stderr_truncated
    exact = run(wasi_module(body, data="0123456789"), stdout_limit_bytes=1000)
    assert len(exact.stdout) == 1000 and not exact.stdout_truncated


def started_then_loop(name: str = "started") -> bytes:
    """Creates `started` in the output folder at fd 3, then spins forever."""
    body = f"""(drop (call $open (i32.const 3) (i32.const 64) (i32.const {len(name)})
      (i32.const {O_CREAT_TRUNC}) (i64.const {RIGHT_WRITE}))) {LOOP}"""
    return wasi_module(body, data=name)


def run_in_thread(fn: Callable[[], RunResult]) -> tuple[threading.Thread, list[RunResult]]:
    results: list[RunResult] = []
    thread = threading.Thread(target=lambda: results.append(fn()), daemon=True)
    thread.start()
    return thread, results


def test_cancel(run: Runner, tmp_path: Path) -> None:
    cancel = threading.Event()
    work = tmp_path / "cancel-work"
    thread, results = run_in_thread(
        lambda: run(started_then_loop(), cancel, outputs=[("o", "/o")], workdir=work)
    )
    wait_for(lambda: (work / "outputs" / "o" / "started").exists())
    assert thread.is_alive()
    cancel.set()
    thread.join(5)
    assert not thread.is_alive()
    assert results[0].error == "cancelled" and results[0].exit_code == -1


def test_cancel_before_start(run: Runner) -> None:
    cancel = threading.Event()
    cancel.set()
    assert run(wasi_module(LOOP), cancel).error == "cancelled"


def test_timeout_does_not_stop_other_runs(run: Runner, tmp_path: Path) -> None:
    cancel = threading.Event()
    work = tmp_path / "long-work"
    thread, results = run_in_thread(
        lambda: run(started_then_loop(), cancel, outputs=[("o", "/o")], workdir=work)
    )
    wait_for(lambda: (work / "outputs" / "o" / "started").exists())
    assert run(wasi_module(LOOP), timeout_s=0.2).error == "timed out after 0.2 s"
    assert thread.is_alive()
    cancel.set()
    thread.join(5)
    assert results[0].error == "cancelled"


@pytest.mark.parametrize(
    ("wasm", "message"),
    [
        (b"#!/bin/sh\necho hi\n", "not a WebAssembly module"),
        (b"", "not a WebAssembly module"),
        (b"\0asm\1\0\0\0\xff", "invalid WebAssembly module"),
    ],
)
def test_not_wasm(run: Runner, wasm: bytes, message: str) -> None:
    with pytest.raises(InvalidModule) as info:
        run(wasm)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_foreign_import_and_missing_start(run: Runner) -> None:
    foreign = wasmtime.wat2wasm('(module (import "env" "f" (func)) (func (export "_start")))')
    with pytest.raises(InvalidModule, match=r"imports env\.f"):
        run(bytes(foreign))
    with pytest.raises(InvalidModule, match="no _start"):
        run(bytes(wasmtime.wat2wasm("(module)")))


def test_bad_requests(run: Runner) -> None:
    with pytest.raises(ExecutorError, match="output name"):
        run(HELLO, outputs=[("../up", "/o")])
    with pytest.raises(ExecutorError, match="unique"):
        run(HELLO, outputs=[("a", "/a"), ("a", "/b")])
    with pytest.raises(ExecutorError, match="does not exist"):
        run(HELLO, inputs=[(Path("/nonexistent/xyz"), "/in")])


def test_compile_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = WasmExecutor(cache_dir=cache)
    artifact = first.compile(HELLO)
    assert first.compile(HELLO) is artifact  # in memory
    assert len(list(cache.glob("*.cwasm"))) == 1
    module = tmp_path / "m.wasm"
    module.write_bytes(HELLO)
    second = WasmExecutor(cache_dir=cache)  # from disk
    assert second.run(RunRequest(module=module, workdir=tmp_path / "w")).stdout == b"hello\n"
    # A corrupt or stale cache entry is rebuilt instead of failing the run.
    next(cache.glob("*.cwasm")).write_bytes(b"garbage")
    third = WasmExecutor(cache_dir=cache)
    assert third.run(RunRequest(module=module, workdir=tmp_path / "w2")).stdout == b"hello\n"


def test_noop_executor(tmp_path: Path) -> None:
    noop = NoopExecutor()
    assert isinstance(noop, Executor) and noop.is_installed()
    req = RunRequest(module=tmp_path / "absent.wasm", outputs=[("a", "/a")], workdir=tmp_path)
    result = noop.run(req)
    assert (result.exit_code, result.stdout, result.stderr, result.error) == (0, b"", b"", None)
    assert (result.outputs_dir / "a").is_dir()


def test_registry() -> None:
    assert get_executor("noop").name == "noop"
    wasm = get_executor("wasm")
    assert isinstance(wasm, WasmExecutor) and isinstance(wasm, Executor) and wasm.is_installed()
    assert get_executor("wasm") is wasm
    with pytest.raises(ExecutorError, match="unknown executor"):
        get_executor("lambda")


def test_output_streams_to_on_log_while_running(run: Runner) -> None:
    # Writes a line, then spins: the line reaches on_log while the guest still runs, and
    # the test cancels it from there.
    wasm = wasi_module(
        "(call $write (i32.const 1) (i32.const 64) (i32.const 6))" + LOOP, data="hello\\n"
    )
    cancel = threading.Event()
    chunks: list[tuple[int, bytes]] = []

    def on_log(stream: int, data: bytes) -> None:
        chunks.append((stream, data))
        cancel.set()

    result = run(wasm, cancel=cancel, on_log=on_log, timeout_s=30.0)
    assert result.error == "cancelled"
    assert chunks == [(1, b"hello\n")]
    assert result.stdout == b"hello\n"


def _clock_and_random() -> bytes:
    """A module that writes the realtime clock (8 bytes), 8 random bytes, then both again
    after a 1 s sleep's worth of clock (a second clock read) to stdout."""
    wat = f"""(module
      (import "{WASI}" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
      (import "{WASI}" "random_get" (func $random (param i32 i32) (result i32)))
      (import "{WASI}" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 1024)))
        (drop (call $random (i32.const 1032) (i32.const 8)))
        (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 1040)))
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 24))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""
    return bytes(wasmtime.wat2wasm(wat))


def test_a_deterministic_run_reads_the_same_clocks_and_randomness_every_time(run: Runner) -> None:
    module = _clock_and_random()
    first, second = (run(module, deterministic=True) for _ in range(2))
    assert first.exit_code == 0 and len(first.stdout) == 24
    assert first.stdout == second.stdout
    realtime = int.from_bytes(first.stdout[:8], "little")
    assert realtime // 10**9 == 946_684_800  # the fixed epoch, 2000-01-01
    plain = [run(module).stdout for _ in range(2)]
    assert plain[0][8:16] != plain[1][8:16]  # real randomness otherwise
    assert int.from_bytes(plain[0][:8], "little") > 1_700_000_000 * 10**9  # the real clock
