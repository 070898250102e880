"""Block exchange between two nodes against plain gRPC streaming of the same bytes.

Node A is a real `bacalhaud` process holding a file of BENCH_BLOCKS_MIB MiB (random bytes,
256 KiB blocks). Node B is a real Node run in this process (on its own event loop thread), with
a fresh data dir each round: the time is from asking B for the DAG until every block is
verified against its CID and stored durably in B's blockstore (`ResultService.ensure_dag`, the path
inputs and `get` take). The baseline, in the same run: a gRPC server in another process streams
the same bytes from memory in 1 MiB messages to a client here that only counts them; it is also
run once before each exchange round, and the summary gives the ratio of those interleaved
medians too. A second baseline is one thread of sha256 over the same bytes, since the receiver
hashes every block (the sender reads them without hashing).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bacalhau.client import Client
from bacalhau.node import Node, NodeConfig
from tests._wait import wait_for
from tests.integration.conftest import NodeProc, start_node

Record = Callable[[str, object], None]
MIB = 1 << 20
SIZE_MIB = int(os.environ.get("BENCH_BLOCKS_MIB", "256"))
ROUNDS = 5

# A plain gRPC server: one server-streaming method sending the file's bytes in 1 MiB messages.
_STREAM_SERVER = r"""
import sys, grpc
from concurrent import futures
data = open(sys.argv[1], "rb").read()
def get(request, context):
    for i in range(0, len(data), 1 << 20):
        yield data[i : i + (1 << 20)]
handler = grpc.method_handlers_generic_handler(
    "bench.Stream", {"Get": grpc.unary_stream_rpc_method_handler(get)}
)
server = grpc.server(futures.ThreadPoolExecutor(2), options=[
    ("grpc.max_send_message_length", 64 << 20)])
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
"""


@pytest.fixture(scope="module")
def payload() -> Iterator[tuple[Path, bytes]]:
    root = Path(tempfile.mkdtemp(prefix="bench-blocks-"))
    rng = random.Random(3)
    data = b"".join(rng.randbytes(MIB) for _ in range(SIZE_MIB))
    (root / "payload.bin").write_bytes(data)
    yield root, data
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def holder(payload: tuple[Path, bytes]) -> Iterator[tuple[NodeProc, str]]:
    root, _ = payload
    node = start_node(root / "a", name="a")
    try:
        with Client(node.address, timeout=120) as c:
            cid = c.add_file(root / "payload.bin").cid
        yield node, cid
    finally:
        node.stop()


@pytest.fixture(scope="module")
def plain_stream(payload: tuple[Path, bytes]) -> Iterator[Callable[[], float]]:
    """Receive the payload once from the plain gRPC server process: the seconds it took."""
    root, _ = payload
    proc = subprocess.Popen(
        [sys.executable, "-c", _STREAM_SERVER, str(root / "payload.bin")],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.enable_http_proxy", 0)]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as ch:
            get = ch.unary_stream("/bench.Stream/Get", lambda b: b, lambda b: b)

            def receive() -> float:
                start = time.perf_counter()
                n = sum(len(m) for m in get(b""))
                assert n == SIZE_MIB * MIB
                return time.perf_counter() - start

            receive()  # warm the connection
            yield receive
    finally:
        proc.kill()
        proc.wait()


def test_plain_grpc_stream_baseline(benchmark: Any, record: Record, plain_stream: Any) -> None:
    benchmark.pedantic(plain_stream, rounds=ROUNDS, iterations=1)
    record("plain_stream", benchmark)


def test_sha256_baseline(benchmark: Any, record: Record, payload: tuple[Path, bytes]) -> None:
    _, data = payload
    view = memoryview(data)

    def hash_blocks() -> None:
        for i in range(0, len(data), 256 << 10):
            hashlib.sha256(view[i : i + (256 << 10)]).digest()

    benchmark.pedantic(hash_blocks, rounds=ROUNDS, iterations=1)
    record("blocks_sha256", benchmark)


class InProcessNode:
    """A real Node on an event loop in a thread of this process."""

    def __init__(self, data_dir: Path, peer: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.node = Node(NodeConfig(data_dir=data_dir, port=0, peers=[peer]))
        self.call(self.node.start())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.call(self.node.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def test_block_exchange_two_nodes(
    benchmark: Any,
    record: Record,
    note: Callable[[str, float], None],
    payload: tuple[Path, bytes],
    holder: tuple[NodeProc, str],
    plain_stream: Any,
) -> None:
    root, data = payload
    a, cid = holder
    state: dict[str, Any] = {}
    plain: list[float] = []

    def setup() -> None:
        if "b" in state:
            state.pop("b").close()
        # The baseline once more right before each round: on a shared machine the load changes
        # between tests, and the ratio of interleaved medians is what holds still.
        plain.append(plain_stream())
        shutil.rmtree(root / "b", ignore_errors=True)
        b = InProcessNode(root / "b", a.address)
        state["b"] = b
        wait_for(lambda: a.node_id in b.node.network.connected(), 30, "B to connect to A")

    def fetch() -> None:
        state["b"].call(state["b"].node.results.ensure_dag(cid, [a.node_id]))

    try:
        benchmark.pedantic(fetch, setup=setup, rounds=ROUNDS, iterations=1)
        record("block_exchange", benchmark)
        note("blocks_plain_interleaved", statistics.median(plain))
        b = state["b"].node
        assert b.block_bytes_received.samples()[0][1] >= SIZE_MIB * MIB
        from bacalhau.content import dag
        from bacalhau.content.cid import CID

        got = b"".join(dag.cat(b.blockstore.get, bytes(CID.parse(cid))))
        assert got == data
    finally:
        if "b" in state:
            state.pop("b").close()
