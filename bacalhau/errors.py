"""The root of the project's exceptions: every error a user may see carries a hint."""

from __future__ import annotations


class BacalhauError(Exception):
    """An error with a message fit for a user and, optionally, what to do about it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class UsageError(BacalhauError):
    """The command line or a request was malformed."""

    exit_code = 2


class JobStateError(BacalhauError):
    """The job is not in a state that allows the request."""
