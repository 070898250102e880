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
from bacalhau.callsign import CallRefused, Verifier
from bacalhau.errors import UsageError
from bacalhau.service.callers import Access, Caller

CLIENT_SERVICE = "/bacalhau.v1.ClientService/"

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

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or not method.startswith(CLIENT_SERVICE):
            return handler
        metadata = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
        decode = handler.request_deserializer
        encode = handler.response_serializer

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
            return request

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(body: bytes, context: grpc.aio.ServicerContext) -> Any:
                return await inner_uu(await opened(body, context), context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, request_deserializer=None, response_serializer=encode
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(
                body: bytes, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                async for item in inner_us(await opened(body, context), context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, request_deserializer=None, response_serializer=encode
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
