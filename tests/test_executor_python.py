"""The python executor against the real CPython-for-WASI interpreter in real wasmtime."""

from __future__ import annotations

import hashlib
import shutil
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bacalhau.executor import ExecutorError, PythonExecutor, RunRequest, RunResult, get_executor
from bacalhau.executor._python_interp import (
    SHA256,
    CompiledInterpreter,
    InterpreterError,
    cache_name,
    default_path,
)
from bacalhau.executor.python import SITECUSTOMIZE_PYC
from tests._python import compiled_cache
from tests._wait import wait_for

Runner = Callable[..., RunResult]

# Uses everything a host could leak into a result: clocks, sleeps, randomness (random, uuid,
# os.urandom, secrets), hash and set order, and directory listings of an input and of /tmp.
DETERMINISTIC = textwrap.dedent(
    """
    import os, random, secrets, shutil, sys, time, uuid, datetime, glob, pathlib
    t0 = time.time()
    time.sleep(0.5)
    print("time", t0, time.time() - t0, time.monotonic(), datetime.datetime.now())
    print("random", random.random(), uuid.uuid4(), os.urandom(8).hex(), secrets.token_hex(8))
    print("hash", hash("bacalhau"), list({"alpha", "beta", "gamma", "delta", "epsilon"}))
    print("inputs", os.listdir("/inputs"), sorted(glob.glob("/inputs/*")) == glob.glob("/inputs/*"))
    for name in "zyxwv":
        open(f"/tmp/{name}", "w").close()
    shutil.copy(os.path.join("/inputs", sorted(os.listdir("/inputs"))[0]), "/tmp/copy")
    print("tmp", os.listdir("/tmp"), [p.name for p in pathlib.Path("/tmp").iterdir()])
    entry = next(e for e in os.scandir("/inputs") if e.is_file())
    print("mtimes", os.stat("/inputs").st_mtime, os.path.getmtime("/tmp/z"),
          entry.stat().st_mtime_ns, os.fstat(0).st_ctime, pathlib.Path("/tmp/copy").stat().st_atime)
    print("walk", [(d, f) for d, _, f in os.walk("/inputs")])
    print("argv", sys.argv, sorted(os.environ))
    with open("/outputs/result.txt", "w") as f:
        f.write(f"{random.getrandbits(64)} {uuid.uuid4()} {time.time()}\\n")
    print("oops", file=sys.stderr)
    """
)


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> PythonExecutor:
    return PythonExecutor(compiled_cache(tmp_path_factory))


@pytest.fixture
def run(tmp_path: Path, executor: PythonExecutor) -> Runner:
    """run(code=... | program=..., **RunRequest fields) with a fresh workdir."""
    counter = iter(range(1000))

    def go(**kw: object) -> RunResult:
        kw.setdefault("timeout_s", 30.0)
        kw.setdefault("outputs", [("outputs", "/outputs")])
        workdir = tmp_path / f"run-{next(counter)}"
        workdir.mkdir()
        return executor.run(RunRequest(workdir=workdir, **kw))  # type: ignore[arg-type]

    return go


def make_inputs(folder: Path, names: str) -> Path:
    """A folder with one file per letter of `names`, created in that order."""
    folder.mkdir()
    for name in names:
        (folder / f"{name}.txt").write_text(name)
    (folder / "sub").mkdir()
    return folder


def test_hello_world(run: Runner):
    res = run(code="print('hello from', __import__('sys').version.split()[0])")
    assert res.ok, res.stderr
    assert res.stdout == b"hello from 3.12.0\n" and res.stderr == b""


def test_registered_as_python(tmp_path: Path):
    ex = get_executor("python", cache_dir=tmp_path)
    assert isinstance(ex, PythonExecutor) and ex.name == "python" and ex.is_installed()
    assert get_executor("python", cache_dir=tmp_path) is ex


