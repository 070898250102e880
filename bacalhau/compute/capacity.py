"""What a compute node has (cpu, memory, disk, GPUs), what it lends, and to whom.

`detect` reads the machine: cores the process may use (and a cgroup cpu quota), physical
memory (or a cgroup memory limit below it), the data dir's disk, and NVIDIA GPUs through
`nvidia-smi` when it is installed. `Limits` are the node's `--limit-total-*` (what it lends
at most) and `--limit-job-*` (the most one job may ask for). `Allocator` accounts for the
executions that hold resources and hands out whole GPUs by index.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bacalhau.errors import BacalhauError

NVIDIA_SMI_QUERY = (
    "--query-gpu=index,name,memory.total,uuid",
    "--format=csv,noheader,nounits",
)
DEFAULT_JOB_CPU = 0.1  # what a job that names no cpu is counted as
DEFAULT_JOB_MEMORY = 256 << 20
MIB = 1 << 20


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_bytes: int
    uuid: str = ""


@dataclass(frozen=True)
class Resources:
    cpu: float = 0.0
    memory_bytes: int = 0
    disk_bytes: int = 0
    gpu: int = 0


# How reasons name an amount of each resource: (what a job needs, what a node has).
_WORDS: dict[str, tuple[Callable[[Any], str], Callable[[Any], str]]] = {
    "cpu": (lambda v: f"{v:g} cpu", lambda v: f"{v:g}"),
    "memory_bytes": (lambda v: f"{v / MIB:.0f} MiB of memory", lambda v: f"{v / MIB:.0f} MiB"),
    "disk_bytes": (lambda v: f"{v / MIB:.0f} MiB of disk", lambda v: f"{v / MIB:.0f} MiB"),
    "gpu": (lambda v: f"{v} GPU", lambda v: f"{v or 'none'}"),
}


@dataclass(frozen=True)
class Machine:
    """What `detect` found."""

    cpu: float
    memory_bytes: int
    disk_bytes: int
    gpus: tuple[Gpu, ...] = ()


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """GPUs from `nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,...`.

    Memory is in MiB (nounits). Raises BacalhauError on a line it cannot read.
    """
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3:
            raise BacalhauError(f"cannot read nvidia-smi line {line!r}")
        try:
            index = int(fields[0])
            memory = int(float(fields[2]) * MIB)
        except ValueError:
            raise BacalhauError(f"cannot read nvidia-smi line {line!r}") from None
        gpus.append(Gpu(index, fields[1], memory, fields[3] if len(fields) > 3 else ""))
    return gpus


def detect_gpus(nvidia_smi: str | None = None) -> list[Gpu]:
    """The NVIDIA GPUs `nvidia-smi` reports; none if it is missing or fails. Raises nothing."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=20, check=True
        ).stdout
        return parse_nvidia_smi(out)
    except (OSError, subprocess.SubprocessError, BacalhauError):
        return []


def _cgroup_cpu() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota_us > 0:
            return quota_us / period_us
    return None


def _cgroup_memory() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            text = Path(path).read_text().strip()
            if text != "max":
                return int(text)
    return None


