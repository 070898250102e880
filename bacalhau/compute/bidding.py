"""Bidding: answer a job announcement with an offer to run it, or a reason not to.

An offer is remembered (requester, spec, when) until the requester decides; a `BidDecision`
is honoured only for an offer this node made to that requester (see `Compute`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bacalhau import spec as jobspec
from bacalhau._pb.bacalhau.v1 import peer_pb2
from bacalhau.compute.capacity import Allocator, Resources
from bacalhau.compute.inputs import InputCache
from bacalhau.engines import get as get_engine
from bacalhau.executor import Executor

OFFER_TTL_S = 300.0
_PRUNE_AT = 1024


@dataclass(frozen=True)
class Offer:
    requester: str
    job_spec: Any  # what was announced: the spec, or a sharded job's own spec
    when: float  # time.monotonic()
    shard: int = 0
    shard_count: int = 0  # not 0: a shard of an announcement of many; its files in `inputs`
    inputs: tuple[Any, ...] = ()

    @property
    def spec(self) -> Any:
        """What the offer is to run (for a shard of a sharded job, its own spec)."""
        if not self.shard_count:
            return self.job_spec
        return jobspec.shard_spec(self.job_spec, self.shard, self.shard_count, self.inputs)


class Bidder:
    """Decides whether this node offers to run a job, and keeps its open offers."""

    def __init__(
        self,
        *,
        executors: dict[str, Executor],
        labels: dict[str, str],
        allocator: Allocator,
        needs: Callable[[Any], Resources],
        inputs: InputCache,
        queued: Callable[[], int],
        max_queue: int,
    ) -> None:
        self._executors = executors
        self._labels = labels
        self._allocator = allocator
        self._needs = needs
        self._inputs = inputs
        self._queued = queued
        self._max_queue = max_queue
        self._offers: dict[tuple[str, int], Offer] = {}  # (job, shard) -> open offer
        self.on_decline: Callable[[str], None] = lambda kind: None  # each bid declined, by kind

    def decline_reason(self, spec: Any) -> str:
        """Why this node will not run `spec`, or "" if it will."""
        return self.decline(spec)[1]

    def decline(self, spec: Any) -> tuple[str, str]:
        """(kind, why) this node will not run `spec` (kind: engine, labels, resources,
        engine_check, queue_full), or ("", "") if it will."""
        if spec.engine not in self._executors:
            have = ", ".join(sorted(self._executors)) or "none"
            return "engine", f"engine {spec.engine!r} is not enabled here (engines: {have})"
        for key, value in spec.node_selector.items():
            if self._labels.get(key) != value:
                return "labels", f"label {key}={value} does not match"
        if reason := self._allocator.reason(self._needs(spec)):
            return "resources", reason
        if reason := get_engine(spec.engine).decline_reason(spec, self._executors[spec.engine]):
            return "engine_check", reason
        if self._queued() >= self._max_queue:
            return "queue_full", f"queue full ({self._queued()} executions)"
        return "", ""

    def bid(self, requester: str, a: Any) -> Any:
        """The Bid answering announcement `a`; a willing one is remembered as an offer (one
        per shard, for an announcement of many shards)."""
        kind, reason = self.decline(a.spec)
        if not reason and a.shards and not 1 < a.shard_count <= jobspec.MAX_SHARDS:
            kind, reason = "shards", f"an announcement of shards of a job of {a.shard_count} shards"
        if kind:
            self.on_decline(kind)
        now = time.monotonic()
        if len(self._offers) > _PRUNE_AT:  # offers a requester never answered (it went away)
            self._offers = {k: o for k, o in self._offers.items() if now - o.when < OFFER_TTL_S}
        bid = peer_pb2.Bid(
            job_id=a.job_id, shard=a.shard, willing=not reason, reason=reason, queued=self._queued()
        )
        if reason:  # the shards asked about, declined
            bid.shards.extend(peer_pb2.ShardBid(shard=ask.index) for ask in a.shards)
            return bid
        if not a.shards:
            self._offers[(a.job_id, a.shard)] = Offer(requester, a.spec, now)
            # data locality: what of the job's inputs this node holds already
            bid.local_input_bytes, bid.local_inputs = self._inputs.local_share(
                jobspec.locality_cids(a.spec)
            )
            return bid
        # Every shard asks the same of the node; only their files (and so locality) differ.
        # The CIDs a shard's locality is about, as `locality_cids` of its spec gives them.
        _, outside = jobspec.sharded_inputs(a.spec)
        for ask in a.shards:
            if ask.index >= a.shard_count:
                continue
            inputs = tuple(ask.inputs)
            self._offers[(a.job_id, ask.index)] = Offer(
                requester, a.spec, now, ask.index, a.shard_count, inputs
            )
            cids = [i.cid for i in (*outside, *inputs) if i.source in ("", "ipfs")]
            size, count = self._inputs.local_share(cids[: jobspec.LOCALITY_CHECKS])
            bid.shards.add(shard=ask.index, local_input_bytes=size, local_inputs=count)
        return bid

    def offered_to(self, requester: str, job_id: str, shard: int) -> bool:
        """Whether this node has an open offer for (job, shard) to `requester`."""
        offer = self._offers.get((job_id, shard))
        return offer is not None and offer.requester == requester

    def take(self, requester: str, job_id: str, shard: int) -> Offer | None:
        """Close the offer for (job, shard) made to `requester`; None if there is none."""
        if not self.offered_to(requester, job_id, shard):
            return None
        return self._offers.pop((job_id, shard))
