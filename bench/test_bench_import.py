"""Import throughput against one thread of hashlib.sha256 over the same bytes, same run."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from bacalhau.blockstore import Blockstore
from bacalhau.content import Importer

Record = Callable[[str, object], None]


def sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def test_sha256_one_thread_baseline(
    benchmark: pytest.FixtureDef, big_file: Path, record: Record
) -> None:  # type: ignore[type-arg]
    benchmark.pedantic(sha256_file, args=(big_file,), rounds=3, iterations=1, warmup_rounds=1)
    record("sha256_1thread", benchmark)


def test_import_only_hash(benchmark: pytest.FixtureDef, big_file: Path, record: Record) -> None:  # type: ignore[type-arg]
    def run() -> None:
        with Importer() as imp:
            imp.add_path(big_file)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    record("import_only_hash", benchmark)


def _store(path: Path, where: Path) -> None:
    shutil.rmtree(where, ignore_errors=True)
    with Blockstore(where) as store, store.batch() as batch:
        with Importer(sink=batch) as imp:
            root = imp.add_path(path)
        batch.pin(root.cid)


def test_import_store(
    benchmark: pytest.FixtureDef, big_file: Path, tmp_path: Path, record: Record
) -> None:  # type: ignore[type-arg]
    benchmark.pedantic(_store, args=(big_file, tmp_path / "bs"), rounds=3, iterations=1)
    record("import_store", benchmark)


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
