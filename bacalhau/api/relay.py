"""One network: a client may ask any node about any job.

A job lives on its requester (the node it was submitted to). A node asked about a job it does
not hold finds the requester and relays the call there, as it came: the same request bytes and
the caller's signature metadata, so the requester checks the caller itself (signature, clock,
nonce, ownership) exactly as if the call had come straight to it. A relaying node can neither
act for a user nor change what the user asked.

Where a job is: a job ID ends in a tag of its requester's node ID (`bacalhau.models.node_tag`),
so a whole ID names its node among the peers this one knows, and only that node is asked. A
prefix (or an ID of another form) is looked up with `FindJob` on the connected peers (at most
MAX_NETWORK_NODES); an answer counts only if the full ID it gives starts with the prefix and
carries the answering node's tag.

A relayed call carries `bacalhau-relayed-by`; a node never relays such a call again (no loops)
and answers it from what it holds.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from bacalhau._pb.bacalhau.v1 import client_pb2, peer_pb2, peer_pb2_grpc
from bacalhau.api.errors import Unreachable, abort
from bacalhau.datastore import AmbiguousID, JobNotFound
from bacalhau.models import node_tag, requester_tag
from bacalhau.network import Network

log = logging.getLogger(__name__)

CLIENT_SERVICE = "/bacalhau.v1.ClientService/"
# The ClientService calls on one job that any node answers by relaying to the job's requester.
ROUTED = frozenset({"GetJob", "WatchEvents", "Logs", "GetResults", "Cancel", "Cat", "GetTrace"})
RELAYED_BY = "bacalhau-relayed-by"
MAX_NETWORK_NODES = 64  # peers asked by FindJob and by a network-wide ListJobs
ASK_AT_ONCE = 8  # of those, at a time (each answer may be up to a message's size)
FIND_TIMEOUT_S = 3.0
LIST_TIMEOUT_S = 5.0
MAX_NETWORK_LIMIT = 500  # jobs in one page of a network-wide list
DEFAULT_NETWORK_LIMIT = 100


@dataclass(frozen=True)
class RawCall:
    """A client call as it arrived: what a relay sends on unchanged."""

    method: str
    body: bytes
    metadata: tuple[tuple[str, str], ...]

    @property
    def relayed(self) -> bool:
        return any(k == RELAYED_BY for k, _ in self.metadata)

    def forward_metadata(self, node_id: str) -> tuple[tuple[str, str], ...]:
        """The caller's signature (and trace) metadata, and who relays it."""
        kept = tuple(
            (k, v)
            for k, v in self.metadata
            if (k.startswith("bacalhau-") and k != RELAYED_BY) or k == "traceparent"
        )
        return (*kept, (RELAYED_BY, node_id))


_call: contextvars.ContextVar[RawCall | None] = contextvars.ContextVar("raw_call", default=None)


def set_raw_call(call: RawCall) -> None:
    _call.set(call)


def raw_call() -> RawCall | None:
    """The client call being handled, as it arrived (set by the signature check)."""
    return _call.get()


def _identity(b: bytes) -> bytes:
    return b