def detect(data_dir: Path, nvidia_smi: str | None = None) -> Machine:
    """Read this machine's resources. Raises nothing (unknowns are 0)."""
    cpu = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    quota = _cgroup_cpu()
    if quota is not None:
        cpu = min(cpu, quota)
    memory = disk = 0
    with contextlib.suppress(ValueError, OSError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_memory()
    if limit is not None and 0 < limit < memory:
        memory = limit
    with contextlib.suppress(OSError):
        st = os.statvfs(data_dir)
        disk = st.f_bavail * st.f_frsize
    return Machine(cpu, memory, disk, tuple(detect_gpus(nvidia_smi)))


@dataclass(frozen=True)
class Limits:
    """`--limit-total-*` and `--limit-job-*`: what a node lends in all, and to one job."""

    total: Resources = field(default_factory=Resources)  # 0 fields: the machine's
    job: Resources = field(default_factory=Resources)  # 0 fields: no per-job limit


@dataclass(frozen=True)
class Allocation:
    resources: Resources
    gpu_indexes: tuple[int, ...] = ()


class Allocator:
    """Lends the node's resources to executions, never more than it has.

    `reason(wants)` says why a job can never run here (beyond the totals or the per-job
    limits); `allocate(wants)` takes what a job needs now, or returns None if that is not
    free yet; `release` gives it back. Thread-safe.
    """

    def __init__(self, machine: Machine, limits: Limits) -> None:
        t = limits.total
        self.gpus = machine.gpus[: t.gpu] if t.gpu else machine.gpus
        self.total = Resources(
            cpu=min(t.cpu, machine.cpu) if t.cpu and machine.cpu else t.cpu or machine.cpu,
            memory_bytes=(
                min(t.memory_bytes, machine.memory_bytes)
                if t.memory_bytes and machine.memory_bytes
                else t.memory_bytes or machine.memory_bytes
            ),
            disk_bytes=t.disk_bytes or machine.disk_bytes,
            gpu=len(self.gpus),
        )
        self.job_limit = limits.job
        self._lock = threading.Lock()
        self._used = Resources()
        self._free_gpus = [g.index for g in self.gpus]

    @staticmethod
    def needs(cpu: float, memory_bytes: int, disk_bytes: int, gpu: int) -> Resources:
        """What a job asking for these is counted as (defaults for what it leaves at 0)."""
        return Resources(
            cpu=cpu or DEFAULT_JOB_CPU,
            memory_bytes=memory_bytes or DEFAULT_JOB_MEMORY,
            disk_bytes=disk_bytes,
            gpu=gpu,
        )

    def reason(self, wants: Resources) -> str:
        """Why a job needing `wants` can never run here, or "" if it can."""
        for name in ("cpu", "memory_bytes", "disk_bytes", "gpu"):
            want, limit = getattr(wants, name), getattr(self.job_limit, name)
            if limit and want > limit:
                amount, short = _WORDS[name]
                return f"needs {amount(want)}, above this node's per-job limit of {short(limit)}"
        for name in ("gpu", "cpu", "memory_bytes", "disk_bytes"):
            want, have = getattr(wants, name), getattr(self.total, name)
            if (have or name == "gpu") and want > have:  # a node without GPUs has none
                amount, short = _WORDS[name]
                return f"needs {amount(want)}, this node has {short(have)}"
        return ""

    def allocate(self, wants: Resources) -> Allocation | None:
        """Take `wants` if it is free now; None if not (yet)."""
        with self._lock:
            u, t = self._used, self.total
            if (
                (t.cpu and u.cpu + wants.cpu > t.cpu + 1e-9)
                or (t.memory_bytes and u.memory_bytes + wants.memory_bytes > t.memory_bytes)
                or wants.gpu > len(self._free_gpus)
            ):
                return None
            gpus = tuple(self._free_gpus[: wants.gpu])
            del self._free_gpus[: wants.gpu]
            self._used = Resources(
                u.cpu + wants.cpu,
                u.memory_bytes + wants.memory_bytes,
                u.disk_bytes + wants.disk_bytes,
                u.gpu + wants.gpu,
            )
            return Allocation(wants, gpus)

    def release(self, a: Allocation) -> None:
        with self._lock:
            u, r = self._used, a.resources
            self._used = Resources(
                max(u.cpu - r.cpu, 0.0),
                max(u.memory_bytes - r.memory_bytes, 0),
                max(u.disk_bytes - r.disk_bytes, 0),
                max(u.gpu - r.gpu, 0),
            )
            self._free_gpus = sorted({*self._free_gpus, *a.gpu_indexes})

    def free(self) -> Resources:
        """What is not lent now."""
        with self._lock:
            u, t = self._used, self.total
            return Resources(
                max(t.cpu - u.cpu, 0.0),
                max(t.memory_bytes - u.memory_bytes, 0),
                max(t.disk_bytes - u.disk_bytes, 0),
                len(self._free_gpus),
            )
