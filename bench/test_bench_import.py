"""Import throughput against one thread of hashlib.sha256 over the same bytes, same run.

Big-file imports also time a sha256 pass before each of their rounds (untimed by the
benchmark): other work on the machine comes and goes, and a baseline taken in between the
rounds it is compared with moves with it. The summary divides by that one.
"""

from __future__ import annotations

import hashlib
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bacalhau.blockstore import Blockstore
from bacalhau.content import Importer

Record = Callable[[str, object], None]
Note = Callable[[str, float], None]


def sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def _interleaved(
    benchmark: pytest.FixtureDef,  # type: ignore[type-arg]
    run: Callable[[], object],
    big_file: Path,
    rounds: int,
    name: str,
    record: Record,
    note: Note,
) -> None:
    """Benchmark ``run``, timing one sha256 pass of ``big_file`` before each round."""
    sha: list[float] = []

    def baseline() -> None:
        start = time.perf_counter()
        sha256_file(big_file)
        sha.append(time.perf_counter() - start)

    benchmark.pedantic(run, setup=baseline, rounds=rounds, iterations=1, warmup_rounds=1)  # type: ignore[attr-defined]
    record(name, benchmark)
    note(f"{name}_sha256", statistics.mean(sha[-rounds:]))  # the warm-up's left out


def test_sha256_one_thread_baseline(
    benchmark: pytest.FixtureDef, big_file: Path, record: Record
) -> None:  # type: ignore[type-arg]
    benchmark.pedantic(sha256_file, args=(big_file,), rounds=3, iterations=1, warmup_rounds=1)
    record("sha256_1thread", benchmark)


def test_import_only_hash(
    benchmark: pytest.FixtureDef,  # type: ignore[type-arg]
    big_file: Path,
    record: Record,
    note: Note,
) -> None:
    def run() -> None:
        with Importer() as imp:
            imp.add_path(big_file)

    _interleaved(benchmark, run, big_file, 5, "import_only_hash", record, note)


def _store(path: Path, where: Path) -> None:
    shutil.rmtree(where, ignore_errors=True)
    with Blockstore(where) as store, store.batch() as batch:
        with Importer(sink=batch) as imp:
            root = imp.add_path(path)
        batch.pin(root.cid)


def test_import_store(
    benchmark: pytest.FixtureDef,  # type: ignore[type-arg]
    big_file: Path,
    tmp_path: Path,
    record: Record,
    note: Note,
) -> None:
    def run() -> None:
        _store(big_file, tmp_path / "bs")

    _interleaved(benchmark, run, big_file, 3, "import_store", record, note)


def test_small_files_only_hash(
    benchmark: pytest.FixtureDef, small_tree: Path, record: Record
) -> None:  # type: ignore[type-arg]
    def run() -> None:
        with Importer() as imp:
            imp.add_path(small_tree)

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    record("small_only_hash", benchmark)


def test_small_files_store(
    benchmark: pytest.FixtureDef, small_tree: Path, tmp_path: Path, record: Record
) -> None:  # type: ignore[type-arg]
    benchmark.pedantic(_store, args=(small_tree, tmp_path / "bs"), rounds=5, iterations=1)
    record("small_store", benchmark)
