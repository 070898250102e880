"""The executor interface: what a node hands an executor, and what it gets back.

An executor runs one job's code to completion in the calling thread. Its `run` is blocking;
a node runs it in a worker thread and may stop it early by setting the `cancel` event.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from bacalhau.errors import BacalhauError
from bacalhau.spec import OUTPUT_NAME as OUTPUT_NAME  # re-exported: it was defined here

MIB = 1024 * 1024
DEFAULT_DISK_LIMIT = 1 << 30  # what a run may write when neither job nor node says


class ExecutorError(BacalhauError):
    """A job could not be started: the request or the module is at fault, not the guest."""


class InvalidModule(ExecutorError):
    """The module's bytes are not WebAssembly, fail to compile, or need what we don't provide."""


def _scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="bacalhau-exec-"))


LogSink = Callable[[int, bytes], None]  # (1 stdout | 2 stderr, bytes) as the program writes


@dataclass(frozen=True)
class RunRequest:
    """One run of a job's program: a WASI module, a container or a Python program.

    `inputs` are (host_path, guest_path) pairs mounted read-only; `outputs` are
    (name, guest_path) pairs, each mounted writable onto `workdir/outputs/<name>`. In a wasm
    guest, preopened directories get file descriptors from 3 upwards: the inputs first, then
    the outputs, each in the order given. `stdout_limit_bytes` caps what `RunResult` keeps
    of stdout and, separately, of stderr. `disk_limit_bytes` caps what the run writes, stdout,
    stderr and output folders together (`guard.RunGuard`, the one place every engine's limits
    are enforced). `fuel` of None means no instruction budget.

    Engine-specific parts: `module` (wasm); `image`, `entrypoint`, `working_dir`, `cpu`,
    `gpu_devices`, `labels` (docker); `context`, `program`, `code` (python); `deterministic`
    (wasm and python).
    `on_log`, when given, receives output as it is written (engines that can stream).
    """

    module: Path | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    inputs: list[tuple[Path, str]] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    timeout_s: float = 60.0
    memory_limit_bytes: int = 256 * MIB
    fuel: int | None = None
    stdout_limit_bytes: int = MIB
    disk_limit_bytes: int = DEFAULT_DISK_LIMIT
    workdir: Path = field(default_factory=_scratch_dir)
    # docker
    image: str = ""
    entrypoint: list[str] = field(default_factory=list)
    working_dir: str = ""
    cpu: float = 0.0  # cores; 0: no limit
    gpu_devices: list[str] = field(default_factory=list)  # GPU indexes allocated to this run
    labels: dict[str, str] = field(default_factory=dict)
    # python
    context: Path | None = None  # the program's folder (read-only in the guest)
    program: str = ""  # a file in `context` to run
    code: str = ""  # or inline code
    deterministic: bool = False
    on_log: LogSink | None = None

    def validate(self) -> None:
        """Raise ExecutorError if the request cannot be run as given."""
        if self.timeout_s <= 0:
            raise ExecutorError(f"timeout must be positive, not {self.timeout_s}")
        if self.memory_limit_bytes <= 0:
            raise ExecutorError(f"memory limit must be positive, not {self.memory_limit_bytes}")
        if self.fuel is not None and self.fuel <= 0:
            raise ExecutorError(f"fuel must be positive, not {self.fuel}")
        if self.stdout_limit_bytes < 0:
            raise ExecutorError(f"stdout limit must not be negative: {self.stdout_limit_bytes}")
        if self.disk_limit_bytes <= 0:
            raise ExecutorError(f"disk limit must be positive, not {self.disk_limit_bytes}")
        names = [name for name, _ in self.outputs]
        for name in names:
            if not OUTPUT_NAME.match(name):
                raise ExecutorError(
                    f"bad output name {name!r}",
                    hint="use letters, digits, '_', '.' and '-', not starting with '.' or '-'",
                )
        if len(set(names)) != len(names):
            raise ExecutorError("output names must be unique")
        for host, _ in self.inputs:
            if not host.exists():
                raise ExecutorError(f"input {host} does not exist")


@dataclass(frozen=True)
class RunResult:
    """What a run left behind.

    `exit_code` is the guest's exit status (0 when `_start` returns); it is -1 when the guest
    did not exit on its own (timeout, cancel, trap, fuel or memory exhausted), in which case
    `error` says why. `outputs_dir` holds one subfolder per output name.
    """

    exit_code: int
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    outputs_dir: Path
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None


@runtime_checkable
class Executor(Protocol):
    """Runs modules. Implementations must be safe to call `run` on from several threads."""

    name: str

    def is_installed(self) -> bool:
        """Whether this executor can run jobs here. Raises nothing."""
        ...

    def run(self, req: RunRequest, cancel: threading.Event | None = None) -> RunResult:
        """Run `req` to completion, blocking the calling thread.

        Setting `cancel` stops the guest promptly; the result then has error "cancelled".
        The guest failing (non-zero exit, trap, timeout, exhausted fuel or memory) is
        reported in the result, not raised. Raises InvalidModule if the module is not
        runnable WebAssembly, and ExecutorError if the request is malformed or the
        workdir cannot be prepared.
        """
        ...


def prepare_outputs(req: RunRequest) -> Path:
    """Create `workdir/outputs/<name>` for every output; return `workdir/outputs`.

    Raises ExecutorError if the folders cannot be created.
    """
    outputs_dir = req.workdir / "outputs"
    try:
        outputs_dir.mkdir(parents=True, exist_ok=True)
        for name, _ in req.outputs:
            (outputs_dir / name).mkdir(exist_ok=True)
    except OSError as e:
        raise ExecutorError(f"cannot prepare outputs under {req.workdir}: {e}") from e
    return outputs_dir
