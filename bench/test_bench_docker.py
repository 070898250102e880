"""Container jobs: submit-to-completed of a trivial container job through a real node, against
a bare run of the same container on the same engine in the same run.

Baselines: `docker run --rm --network none IMAGE true` through the docker CLI, and the same
through the docker SDK in this process (create, start, wait, logs, remove), as the executor
does. Aim: the job at most 1.15x the bare run.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.client import Client
from tests._docker import TEST_IMAGE, docker_client
from tests.integration.conftest import NodeProc, start_node

Record = Callable[[str, object], None]
ROUNDS = 30


@pytest.fixture(scope="module")
def engine() -> Any:
    return docker_client()


@pytest.fixture(scope="module")
def node(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    n = start_node(
        tmp_path_factory.mktemp("docker-bench"),
        args=("--engines", "docker", "--docker-pull", "never"),
    )
    yield n
    n.stop()


def test_bare_docker_cli_baseline(benchmark: Any, engine: Any, record: Record) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI")
    cmd = [docker, "run", "--rm", "--network", "none", TEST_IMAGE, "true"]
    benchmark.pedantic(
        lambda: subprocess.run(cmd, check=True, capture_output=True),
        rounds=ROUNDS,
        iterations=1,
        warmup_rounds=3,
    )
    record("docker_bare_cli", benchmark)


def test_bare_docker_sdk_baseline(benchmark: Any, engine: Any, record: Record) -> None:
    def bare() -> None:
        c = engine.containers.create(TEST_IMAGE, ["true"], network_mode="none")
        try:
            c.start()
            assert c.wait()["StatusCode"] == 0
            c.logs()
        finally:
            c.remove(force=True)

    benchmark.pedantic(bare, rounds=ROUNDS, iterations=1, warmup_rounds=3)
    record("docker_bare_sdk", benchmark)


def test_docker_job_latency(benchmark: Any, node: NodeProc, record: Record) -> None:
    spec = types_pb2.JobSpec(
        engine="docker",
        docker=types_pb2.DockerSpec(image=TEST_IMAGE, args=["true"]),
        outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
    )
    with Client(node.address) as client:

        def job() -> None:
            job_id = client.submit(spec).job_id
            done = client.wait(job_id).job
            assert done.state == types_pb2.JOB_STATE_COMPLETED, done.message

        benchmark.pedantic(job, rounds=ROUNDS, iterations=1, warmup_rounds=3)
    record("docker_job", benchmark)
