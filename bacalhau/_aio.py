"""Glue between the datastore's writer thread and the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from bacalhau.errors import BacalhauError

T = TypeVar("T")
log = logging.getLogger("bacalhau")


def then(
    loop: asyncio.AbstractEventLoop,
    fut: Future[T],
    on_done: Callable[[T], Any] | None = None,
    what: str = "a state change",
) -> None:
    """Call `on_done(result)` on `loop` once `fut` resolves; log (do not raise) failures.

    Write functions raise BacalhauError (e.g. IllegalTransition) to refuse a change that
    arrived too late or twice: that is logged at debug level and nothing else happens.
    """

    def deliver(f: Future[T]) -> None:
        exc = f.exception()
        if exc is not None:
            if isinstance(exc, BacalhauError):
                log.debug("%s refused: %s", what, exc)
            else:
                log.error("%s failed", what, exc_info=exc)
            return
        if on_done is not None:
            try:
                on_done(f.result())
            except Exception:
                log.exception("after %s", what)

    fut.add_done_callback(lambda f: loop.call_soon_threadsafe(deliver, f))
