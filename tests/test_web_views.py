"""The dashboard's JSON views and its Host check, without a node."""

from __future__ import annotations

from typing import Any

import pytest

from bacalhau.models import ExecutionState, JobState, pb
from bacalhau.web import views
from bacalhau.web.server import _host_allowed

E = ExecutionState


def _job(state: JobState, shard_count: int, *executions: tuple[int, ExecutionState]) -> Any:
    job = pb.Job(id="j-1", state=state.pb, shard_count=shard_count)
    for i, (shard, ex_state) in enumerate(executions):
        job.executions.add(id=f"e-{i}", shard=shard, state=ex_state.pb)
    return job


def test_shard_states_follow_their_executions() -> None:
    job = _job(
        JobState.RUNNING,
        5,
        (0, E.PUBLISHED),
        (1, E.FAILED),
        (1, E.RUNNING),  # retried elsewhere after a failure
        (2, E.RESULT_PROPOSED),
        (3, E.FAILED),  # failed, not retried yet
    )
    shards = views.shards(job)
    assert shards["states"] == ["completed", "running", "verifying", "waiting", "waiting"]
    assert shards["by_state"] == {
        "waiting": 2, "running": 1, "verifying": 1, "completed": 1, "failed": 0, "cancelled": 0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("job_state", "expected"),
    [(JobState.FAILED, "failed"), (JobState.CANCELLED, "cancelled")],
)
def test_a_final_job_leaves_no_shard_waiting(job_state: JobState, expected: str) -> None:
    job = _job(job_state, 2, (0, E.PUBLISHED), (1, E.RUNNING))
    assert views.shards(job)["states"] == ["completed", expected]


def test_an_unsharded_job_has_one_shard() -> None:
    assert views.shards(_job(JobState.PENDING, 0))["states"] == ["waiting"]


def test_only_accepted_results_have_files() -> None:
    job = _job(
        JobState.RUNNING, 1, (0, E.RESULT_PROPOSED), (0, E.RESULT_REJECTED), (0, E.PUBLISHED)
    )
    for ex in job.executions:
        ex.result_cid = "QmX"
    assert [views.execution(ex)["has_files"] for ex in job.executions] == [False, False, True]


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("127.0.0.1:8080", True),
        ("localhost:8080", True),
        ("[::1]:8080", True),
        ("10.1.2.3", True),
        ("dash.example:8080", True),  # the --web-host name
        ("attacker.example:8080", False),  # a rebound DNS name
        ("", False),
        ("127.0.0.1.attacker.example", False),
    ],
)
def test_the_host_check(header: str, ok: bool) -> None:
    assert _host_allowed(header, {"localhost", "dash.example"}) is ok
