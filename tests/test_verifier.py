"""The verifiers on a shard's executions: noop takes each result, deterministic waits for the
shard's executions and takes the largest agreeing group of at least `confidence`."""

from __future__ import annotations

from typing import Any

from bacalhau import spec as jobspec
from bacalhau import verifier
from bacalhau._pb.bacalhau.v1 import types_pb2 as pb
from bacalhau.models import ExecutionState as E


def proposed(*cids: str) -> list[Any]:
    return [ex(i, E.RESULT_PROPOSED, cid) for i, cid in enumerate(cids, 1)]


def ex(i: int, state: E, cid: str = "") -> Any:
    return pb.Execution(id=f"e{i}", node_id=f"node-{i:08d}", state=state.pb, result_cid=cid)


def spec(confidence: int = 0) -> Any:
    return pb.JobSpec(deal=pb.Deal(concurrency=3, confidence=confidence, verifier="deterministic"))


def verdicts(executions: list[Any], confidence: int = 0) -> dict[str, tuple[bool, str]]:
    got = verifier.get("deterministic").verify(spec(confidence), executions)
    return {v.execution_id: (v.accepted, v.reason) for v in got}


def test_the_registry_is_the_spec_modules_list() -> None:
    assert set(verifier.names()) == set(jobspec.VERIFIERS)


def test_it_waits_while_an_execution_of_the_shard_runs() -> None:
    assert verdicts([ex(1, E.RESULT_PROPOSED, "A"), ex(2, E.RUNNING)]) == {}
    assert verdicts([ex(1, E.RESULT_PROPOSED, "A"), ex(2, E.BID_ACCEPTED)]) == {}


def test_the_largest_group_wins_and_the_others_are_rejected_naming_it() -> None:
    got = verdicts(
        [
            ex(1, E.RESULT_PROPOSED, "A"),
            ex(2, E.RESULT_PROPOSED, "B"),
            ex(3, E.RESULT_PROPOSED, "A"),
        ],
        confidence=2,
    )
    assert got["e1"] == (True, "") and got["e3"] == (True, "")
    assert got["e2"][0] is False and "differs from the 2 that agree on A" in got["e2"][1]


def test_too_few_agreeing_or_a_tie_rejects_every_result_naming_the_nodes() -> None:
    got = verdicts(
        [ex(1, E.RESULT_PROPOSED, "A"), ex(2, E.RESULT_PROPOSED, "B"), ex(3, E.FAILED)],
        confidence=2,
    )
    assert {k: v[0] for k, v in got.items()} == {"e1": False, "e2": False}
    assert "a tie between results (A: 00000001; B: 00000002)" in got["e1"][1]
    got = verdicts(
        [
            ex(1, E.RESULT_PROPOSED, "A"),
            ex(2, E.RESULT_PROPOSED, "B"),
            ex(3, E.RESULT_PROPOSED, "C"),
        ],
        confidence=1,
    )
    assert all(not ok for ok, _ in got.values())
    got = verdicts([ex(1, E.RESULT_PROPOSED, "A"), ex(2, E.FAILED)], confidence=2)
    assert got["e1"][0] is False and "at most 1 of the results agree, 2 must" in got["e1"][1]


def test_a_late_result_joins_the_accepted_group_or_is_rejected() -> None:
    accepted = [ex(1, E.PUBLISHED, "A"), ex(2, E.RESULT_ACCEPTED, "A")]
    assert verdicts([*accepted, ex(3, E.RESULT_PROPOSED, "A")], 2) == {"e3": (True, "")}
    late = verdicts([*accepted, ex(3, E.RESULT_PROPOSED, "B")], 2)
    assert late["e3"][0] is False


def test_noop_takes_every_proposed_result() -> None:
    got = verifier.get("noop").verify(
        spec(), [ex(1, E.RESULT_PROPOSED, "A"), ex(2, E.RESULT_PROPOSED, "B"), ex(3, E.RUNNING)]
    )
    assert [(v.execution_id, v.accepted) for v in got] == [("e1", True), ("e2", True)]


def test_the_spec_bounds_confidence_and_names_unknown_verifiers() -> None:
    bad = pb.JobSpec(deal=pb.Deal(concurrency=2, confidence=3, verifier="majority", min_bids=5000))
    fields = {p.field for p in jobspec.check_verification(bad.deal)}
    assert fields == {"deal.verifier", "deal.confidence", "deal.min_bids"}


def test_a_shard_run_alone_by_adaptive_replication_stands_by_itself() -> None:
    alone = ex(1, E.RESULT_PROPOSED, "A")
    alone.trusted = True
    assert verdicts([alone], confidence=2) == {"e1": (True, "")}
    # among others (a spot check), the confidence holds again
    assert verdicts([ex(1, E.RESULT_PROPOSED, "A")], confidence=2)["e1"][0] is False
