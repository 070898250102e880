"""Capacity: what a node detects (GPUs from recorded nvidia-smi outputs), lends and accounts."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from bacalhau.compute.capacity import (
    DEFAULT_JOB_CPU,
    DEFAULT_JOB_MEMORY,
    Allocator,
    Gpu,
    Limits,
    Machine,
    Resources,
    detect,
    detect_gpus,
    parse_nvidia_smi,
)
from bacalhau.errors import BacalhauError
from tests.conftest import VECTORS

SMI = VECTORS / "nvidia-smi"
GIB = 1 << 30
MIB = 1 << 20


def fake_nvidia_smi(tmp_path: Path, recorded: Path, status: int = 0) -> Path:
    """An executable that prints a recorded output, as nvidia-smi would, and exits."""
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\ncat '{recorded}'\nexit {status}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_parse_one_consumer_gpu() -> None:
    assert parse_nvidia_smi((SMI / "rtx2080.csv").read_text()) == [
        Gpu(0, "GeForce RTX 2080", 7979 * MIB, "GPU-22b2c6ac-2d49-4863-197c-9c469071178a")
    ]


def test_parse_four_datacenter_gpus() -> None:
    gpus = parse_nvidia_smi((SMI / "a100x4.csv").read_text())
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    assert {g.name for g in gpus} == {"NVIDIA A100-SXM4-40GB"}
    assert all(g.memory_bytes == 40 * GIB for g in gpus)


def test_parse_refuses_garbage() -> None:
    with pytest.raises(BacalhauError, match="cannot read nvidia-smi line"):
        parse_nvidia_smi("zero, name, lots\n")


def test_detect_gpus_runs_nvidia_smi(tmp_path: Path) -> None:
    exe = fake_nvidia_smi(tmp_path, SMI / "a100x4.csv")
    assert len(detect_gpus(str(exe))) == 4


def test_detect_gpus_without_a_driver_finds_none(tmp_path: Path) -> None:
    exe = fake_nvidia_smi(tmp_path, SMI / "no-driver.txt", status=9)
    assert detect_gpus(str(exe)) == []
    assert detect_gpus(str(tmp_path / "absent")) == []


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no nvidia-smi on this machine")
def test_detect_real_gpus() -> None:
    gpus = detect_gpus()
    assert gpus, "nvidia-smi is installed but no GPU was detected"
    assert all(g.memory_bytes > 0 and g.name for g in gpus)


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no nvidia-smi on this machine")
def test_real_gpus_are_lent_whole_and_never_more_than_there(tmp_path: Path) -> None:
    """On a machine with real GPUs: `--gpu N` bids as far as the GPUs go, and no further."""
    machine = detect(tmp_path)
    n = len(machine.gpus)
    assert n > 0
    a = Allocator(machine, Limits())
    assert a.total.gpu == n and a.free().gpu == n
    assert a.reason(Allocator.needs(1, 0, 0, n)) == ""
    assert a.reason(Allocator.needs(1, 0, 0, n + 1)) == f"needs {n + 1} GPU, this node has {n}"
    taken = a.allocate(Allocator.needs(1, 0, 0, n))
    assert taken is not None
    assert sorted(taken.gpu_indexes) == sorted(g.index for g in machine.gpus)
    assert a.allocate(Allocator.needs(0.1, 0, 0, 1)) is None  # all lent
    a.release(taken)
    assert a.free().gpu == n
    one = Allocator(machine, Limits(total=Resources(gpu=1)))
    assert one.reason(Allocator.needs(1, 0, 0, 2)) == "needs 2 GPU, this node has 1"


def test_detect_this_machine(tmp_path: Path) -> None:
    m = detect(tmp_path, nvidia_smi=str(tmp_path / "absent"))
    assert 0 < m.cpu <= (os.cpu_count() or 1)
    assert m.memory_bytes > 64 * MIB
    assert m.disk_bytes > 0
    assert m.gpus == ()


MACHINE = Machine(
    cpu=4.0,
    memory_bytes=8 * GIB,
    disk_bytes=100 * GIB,
    gpus=tuple(Gpu(i, "A100", 40 * GIB) for i in range(4)),
)


def test_totals_are_the_machine_unless_limited() -> None:
    a = Allocator(MACHINE, Limits())
    assert a.total == Resources(4.0, 8 * GIB, 100 * GIB, 4)
    b = Allocator(MACHINE, Limits(total=Resources(cpu=2, memory_bytes=2 * GIB, gpu=1)))
    assert b.total == Resources(2.0, 2 * GIB, 100 * GIB, 1)
    assert [g.index for g in b.gpus] == [0]
    # A limit above what the machine has does not lend what is not there.
    c = Allocator(MACHINE, Limits(total=Resources(cpu=64, memory_bytes=64 * GIB)))
    assert (c.total.cpu, c.total.memory_bytes) == (4.0, 8 * GIB)


def test_reasons_say_what_is_missing() -> None:
    a = Allocator(MACHINE, Limits(job=Resources(cpu=1, memory_bytes=1 * GIB, gpu=2)))
    assert a.reason(Resources(cpu=1, memory_bytes=GIB, gpu=2)) == ""
    assert a.reason(Resources(cpu=2)) == "needs 2 cpu, above this node's per-job limit of 1"
    assert "per-job limit of 1024 MiB" in a.reason(Resources(memory_bytes=2 * GIB))
    assert a.reason(Resources(gpu=3)) == "needs 3 GPU, above this node's per-job limit of 2"
    none = Allocator(Machine(2.0, 4 * GIB, GIB), Limits())
    assert none.reason(Resources(gpu=1)) == "needs 1 GPU, this node has none"
    assert none.reason(Resources(cpu=3)) == "needs 3 cpu, this node has 2"
    assert "this node has 4096 MiB" in none.reason(Resources(memory_bytes=5 * GIB))
    assert "MiB of disk" in none.reason(Resources(disk_bytes=2 * GIB))


def test_allocation_accounts_and_hands_out_whole_gpus() -> None:
    a = Allocator(MACHINE, Limits())
    first = a.allocate(Resources(cpu=1, memory_bytes=GIB, gpu=2))
    second = a.allocate(Resources(cpu=1, memory_bytes=GIB, gpu=1))
    assert first is not None and second is not None
    assert first.gpu_indexes == (0, 1) and second.gpu_indexes == (2,)
    assert a.allocate(Resources(gpu=2)) is None  # one GPU left
    assert a.allocate(Resources(cpu=2.5)) is None  # 2 cores left
    assert a.free() == Resources(2.0, 6 * GIB, 100 * GIB, 1)
    a.release(first)
    third = a.allocate(Resources(cpu=2, memory_bytes=GIB, gpu=3))
    assert third is not None and third.gpu_indexes == (0, 1, 3)
    a.release(second)
    a.release(third)
    assert a.free() == Resources(4.0, 8 * GIB, 100 * GIB, 4)


def test_jobs_that_name_nothing_count_as_defaults() -> None:
    assert Allocator.needs(0, 0, 0, 0) == Resources(DEFAULT_JOB_CPU, DEFAULT_JOB_MEMORY, 0, 0)
    assert Allocator.needs(2, MIB, 0, 1) == Resources(2, MIB, 0, 1)
