"""`bacalhauctl trace JOB`: a job's spans across nodes, drawn as a waterfall."""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from typing import Any

from bacalhau.cli._job_cmds import _client, _print
from bacalhau.cli._render import time_text

LABEL = 30  # characters of a span's name (indented by its depth)
MIN_BAR = 20


def span_doc(s: Any) -> dict[str, Any]:
    return {
        "name": s.name,
        "node_id": s.node_id,
        "trace_id": s.trace_id,
        "span_id": s.span_id,
        "parent_span_id": s.parent_span_id,
        "start": time_text(s.start_time_unix_nano),
        "start_unix_nano": s.start_time_unix_nano,
        "end_unix_nano": s.end_time_unix_nano,
        "duration_ms": round((s.end_time_unix_nano - s.start_time_unix_nano) / 1e6, 3),
        "attributes": dict(sorted(s.attributes.items())),
        "error": s.error,
    }


def trace(args: argparse.Namespace) -> int:
    with _client(args) as c:
        answer = c.get_trace(args.job)
    docs = [span_doc(s) for s in answer.spans]
    doc = {"job_id": answer.job_id, "spans": docs, "missing_nodes": list(answer.missing_nodes)}
    width = shutil.get_terminal_size((120, 24)).columns
    _print(doc, args, waterfall(answer.job_id, docs, list(answer.missing_nodes), width))
    return 0


def tree(spans: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(depth, span) in waterfall order: each span after its parent, siblings by start;
    a span whose parent is not there is a root."""
    ids = {s["span_id"] for s in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    roots = []
    for s in sorted(spans, key=lambda s: (s["start_unix_nano"], s["name"])):
        if (
            s["parent_span_id"]
            and s["parent_span_id"] in ids
            and s["parent_span_id"] != s["span_id"]
        ):
            children.setdefault(s["parent_span_id"], []).append(s)
        else:
            roots.append(s)
    out: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    stack = [(0, s) for s in reversed(roots)]
    while stack:
        depth, s = stack.pop()
        if s["span_id"] in seen:  # a loop of parents (a bogus span): drawn once
            continue
        seen.add(s["span_id"])
        out.append((depth, s))
        stack.extend((depth + 1, c) for c in reversed(children.get(s["span_id"], [])))
    return out


def waterfall(job_id: str, spans: list[dict[str, Any]], missing: list[str], width: int) -> str:
    """Each span a bar on a time axis shared by every node, its node and duration beside it."""
    if not spans:
        text = f"job {job_id}: no spans (the nodes trace with --tracing off, or forgot the job)\n"
        return text + "".join(f"no answer from node {n}\n" for n in missing)
    t0 = min(s["start_unix_nano"] for s in spans)
    t1 = max(s["end_unix_nano"] for s in spans)
    total = max(t1 - t0, 1)
    bar = max(MIN_BAR, width - LABEL - 26)
    fill = "█" if (sys.stdout.encoding or "").lower().startswith("utf") else "#"
    nodes = sorted({s["node_id"] for s in spans})
    traces = sorted({s["trace_id"] for s in spans})
    lines = [
        f"job {job_id}  trace {', '.join(traces)}  {_ms(total)} over {len(nodes)} node(s)",
    ]
    for depth, s in tree(spans):
        label = ("  " * min(depth, 8) + s["name"])[:LABEL]
        a = int((s["start_unix_nano"] - t0) / total * bar)
        b = max(a + 1, math.ceil((s["end_unix_nano"] - t0) / total * bar))
        b = min(b, bar)
        a = min(a, b - 1)
        cells = " " * a + fill * (b - a) + " " * (bar - b)
        took = _ms(s["end_unix_nano"] - s["start_unix_nano"])
        mark = " !" if s["error"] else ""
        lines.append(f"{label:<{LABEL}} |{cells}| {s['node_id'][-8:]} {took:>10}{mark}")
    lines += [f"no answer from node {n}: its spans are missing" for n in missing]
    return "\n".join(lines) + "\n"


def _ms(ns: int) -> str:
    ms = ns / 1e6
    return f"{ms:.1f} ms" if ms < 10_000 else f"{ms / 1000:.2f} s"
