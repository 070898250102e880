"""Domain errors to gRPC status codes, in one place (the CLI turns them into one line)."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from bacalhau.callsign import CallRefused
from bacalhau.content.errors import CorruptData, InvalidCID, NotFound, UnsupportedCID
from bacalhau.datastore import AmbiguousID, JobNotFound
from bacalhau.errors import BacalhauError, JobStateError, UsageError
from bacalhau.service.callers import Forbidden
from bacalhau.service.data import QuotaExceeded

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (JobNotFound, grpc.StatusCode.NOT_FOUND),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (CorruptData, grpc.StatusCode.DATA_LOSS),
    (AmbiguousID, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidCID, grpc.StatusCode.INVALID_ARGUMENT),
    (UnsupportedCID, grpc.StatusCode.INVALID_ARGUMENT),
    (QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (UsageError, grpc.StatusCode.INVALID_ARGUMENT),
    (JobStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED),
    (CallRefused, grpc.StatusCode.UNAUTHENTICATED),
]


def status_of(exc: BaseException) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return (
        grpc.StatusCode.INTERNAL
        if not isinstance(exc, BacalhauError)
        else grpc.StatusCode.UNAVAILABLE
    )


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if not isinstance(exc, BacalhauError):
        log.exception("request failed", exc_info=exc)
        await context.abort(
            grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
        )
    await context.abort(status_of(exc), str(exc))


def unary(fn: F) -> F:
    """Turn errors a unary handler raises into gRPC statuses."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except (BacalhauError, OSError, ValueError) as exc:
            await _abort(context, exc)

    return wrapper  # type: ignore[return-value]


def streaming(fn: F) -> F:
    """Turn errors a server-streaming handler raises into gRPC statuses."""

    @functools.wraps(fn)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        try:
            async for item in fn(self, request, context):
                yield item
        except (BacalhauError, OSError, ValueError) as exc:
            await _abort(context, exc)

    return wrapper  # type: ignore[return-value]
