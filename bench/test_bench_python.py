"""The python engine: cold and warm start, and what the deterministic shims cost.

Baselines, measured in the same run:
- cold start (check the interpreter's hash, compile, cache, run hello world) against a bare
  `wasmtime.Module(engine, wasm)` compile of the same interpreter;
- a warm hello-world run through the executor against the same interpreter run in plain
  wasmtime WASI (cached module, `define_wasi`, nothing of ours);
- a CPU-bound program, deterministic, against the same program in plain wasmtime WASI;
- a hello-world Python job on a real node, submit to completed, against a trivial wasm job
  (examples/wasm/echo.wasm) on the same node.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.client import Client
from bacalhau.executor import PythonExecutor, RunRequest
from bacalhau.executor._python_interp import engine_config, read_verified
from tests._python import compiled_cache, seed_node
from tests.integration.conftest import ECHO_WASM, Cluster

Record = Callable[[str, object], None]
Note = Callable[[str, float], None]
HELLO = "print('hello')"
CPU_BOUND = (
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
    "total = sum(i * i % 7 for i in range(1_000_000))\n"
    "print(fib(25), total)\n"
)


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> PythonExecutor:
    ex = PythonExecutor(compiled_cache(tmp_path_factory))
    ex.prepare()
    return ex


def run_executor(ex: PythonExecutor, code: str, deterministic: bool) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        req = RunRequest(workdir=Path(tmp), code=code, deterministic=deterministic)
        res = ex.run(req)
        assert res.ok, res.stderr
        return res.stdout


def run_plain(ex: PythonExecutor, code: str) -> bytes:
    """The interpreter in plain wasmtime WASI: the floor under any executor."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = wasmtime.Engine(engine_config())
        module = ex.interpreter.load(engine)
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["python", "-c", code]
        wasi.stdout_file = f"{tmp}/stdout"
        wasi.stderr_file = f"{tmp}/stderr"
        store = wasmtime.Store(engine)
        store.set_wasi(wasi)
        store.set_limits(memory_size=256 << 20)
        store.set_epoch_deadline(1)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        start = linker.instantiate(store, module).exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        try:
            start(store)
        except wasmtime.ExitTrap as e:
            assert e.code == 0
        return Path(f"{tmp}/stdout").read_bytes()


def test_compile_baseline(benchmark: Any, executor: PythonExecutor, record: Record) -> None:
    wasm = executor.interpreter.path.read_bytes()
    benchmark.pedantic(
        lambda: wasmtime.Module(wasmtime.Engine(engine_config()), wasm), rounds=2, iterations=1
    )
    record("py_compile_baseline", benchmark)


def test_cold_start(benchmark: Any, record: Record) -> None:
    def cold() -> None:
        with tempfile.TemporaryDirectory() as cache:
            ex = PythonExecutor(Path(cache))
            assert run_executor(ex, HELLO, True) == b"hello\n"

    benchmark.pedantic(cold, rounds=2, iterations=1)
    record("py_cold", benchmark)


def test_hash_check(benchmark: Any, executor: PythonExecutor, record: Record) -> None:
    benchmark.pedantic(read_verified, args=(executor.interpreter.path,), rounds=5, iterations=1)
    record("py_hash_check", benchmark)


def interleaved(
    benchmark: Any, runs: dict[str, Callable[[], object]], rounds: int
) -> dict[str, float]:
    """Median seconds of each of `runs`, run in turn every round: on a shared machine, load
    drifts between tests, so a run and its baseline are measured side by side."""
    times: dict[str, list[float]] = {name: [] for name in runs}

    def one_round() -> None:
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)

    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=1)
    return {name: statistics.median(ts[1:]) for name, ts in times.items()}  # past the warmup


def test_warm_start(benchmark: Any, executor: PythonExecutor, note: Note) -> None:
    medians = interleaved(
        benchmark,
        {
            "plain": lambda: run_plain(executor, HELLO),
            "det": lambda: run_executor(executor, HELLO, True),
            "real": lambda: run_executor(executor, HELLO, False),
        },
        rounds=20,
    )
    for name, seconds in medians.items():
        note(f"py_warm_{name}", seconds)


def test_cpu_bound_shim_overhead(benchmark: Any, executor: PythonExecutor, note: Note) -> None:
    assert run_executor(executor, CPU_BOUND, True) == run_plain(executor, CPU_BOUND)
    medians = interleaved(
        benchmark,
        {
            "plain": lambda: run_plain(executor, CPU_BOUND),
            "det": lambda: run_executor(executor, CPU_BOUND, True),
        },
        rounds=8,
    )
    note("py_cpu_plain", medians["plain"])
    note("py_cpu_det", medians["det"])


def test_clock_call_cost(executor: PythonExecutor, note: Note) -> None:
    """What one clock read costs, shimmed (a host call into Python) and plain."""
    calls = "import time\nfor _ in range(100_000):\n    time.time()\n"
    empty = "for _ in range(100_000):\n    pass\n"

    def best(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    det = best(lambda: run_executor(executor, calls, True))
    det -= best(lambda: run_executor(executor, empty, True))
    plain = best(lambda: run_plain(executor, calls)) - best(lambda: run_plain(executor, empty))
    note("py_clock_call_us_det", det / 100_000 * 1e6)
    note("py_clock_call_us_plain", plain / 100_000 * 1e6)


# -- a job on a real node ------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("python-node")
    seed_node(root / "node-0", compiled_cache(tmp_path_factory))
    cluster = Cluster(root, 1, args=("--engines", "python,wasm"))
    with Client(cluster[0].address) as c:
        yield c
    cluster.close()


def one_job(client: Client, spec: Any) -> None:
    job = client.wait(client.submit(spec).job_id).job
    assert job.state == types_pb2.JOB_STATE_COMPLETED, job.message


def test_wasm_job_baseline(benchmark: Any, node: Client, record: Record) -> None:
    spec = types_pb2.JobSpec(
        engine="wasm",
        wasm=types_pb2.WasmSpec(module_cid=node.add_file(ECHO_WASM).cid, args=["bench"]),
        outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
    )
    benchmark.pedantic(one_job, args=(node, spec), rounds=20, iterations=1, warmup_rounds=3)
    record("py_job_wasm", benchmark)


def test_python_job(benchmark: Any, node: Client, record: Record) -> None:
    spec = types_pb2.JobSpec(
        engine="python",
        python=types_pb2.PythonSpec(code=HELLO, deterministic=True),
        outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
    )
    benchmark.pedantic(one_job, args=(node, spec), rounds=20, iterations=1, warmup_rounds=3)
    record("py_job_python", benchmark)
