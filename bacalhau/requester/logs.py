"""Output of running executions, as their compute nodes send it, for `logs --follow`.

Kept in memory per job, one buffer per execution and stream, each capped; a job's buffers are
dropped once it is final (its result then holds the same bytes). Followers wait on `changed`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

STDOUT, STDERR = 1, 2


@dataclass
class LiveLog:
    """One execution's output so far."""

    streams: dict[int, bytearray] = field(
        default_factory=lambda: {STDOUT: bytearray(), STDERR: bytearray()}
    )


class LiveLogs:
    def __init__(self, cap_bytes: int = 1 << 20) -> None:
        self.cap = cap_bytes
        self._jobs: dict[str, dict[str, LiveLog]] = {}
        self._changed: dict[str, asyncio.Event] = {}

    def add(self, job_id: str, execution_id: str, stream: int, offset: int, data: bytes) -> None:
        """Append a chunk; chunks that do not continue the stream (repeats, gaps) are dropped."""
        if stream not in (STDOUT, STDERR):
            return
        log = self._jobs.setdefault(job_id, {}).setdefault(execution_id, LiveLog())
        buf = log.streams[stream]
        if offset != len(buf) or len(buf) >= self.cap:
            return
        buf += data[: self.cap - len(buf)]
        self.changed(job_id).set()

    def changed(self, job_id: str) -> asyncio.Event:
        """Set when any of the job's logs grows (followers clear it before they read)."""
        return self._changed.setdefault(job_id, asyncio.Event())

    def first(self, job_id: str) -> tuple[str, LiveLog] | None:
        """The execution that wrote first, and its log."""
        logs = self._jobs.get(job_id)
        if not logs:
            return None
        execution_id = next(iter(logs))
        return execution_id, logs[execution_id]

    def drop(self, job_ids: set[str]) -> None:
        """Forget these jobs' logs (they are final); wake their followers."""
        for job_id in job_ids:
            self._jobs.pop(job_id, None)
            event = self._changed.pop(job_id, None)
            if event is not None:
                event.set()
