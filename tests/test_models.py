"""The job model: state enums, their protobuf mapping, and the legal transitions."""

from __future__ import annotations

import itertools
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.errors import BacalhauError
from bacalhau.models import (
    ExecutionState,
    IllegalTransition,
    JobState,
    now_ns,
    set_execution_state,
    set_job_state,
)

S = TypeVar("S")
J = JobState
E = ExecutionState

# The lifecycles, written out here rather than read from the module under test.
JOB_NEXT: dict[JobState, set[JobState]] = {
    J.PENDING: {J.RUNNING, J.FAILED, J.CANCELLED},
    J.RUNNING: {J.COMPLETED, J.FAILED, J.CANCELLED},
    J.COMPLETED: set(),
    J.FAILED: set(),
    J.CANCELLED: set(),
}
EXEC_NEXT: dict[ExecutionState, set[ExecutionState]] = {
    E.BID_PROPOSED: {E.BID_ACCEPTED, E.BID_REJECTED, E.FAILED, E.CANCELLED},
    E.BID_ACCEPTED: {E.RUNNING, E.FAILED, E.CANCELLED},
    E.RUNNING: {E.RESULT_PROPOSED, E.FAILED, E.CANCELLED},
    E.RESULT_PROPOSED: {E.RESULT_ACCEPTED, E.RESULT_REJECTED, E.FAILED, E.CANCELLED},
    E.RESULT_ACCEPTED: {E.PUBLISHED, E.FAILED, E.CANCELLED},
    E.BID_REJECTED: set(),
    E.RESULT_REJECTED: set(),
    E.PUBLISHED: set(),
    E.FAILED: set(),
    E.CANCELLED: set(),
}
JOB_TERMINAL = {J.COMPLETED, J.FAILED, J.CANCELLED}
EXEC_TERMINAL = {E.BID_REJECTED, E.RESULT_REJECTED, E.PUBLISHED, E.FAILED, E.CANCELLED}
EXEC_ACTIVE = {E.BID_ACCEPTED, E.RUNNING, E.RESULT_PROPOSED, E.RESULT_ACCEPTED}

JOB_PAIRS = list(itertools.product(JobState, JobState))
EXEC_PAIRS = list(itertools.product(ExecutionState, ExecutionState))


def job_in(state: JobState) -> types_pb2.Job:
    return types_pb2.Job(
        id="j-1", state=state.pb, message="before", update_time_unix_nano=1, revision=3
    )


def execution_in(state: ExecutionState) -> types_pb2.Execution:
    return types_pb2.Execution(id="e-1", state=state.pb, message="before", update_time_unix_nano=1)


# -- the enums ------------------------------------------------------------------------------


def test_tables_cover_every_state() -> None:
    assert set(JOB_NEXT) == set(JobState)
    assert set(EXEC_NEXT) == set(ExecutionState)


def test_states_are_strings() -> None:
    as_str: str = JobState.PENDING
    assert as_str == "pending" and isinstance(JobState.PENDING, str)
    assert f"{JobState.RUNNING}" == "running"
    assert str(ExecutionState.BID_ACCEPTED) == "bid_accepted"
    assert JobState("cancelled") is JobState.CANCELLED
    assert ExecutionState("result_proposed") is ExecutionState.RESULT_PROPOSED
    for state in [*JobState, *ExecutionState]:
        assert state.value == state.name.lower()


def test_job_state_maps_one_to_one_onto_the_protobuf_enum() -> None:
    for state in JobState:
        value = state.pb
        assert types_pb2.JobState.Name(value) == "JOB_STATE_" + state.name
        assert JobState.of(value) is state
        assert JobState.of(int(value)) is state
    # Every protobuf value but UNSPECIFIED has its state, and no two states share one.
    specified = {v for v in types_pb2.JobState.values() if v != types_pb2.JOB_STATE_UNSPECIFIED}
    assert {s.pb for s in JobState} == specified
    assert len(specified) == len(JobState)


def test_execution_state_maps_one_to_one_onto_the_protobuf_enum() -> None:
    for state in ExecutionState:
        value = state.pb
        assert types_pb2.ExecutionState.Name(value) == "EXECUTION_STATE_" + state.name
        assert ExecutionState.of(value) is state
    specified = {
        v for v in types_pb2.ExecutionState.values() if v != types_pb2.EXECUTION_STATE_UNSPECIFIED
    }
    assert {s.pb for s in ExecutionState} == specified
    assert len(specified) == len(ExecutionState)


def test_known_protobuf_values() -> None:
    assert JobState.PENDING.pb == types_pb2.JOB_STATE_PENDING == 1
    assert JobState.CANCELLED.pb == types_pb2.JOB_STATE_CANCELLED
    assert ExecutionState.BID_PROPOSED.pb == types_pb2.EXECUTION_STATE_BID_PROPOSED == 1
    assert ExecutionState.PUBLISHED.pb == types_pb2.EXECUTION_STATE_PUBLISHED
    assert JobState.of(types_pb2.JOB_STATE_RUNNING) is JobState.RUNNING
    assert ExecutionState.of(types_pb2.EXECUTION_STATE_RESULT_REJECTED) is E.RESULT_REJECTED


def test_of_rejects_values_outside_the_enum() -> None:
    with pytest.raises(ValueError):
        JobState.of(99)
    with pytest.raises(ValueError):
        ExecutionState.of(99)


