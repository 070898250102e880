"""Run containers on the local Docker engine, each isolated and removed afterwards.

A run creates one container: no network, every capability dropped, no new privileges, a pids
limit, the job's memory (swap included) and cpu limits, inputs bind-mounted read-only and each
output an empty writable folder under the run's workdir, no log file. Output is read from the
container's attach stream as it is written, through the run guard (`guard.py`: timeout,
cancel, and stdout, stderr and output folders counted against the disk limit). Every
container carries the labels `bacalhau.node`, `bacalhau.job` and `bacalhau.execution`;
`cleanup` removes what a crashed node left behind. The engine is the one `DOCKER_HOST`
names (the local socket by default).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from bacalhau.executor.base import (
    ExecutorError,
    RunRequest,
    RunResult,
    prepare_outputs,
)
from bacalhau.executor.guard import NOT_EXITED, RunGuard

log = logging.getLogger(__name__)

PULL_POLICIES = ("never", "missing")
LABEL_NODE = "bacalhau.node"
LABEL_JOB = "bacalhau.job"
LABEL_EXECUTION = "bacalhau.execution"
PIDS_LIMIT = 1024
_POLL_S = 0.02  # how often a run looks at its cancel event and deadline
_OOM_SETTLE_S = 1.0  # how long a SIGKILLed container's OOMKilled flag may take to show
_SIGKILL_EXIT = 128 + 9
_IMAGE_TTL_S = 10.0  # how long a bid trusts that an image it found is still there


class ImageMissing(ExecutorError):
    """The image is not on this node's engine, and this node does not pull."""


