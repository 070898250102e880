"""The shard planner: compiled and pure twins agree with each other and with the rules."""

from __future__ import annotations

import os
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bacalhau import _fast
from bacalhau._fast import _planner_py

try:
    from bacalhau._fast import _planner as _compiled  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only when built without Cython
    _compiled = None

TWINS: list[ModuleType] = [_planner_py] + ([_compiled] if _compiled is not None else [])
needs_compiled = pytest.mark.skipif(_compiled is None, reason="compiled module not built")
# Bounded and repeatable: the same examples on every run, nothing kept between runs.
BOUNDED = settings(max_examples=150, deadline=None, derandomize=True, database=None)


@dataclass
class Instance:
    """A planner input as per-shard lists, turned into the CSR arrays ``plan`` takes."""

    sizes: list[int]
    holders: list[list[int]]
    slots: list[int]
    capacity: list[int]
    load: list[int]
    todo: list[int] | None = None
    excludes: list[list[int]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def args(self) -> dict[str, Any]:
        h_off, h_nodes = _csr(self.holders)
        kw: dict[str, Any] = {
            "shard_sizes": array("q", self.sizes),
            "holder_offsets": h_off,
            "holder_nodes": h_nodes,
            "node_slots": array("q", self.slots),
            "node_capacity": array("q", self.capacity),
            "node_load": array("q", self.load),
        }
        if self.todo is not None:
            kw["todo"] = array("i", self.todo)
        if self.excludes is not None:
            kw["exclude_offsets"], kw["exclude_nodes"] = _csr(self.excludes)
        kw.update(self.extra)
        return kw


def _csr(lists: Sequence[Sequence[int]]) -> tuple[array[int], array[int]]:
    offsets, nodes = array("q", [0]), array("i")
    for row in lists:
        nodes.extend(row)
        offsets.append(len(nodes))
    return offsets, nodes


def reference(inst: Instance) -> list[int]:
    """The rules, read literally: every node looked at for every shard."""
    slots, cap, load = list(inst.slots), list(inst.capacity), list(inst.load)
    n, m = len(inst.sizes), len(slots)
    out = [-1] * n
    todo = range(n) if inst.todo is None else set(inst.todo)
    for s in sorted(todo, key=lambda s: (-inst.sizes[s], s)):
        size = inst.sizes[s]
        banned = set(inst.excludes[s]) if inst.excludes is not None else set()

        def room(i: int, size: int = size, banned: set[int] = banned) -> bool:
            return i not in banned and slots[i] > 0 and cap[i] >= size

        candidates = [i for i in set(inst.holders[s]) if room(i)]
        candidates = candidates or [i for i in range(m) if room(i)]
        if candidates:
            best = min(candidates, key=lambda i: (load[i], i))
            out[s] = best
            slots[best] -= 1
            cap[best] -= size
            load[best] += 1
    return out


SMALL_SIZES = st.integers(0, 20)
SMALL_CAPACITIES = st.integers(0, 100)


@st.composite
def instances(
    draw: st.DrawFn,
    max_shards: int = 40,
    max_nodes: int = 8,
    sizes: st.SearchStrategy[int] = SMALL_SIZES,
    capacities: st.SearchStrategy[int] = SMALL_CAPACITIES,
) -> Instance:
    n = draw(st.integers(0, max_shards))
    m = draw(st.integers(0, max_nodes))
    nodes = st.integers(0, m - 1) if m else st.nothing()
    per_shard = st.lists(nodes, max_size=4 if m else 0, min_size=0)
    inst = Instance(
        sizes=draw(st.lists(sizes, min_size=n, max_size=n)),
        holders=draw(st.lists(per_shard, min_size=n, max_size=n)),
        slots=draw(st.lists(st.integers(0, 10), min_size=m, max_size=m)),
        capacity=draw(st.lists(capacities, min_size=m, max_size=m)),
        load=draw(st.lists(st.integers(0, 6), min_size=m, max_size=m)),
    )
    if draw(st.booleans()):
        inst.todo = draw(st.lists(st.integers(0, n - 1), max_size=2 * n)) if n else []
    if draw(st.booleans()):
        inst.excludes = draw(st.lists(per_shard, min_size=n, max_size=n))
    return inst


def _plan(mod: ModuleType, inst: Instance) -> list[int]:
    out = mod.plan(**inst.args())
    assert isinstance(out, array) and out.typecode == "i"
    return out.tolist()


def test_import_point_honours_switch() -> None:
    pure = os.environ.get("BACALHAU_PUREPYTHON", "") not in ("", "0")
    if pure or _compiled is None:
        assert _fast.planner is _planner_py and not _fast.COMPILED
    else:
        assert _fast.planner is _compiled and _fast.COMPILED
        assert _fast.planner.plan.__module__ == "bacalhau._fast._planner"
    # Both modules come from the same side: never a compiled dagpb with a pure planner.
    assert _fast.dagpb.__name__.endswith("_py") == _fast.planner.__name__.endswith("_py")


def test_compiled_module_is_built_in_ci() -> None:
    if os.environ.get("BACALHAU_REQUIRE_CYTHON", "") not in ("", "0"):
        assert _compiled is not None, "the Cython planner was not built"


@BOUNDED
@given(instances())
def test_twins_follow_the_rules(inst: Instance) -> None:
    expected = reference(inst)
    for mod in TWINS:
        assert _plan(mod, inst) == expected, mod.__name__


HUGE = st.one_of(st.integers(0, 20), st.sampled_from([2**31, 2**32 + 1, 2**62, 2**63 - 1]))


@BOUNDED
@given(instances(sizes=HUGE, capacities=HUGE))
def test_twins_follow_the_rules_with_huge_sizes(inst: Instance) -> None:
    expected = reference(inst)
    for mod in TWINS:
        assert _plan(mod, inst) == expected, mod.__name__


@needs_compiled
@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(instances(max_shards=3000, max_nodes=60))
def test_twins_agree_on_bigger_inputs(inst: Instance) -> None:
    assert _plan(_compiled, inst) == _plan(_planner_py, inst)


@BOUNDED
@given(instances())
def test_invariants(inst: Instance) -> None:
    kw = inst.args()
    before = {k: v[:] for k, v in kw.items()}
    out = _fast.planner.plan(**kw).tolist()
    assert kw == before, "plan changed its input"
    assert out == _plan(_fast.planner, inst), "not deterministic"
    used_slots = [0] * len(inst.slots)
    used_bytes = [0] * len(inst.slots)
    todo = set(range(len(inst.sizes)) if inst.todo is None else inst.todo)
    for s, node in enumerate(out):
        if node < 0:
            continue
        assert s in todo
        assert inst.excludes is None or node not in inst.excludes[s]
        used_slots[node] += 1
        used_bytes[node] += inst.sizes[s]
    for i in range(len(inst.slots)):
        assert used_slots[i] <= inst.slots[i]
        assert used_bytes[i] <= inst.capacity[i]
    for s in todo:
        if out[s] < 0:  # no node had room for it, even at the end
            assert all(
                used_slots[i] == inst.slots[i] or inst.capacity[i] - used_bytes[i] < inst.sizes[s]
                for i in range(len(inst.slots))
                if inst.excludes is None or i not in inst.excludes[s]
            )


@BOUNDED
@given(instances(max_shards=60), st.data())
def test_holders_with_room_take_every_shard(inst: Instance, data: st.DataObject) -> None:
    """When every shard has a holder and holders never run out of room, locality is 100%."""
    m = len(inst.slots)
    if m == 0:
        inst.sizes = []
        inst.holders = []
    inst.todo = inst.excludes = None
    holder = st.integers(0, m - 1) if m else st.nothing()
    for s in range(len(inst.sizes)):
        if not inst.holders[s]:
            inst.holders[s] = [data.draw(holder)]
    inst.slots = [len(inst.sizes)] * m
    inst.capacity = [sum(inst.sizes)] * m
    out = _plan(_fast.planner, inst)
    assert all(out[s] in inst.holders[s] for s in range(len(out)))


@BOUNDED
@given(st.integers(1, 50), st.integers(1, 8), st.data())
def test_load_spreads_evenly(m: int, slots: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(0, m * slots))
    sizes = data.draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n))
    inst = Instance(sizes, [[] for _ in range(n)], [slots] * m, [sum(sizes)] * m, [0] * m)
    out = _plan(_fast.planner, inst)
    assert -1 not in out
    counts = [out.count(i) for i in range(m)]
    assert max(counts) - min(counts) <= 1