def test_deterministic_runs_are_byte_identical(run: Runner, tmp_path: Path):
    # The same files created in opposite orders: the host lists them differently.
    a = make_inputs(tmp_path / "a", "qwertyuiop")
    b = make_inputs(tmp_path / "b", "poiuytrewq")
    results = [
        run(code=DETERMINISTIC, deterministic=True, inputs=[(inp, "/inputs")]) for inp in (a, b, a)
    ]
    for res in results:
        assert res.ok, res.stderr
    first = results[0]
    assert b"time 946684800.0" in first.stdout  # the fixed epoch; the sleep advanced it
    assert b" 0.5" in first.stdout
    for other in results[1:]:
        assert other.stdout == first.stdout
        assert other.stderr == first.stderr == b"oops\n"
        out = (first.outputs_dir / "outputs" / "result.txt").read_bytes()
        assert (other.outputs_dir / "outputs" / "result.txt").read_bytes() == out
    assert b"'e.txt', 'i.txt', 'o.txt', 'p.txt', 'q.txt'" in first.stdout  # sorted
    tmp = b"['copy', 'v', 'w', 'x', 'y', 'z']"
    assert b"tmp " + tmp + b" " + tmp in first.stdout
    epoch = b"946684800.0"
    assert (
        b"mtimes " + b" ".join([epoch, epoch, b"946684800000000000", epoch, epoch]) in first.stdout
    )


def test_without_deterministic_clocks_and_randomness_are_real(run: Runner, tmp_path: Path):
    inputs = make_inputs(tmp_path / "in", "abc")
    first, second = (run(code=DETERMINISTIC, inputs=[(inputs, "/inputs")]) for _ in range(2))
    assert first.ok and second.ok, first.stderr + second.stderr
    assert b"time 946684800" not in first.stdout and b"mtimes 946684800" not in first.stdout
    random_line = [line for line in first.stdout.splitlines() if line.startswith(b"random")]
    assert random_line[0] not in second.stdout.splitlines()


def test_deterministic_sleep_returns_at_once(run: Runner):
    code = "import time; t = time.monotonic(); time.sleep(3600); print(time.monotonic() - t)"
    res = run(code=code, deterministic=True, timeout_s=20)
    assert res.ok, res.stderr
    assert float(res.stdout) == pytest.approx(3600, abs=0.01)


def test_context_modules_packages_and_scratch(run: Runner, tmp_path: Path):
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "mypkg").mkdir()
    (ctx / "mypkg" / "__init__.py").write_text("from mypkg.core import double\n")
    (ctx / "mypkg" / "core.py").write_text("def double(x):\n    return 2 * x\n")
    (ctx / "helper.py").write_text("GREETING = 'hi'\n")
    (ctx / "src" / "main.py").write_text(
        "import sys, os, helper, mypkg\n"
        "print(helper.GREETING, mypkg.double(21), sys.argv[1:], os.listdir('/tmp'))\n"
        "open('/tmp/scratch', 'w').write('x')\n"
        "print(open('/tmp/scratch').read(), os.environ.get('GREETING'), 'HOME' in os.environ)\n"
    )
    res = run(context=ctx, program="src/main.py", args=["a", "b"], env={"GREETING": "hey"})
    assert res.ok, res.stderr
    assert res.stdout == b"hi 42 ['a', 'b'] []\nx hey False\n"
    inline = run(context=ctx, code="import mypkg; print(mypkg.double(4))")
    assert inline.ok and inline.stdout == b"8\n", inline.stderr


def test_the_guest_has_a_root(run: Runner, tmp_path: Path):
    data = tmp_path / "data.txt"
    data.write_text("bytes")
    code = textwrap.dedent(
        """
        import os
        os.makedirs("/outputs", exist_ok=True)
        os.makedirs("/outputs/deep/er", exist_ok=True)
        open("/outputs/deep/er/f.txt", "w").write("ok")
        print(sorted(os.listdir("/")))
        print(os.path.isdir("/"), os.listdir("/inputs"), os.listdir("/data"))
        try:
            open("/stray.txt", "w")
            print("wrote /stray.txt")
        except OSError as e:
            print("refused", type(e).__name__)
        """
    )
    res = run(code=code, inputs=[(data, "/data/data.txt")])
    assert res.ok, res.stderr
    lines = res.stdout.decode().splitlines()
    assert lines[0] == "['app', 'data', 'inputs', 'outputs', 'tmp']"
    assert lines[1] == "True [] ['data.txt']"
    assert lines[2].startswith("refused")
    assert (res.outputs_dir / "outputs" / "deep" / "er" / "f.txt").read_text() == "ok"
    plain = run(code="import os; os.makedirs('/outputs', exist_ok=True); print('fine')")
    assert plain.ok and plain.stdout == b"fine\n", plain.stderr


