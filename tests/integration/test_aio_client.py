"""bacalhau.aio.Client (grpc.aio) against a real node: submit, follow, logs, results, errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bacalhau import aio
from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.client import ClientError
from tests.integration.conftest import ECHO_WASM, NodeProc, start_node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    n = start_node(tmp_path_factory.mktemp("aio") / "node")
    yield n
    n.stop()


def test_submit_follow_logs_and_read_a_result_file(node: NodeProc, tmp_path: Path):
    async def go() -> None:
        async with aio.Client(node.address, user_key=tmp_path / "user.key") as c:
            assert (await c.node_info()).node_id == node.node_id
            module = await c.add_bytes(ECHO_WASM.read_bytes(), "echo.wasm")
            spec = types_pb2.JobSpec(
                engine="wasm", wasm=types_pb2.WasmSpec(module_cid=module.cid, args=["hi", "aio"])
            )
            job_id = (await c.submit(spec)).job_id
            types = [ev.type async for ev in c.events(job_id, follow=True)]
            assert types[0] == "JobCreated" and types[-1] == "JobCompleted", types
            done = await c.wait(job_id)
            assert done.job.state == types_pb2.JOB_STATE_COMPLETED
            logs = [ch async for ch in c.logs(job_id, follow=True)]
            assert b"".join(ch.data for ch in logs if ch.stream == 1) == b"hi aio\n"
            assert await c.read_file(job_id, "stdout") == b"hi aio\n"
            assert await c.read_file(job_id, "exitCode") == b"0\n"
            # Cat: the node reads and checks the file; chunks as asked, the first says its size
            chunks = [ch async for ch in c.cat(job_id=job_id, file="stdout")]
            assert b"".join(ch.data for ch in chunks) == b"hi aio\n" and chunks[0].size == 7
            by_cid = [ch async for ch in c.cat(module.cid, chunk_size=1000)]
            assert b"".join(ch.data for ch in by_cid) == ECHO_WASM.read_bytes()
            assert all(len(ch.data) <= 1000 for ch in by_cid)
            listed = await c.list_jobs(all=True)
            assert job_id in [j.id for j in listed.jobs]
            # Calls run concurrently on one channel.
            many = await asyncio.gather(*(c.get_job(job_id) for _ in range(5)))
            assert {r.job.id for r in many} == {job_id}

    asyncio.run(go())


def test_errors_are_client_errors_with_reasons(node: NodeProc, tmp_path: Path):
    async def go() -> None:
        async with aio.Client(node.address, user_key=tmp_path / "user.key") as c:
            with pytest.raises(ClientError) as caught:
                await c.get_job("")
            assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.reason == "FIELD_REQUIRED"
            assert caught.value.metadata == {"field": "job_id"}
            assert str(caught.value) == "job_id is required"
            with pytest.raises(ClientError) as caught:
                [e async for e in c.events("j-none", follow=False)]
            assert caught.value.reason == "JOB_NOT_FOUND"
        async with aio.Client("127.0.0.1:1", user_key=tmp_path / "user.key", timeout=5) as gone:
            with pytest.raises(ClientError) as caught:
                await gone.node_info()
            assert str(caught.value).startswith("cannot reach a node at 127.0.0.1:1")

    asyncio.run(go())