def test_job_predicates() -> None:
    for state in JobState:
        assert state.is_terminal == (state in JOB_TERMINAL), state
        assert state.is_active == (state not in JOB_TERMINAL), state


def test_execution_predicates() -> None:
    for state in ExecutionState:
        assert state.is_terminal == (state in EXEC_TERMINAL), state
        assert state.is_active == (state in EXEC_ACTIVE), state
        assert not (state.is_terminal and state.is_active), state
    # A proposed bid is neither finished nor holding a slot yet.
    assert not E.BID_PROPOSED.is_terminal and not E.BID_PROPOSED.is_active


def test_terminal_states_have_no_way_out() -> None:
    for job_state in JobState:
        assert job_state.is_terminal == (not JOB_NEXT[job_state])
    for exec_state in ExecutionState:
        assert exec_state.is_terminal == (not EXEC_NEXT[exec_state])


# -- transitions, exhaustively --------------------------------------------------------------


@pytest.mark.parametrize(("current", "target"), JOB_PAIRS, ids=lambda s: str(s))
def test_job_transition(current: JobState, target: JobState) -> None:
    job = job_in(current)
    before = now_ns()
    if target in JOB_NEXT[current]:
        set_job_state(job, target, "why")
        assert JobState.of(job.state) is target
        assert job.message == "why"
        assert job.update_time_unix_nano >= before
        assert job.revision == 3  # the datastore bumps revisions, not the model
    else:
        with pytest.raises(IllegalTransition) as info:
            set_job_state(job, target, "why")
        assert current.value in str(info.value) and target.value in str(info.value)
        assert "j-1" in str(info.value)
        assert job == job_in(current)  # untouched


@pytest.mark.parametrize(("current", "target"), EXEC_PAIRS, ids=lambda s: str(s))
def test_execution_transition(current: ExecutionState, target: ExecutionState) -> None:
    execution = execution_in(current)
    before = now_ns()
    if target in EXEC_NEXT[current]:
        set_execution_state(execution, target, "why")
        assert ExecutionState.of(execution.state) is target
        assert execution.message == "why"
        assert execution.update_time_unix_nano >= before
    else:
        with pytest.raises(IllegalTransition) as info:
            set_execution_state(execution, target, "why")
        assert current.value in str(info.value) and target.value in str(info.value)
        assert "e-1" in str(info.value)
        assert execution == execution_in(current)


def reachable(start: S, table: dict[S, set[S]]) -> set[S]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in table[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_state_is_reachable_from_the_start() -> None:
    assert reachable(J.PENDING, JOB_NEXT) == set(JobState)
    assert reachable(E.BID_PROPOSED, EXEC_NEXT) == set(ExecutionState)


def test_illegal_transition_is_a_bacalhau_error() -> None:
    assert issubclass(IllegalTransition, BacalhauError)


def test_without_a_message_the_old_one_stays() -> None:
    job = job_in(J.PENDING)
    set_job_state(job, J.RUNNING)
    assert job.message == "before"
    execution = execution_in(E.BID_PROPOSED)
    set_execution_state(execution, E.BID_ACCEPTED)
    assert execution.message == "before"


def test_update_time_moves_forward_with_each_change() -> None:
    job = types_pb2.Job(id="j-1", state=J.PENDING.pb)
    set_job_state(job, J.RUNNING)
    first = job.update_time_unix_nano
    assert first > 0
    set_job_state(job, J.COMPLETED, "done")
    assert job.update_time_unix_nano >= first
    assert job.message == "done"


def test_a_full_execution_lifecycle() -> None:
    execution = types_pb2.Execution(id="e-1", state=E.BID_PROPOSED.pb)
    path = [E.BID_ACCEPTED, E.RUNNING, E.RESULT_PROPOSED, E.RESULT_ACCEPTED, E.PUBLISHED]
    for state in path:
        set_execution_state(execution, state)
    assert ExecutionState.of(execution.state) is E.PUBLISHED
    with pytest.raises(IllegalTransition):
        set_execution_state(execution, E.CANCELLED)


# -- a state-machine property ---------------------------------------------------------------


@given(st.lists(st.sampled_from(list(JobState)), max_size=12))
def test_job_random_walk(targets: list[JobState]) -> None:
    job = types_pb2.Job(id="j-walk", state=J.PENDING.pb)
    model = J.PENDING
    for target in targets:
        stamp = job.update_time_unix_nano
        try:
            set_job_state(job, target)
        except IllegalTransition:
            assert target not in JOB_NEXT[model]
            assert job.update_time_unix_nano == stamp
        else:
            assert not model.is_terminal, f"left terminal state {model}"
            assert target in JOB_NEXT[model]
            model = target
        assert JobState.of(job.state) is model


@given(st.lists(st.sampled_from(list(ExecutionState)), max_size=16))
def test_execution_random_walk(targets: list[ExecutionState]) -> None:
    execution = types_pb2.Execution(id="e-walk", state=E.BID_PROPOSED.pb)
    model = E.BID_PROPOSED
    terminal_at: int | None = None
    for i, target in enumerate(targets):
        try:
            set_execution_state(execution, target, f"step {i}")
        except IllegalTransition:
            assert target not in EXEC_NEXT[model]
        else:
            assert terminal_at is None, f"left terminal state {model}"
            assert target in EXEC_NEXT[model]
            assert execution.message == f"step {i}"
            model = target
            if model.is_terminal:
                terminal_at = i
        assert ExecutionState.of(execution.state) is model