def test_inputs_are_read_only(run: Runner, tmp_path: Path):
    data = tmp_path / "data.txt"
    data.write_text("original")
    folder = make_inputs(tmp_path / "folder", "ab")
    code = textwrap.dedent(
        """
        import os
        print(open("/data/data.txt").read(), open("/folder/a.txt").read())
        for path in ("/data/data.txt", "/folder/a.txt", "/folder/new.txt"):
            try:
                open(path, "w").write("changed")
                print("wrote", path)
            except OSError as e:
                print("refused", path, type(e).__name__)
        try:
            os.remove("/folder/b.txt")
            print("removed")
        except OSError as e:
            print("refused remove", type(e).__name__)
        """
    )
    res = run(code=code, inputs=[(data, "/data/data.txt"), (folder, "/folder")])
    assert res.ok, res.stderr
    assert b"wrote" not in res.stdout and b"removed" not in res.stdout
    assert res.stdout.count(b"refused") == 4
    assert data.read_text() == "original" and (folder / "a.txt").read_text() == "a"
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", "b.txt", "sub"]


def test_busy_loop_times_out(run: Runner):
    res = run(code="while True: pass", timeout_s=0.5)
    assert res.exit_code == -1 and res.error == "timed out after 0.5 s"


def test_real_sleep_is_cut_short_by_the_timeout(run: Runner):
    res = run(code="import time; time.sleep(600)", timeout_s=0.5)
    assert res.exit_code == -1 and res.error == "timed out after 0.5 s"


def test_cancel_stops_a_sleeping_program(executor: PythonExecutor, tmp_path: Path):
    cancel = threading.Event()
    box: list[RunResult] = []
    req = RunRequest(workdir=tmp_path, code="import time; print('up', flush=True); time.sleep(600)")
    worker = threading.Thread(target=lambda: box.append(executor.run(req, cancel)))
    worker.start()
    wait_for(lambda: (tmp_path / "stdout").exists() and b"up" in (tmp_path / "stdout").read_bytes(),
             30, "the program to start")  # fmt: skip
    cancel.set()
    worker.join(30)
    assert box and box[0].error == "cancelled"


def test_huge_allocation_is_out_of_memory(run: Runner):
    res = run(code="x = bytearray(1 << 30)", memory_limit_bytes=64 << 20)
    assert res.exit_code == 1
    assert res.error is not None and res.error.startswith("out of memory: ")
    assert "64 MiB" in res.error and b"MemoryError" in res.stderr


def test_memory_limit_below_the_interpreter_is_named(run: Runner):
    res = run(code="print(1)", memory_limit_bytes=1 << 20)
    assert not res.ok and res.error is not None and res.error.startswith("out of memory")


def test_syntax_error_is_named(run: Runner, tmp_path: Path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "main.py").write_text("print('unclosed'\n")
    res = run(context=ctx, program="main.py")
    assert res.exit_code == 1
    assert res.error is not None and res.error.startswith("Python exception: SyntaxError: ")
    assert b'File "/app/main.py", line 1' in res.stderr


def test_exception_and_exit_code(run: Runner):
    res = run(code="def f():\n    return 1 / 0\nf()")
    assert res.exit_code == 1
    assert res.error == (
        "Python exception: ZeroDivisionError: division by zero "
        "(exit code 1; the traceback is in stderr)"
    )
    assert b"Traceback (most recent call last):" in res.stderr
    plain = run(code="import sys; print('bye'); sys.exit(3)")
    assert plain.exit_code == 3 and plain.error is None and plain.stdout == b"bye\n"


def test_output_limit(tmp_path: Path, executor: PythonExecutor):
    # 2 MiB, then wait (a real sleep) for the guard's next look at what was written
    code = "import time\nopen('/tmp/big', 'wb').write(bytes(2 << 20))\ntime.sleep(60)"
    req = RunRequest(workdir=tmp_path, code=code, timeout_s=30, disk_limit_bytes=1 << 20)
    res = executor.run(req)
    assert res.exit_code == -1 and res.error is not None
    assert res.error.startswith("output limit of 1 MiB exceeded")