class Relay:
    """Finds the node that holds a job, and relays client calls there."""

    def __init__(self, *, node_id: str, network: Network, is_here: Callable[[str], bool]) -> None:
        self.node_id = node_id
        self._net = network
        self._is_here = is_here
        self._tag = node_tag(node_id)

    # -- where a job is -------------------------------------------------------------------

    async def where(self, job_id: str) -> str | None:
        """The node to relay a call on `job_id` to; None to answer here (the job is here, or
        the ID names this node, so this node's answer stands). Raises JobNotFound saying
        where it looked, AmbiguousID for a prefix several nodes' jobs start with."""
        tag = requester_tag(job_id)
        if tag is not None:  # a whole ID: it names its node, nothing to look up here
            if tag == self._tag:
                return None  # ours: the handler answers (or says it is not found)
            for node_id in self._net.known():
                if node_tag(node_id) == tag:
                    return node_id
            raise JobNotFound(
                f"job {job_id} not found: it was submitted to a node this one does not know",
                hint="ask the node it was submitted to, or one connected to it",
            )
        if self._is_here(job_id):  # a prefix (or an older ID) of a job here
            return None
        return await self._find(job_id)

    async def _find(self, prefix: str) -> str | None:
        peers = self.peers()
        answers = await _gather(
            [(node_id, self._find_on(node_id, prefix)) for node_id in peers], ASK_AT_ONCE
        )
        found: dict[str, str] = {}  # full job ID -> node
        for node_id, answer in answers:
            if answer is None:
                continue
            if answer.ambiguous:
                raise AmbiguousID(
                    f"job ID prefix {prefix} matches more than one job of node {node_id}",
                    hint="give more of the job ID",
                )
            full = answer.job_id
            if not full.startswith(prefix) or requester_tag(full) not in (None, node_tag(node_id)):
                log.warning("node %s answered FindJob %r with %r: ignored", node_id, prefix, full)
                continue
            found[full] = node_id
        if len(found) > 1:
            raise AmbiguousID(
                f"job ID prefix {prefix} matches {len(found)} jobs in the network",
                hint="give more of the job ID",
            )
        if not found:
            raise JobNotFound(
                f"job {prefix} not found on this node or on its {len(peers)} connected "
                f"peer{'s' * (len(peers) != 1)}",
                hint="check the ID; `bacalhauctl list --network` lists the network's jobs",
            )
        return next(iter(found.values()))

    async def _find_on(self, node_id: str, prefix: str) -> Any:
        channel = self._net.channel_to(node_id)
        if channel is None:
            return None
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        return await stub.FindJob(peer_pb2.FindJobRequest(job_id=prefix), timeout=FIND_TIMEOUT_S)

    def peers(self) -> list[str]:
        """The connected peers a network-wide question goes to."""
        return [n for n in self._net.connected() if n != self.node_id][:MAX_NETWORK_NODES]

    # -- relaying -------------------------------------------------------------------------

    def _channel(self, node_id: str, job_id: str) -> grpc.aio.Channel:
        channel = self._net.channel_to(node_id)
        if channel is None:
            raise Unreachable(
                f"job {job_id} is held by node {node_id}, which this node cannot reach",
                hint="ask that node, or a node connected to it",
            )
        return channel

    async def unary(
        self, node_id: str, job_id: str, call: RawCall, context: grpc.aio.ServicerContext
    ) -> bytes:
        """The answer of `node_id` to the call, as bytes (its errors become this call's)."""
        relay = self._channel(node_id, job_id).unary_unary(
            call.method, request_serializer=_identity, response_deserializer=_identity
        )
        try:
            answer: bytes = await relay(
                call.body,
                metadata=call.forward_metadata(self.node_id),
                timeout=context.time_remaining(),
            )
        except grpc.aio.AioRpcError as e:
            await _pass_on(e, node_id, job_id, context)
        return answer

    async def stream(
        self, node_id: str, job_id: str, call: RawCall, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """The answers of `node_id` to a streaming call, as bytes, as they come."""
        relay = self._channel(node_id, job_id).unary_stream(
            call.method, request_serializer=_identity, response_deserializer=_identity
        )
        stream = relay(
            call.body,
            metadata=call.forward_metadata(self.node_id),
            timeout=context.time_remaining(),
        )
        try:
            async for message in stream:
                yield message
        except grpc.aio.AioRpcError as e:
            await _pass_on(e, node_id, job_id, context)
        finally:
            stream.cancel()

    async def list_network(self, call: RawCall) -> tuple[list[Any], list[str], list[str]]:
        """Every connected peer's answer to a ListJobs call: (their pages' jobs, whether each
        said there is more as its next cursors, the peers that did not answer)."""
        peers = self.peers()

        async def ask(node_id: str) -> Any:
            channel = self._net.channel_to(node_id)
            if channel is None:
                return None
            relay = channel.unary_unary(
                call.method,
                request_serializer=_identity,
                response_deserializer=client_pb2.ListJobsResponse.FromString,
            )
            return await relay(
                call.body, metadata=call.forward_metadata(self.node_id), timeout=LIST_TIMEOUT_S
            )

        answers = await _gather([(n, ask(n)) for n in peers], ASK_AT_ONCE)
        answered = {n for n, a in answers if a is not None}
        jobs = [job for _, a in answers if a is not None for job in a.jobs]
        more = [a.next_cursor for _, a in answers if a is not None and a.next_cursor]
        return jobs, more, [n for n in peers if n not in answered]


async def _pass_on(
    e: grpc.aio.AioRpcError, node_id: str, job_id: str, context: grpc.aio.ServicerContext
) -> None:
    """End this call as the relayed one ended; a node that could not be reached is said so."""
    trailing = tuple(e.trailing_metadata() or ())
    told = any(k == "grpc-status-details-bin" for k, _ in trailing)
    if not told and e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        await abort(
            context,
            Unreachable(
                f"job {job_id} is held by node {node_id}, which did not answer: {e.details()}",
                hint="ask again later, or ask that node",
            ),
        )
    await context.abort(e.code(), e.details() or "", trailing_metadata=trailing)


async def _gather(asks: Iterable[tuple[str, Any]], at_once: int) -> list[tuple[str, Any]]:
    """(node, answer or None if it failed) for each ask, `at_once` at a time."""
    gate = asyncio.Semaphore(at_once)

    async def one(node_id: str, coro: Any) -> tuple[str, Any]:
        async with gate:
            try:
                return node_id, await coro
            except (TimeoutError, grpc.aio.AioRpcError, OSError) as e:
                log.debug("node %s did not answer: %s", node_id, e)
                return node_id, None

    return list(await asyncio.gather(*(one(n, c) for n, c in asks)))
