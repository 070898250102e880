"""bacalhauctl's Bacalhau verb groups and spec files: `job run|validate|list|describe|logs|
stop|executions|history`, `node list|describe`, `create`, `validate`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bacalhau.cli import _specfile
from bacalhau.cli._job_cmds import (
    _client,
    _print,
    _resources_doc,
    cancel,
    describe,
    list_jobs,
    logs,
    print_spec,
    submit,
)
from bacalhau.cli._render import event_doc, execution_doc, time_text
from bacalhau.errors import UsageError
from bacalhau.spec import Problem
from bacalhau.spec import validate as spec_problems

__all__ = [
    "cancel",
    "describe",
    "executions",
    "history",
    "list_jobs",
    "logs",
    "node_describe",
    "node_list",
    "run_spec",
    "validate",
]


def run_spec(args: argparse.Namespace) -> int:
    """`job run SPEC` / `create SPEC`: submit the job a spec file describes (see submit)."""
    spec, problems = _specfile.load(args.spec)
    problems = problems or [_as_doc(p) for p in spec_problems(spec)]
    if problems:
        more = len(problems) - 1
        raise UsageError(
            f"{_name(args.spec)}: {problems[0]}"
            + (f" (and {more} more: 'bacalhauctl job validate' lists them)" if more else "")
        )
    if args.dry_run:
        print_spec(spec, args)
        return 0
    with _client(args) as c:
        return submit(c, spec, args)


def validate(args: argparse.Namespace) -> int:
    """Print the problems of a spec file, one a line (exit 1), or "ok"; or the JSON Schema."""
    if args.output_schema:
        sys.stdout.write(json.dumps(_specfile.json_schema(), indent=2) + "\n")
        return 0
    if args.spec is None:
        raise UsageError("validate needs a SPEC file (or - for stdin, or --output-schema)")
    spec, problems = _specfile.load(args.spec)
    problems = problems or [_as_doc(p) for p in spec_problems(spec)]
    docs = [{"field": p.field, "message": p.message, "hint": p.hint or None} for p in problems]
    if args.output == "text":
        for p in problems:
            print(f"{_name(args.spec)}: {p}")
        if not problems:
            print("ok")
    else:
        from bacalhau.cli._render import dump

        sys.stdout.write(dump({"valid": not problems, "problems": docs}, args.output))
    return 1 if problems else 0


def _as_doc(p: Problem) -> Problem:
    """A rule's problem, its field named as the spec document names it."""
    return Problem(_specfile.doc_field(p.field), p.message, p.hint)


def _name(source: str) -> str:
    return "stdin" if source == "-" else source


def executions(args: argparse.Namespace) -> int:
    with _client(args) as c:
        job = c.get_job(args.job).job
    docs = [execution_doc(ex) for ex in job.executions]
    lines = []
    for d in docs:
        line = f"{d['id']}  node {d['node_id'][-8:]}  shard {d['shard']}  {d['state']}"
        if d["exit_code"] is not None:
            line += f"  exit {d['exit_code']}"
        if d["result_cid"]:
            line += f"  result {d['result_cid']}"
        if d["message"]:
            line += f"  {d['message']}"
        lines.append(line + "\n")
    _print(docs, args, "".join(lines))
    return 0


def history(args: argparse.Namespace) -> int:
    with _client(args) as c:
        events = list(c.get_job(args.job).events)
    docs = [event_doc(ev) for ev in events]
    text = "".join(
        f"{d['seq']:>3}  {d['time']}  {d['type']}"
        + (f"  node {d['node_id'][-8:]}" if d["node_id"] else "")
        + (f"  {d['execution_id']}" if d["execution_id"] else "")
        + (f"  {d['detail']}" if d["detail"] else "")
        + "\n"
        for d in docs
    )
    _print(docs, args, text)
    return 0


def _nodes(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The node at --api (first, "self": true) and every peer it knows."""
    with _client(args) as c:
        info = c.node_info()
    docs = [
        {
            "id": info.node_id,
            "self": True,
            "addresses": [info.address] if info.address else [],
            "alive": True,
            "engines": list(info.engines),
            "labels": dict(info.labels),
            "version": info.version or None,
            "resources": _resources_doc(info.resources),
            "nvidia_container_runtime": info.nvidia_container_runtime,
            "last_seen": None,
        }
    ]
    for p in info.peers:
        docs.append(
            {
                "id": p.node_id,
                "self": False,
                "addresses": list(p.addresses) or ([p.address] if p.address else []),
                "alive": p.alive,
                "engines": list(p.engines),
                "labels": dict(p.labels),
                "version": p.version or None,
                "resources": _resources_doc(p.resources),
                "last_seen": time_text(p.last_seen_unix_nano),
            }
        )
    return docs


def node_list(args: argparse.Namespace) -> int:
    docs = _nodes(args)
    text = "".join(
        f"{d['id']}  {','.join(d['addresses']) or '-'}  "
        f"{'this node' if d['self'] else 'alive' if d['alive'] else 'not alive'}  "
        f"{','.join(d['engines']) or '-'}  "
        f"{','.join(f'{k}={v}' for k, v in sorted(d['labels'].items())) or '-'}\n"
        for d in docs
    )
    _print(docs, args, text)
    return 0


def _gpus_text(doc: dict[str, Any]) -> str:
    """How many GPUs the node lends, and for this node whether containers can use them."""
    n = (doc["resources"] or {}).get("gpu", 0)
    if not n:
        return "none"
    if "nvidia_container_runtime" not in doc:
        return str(n)
    if doc["nvidia_container_runtime"]:
        return f"{n} (docker jobs: NVIDIA container runtime)"
    return f"{n} (no NVIDIA container runtime: docker jobs asking for GPUs are declined)"


def node_describe(args: argparse.Namespace) -> int:
    docs = _nodes(args)
    if args.node is None:
        doc = docs[0]
    else:
        found = [d for d in docs if d["id"] == args.node] or [
            d for d in docs if len(args.node) >= 6 and d["id"].endswith(args.node)
        ]
        if len(found) != 1:
            raise UsageError(
                f"node {args.node[:80]}: "
                + ("not known to this node" if not found else "more than one node ends so"),
                hint="'bacalhauctl node list' shows the nodes it knows",
            )
        doc = found[0]
    text = "".join(
        f"{k + ':':<11} {v}\n"
        for k, v in (
            ("ID", doc["id"]),
            ("Addresses", ", ".join(doc["addresses"]) or "-"),
            ("State", "this node" if doc["self"] else "alive" if doc["alive"] else "not alive"),
            ("Engines", ", ".join(doc["engines"]) or "-"),
            ("Labels", ", ".join(f"{k}={v}" for k, v in sorted(doc["labels"].items())) or "-"),
            ("GPUs", _gpus_text(doc)),
            ("Version", doc["version"] or "-"),
        )
    )
    _print(doc, args, text)
    return 0