def test_existing_load_is_levelled_first() -> None:
    inst = Instance([1] * 6, [[]] * 6, [10, 10, 10], [100] * 3, [4, 0, 1])
    out = _plan(_fast.planner, inst)
    assert [out.count(i) for i in range(3)] == [0, 4, 2]  # loads end at 4, 4, 3


def test_largest_first_finds_room() -> None:
    # Smallest first would put the 1 on node 0 (lower index) and leave no room for the 10.
    inst = Instance([1, 10], [[], []], [1, 1], [10, 10], [0, 0])
    assert _plan(_fast.planner, inst) == [1, 0]
    inst = Instance([1, 10], [[], []], [2, 1], [10, 1], [0, 0])
    assert _plan(_fast.planner, inst) == [1, 0]


def test_holder_preferred_over_idle_node() -> None:
    inst = Instance([5, 5], [[2], [2, 2]], [5, 5, 5], [100] * 3, [0, 0, 3])
    assert _plan(_fast.planner, inst) == [2, 2]
    inst.capacity[2] = 7  # room for one: the other goes to the least loaded node
    assert _plan(_fast.planner, inst) == [2, 0]


def test_unplaceable_shard_is_minus_one() -> None:
    inst = Instance([50, 3, 200, 3], [[0], [], [], []], [2, 2], [60, 40], [0, 0])
    assert _plan(_fast.planner, inst) == [0, 1, -1, 0]  # ties: lowest index