class DockerExecutor:
    """Runs `RunRequest`s as containers; see the module docstring for the sandbox."""

    name = "docker"

    def __init__(
        self,
        *,
        pull: str = "missing",
        node_id: str = "",
        client: Any = None,
        nvidia_runtime: str = "auto",
    ) -> None:
        """`nvidia_runtime`: whether the engine can give containers NVIDIA GPUs: "auto" asks
        it (once), "yes" and "no" say so."""
        if pull not in PULL_POLICIES:
            raise ExecutorError(f"bad pull policy {pull!r}", hint="use never or missing")
        if nvidia_runtime not in ("auto", "yes", "no"):
            raise ExecutorError(f"bad NVIDIA runtime setting {nvidia_runtime!r}")
        self._gpu_runtime: bool | None = (
            None if nvidia_runtime == "auto" else nvidia_runtime == "yes"
        )
        self.pull = pull
        self.node_id = node_id
        self._client = client
        self._lock = threading.Lock()
        self._removals: set[threading.Thread] = set()
        self._seen: dict[str, float] = {}  # image -> when it was last found on the engine

    @property
    def client(self) -> Any:
        """The engine's API client, connected on first use. Raises ExecutorError."""
        with self._lock:
            if self._client is None:
                try:
                    self._client = docker.from_env(timeout=120)
                    self._client.ping()
                except Exception as e:
                    self._client = None
                    raise ExecutorError(
                        f"no Docker engine answers: {_reason(e)}",
                        hint="start dockerd, or set DOCKER_HOST to where it listens",
                    ) from None
            return self._client

    def is_installed(self) -> bool:
        """Whether an engine answers. Raises nothing."""
        try:
            self.client.ping()
        except Exception:
            return False
        return True

    def gpu_runtime(self) -> bool:
        """Whether the engine can give containers NVIDIA GPUs: the NVIDIA container runtime
        is registered with it (`docker info`: Runtimes, or the default runtime), unless the
        node was told. Asked once, when an engine answers. Raises nothing."""
        if self._gpu_runtime is None:
            try:
                info = self.client.info()
            except Exception:
                return False  # no engine now: asked again next time
            runtimes = info.get("Runtimes") or {}
            self._gpu_runtime = "nvidia" in runtimes or info.get("DefaultRuntime") == "nvidia"
        return self._gpu_runtime

    def has_image(self, image: str) -> bool:
        """Whether the engine holds `image` (by name:tag or ID). Raises ExecutorError."""
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as e:
            if e.status_code in (400, 404):  # a malformed reference is not here either
                return False
            raise ExecutorError(f"the Docker engine failed: {_reason(e)}") from None
        except requests.exceptions.RequestException as e:
            raise ExecutorError(f"the Docker engine failed: {_reason(e)}") from None
        return True

    def can_run(self, image: str) -> str:
        """Why this node would not run `image`, or "" if it would. Raises nothing."""
        if self.pull == "missing":
            return ""
        now = time.monotonic()
        if now - self._seen.get(image, -_IMAGE_TTL_S) < _IMAGE_TTL_S:
            return ""
        try:
            if self.has_image(image):
                self._seen[image] = now
                return ""
        except ExecutorError as e:
            return str(e)
        return f"image {image} is not on this node and it does not pull (--docker-pull never)"

    def _ensure_image(self, image: str) -> None:
        if self.has_image(image):
            return
        if self.pull == "never":
            raise ImageMissing(
                f"image {image} is not on this node's Docker engine",
                hint="load it there (docker load/import), or run the node with "
                "--docker-pull missing",
            )
        try:
            self.client.images.pull(image)
        except (docker.errors.APIError, requests.exceptions.RequestException) as e:
            raise ImageMissing(f"cannot pull image {image}: {_reason(e)}") from None

    def cleanup(self) -> int:
        """Remove every container this node left (after a crash); return how many."""
        if not self.node_id:
            return 0
        removed = 0
        try:
            stale = self.client.containers.list(
                all=True, sparse=True, filters={"label": f"{LABEL_NODE}={self.node_id}"}
            )
        except Exception as e:
            log.warning("cannot list old containers: %s", _reason(e))
            return 0
        for container in stale:
            with contextlib.suppress(Exception):
                container.remove(force=True)
                removed += 1
        return removed

    # -- a run ------------------------------------------------------------------------

    def run(self, req: RunRequest, cancel: threading.Event | None = None) -> RunResult:
        """Run the container to completion; see `Executor.run`.

        Raises ImageMissing when the image is absent (and not pulled), ExecutorError when the
        engine refuses the container or the request is malformed.
        """
        if not req.image:
            raise ExecutorError("a docker run needs an image")
        req.validate()
        cancel = cancel or threading.Event()
        outputs_dir = prepare_outputs(req)
        self._ensure_image(req.image)
        container = self._create(req, outputs_dir)
        try:
            return self._run_container(container, req, outputs_dir, cancel)
        finally:
            # Removing takes tens of ms: do it after the result is handed back.
            remover = threading.Thread(
                target=self._remove, args=(container,), name="container-remove", daemon=True
            )
            with self._lock:
                self._removals.add(remover)
            remover.start()

    def _remove(self, container: Any) -> None:
        try:
            _remove(container)
        finally:
            with self._lock:
                self._removals.discard(threading.current_thread())

    def close(self, timeout: float = 30.0) -> None:
        """Wait for containers still being removed."""
        deadline = time.monotonic() + timeout
        with self._lock:
            pending = list(self._removals)
        for t in pending:
            t.join(max(deadline - time.monotonic(), 0))

    def _create(self, req: RunRequest, outputs_dir: Path) -> Any:
        mounts = [
            docker.types.Mount(target, str(host.resolve()), type="bind", read_only=True)
            for host, target in req.inputs
        ]
        mounts += [
            docker.types.Mount(target, str(outputs_dir / name), type="bind", read_only=False)
            for name, target in req.outputs
        ]
        labels = {LABEL_NODE: self.node_id, **req.labels}
        kwargs: dict[str, Any] = {
            "image": req.image,
            "command": req.args or None,
            "entrypoint": req.entrypoint or None,
            "environment": req.env,
            "working_dir": req.working_dir or None,
            "labels": labels,
            "mounts": mounts,
            "network_mode": "none",
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": PIDS_LIMIT,
            "mem_limit": req.memory_limit_bytes,
            "memswap_limit": req.memory_limit_bytes,  # no swap beyond the limit
            "detach": True,
            # Output is read from the attach stream; a log file would grow without bound.
            "log_config": docker.types.LogConfig(type="none"),
            "stdin_open": False,
            "tty": False,
        }
        if req.cpu:
            kwargs["nano_cpus"] = int(req.cpu * 1e9)
        if req.gpu_devices:
            kwargs["device_requests"] = [
                docker.types.DeviceRequest(
                    driver="nvidia", device_ids=list(req.gpu_devices), capabilities=[["gpu"]]
                )
            ]
        try:
            return self.client.containers.create(**kwargs)
        except docker.errors.ImageNotFound:
            raise ImageMissing(f"image {req.image} is not on this node's Docker engine") from None
        except docker.errors.APIError as e:
            raise ExecutorError(f"the Docker engine refused the container: {_reason(e)}") from None

    def _run_container(
        self, container: Any, req: RunRequest, outputs_dir: Path, cancel: threading.Event
    ) -> RunResult:
        def interrupt() -> None:
            with contextlib.suppress(Exception):
                container.kill()

        guard = RunGuard(
            req, cancel, folders=[outputs_dir / n for n, _ in req.outputs], interrupt=interrupt
        )
        # Attached before start, so nothing written is missed (the log driver is "none":
        # nothing is kept on the engine's disk).
        stream = container.attach(stdout=True, stderr=True, stream=True, logs=False, demux=True)
        reader = threading.Thread(
            target=_pump, args=(stream, guard), name="container-output", daemon=True
        )
        exited = threading.Event()
        status: dict[str, Any] = {}

        def wait() -> None:
            try:
                status.update(container.wait())
            except Exception as e:
                status["error"] = _reason(e)
            exited.set()

        with guard:
            try:
                container.start()
            except docker.errors.APIError as e:
                raise ExecutorError(f"the container did not start: {_reason(e)}") from None
            reader.start()
            threading.Thread(target=wait, name="container-wait", daemon=True).start()
            while not exited.wait(_POLL_S) and guard.reason is None:
                pass
            exited.wait(30)  # stopped by the guard: the kill takes a moment
            reader.join(timeout=10)
        error: str | None = None
        if "error" in status:
            error = f"lost the container: {status['error']}"
        code = int(status.get("StatusCode", NOT_EXITED))
        if guard.reason is None and error is None and code != 0:
            error, code_stands = _oom_reason(container, code, req.memory_limit_bytes >> 20)
        else:
            code_stands = error is None  # (the guard's reason sets its own code)
        if not code_stands:
            code = NOT_EXITED
        return guard.result(outputs_dir, code, error)


