"""Waking waiters on the event loop when a job gets new events (the datastore's listener)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


class JobWatch:
    """Wakes waiters on the event loop when a job gets new events."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    def waiter(self, job_id: str) -> asyncio.Future[None]:
        fut = self._loop.create_future()
        self._waiters.setdefault(job_id, set()).add(fut)
        return fut

    def forget(self, job_id: str, fut: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            waiters.discard(fut)
            if not waiters:
                del self._waiters[job_id]

    def committed(self, events: Iterable[Any]) -> None:
        """Datastore listener (writer thread)."""
        job_ids = {ev.job_id for ev in events}
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake, job_ids)

    def _wake(self, job_ids: set[str]) -> None:
        for job_id in job_ids:
            for fut in self._waiters.pop(job_id, ()):
                if not fut.done():
                    fut.set_result(None)