def test_stdout_is_capped(run: Runner):
    res = run(code="print('x' * 5000)", stdout_limit_bytes=1000)
    assert res.ok and len(res.stdout) == 1000 and res.stdout_truncated


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({}, "needs a program file or inline code"),
        ({"code": "1", "program": "main.py"}, "not both"),
        ({"program": "../main.py"}, "must be a relative path inside the context"),
        ({"program": "missing.py"}, "is not a file in the context folder"),
        ({"code": "1", "outputs": [("out", "/tmp/out")]}, "clashes with /tmp"),
        ({"code": "1", "deterministic": True, "env": {"PYTHONHASHSEED": "random"}},
         "contradicts a deterministic run"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused(run: Runner, tmp_path: Path, kw: dict[str, object], message: str):
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    kw.setdefault("context", ctx)
    with pytest.raises(ExecutorError, match=message):
        run(**kw)


def test_interpreter_hash_is_pinned():
    data = default_path().read_bytes()
    assert hashlib.sha256(data).hexdigest() == SHA256


def test_tampered_interpreter_is_refused(tmp_path: Path):
    tampered = tmp_path / "python-3.12.0.wasm"
    shutil.copyfile(default_path(), tampered)
    with open(tampered, "r+b") as f:  # one byte in the middle, size unchanged
        f.seek(13_000_000)
        byte = f.read(1)
        f.seek(13_000_000)
        f.write(bytes([byte[0] ^ 1]))
    ex = PythonExecutor(tmp_path / "cache", interpreter=tampered)
    assert not ex.is_installed()
    with pytest.raises(InterpreterError, match=r"refusing the Python interpreter .* not CPython"):
        ex.run(RunRequest(workdir=tmp_path / "w", code="print(1)"))
    assert not (tmp_path / "cache" / cache_name()).exists()  # nothing was compiled
    missing = PythonExecutor(interpreter=tmp_path / "nope.wasm")
    with pytest.raises(InterpreterError, match="cannot read the Python interpreter"):
        missing.prepare()


def test_compiled_interpreter_is_cached_by_wasmtime_version_and_settings(
    tmp_path_factory: pytest.TempPathFactory,
):
    cache = compiled_cache(tmp_path_factory)
    cached = cache / cache_name()
    assert cached.is_file() and "wasmtime-" in cached.name and SHA256[:12] in cached.name
    before = cached.stat().st_mtime_ns
    fresh = CompiledInterpreter(cache_dir=cache)  # another process would start like this
    fresh.prepare()
    assert cached.stat().st_mtime_ns == before  # loaded, not compiled again


def test_deterministic_start_up_code_is_precompiled(executor: PythonExecutor, run: Runner):
    boot = executor._boot_dir()
    assert (boot / SITECUSTOMIZE_PYC).is_file()  # bytecode made by the guest itself
    res = run(code="import sitecustomize; print(sitecustomize.__cached__)", deterministic=True)
    assert res.ok and res.stdout == f"/.bacalhau/{SITECUSTOMIZE_PYC}\n".encode(), res.stderr


def test_output_is_passed_on_as_it_is_written(executor: PythonExecutor, tmp_path: Path):
    chunks: list[tuple[int, bytes]] = []
    cancel = threading.Event()
    box: list[RunResult] = []
    code = (
        "import sys, time\n"
        "print('first', flush=True)\n"
        "print('oops', file=sys.stderr, flush=True)\n"
        "time.sleep(600)"
    )
    req = RunRequest(
        workdir=tmp_path, code=code, on_log=lambda s, d: chunks.append((s, d)), timeout_s=60
    )
    worker = threading.Thread(target=lambda: box.append(executor.run(req, cancel)))
    worker.start()
    try:
        # The program is still running (asleep) when its output arrives.
        wait_for(lambda: (1, b"first\n") in chunks and (2, b"oops\n") in chunks, 30, "output")
        assert not box
    finally:
        cancel.set()
        worker.join(30)
    assert box and box[0].error == "cancelled"
    assert b"".join(d for s, d in chunks if s == 1) == box[0].stdout == b"first\n"
