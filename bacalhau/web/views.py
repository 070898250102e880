"""Plain JSON views of the node's records, as the dashboard shows them (no secrets: a job's
env values are hidden before it gets here, and nothing here reads keys or files)."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from bacalhau.models import ExecutionState, JobState

E = ExecutionState
_DONE = (E.PUBLISHED, E.RESULT_ACCEPTED)
SHARD_STATES = ("waiting", "running", "verifying", "completed", "failed", "cancelled")


def resources(r: Any) -> dict[str, Any]:
    return {
        "cpu": r.cpu,
        "memory_bytes": r.memory_bytes,
        "disk_bytes": r.disk_bytes,
        "gpu": r.gpu,
    }


def node(view: Any, own: dict[str, Any]) -> dict[str, Any]:
    """This node (`own`: its capacity, free resources and queue) and its peer table."""
    return {
        "node_id": view.node_id,
        "version": view.version,
        "address": view.address,
        "engines": list(view.engines),
        "labels": dict(view.labels),
        **own,
        "peers": [peer(p) for p in view.peers],
    }


def peer(p: Any) -> dict[str, Any]:
    rec = p.record
    return {
        "node_id": rec.node_id,
        "addresses": list(rec.addresses),
        "alive": p.alive,
        "last_seen_unix_nano": p.last_seen_unix_nano,
        "version": rec.version,
        "engines": list(rec.engines),
        "labels": dict(rec.labels),
        "resources": resources(rec.resources),
        "free": resources(p.status.free) if p.status is not None else None,
        "queued": p.status.queued if p.status is not None else None,
        "reputation": {
            "results_accepted": rec.results_accepted,
            "results_rejected": rec.results_rejected,
            "penalized_until_unix_nano": rec.penalized_until_unix_nano,
        },
    }


def job_summary(job: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "state": JobState.of(job.state).value,
        "engine": job.spec.engine,
        "message": job.message,
        "requester_node_id": job.requester_node_id,
        "client_id": job.client_id,
        "shard_count": job.shard_count or 1,
        "executions": len(job.executions),
        "create_time_unix_nano": job.create_time_unix_nano,
        "update_time_unix_nano": job.update_time_unix_nano,
        "memoized_from": job.memoized_from,
    }


def job(job: Any) -> dict[str, Any]:
    """A job with its spec (env values as the caller may see them), executions and shards."""
    return {
        **job_summary(job),
        "revision": job.revision,
        "spec": MessageToDict(job.spec, preserving_proto_field_name=True),
        "executions": [execution(ex) for ex in job.executions],
        "shards": shards(job),
    }


def execution(ex: Any) -> dict[str, Any]:
    return {
        "id": ex.id,
        "node_id": ex.node_id,
        "shard": ex.shard,
        "state": E.of(ex.state).value,
        "exit_code": ex.exit_code if ex.HasField("exit_code") else None,
        "result_cid": ex.result_cid,
        "message": ex.message,
        "stderr_tail": ex.stderr_tail,
        "create_time_unix_nano": ex.create_time_unix_nano,
        "update_time_unix_nano": ex.update_time_unix_nano,
        "has_files": has_files(ex),
    }


def has_files(ex: Any) -> bool:
    """Whether the dashboard serves this execution's result files: an accepted result."""
    return bool(ex.result_cid) and E.of(ex.state) in _DONE


def shards(job: Any) -> dict[str, Any]:
    """Each shard's state, going by its executions, and how many shards are in each state."""
    count = job.shard_count or 1
    by_shard: list[list[E]] = [[] for _ in range(count)]
    for ex in job.executions:
        if ex.shard < count:
            by_shard[ex.shard].append(E.of(ex.state))
    job_state = JobState.of(job.state)
    states = [_shard_state(s, job_state) for s in by_shard]
    return {
        "count": count,
        "states": states,
        "by_state": {name: states.count(name) for name in SHARD_STATES},
    }


def _shard_state(states: list[E], job_state: JobState) -> str:
    """A shard's state: completed once a result of it stands; else, while the job is not
    final, verifying, running or waiting (for a bid, or for a retry after a failure)."""
    if any(s in _DONE for s in states):
        return "completed"
    if job_state.is_terminal:
        return "cancelled" if job_state == JobState.CANCELLED else "failed"
    if any(s == E.RESULT_PROPOSED for s in states):
        return "verifying"
    if any(s in (E.BID_ACCEPTED, E.RUNNING) for s in states):
        return "running"
    return "waiting"


def event(ev: Any) -> dict[str, Any]:
    return {
        "seq": ev.seq,
        "time_unix_nano": ev.time_unix_nano,
        "type": ev.type,
        "node_id": ev.node_id,
        "execution_id": ev.execution_id,
        "shard": ev.shard,
        "job_state": JobState.of(ev.job_state).value if ev.job_state else "",
        "execution_state": E.of(ev.execution_state).value if ev.execution_state else "",
        "detail": ev.detail,
    }


def span(s: Any) -> dict[str, Any]:
    """A TraceSpan, for the job page's waterfall."""
    return {
        "name": s.name,
        "node_id": s.node_id,
        "span_id": s.span_id,
        "parent_span_id": s.parent_span_id,
        "start_unix_nano": s.start_time_unix_nano,
        "end_unix_nano": s.end_time_unix_nano,
        "error": s.error,
    }
