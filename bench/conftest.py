"""Benchmark inputs, made once per session, and a summary of ratios against baselines."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Every client call is signed with a user key (~/.bacalhau/user.key by default): the suite's
# clients, in this process and in the bacalhauctl processes it starts, use one of their own.
_USER_KEY_DIR = tempfile.mkdtemp(prefix="bacalhau-user-")
atexit.register(shutil.rmtree, _USER_KEY_DIR, True)
os.environ["BACALHAU_USER_KEY"] = os.path.join(_USER_KEY_DIR, "user.key")
RESULTS: dict[str, float] = {}  # name -> mean seconds
MEDIANS: dict[str, float] = {}  # name -> median seconds
NOTES: dict[str, float] = {}  # name -> a figure that is not a time (see the `note` fixture)
BIG_MIB = int(os.environ.get("BENCH_BIG_MIB", "512"))
SMALL_FILES = 20_000


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    rng = random.Random(7)
    with path.open("wb") as f:
        for _ in range(BIG_MIB):
            f.write(rng.randbytes(1 << 20))
    return path


@pytest.fixture(scope="session")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 files of 100 B to 1 KB in 100 folders."""
    root = tmp_path_factory.mktemp("small") / "tree"
    rng = random.Random(11)
    for d in range(100):
        folder = root / f"d{d:03d}"
        folder.mkdir(parents=True)
        for i in range(SMALL_FILES // 100):
            (folder / f"f{i:03d}").write_bytes(rng.randbytes(rng.randint(100, 1000)))
    return root


@pytest.fixture
def record() -> Iterator[object]:
    def save(name: str, benchmark: object) -> None:
        RESULTS[name] = benchmark.stats.stats.mean  # type: ignore[attr-defined]
        MEDIANS[name] = benchmark.stats.stats.median  # type: ignore[attr-defined]

    yield save


@pytest.fixture
def note() -> Callable[[str, float], None]:
    """Keep a figure (a count, a ratio) for the summary."""
    return NOTES.__setitem__


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS and not NOTES:
        return
    tr = terminalreporter
    tr.section("bacalhau: throughput and ratios (same run)")
    mib = BIG_MIB
    base = RESULTS.get("sha256_1thread")
    for name in ("sha256_1thread", "import_only_hash", "import_store"):
        if name in RESULTS:
            t = RESULTS[name]
            # A baseline timed between this benchmark's own rounds, when it took one.
            between = NOTES.get(f"{name}_sha256")
            if between:
                ratio = f"  ({between / t:.2f}x one sha256 thread timed between its rounds)"
            else:
                ratio = f"  ({base / t:.2f}x one sha256 thread)" if base else ""
            tr.write_line(f"{name:>22}: {mib / t:8.0f} MiB/s over {mib} MiB{ratio}")
    for name in ("small_only_hash", "small_store"):
        if name in RESULTS:
            tr.write_line(f"{name:>22}: {SMALL_FILES / RESULTS[name]:8.0f} files/s")
    rtt = MEDIANS.get("grpc_roundtrip")
    if rtt:
        tr.write_line(f"{'grpc_roundtrip p50':>22}: {rtt * 1e3:8.2f} ms (NodeInfo, baseline)")
    if "job_latency" in MEDIANS:
        p50 = MEDIANS["job_latency"]
        ratio = f"  ({p50 / rtt:.0f}x a gRPC round trip)" if rtt else ""
        tr.write_line(f"{'job latency p50':>22}: {p50 * 1e3:8.2f} ms submit-to-completed{ratio}")
    if "memo_latency" in MEDIANS:
        memo = MEDIANS["memo_latency"]
        real = MEDIANS.get("job_latency")
        ratio = f"  ({memo / real:.2f}x the same job run for real)" if real else ""
        tr.write_line(f"{'memoized job p50':>22}: {memo * 1e3:8.2f} ms submit-to-completed{ratio}")
    for name, base, label, what in (
        ("call_signed", "call_plain", "client call signing", "sign and check a client call"),
        ("packet_sealed", "packet_plain", "peer packet signing", "sign and check a peer packet"),
        ("packet_maced", "packet_plain", "peer packet MAC", "MAC and check a peer packet"),
    ):
        if name in MEDIANS:
            cost = MEDIANS[name] - MEDIANS.get(base, 0.0)
            line = f"{cost * 1e6:8.1f} us to {what}"
            if "job_latency" in MEDIANS:
                line += f" ({100 * cost / MEDIANS['job_latency']:.1f}% of a trivial job's p50)"
            tr.write_line(f"{label:>22}: {line}")
    if "shard_rate" in NOTES:
        rate, single = NOTES["shard_rate"], NOTES.get("shard_single_job", 0.0)
        from bench.test_bench_sharding import PER_NODE

        line = f"{rate:8.0f} shard executions/s ({3 * PER_NODE} shards, 3 nodes, submit to done)"
        if single:
            line += f"; one trivial job: {single * 1e3:.1f} ms ({rate * single:.2f}x its rate)"
        tr.write_line(f"{'sharded job':>22}: {line}")
        tr.write_line(
            f"{'shard locality':>22}: {100 * NOTES['shard_locality']:8.1f}% of shards ran "
            f"where their file was ({PER_NODE} files on each of 3 nodes)"
        )
    if "jobs_batch" in RESULTS:
        from bench.test_bench_jobs import BATCH

        rate = BATCH / MEDIANS["jobs_batch"]
        tr.write_line(f"{'jobs/s':>22}: {rate:8.0f} ({BATCH} submitted at once, 3 nodes)")
    if "dask_rate" in NOTES:
        where = "own network namespace" if NOTES.get("dask_isolated") else "host loopback"
        lat, rate = NOTES["dask_latency"], NOTES["dask_rate"]
        tr.write_line(
            f"{'Dask LocalCluster':>22}: {lat * 1e3:8.2f} ms p50 a task, {rate:.0f} tasks/s "
            f"(2 worker processes, {where}; same run, baseline)"
        )
        if "job_latency" in MEDIANS and "jobs_batch" in MEDIANS:
            from bench.test_bench_jobs import BATCH

            p50, jobs = MEDIANS["job_latency"], BATCH / MEDIANS["jobs_batch"]
            tr.write_line(
                f"{'jobs vs Dask':>22}: latency {p50 / lat:8.2f}x Dask's p50; "
                f"throughput {jobs / rate:.2f}x Dask's tasks/s"
            )
    if "ds_raw_commit" in MEDIANS:
        from bench.test_bench_datastore import DEEP, INFLIGHT, N_JOBS, THREADS

        raw = MEDIANS["ds_raw_commit"]
        tr.write_line(
            f"{'raw LMDB commit p50':>22}: {raw * 1e3:8.3f} ms "
            f"({1 / raw:.0f} synced commits/s, baseline)"
        )
        for name, label in (
            ("ds_tx_serial", "transition 1 at a time"),
            ("ds_tx_threads", f"transitions, {THREADS} threads"),
            ("ds_tx_inflight", f"{INFLIGHT} in flight at once"),
        ):
            if name in MEDIANS:
                rate = 1 / MEDIANS[name]
                group = MEDIANS.get(name + "_group", 0.0)
                tr.write_line(
                    f"{label:>22}: {rate:8.0f} synced transitions/s "
                    f"({rate * raw:.2f}x raw commits/s; {MEDIANS[name] * 1e3:.3f} ms each; "
                    f"{group:.1f} per commit)"
                )
        for name, label in (
            ("ds_page_first", "page 1 (20 newest)"),
            ("ds_page_deep", f"page past {DEEP}"),
            ("ds_page_failed", "page, state=failed"),
            ("ds_page_active", "page, active (no idx)"),
            ("ds_describe", "describe (job+events)"),
            ("ds_get_prefix", "get_job by ID prefix"),
            ("ds_all_active", "all active, no limit"),
        ):
            if name in MEDIANS:
                tr.write_line(
                    f"{label:>22}: {MEDIANS[name] * 1e3:8.3f} ms p50, "
                    f"{RESULTS[name] * 1e3:.3f} ms mean (of {N_JOBS} jobs)"
                )
    _python_summary(tr)
    _planner_summary(tr)
    if "trace_off" in NOTES:
        from bench.test_bench_tracing import summary

        summary(tr, NOTES)
    if "result_get_relayed" in RESULTS:
        from bench.test_bench_results import summary as results_summary

        results_summary(tr, RESULTS)
    if "block_exchange" in RESULTS:
        from bench.test_bench_blocks import SIZE_MIB

        ex = RESULTS["block_exchange"]
        line = f"{SIZE_MIB / ex:8.0f} MiB/s over {SIZE_MIB} MiB, verified and stored"
        if "plain_stream" in RESULTS:
            plain = RESULTS["plain_stream"]
            line += f" ({plain / ex:.2f}x plain gRPC streaming: {SIZE_MIB / plain:.0f} MiB/s"
            if "blocks_sha256" in RESULTS:
                line += f"; one sha256 thread: {SIZE_MIB / RESULTS['blocks_sha256']:.0f} MiB/s"
            line += ")"
        tr.write_line(f"{'block exchange':>22}: {line}")
        if "blocks_plain_interleaved" in NOTES:
            plain, ex = NOTES["blocks_plain_interleaved"], MEDIANS["block_exchange"]
            tr.write_line(
                f"{'interleaved':>22}: {plain / ex:8.2f}x plain streaming run before each round "
                f"(medians: {SIZE_MIB / ex:.0f} and {SIZE_MIB / plain:.0f} MiB/s)"
            )
    converged = [(n, MEDIANS[f"converge_{n}"]) for n in (5, 10, 20) if f"converge_{n}" in MEDIANS]
    if converged:
        for n, seconds in converged:
            per_job = NOTES.get(f"messages_per_job_{n}")
            extra = (
                f"; {per_job:.1f} peer messages per job ({per_job / n:.2f} x N)" if per_job else ""
            )
            tr.write_line(
                f"{f'{n} nodes':>22}: converged {seconds:.2f} s after the last start{extra}"
            )
    if "docker_job" in MEDIANS:
        job = MEDIANS["docker_job"]
        for name, label in (("docker_bare_cli", "docker CLI"), ("docker_bare_sdk", "docker SDK")):
            if name in MEDIANS:
                bare = MEDIANS[name]
                tr.write_line(f"{'bare ' + label + ' p50':>22}: {bare * 1e3:8.1f} ms (baseline)")
        bare = min(MEDIANS.get(n, float("inf")) for n in ("docker_bare_cli", "docker_bare_sdk"))
        ratio = f" ({job / bare:.2f}x the faster bare run)" if bare != float("inf") else ""
        tr.write_line(f"{'container job p50':>22}: {job * 1e3:8.1f} ms submit-to-completed{ratio}")


def _python_summary(tr: pytest.TerminalReporter) -> None:
    """The python engine (bench/test_bench_python.py)."""
    compile_s, cold = MEDIANS.get("py_compile_baseline"), MEDIANS.get("py_cold")
    if compile_s and cold:
        tr.write_line(
            f"{'python cold start':>22}: {cold:8.2f} s (hash, compile, cache, hello world) = "
            f"{cold / compile_s:.2f}x a bare compile ({compile_s:.2f} s)"
        )
    if "py_hash_check" in MEDIANS:
        t = MEDIANS["py_hash_check"]
        tr.write_line(
            f"{'python hash check':>22}: {t * 1e3:8.1f} ms (26 MB read + sha256, once per "
            f"process: {26.27 / t:.0f} MB/s)"
        )
    plain = NOTES.get("py_warm_plain")
    for name, label in (("py_warm_det", "deterministic"), ("py_warm_real", "real clocks")):
        if plain and name in NOTES:
            warm = NOTES[name]
            tr.write_line(
                f"{'python warm, ' + label:>22}: {warm * 1e3:8.1f} ms hello world p50 = "
                f"{warm / plain:.2f}x plain wasmtime WASI ({plain * 1e3:.1f} ms), interleaved"
            )
    cpu_plain, cpu_det = NOTES.get("py_cpu_plain"), NOTES.get("py_cpu_det")
    if cpu_plain and cpu_det:
        tr.write_line(
            f"{'python CPU-bound':>22}: {cpu_det:8.3f} s deterministic vs {cpu_plain:.3f} s "
            f"plain wasmtime WASI: shims cost {(cpu_det / cpu_plain - 1) * 100:+.1f}%"
        )
    if "py_clock_call_us_det" in NOTES:
        tr.write_line(
            f"{'python clock read':>22}: {NOTES['py_clock_call_us_det']:8.2f} us deterministic, "
            f"{NOTES.get('py_clock_call_us_plain', 0):.2f} us plain"
        )
    wasm_job, py_job = MEDIANS.get("py_job_wasm"), MEDIANS.get("py_job_python")
    if wasm_job and py_job:
        tr.write_line(
            f"{'python job p50':>22}: {py_job * 1e3:8.1f} ms submit-to-completed (1 node) = "
            f"{py_job / wasm_job:.2f}x a trivial wasm job ({wasm_job * 1e3:.1f} ms)"
        )


def _planner_summary(tr: pytest.TerminalReporter) -> None:
    """The shard planner (bench/test_bench_planner.py): compiled against its pure twin."""
    compiled, pure = MEDIANS.get("planner_compiled"), MEDIANS.get("planner_pure")
    if not compiled and not pure:
        return
    from bench.test_bench_planner import NODES, SHARDS

    what = f"{SHARDS:,} shards over {NODES:,} nodes"
    if compiled:
        local = NOTES.get("planner_local")
        extra = f", {100 * local:.1f}% on a holder" if local is not None else ""
        tr.write_line(
            f"{'planner, compiled':>22}: {compiled * 1e3:8.1f} ms p50 for {what} "
            f"({SHARDS / compiled / 1e6:.1f} M shards/s{extra})"
        )
    if pure:
        ratio = f" = {pure / compiled:.1f}x the compiled twin" if compiled else ""
        tr.write_line(
            f"{'planner, pure twin':>22}: {pure:8.2f} s p50 on the same input (baseline){ratio}"
        )
