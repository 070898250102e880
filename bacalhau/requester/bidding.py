"""Bid rounds: who was asked to bid on a shard, who answered, and whom to select.

A round closes when every node asked has answered (unless the announcement also went out as
gossip, when anyone may bid) or when its window ends with at least one willing bid.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WillingBid:
    node_id: str
    queued: int
    local_input_bytes: int  # bytes of the job's inputs the node holds already


@dataclass
class Round:
    """Bidding for one shard of a job."""

    job_id: str
    shard: int
    spec: Any
    asked: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    willing: list[WillingBid] = field(default_factory=list)
    declines: list[str] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None  # the bid window; None once it closed
    deadline: asyncio.TimerHandle | None = None  # --queue-timeout: fail if nobody is willing
    gossiped: bool = False  # also sent to nodes without a stream to us: bids from anyone

    @property
    def key(self) -> tuple[str, int]:
        return (self.job_id, self.shard)

    @property
    def complete(self) -> bool:
        """Every node asked has answered (and nobody else may)."""
        return self.answered >= self.asked and not self.gossiped

    def choose(self, want: int) -> set[str]:
        """The `want` best willing nodes: data locality first (nodes that hold more of the
        inputs need not fetch them), then the shortest queue; ties broken at random."""
        bids = list(self.willing)
        random.shuffle(bids)
        ranked = sorted(bids, key=lambda b: (-b.local_input_bytes, b.queued))
        return {b.node_id for b in ranked[:want]}
