"""Signed client calls at the door: every ClientService call is checked before its handler runs.

`SignedCalls` is a gRPC server interceptor. For each ClientService method it takes the request's
bytes as they arrived (the signature covers exactly those), checks the signature, clock and
nonce with `bacalhau.callsign.Verifier`, and only then decodes the request and runs the handler
with the caller set (`caller()`). A refused call gets UNAUTHENTICATED with one line.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from bacalhau.api.errors import abort
from bacalhau.api.relay import CLIENT_SERVICE, RELAYED_BY, ROUTED, RawCall, Relay, set_raw_call
from bacalhau.callsign import CallRefused, Verifier
from bacalhau.errors import BacalhauError, UsageError
from bacalhau.service.callers import Access, Caller

_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def caller() -> Caller:
    """The signed caller of the call being handled; CallRefused outside a checked call."""
    c = _caller.get()
    if c is None:
        raise CallRefused("this call was not checked for a signature")
    return c


class SignedCalls(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        access: Access,
        verifier: Verifier | None = None,
        on_refused: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.access = access
        self.verifier = verifier or Verifier()
        self.on_refused = on_refused
        # Set once the node's network is up: calls on jobs held elsewhere are relayed there.
        self.relay: Relay | None = None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or not method.startswith(CLIENT_SERVICE):
            return handler
        pairs = tuple((k, v) for k, v in (details.invocation_metadata or ()) if isinstance(v, str))
        metadata = dict(pairs)
        decode = handler.request_deserializer
        encode = handler.response_serializer
        routed = method[len(CLIENT_SERVICE) :] in ROUTED

        def serialize(message: Any) -> bytes:  # a relayed answer comes as bytes already
            return message if isinstance(message, bytes) else encode(message)

        def check(body: bytes | None) -> Caller:
            try:
                user = self.verifier.check(metadata, method, body, time.time_ns() // 1_000_000)
            except CallRefused as exc:
                self.on_refused(exc.reason)
                raise
            return self.access.caller(user)

        async def refuse(context: grpc.aio.ServicerContext, exc: Exception) -> None:
            if not isinstance(exc, CallRefused):
                exc = UsageError("the request is not a valid message")
            await abort(context, exc)

        async def opened(body: bytes, context: grpc.aio.ServicerContext) -> Any:
            """The request, once its signature is checked (the caller set); else aborts."""
            try:
                who = check(body)
                request = decode(body)
            except (CallRefused, DecodeError) as exc:
                await refuse(context, exc)
            _caller.set(who)
            set_raw_call(RawCall(method, body, pairs))
            return request

        async def target(request: Any, context: grpc.aio.ServicerContext) -> str | None:
            """The node to relay this call to (None: answer here)."""
            relay = self.relay
            job_id = getattr(request, "job_id", "") if routed else ""
            if relay is None or not job_id or RELAYED_BY in metadata:
                return None
            if getattr(request, "cid", "") or getattr(request, "path", ""):
                return None  # by CID (GetResults, Cat): answered here; both given: refused here
            try:
                return await relay.where(job_id)
            except BacalhauError as exc:
                await abort(context, exc)
            return None

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(body: bytes, context: grpc.aio.ServicerContext) -> Any:
                request = await opened(body, context)
                node_id = await target(request, context)
                if node_id is not None and self.relay is not None:
                    call = RawCall(method, body, pairs)
                    return await self.relay.unary(node_id, request.job_id, call, context)
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, request_deserializer=None, response_serializer=serialize
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(
                body: bytes, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                request = await opened(body, context)
                node_id = await target(request, context)
                if node_id is not None and self.relay is not None:
                    call = RawCall(method, body, pairs)
                    async for answer in self.relay.stream(node_id, request.job_id, call, context):
                        yield answer
                    return
                async for item in inner_us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, request_deserializer=None, response_serializer=serialize
            )
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    who = check(None)
                except CallRefused as exc:
                    await refuse(context, exc)
                _caller.set(who)
                return await inner_su(requests, context)

            return grpc.stream_unary_rpc_method_handler(
                stream_unary, request_deserializer=decode, response_serializer=encode
            )
        return handler  # no bidirectional ClientService method exists
