"""The verifier interface: which proposed results of a shard stand for it.

A verifier looks at one shard's executions (in the requester's record, inside the transaction
that records a proposed result) and returns a verdict for each proposed result it decides now;
results it returns no verdict for wait (for more executions to propose theirs, say).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Verdict:
    execution_id: str
    accepted: bool
    reason: str = ""


class Verifier(Protocol):
    name: str

    def verify(self, spec: Any, executions: Sequence[Any]) -> list[Verdict]:
        """Verdicts on the proposed results among one shard's `executions`. Raises nothing."""
        ...
