"""Domain errors to gRPC statuses, in one place (the CLI turns them into one line).

Every error a ClientService call ends with carries a `google.rpc.Status` in the
`grpc-status-details-bin` trailer (grpcio-status's rich status) with one `google.rpc.ErrorInfo`:
domain `bacalhau.v1`, a `reason` a program can branch on, and `metadata` (e.g. `field`,
`job_id`, `job_state`). The message says what is wrong, and what to do where that does not
depend on the client used: advice for a particular client (bacalhauctl's commands) is that
client's to add, from the reason.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from bacalhau.callsign import CallRefused
from bacalhau.content.errors import CorruptData, InvalidCID, NotFound, UnsupportedCID
from bacalhau.datastore import AmbiguousID, JobNotFound
from bacalhau.errors import BacalhauError, JobStateError, UsageError
from bacalhau.service.callers import Forbidden
from bacalhau.service.data import QuotaExceeded
from bacalhau.service.files import FileTooLarge
from bacalhau.service.results import NoResult
from bacalhau.spec import SpecError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
DOMAIN = "bacalhau.v1"
MAX_MESSAGE = 1000


class MissingField(UsageError):
    """A required request field is missing or empty."""

    def __init__(self, field: str, what: str = "") -> None:
        super().__init__(f"{field} is required" + (f": {what}" if what else ""))
        self.field = field


class BadField(UsageError):
    """A request field has a value no call takes."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Unreachable(BacalhauError):
    """The node that holds what was asked for cannot be reached from this one."""


# (exception, status code, ErrorInfo reason): the first match wins.
_CODES: list[tuple[type[BaseException], grpc.StatusCode, str]] = [
    (MissingField, grpc.StatusCode.INVALID_ARGUMENT, "FIELD_REQUIRED"),
    (BadField, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
    (SpecError, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
    (JobNotFound, grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND"),
    (NoResult, grpc.StatusCode.NOT_FOUND, "RESULT_NOT_READY"),
    (NotFound, grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    (CorruptData, grpc.StatusCode.DATA_LOSS, "DATA_CORRUPT"),
    (AmbiguousID, grpc.StatusCode.INVALID_ARGUMENT, "AMBIGUOUS_ID"),
    (InvalidCID, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CID"),
    (UnsupportedCID, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CID"),
    (QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED"),
    (FileTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_LARGE"),
    (UsageError, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    (JobStateError, grpc.StatusCode.FAILED_PRECONDITION, "JOB_STATE"),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    (CallRefused, grpc.StatusCode.UNAUTHENTICATED, "CALL_REFUSED"),
    (Unreachable, grpc.StatusCode.UNAVAILABLE, "NODE_UNREACHABLE"),
]


def status_of(exc: BaseException) -> grpc.StatusCode:
    return classify(exc)[0]


def classify(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """(status code, ErrorInfo reason) of an error."""
    if isinstance(exc, NoResult) and exc.final:
        return grpc.StatusCode.FAILED_PRECONDITION, "JOB_HAS_NO_RESULT"
    for cls, code, reason in _CODES:
        if isinstance(exc, cls):
            return code, reason
    if isinstance(exc, BacalhauError):
        return grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"
    return grpc.StatusCode.INTERNAL, "INTERNAL"


def message_of(exc: BaseException) -> str:
    """What the API says of an error: the message, and the hint unless it is one client's
    advice (it names bacalhauctl)."""
    if not isinstance(exc, BacalhauError):
        return f"internal error: {type(exc).__name__}: {exc}"[:MAX_MESSAGE]
    text = exc.message
    if exc.hint and "bacalhauctl" not in exc.hint:
        text = f"{text}: {exc.hint}"
    return " ".join(text.split())[:MAX_MESSAGE]


def metadata_of(exc: BaseException) -> dict[str, str]:
    """ErrorInfo metadata: the field at fault, and what the error names (job, state)."""
    meta: dict[str, str] = {}
    field = getattr(exc, "field", None)
    if isinstance(exc, SpecError):
        field = exc.problems[0].field
    if isinstance(field, str) and field:
        meta["field"] = field
    extra = getattr(exc, "details", None)
    if isinstance(extra, Mapping):
        meta.update({str(k): str(v) for k, v in extra.items()})
    return meta


def rich_status(
    code: grpc.StatusCode, message: str, reason: str, metadata: Mapping[str, str] | None = None
) -> grpc.Status:
    """A status whose details hold one google.rpc.ErrorInfo."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    detail = any_pb2.Any()
    detail.Pack(info)
    number = code.value[0] if code.value[0] in code_pb2.Code.values() else code_pb2.UNKNOWN
    return rpc_status.to_status(status_pb2.Status(code=number, message=message, details=[detail]))


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """End the call with `exc` as a status with ErrorInfo (raises, as context.abort does)."""
    code, reason = classify(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("request failed", exc_info=exc)
    await context.abort_with_status(rich_status(code, message_of(exc), reason, metadata_of(exc)))


def unary(fn: F) -> F:
    """Turn errors a unary handler raises into gRPC statuses."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except (BacalhauError, OSError, ValueError) as exc:
            await abort(context, exc)

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
            await abort(context, exc)

    return wrapper  # type: ignore[return-value]
