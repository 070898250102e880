"""Jobs as documents: the stable field names of `--output json|yaml` (docs/jobs.md)."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from typing import Any

from bacalhau.models import ExecutionState, JobState, shard_states


def time_text(ns: int) -> str | None:
    if not ns:
        return None
    t = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def execution_doc(ex: Any) -> dict[str, Any]:
    return {
        "id": ex.id,
        "node_id": ex.node_id,
        "shard": ex.shard,
        "state": ExecutionState.of(ex.state).value,
        "exit_code": ex.exit_code if ex.HasField("exit_code") else None,
        "result_cid": ex.result_cid or None,
        "stderr_tail": ex.stderr_tail or None,
        "message": ex.message or None,
        "created_at": time_text(ex.create_time_unix_nano),
        "updated_at": time_text(ex.update_time_unix_nano),
        "inputs": [_input_doc(i) for i in ex.inputs],
        "replica_node_ids": list(ex.replica_node_ids),
    }


def _input_doc(i: Any) -> dict[str, Any]:
    doc = {"source": i.source or "ipfs", "cid": i.cid or None, "mount_path": i.mount_path}
    if i.url:
        doc["url"] = i.url
    return doc


def event_doc(ev: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "seq": ev.seq,
        "time": time_text(ev.time_unix_nano),
        "type": ev.type,
        "job_state": JobState.of(ev.job_state).value if ev.job_state else None,
        "node_id": ev.node_id or None,
        "execution_id": ev.execution_id or None,
        "execution_state": (
            ExecutionState.of(ev.execution_state).value if ev.execution_state else None
        ),
        "detail": ev.detail or None,
    }
    return doc


def spec_doc(spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"engine": spec.engine}
    if spec.engine == "wasm":
        doc["wasm"] = {
            "module_cid": spec.wasm.module_cid,
            "entry_point": spec.wasm.entry_point or None,
            "args": list(spec.wasm.args),
            "env": dict(spec.wasm.env),
            "deterministic": spec.wasm.deterministic,
        }
    elif spec.engine == "docker":
        d = spec.docker
        doc["docker"] = {
            "image": d.image,
            "entrypoint": list(d.entrypoint),
            "args": list(d.args),
            "env": dict(d.env),
            "working_dir": d.working_dir or None,
        }
    elif spec.engine == "python":
        doc["python"] = {
            "program": spec.python.program or None,
            "code": spec.python.code or None,
            "context_cid": spec.python.context_cid or None,
            "deterministic": spec.python.deterministic,
            "args": list(spec.python.args),
            "env": dict(spec.python.env),
        }
    doc["inputs"] = [_input_doc(i) for i in spec.inputs]
    doc["outputs"] = [{"name": o.name, "path": o.path} for o in spec.outputs]
    r = spec.resources
    doc["resources"] = {
        "cpu": r.cpu or None,
        "memory_bytes": r.memory_bytes or None,
        "disk_bytes": r.disk_bytes or None,
        "gpu": r.gpu or None,
    }
    doc["timeout_seconds"] = spec.timeout_seconds or None
    doc["concurrency"] = spec.deal.concurrency or 1
    doc["verifier"] = spec.deal.verifier or "noop"
    doc["confidence"] = spec.deal.confidence or None
    doc["min_bids"] = spec.deal.min_bids or None
    doc["result_replicas"] = spec.deal.result_replicas or None
    doc["node_selector"] = dict(spec.node_selector)
    doc["annotations"] = dict(spec.annotations)
    doc["no_memo"] = spec.no_memo
    s = spec.sharding
    doc["sharding"] = (
        {
            "glob_pattern": s.glob_pattern,
            "base_path": s.base_path or "/inputs",
            "batch_size": s.batch_size or 1,
            "retries": s.retries if s.HasField("retries") else 2,
        }
        if s.glob_pattern
        else None
    )
    return doc


def job_doc(job: Any, events: list[Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": job.id,
        "state": JobState.of(job.state).value,
        "message": job.message or None,
        "requester_node_id": job.requester_node_id,
        "created_at": time_text(job.create_time_unix_nano),
        "updated_at": time_text(job.update_time_unix_nano),
        "spec": spec_doc(job.spec),
        "executions": [execution_doc(ex) for ex in job.executions],
        "memoized_from": job.memoized_from or None,
    }
    states = shard_states(job)
    doc["shards"] = {"count": len(states), "by_state": dict(Counter(states))}
    published = [ex for ex in job.executions if ex.state == ExecutionState.PUBLISHED.pb]
    doc["result"] = (
        {"execution_id": published[0].id, "cid": published[0].result_cid, "of": len(published)}
        if published and len(states) == 1
        else None
    )
    if events is not None:
        doc["events"] = [event_doc(ev) for ev in events]
    return doc


def dump(doc: Any, fmt: str) -> str:
    """`doc` as JSON or YAML text (ends with a newline)."""
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    import yaml

    return str(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def describe_text(doc: dict[str, Any], *, by_shard: bool = False) -> str:
    """The text of `describe`; a sharded job's executions only with `by_shard`, by shard."""
    lines = [
        f"ID:         {doc['id']}",
        f"State:      {doc['state']}",
    ]
    if doc["message"]:
        lines.append(f"Message:    {doc['message']}")
    lines += [
        f"Requester:  {doc['requester_node_id']}",
        f"Created:    {doc['created_at']}",
        f"Engine:     {doc['spec']['engine']}"
        + (f"  {doc['spec']['docker']['image']}" if "docker" in doc["spec"] else ""),
    ]
    if doc.get("memoized_from"):
        lines.append(f"Memoized:   from {doc['memoized_from']} (its verified result; nothing ran)")
    result = doc.get("result")
    if result:
        of = f", 1 of {result['of']} published: get --execution ID" if result["of"] > 1 else ""
        lines.append(f"Result:     {result['cid']} (execution {result['execution_id']}{of})")
    shards = doc["shards"]
    if shards["count"] > 1:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(shards["by_state"].items()))
        lines.append(f"Shards:     {shards['count']}: {counts}")
    executions = doc["executions"]
    if shards["count"] > 1:
        if by_shard:
            executions = sorted(executions, key=lambda e: e["shard"])
        else:
            executions = []
            lines.append("            (each shard's executions: describe --shards)")
    if executions or shards["count"] <= 1:
        lines.append("Executions:")
    last = None
    for ex in executions:
        if shards["count"] > 1 and ex["shard"] != last:
            last = ex["shard"]
            lines.append(f"  shard {last}:")
        line = f"  {ex['id']}  node {ex['node_id'][-8:]}  {ex['state']}"
        if ex["exit_code"] is not None:
            line += f"  exit {ex['exit_code']}"
        if ex["result_cid"]:
            line += f"  result {ex['result_cid']}"
        lines.append(line)
        if ex["message"]:
            lines.append(f"      {ex['message']}")
        if ex["replica_node_ids"]:
            nodes = ", ".join(n[-8:] for n in ex["replica_node_ids"])
            lines.append(f"      result also kept on node(s) {nodes}")
        if ex["stderr_tail"]:
            lines += ["      stderr: " + t for t in ex["stderr_tail"].splitlines()]
    if "events" in doc:
        lines.append("Events:")
        for ev in doc["events"]:
            who = f" node {ev['node_id'][-8:]}" if ev["node_id"] else ""
            detail = f"  {ev['detail']}" if ev["detail"] else ""
            lines.append(f"  {ev['seq']:>3}  {ev['time']}  {ev['type']}{who}{detail}")
    return "\n".join(lines) + "\n"
