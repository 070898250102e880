"""The shard planner: 1,000,000 shards over 1,000 nodes, compiled against its pure twin on the
same input, same run (the pure twin is the baseline)."""

from __future__ import annotations

import random
from array import array
from collections.abc import Callable
from typing import Any

import pytest

from bacalhau._fast import _planner_py

try:
    from bacalhau._fast import _planner as _compiled  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only when built without Cython
    _compiled = None

Record = Callable[[str, Any], None]
Note = Callable[[str, float], None]
SHARDS = 1_000_000
NODES = 1_000
_RESULT: dict[str, array[int]] = {}


@pytest.fixture(scope="module")
def workload() -> dict[str, array[int]]:
    """Sizes of 1 B to 1 GiB, 1-3 holders per shard, a little load already queued; exactly as
    many slots as shards, so the last holders fill up and some shards go to other nodes."""
    rng = random.Random(5)
    sizes = array("q", (rng.randint(1, 1 << 30) for _ in range(SHARDS)))
    offsets, holders = array("q", [0]), array("i")
    for _ in range(SHARDS):
        holders.extend(rng.sample(range(NODES), rng.randint(1, 3)))
        offsets.append(len(holders))
    return {
        "shard_sizes": sizes,
        "holder_offsets": offsets,
        "holder_nodes": holders,
        "node_slots": array("q", [SHARDS // NODES] * NODES),
        "node_capacity": array("q", [2 * sum(sizes) // NODES] * NODES),
        "node_load": array("q", (rng.randint(0, 5) for _ in range(NODES))),
    }


def _check(out: array[int], w: dict[str, array[int]], note: Note) -> None:
    assert -1 not in out
    offsets, holders = w["holder_offsets"], w["holder_nodes"]
    local = sum(out[s] in holders[offsets[s] : offsets[s + 1]] for s in range(SHARDS))
    note("planner_local", local / SHARDS)


def test_planner_compiled(
    benchmark: Any, workload: dict[str, array[int]], record: Record, note: Note
) -> None:
    if _compiled is None:
        pytest.skip("compiled planner not built")
    out = benchmark.pedantic(
        _compiled.plan, kwargs=workload, rounds=5, iterations=1, warmup_rounds=1
    )
    record("planner_compiled", benchmark)
    _check(out, workload, note)
    _RESULT["compiled"] = out


def test_planner_pure_baseline(
    benchmark: Any, workload: dict[str, array[int]], record: Record
) -> None:
    out = benchmark.pedantic(_planner_py.plan, kwargs=workload, rounds=2, iterations=1)
    record("planner_pure", benchmark)
    if "compiled" in _RESULT:
        assert out == _RESULT["compiled"], "the twins disagree"
