"""Bid rounds: who was asked to bid on a shard, who answered, and whom to select.

A round closes when every node asked has answered (unless the announcement also went out as
gossip, when anyone may bid) or when its window ends with at least one willing bid; or, for a
job that wants one node and has no inputs by CID, on the requester's own bid with nothing
queued, asked first (`Requester._may_take_own`): the others are then not asked at all.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

LOCAL_BONUS = 2  # holding a job's inputs is worth this many queued executions


@dataclass(frozen=True)
class WillingBid:
    node_id: str
    queued: int
    local_input_bytes: int  # bytes of the job's inputs the node holds already


@dataclass
class Round:
    """Bidding for one shard of a job (the shards of a sharded job are asked about together,
    but each has its own round)."""

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
    own_first: bool = False  # only this node asked so far (`Requester._may_take_own`)
    exclude: set[str] = field(default_factory=set)  # nodes the shard failed on: not chosen
    opened: float = field(default_factory=time.monotonic)
    cids: list[str] = field(default_factory=list)  # CID inputs a locality claim is about
    # a shard of a sharded job, announced with the others (`spec` is the job's own; the
    # shard's files are `inputs`, of `count` shards)
    batched: bool = False
    inputs: list[Any] = field(default_factory=list)
    count: int = 1

    @property
    def key(self) -> tuple[str, int]:
        return (self.job_id, self.shard)

    @property
    def enough(self) -> bool:
        """As many willing bids as the job asks to choose from (`deal.min_bids`)."""
        return len(self.willing) >= max(int(self.spec.deal.min_bids), 1)

    @property
    def complete(self) -> bool:
        """Every node asked has answered (and nobody else may)."""
        return self.answered >= self.asked and not self.gossiped

    def choose(self, want: int, placed: dict[str, int] | None = None) -> set[str]:
        """The `want` best willing nodes: the shortest queue, counting what this requester
        placed there since (`placed`), where holding the inputs counts as `LOCAL_BONUS`
        fewer queued (a node need not fetch them); then the one that holds more of them;
        ties broken at random."""
        placed = placed or {}
        bids = list(self.willing)
        random.shuffle(bids)

        def key(b: WillingBid) -> tuple[int, int]:
            load = b.queued + placed.get(b.node_id, 0)
            return (load - (LOCAL_BONUS if b.local_input_bytes else 0), -b.local_input_bytes)

        return {b.node_id for b in sorted(bids, key=key)[:want]}
