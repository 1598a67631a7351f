"""One error hierarchy for all of Runstream, with codes shared with the gRPC service.

The query service maps :class:`ErrorCode` to gRPC status codes with :data:`GRPC_STATUS`
(names of ``grpc.StatusCode`` members, so this module needs no grpcio), and the query
client turns a ``grpc.RpcError`` back into the matching class with :func:`error_for_code`.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    INTERNAL = "INTERNAL"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


#: ErrorCode -> name of the grpc.StatusCode member the query service answers with.
GRPC_STATUS: dict[ErrorCode, str] = {
    ErrorCode.INTERNAL: "INTERNAL",
    ErrorCode.INVALID_ARGUMENT: "INVALID_ARGUMENT",
    ErrorCode.NOT_FOUND: "NOT_FOUND",
    ErrorCode.ALREADY_EXISTS: "ALREADY_EXISTS",
    ErrorCode.UNAVAILABLE: "UNAVAILABLE",
    ErrorCode.UNAUTHENTICATED: "UNAUTHENTICATED",
    ErrorCode.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
}


class RunstreamError(Exception):
    """Root of every error Runstream raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL


class ConfigError(RunstreamError, ValueError):
    """A configuration value (argument or ``RUNSTREAM_*`` variable) is malformed."""

    code = ErrorCode.INVALID_ARGUMENT


class InvalidArgumentError(RunstreamError, ValueError):
    """A caller passed something that can never succeed (bad filter, bad metric, ...)."""

    code = ErrorCode.INVALID_ARGUMENT


class DecodeError(RunstreamError):
    """Bytes that are not a Runstream event in any supported encoding."""

    code = ErrorCode.INVALID_ARGUMENT


class ValidationError(RunstreamError):
    """A decoded event whose contents break the contract in events.proto."""

    code = ErrorCode.INVALID_ARGUMENT


class NotFoundError(RunstreamError, LookupError):
    code = ErrorCode.NOT_FOUND


class AlreadyExistsError(RunstreamError):
    code = ErrorCode.ALREADY_EXISTS


class UnavailableError(RunstreamError):
    """A backend (Kafka, ClickHouse, the query server) cannot be reached right now."""

    code = ErrorCode.UNAVAILABLE


class UnauthenticatedError(RunstreamError):
    code = ErrorCode.UNAUTHENTICATED


class DeadlineExceededError(RunstreamError, TimeoutError):
    code = ErrorCode.DEADLINE_EXCEEDED


_BY_CODE: dict[ErrorCode, type[RunstreamError]] = {
    ErrorCode.INTERNAL: RunstreamError,
    ErrorCode.INVALID_ARGUMENT: InvalidArgumentError,
    ErrorCode.NOT_FOUND: NotFoundError,
    ErrorCode.ALREADY_EXISTS: AlreadyExistsError,
    ErrorCode.UNAVAILABLE: UnavailableError,
    ErrorCode.UNAUTHENTICATED: UnauthenticatedError,
    ErrorCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def error_for_code(code: ErrorCode, message: str) -> RunstreamError:
    """The exception instance a client raises for an error of this code."""
    return _BY_CODE[code](message)


def code_for_grpc_status(status_name: str) -> ErrorCode:
    """ErrorCode for the name of a grpc.StatusCode (unknown names map to INTERNAL)."""
    for code, name in GRPC_STATUS.items():
        if name == status_name:
            return code
    return ErrorCode.INTERNAL