def _pump(stream: Iterator[tuple[bytes | None, bytes | None]], guard: RunGuard) -> None:
    with contextlib.suppress(Exception):
        for stdout, stderr in stream:
            if stdout:
                guard.wrote(1, stdout)
            if stderr:
                guard.wrote(2, stderr)


def _oom_reason(container: Any, code: int, limit_mib: int) -> tuple[str | None, bool]:
    """(Why a container that exited `code` was killed for memory or None, whether its exit
    code stands: False when the engine says it was OOM killed).

    The engine records OOMKilled from an event that may come after the exit; a SIGKILL
    (137) is asked about again for a moment, and named as most likely memory if it stays
    unexplained (nothing else here sends it: timeouts and cancels are reported before).
    """
    deadline = time.monotonic() + (_OOM_SETTLE_S if code == _SIGKILL_EXIT else 0)
    while True:
        try:
            container.reload()
            if container.attrs.get("State", {}).get("OOMKilled"):
                return f"out of memory (OOM killed at the {limit_mib} MiB limit)", False
        except Exception:
            pass
        if time.monotonic() >= deadline:
            break
        time.sleep(_POLL_S)
    if code == _SIGKILL_EXIT:
        return (
            f"killed by SIGKILL (exit code 137): most likely out of memory at the {limit_mib} "
            "MiB limit",
            True,
        )
    return None, True


def _remove(container: Any) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except Exception as e:
        log.warning("cannot remove container %s: %s", container.id[:12], _reason(e))


def _reason(e: BaseException) -> str:
    if isinstance(e, docker.errors.APIError):
        return str(e.explanation or e)
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__
