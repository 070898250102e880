"""A peer of our own in a test: a fresh identity on its own event loop, over real streams."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from bacalhau._pb.bacalhau.v1 import peer_pb2
from bacalhau.identity import Identity
from bacalhau.network import Network
from bacalhau.network.peers import API_VERSION
from tests._wait import wait_for

if TYPE_CHECKING:
    from tests.integration.conftest import NodeProc


class Stranger:
    """A peer with a fresh identity, on its own event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        hello = peer_pb2.Hello(version="0", api_version=API_VERSION, engines=["wasm"])
        self.net: Network = self.call(self._make(hello))

    async def _make(self, hello: Any) -> Network:
        net = Network(Identity.generate(), hello)
        net.exchange = False
        return net

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def dial(self, node: NodeProc) -> None:
        self.loop.call_soon_threadsafe(self.net.dial, node.address)
        wait_for(lambda: node.node_id in self.net.connected(), 15, "the stranger to connect")

    def send(self, node_id: str, **body: Any) -> None:
        async def send() -> bool:
            return self.net.send(node_id, **body)

        assert self.call(send())

    def close(self) -> None:
        self.call(self.net.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
