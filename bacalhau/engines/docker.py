"""Containers, run on the node's Docker engine."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bacalhau.engines.base import Engine, EngineContext
from bacalhau.spec import Problem, check_docker

if TYPE_CHECKING:
    from bacalhau.executor.base import Executor


class DockerEngine(Engine):
    name = "docker"

    def check(self, spec: Any) -> list[Problem]:
        """See Engine.check: an image, an absolute working dir."""
        return check_docker(spec)

    def to_request(
        self, spec: Any, fetched: Mapping[str, Path], job_id: str, execution_id: str
    ) -> dict[str, Any]:
        """See Engine.to_request: image, entrypoint, args, env, working dir, labels naming
        the job and the execution; no errors."""
        d = spec.docker
        return {
            "image": d.image,
            "entrypoint": list(d.entrypoint),
            "args": list(d.args),
            "env": dict(d.env),
            "working_dir": d.working_dir,
            "labels": {"bacalhau.job": job_id, "bacalhau.execution": execution_id},
        }

    def decline_reason(self, spec: Any, executor: Executor) -> str:
        """Why the executor cannot run the job: GPUs asked of an engine without the NVIDIA
        container runtime, or an image not pulled under --docker-pull never."""
        if spec.resources.gpu:
            has_runtime = getattr(executor, "gpu_runtime", None)
            if has_runtime is None or not has_runtime():
                return (
                    "GPU jobs need the NVIDIA container runtime, and this node's Docker engine "
                    "has none (docker info: Runtimes)"
                )
        can_run = getattr(executor, "can_run", None)
        return str(can_run(spec.docker.image)) if can_run is not None else ""

    def make_executor(self, ctx: EngineContext) -> Executor:
        """A DockerExecutor with the node's pull policy and ID; raises ExecutorError if the
        Docker SDK is not installed."""
        from bacalhau.executor.base import ExecutorError

        try:
            from bacalhau.executor.docker import DockerExecutor
        except ImportError as e:
            raise ExecutorError(
                "the docker executor is not installed", hint="pip install docker"
            ) from e
        return DockerExecutor(
            pull=ctx.docker_pull, node_id=ctx.node_id, nvidia_runtime=ctx.docker_nvidia_runtime
        )