def test_replan_only_failed_and_lost_shards() -> None:
    n, m = 40, 5
    sizes = [(s * 7) % 13 for s in range(n)]
    holders = [[s % m] for s in range(n)]
    first = _plan(_fast.planner, Instance(sizes, holders, [10] * m, [1000] * m, [0] * m))
    assert first == [s % m for s in range(n)]
    # Node 2 is lost (no slots left) and shard 5 failed on node 0: re-plan just those.
    lost = [s for s in range(n) if first[s] == 2]
    todo = [*lost, 5]
    load = [first.count(i) for i in range(m)]
    slots = [20 - c for c in load]
    slots[2] = 0
    excludes: list[list[int]] = [[] for _ in range(n)]
    excludes[5] = [0]
    again = Instance(sizes, holders, slots, [1000] * m, load, todo, excludes)
    out = _plan(_fast.planner, again)
    assert [s for s in range(n) if out[s] >= 0] == sorted(todo)
    assert all(out[s] not in (2, -1) for s in todo) and out[5] != 0
    for i in range(m):
        assert out.count(i) <= slots[i]
    assert out == reference(again)


def test_plain_sequences_are_accepted() -> None:
    inst = Instance([3, 1, 2], [[1], [], [0, 0]], [2, 2], [5, 5], [0, 1], [0, 2], [[1], [], []])
    kw = {k: list(v) for k, v in inst.args().items()}
    for mod in TWINS:
        assert mod.plan(**kw).tolist() == reference(inst) == [0, -1, 0]


def _valid() -> dict[str, Any]:
    inst = Instance([1, 2], [[0], [1]], [1, 1], [5, 5], [0, 0], [0, 1], [[], [0]])
    return inst.args()


BAD: list[tuple[str, dict[str, Any]]] = [
    ("holder_offsets has 2 entries", {"holder_offsets": array("q", [0, 1])}),
    (
        "node_slots, node_capacity and node_load differ in length (2, 1, 2)",
        {"node_capacity": array("q", [5])},
    ),
    ("node_slots, node_capacity and node_load differ", {"node_load": array("q", [0, 0, 0])}),
    ("shard_sizes[1] is negative", {"shard_sizes": array("q", [1, -2])}),
    ("node_slots[0] is negative", {"node_slots": array("q", [-1, 1])}),
    ("node_capacity[1] is negative", {"node_capacity": array("q", [5, -5])}),
    ("node_load[1] is not in", {"node_load": array("q", [0, -1])}),
    ("node_load[0] is not in", {"node_load": array("q", [1 << 62, 0])}),
    ("holder_offsets[0] is 1", {"holder_offsets": array("q", [1, 1, 2])}),
    ("holder_offsets decrease at shard 1 (2 > 1)", {"holder_offsets": array("q", [0, 2, 1])}),
    ("holder_offsets end at 1", {"holder_offsets": array("q", [0, 1, 1])}),
    ("holder_nodes[1] = 2 is not a node", {"holder_nodes": array("i", [0, 2])}),
    ("holder_nodes[0] = -1 is not a node", {"holder_nodes": array("i", [-1, 0])}),
    ("exclude_offsets and exclude_nodes go together", {"exclude_nodes": None}),
    ("exclude_offsets has 1 entries", {"exclude_offsets": array("q", [0])}),
    ("exclude_offsets decrease", {"exclude_offsets": array("q", [0, 1, 0])}),
    ("exclude_nodes[0] = 9", {"exclude_nodes": array("i", [9])}),
    ("todo[1] = 2 is not a shard", {"todo": array("i", [0, 2])}),
    ("todo[0] = -1 is not a shard", {"todo": array("i", [-1])}),
    ("shard_sizes: a value does not fit", {"shard_sizes": [1, 1 << 63]}),
    ("holder_nodes: a value does not fit", {"holder_nodes": [0, 1 << 31]}),
]


@pytest.mark.parametrize(("message", "change"), BAD, ids=[b[0] for b in BAD])
def test_invalid_input_is_one_value_error(message: str, change: dict[str, Any]) -> None:
    kw = _valid()
    kw.update(change)
    errors = []
    for mod in TWINS:
        with pytest.raises(ValueError, match="^" + re.escape(message)) as info:
            mod.plan(**kw)
        assert "\n" not in str(info.value)
        errors.append(str(info.value))
    assert len(set(errors)) == 1, errors


@needs_compiled
@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(instances(max_shards=6, max_nodes=4), st.data())
def test_twins_agree_on_corrupted_input(inst: Instance, data: st.DataObject) -> None:
    """Any array may be cut, stretched or hold any value: same result or same error."""
    kw = inst.args()
    name = data.draw(st.sampled_from(sorted(kw)))
    values: list[int] = list(kw[name])
    change_one: bool = bool(values) and data.draw(st.booleans())
    if change_one:
        values[data.draw(st.integers(0, len(values) - 1))] = data.draw(st.integers(-3, 50))
    else:
        cut = data.draw(st.integers(0, len(values)))
        values = values[:cut] + data.draw(st.lists(st.integers(-3, 50), max_size=2))
    kw[name] = array(kw[name].typecode, values)
    outcomes = []
    for mod in (_compiled, _planner_py):
        try:
            outcomes.append(mod.plan(**kw).tolist())
        except ValueError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
