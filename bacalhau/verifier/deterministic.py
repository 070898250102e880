"""The deterministic verifier: a shard's result stands when enough of its executions agree.

It decides once none of the shard's executions is still running: the proposed results are
grouped by result CID; the largest group is accepted if it has at least `confidence` members
(`deal.confidence`, at least 1; 1 for a shard run alone by adaptive replication, its
executions `trusted`) and no other group is as large; every other proposed result is
rejected, naming what it disagreed with. With no such group, every proposed result is rejected,
naming each node's CID: the shard has no verified result.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from bacalhau.models import ExecutionState
from bacalhau.verifier.base import Verdict

E = ExecutionState


class DeterministicVerifier:
    name = "deterministic"

    def verify(self, spec: Any, executions: Sequence[Any]) -> list[Verdict]:
        if any(E.of(ex.state) in (E.BID_ACCEPTED, E.RUNNING) for ex in executions):
            return []  # wait for every execution of the shard to propose or end
        proposed = [ex for ex in executions if ex.state == E.RESULT_PROPOSED.pb]
        if not proposed:
            return []
        accepted = [ex for ex in executions if E.of(ex.state) in (E.RESULT_ACCEPTED, E.PUBLISHED)]
        groups: dict[str, list[Any]] = defaultdict(list)
        for ex in [*accepted, *proposed]:
            groups[ex.result_cid].append(ex)
        ranked = sorted(groups.items(), key=lambda kv: len(kv[1]), reverse=True)
        need = max(spec.deal.confidence, 1)
        if all(ex.trusted for ex in [*accepted, *proposed]):
            need = 1  # adaptive replication: run alone on a node with a long verified record
        best_cid, best = ranked[0]
        tied = len(ranked) > 1 and len(ranked[1][1]) == len(best)
        if len(best) >= need and not tied:
            return [
                Verdict(ex.id, True)
                if ex.result_cid == best_cid
                else Verdict(
                    ex.id,
                    False,
                    f"result {ex.result_cid} differs from the {len(best)} that agree on {best_cid}",
                )
                for ex in proposed
            ]
        votes = "; ".join(
            f"{cid}: {', '.join(ex.node_id[-8:] for ex in members)}" for cid, members in ranked
        )
        why = (
            f"a tie between results ({votes})"
            if tied
            else f"at most {len(best)} of the results agree, {need} must ({votes})"
        )
        return [Verdict(ex.id, False, f"no verified result: {why}") for ex in proposed]
