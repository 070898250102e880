"""The shard planner, in pure Python: which node runs each shard.

Twin of the compiled ``_planner.pyx``: same names, identical assignments and the same
``ValueError`` messages (the test suite checks this with hypothesis against each other and
against a naive reference written straight from the rules below).

Rules, for the shards to plan (``todo``, or all):

* Shards are placed largest first, ties by lowest shard index, so big shards find room.
* A node has room for a shard when it has a free slot, its capacity is at least the shard's size,
  and it is not in the shard's ``exclude`` list. Placing a shard takes one slot and its size
  from the node's capacity, and adds one to its load: neither slots nor capacity ever go
  negative.
* A shard goes to a node that already holds its data (a holder) when one has room: among
  those, the least loaded, ties by lowest node index. Otherwise it goes to the least loaded node
  with room, same tie rule. "Load" is ``node_load`` plus the shards this plan gave the node.
* A shard no node has room for, and every shard not in ``todo``, gets -1.
* The result depends only on the input: the same input gives the same assignment.

Invalid input raises ``ValueError`` with one line naming the first problem found.
Cost: O(n log n) for the order, O(total holders + total excludes) to read them, and
O(log n_nodes) per placement: a heap of the nodes keyed by (load, index) gives the least loaded
node; nodes too small for the current shard wait in a second heap keyed by capacity until the
shards get small enough (they only get smaller).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from heapq import heapify, heappop, heappush

# Loads are kept below this so that adding at most 2**31 placements never leaves 64 bits.
MAX_LOAD = 1 << 62
MAX_COUNT = (1 << 31) - 1

_IN, _GONE, _WAITING, _ASIDE = 0, 1, 2, 3


def plan(
    shard_sizes: Sequence[int],
    holder_offsets: Sequence[int],
    holder_nodes: Sequence[int],
    node_slots: Sequence[int],
    node_capacity: Sequence[int],
    node_load: Sequence[int],
    todo: Sequence[int] | None = None,
    exclude_offsets: Sequence[int] | None = None,
    exclude_nodes: Sequence[int] | None = None,
) -> array[int]:
    """Node index per shard (-1: not placed); see the module docstring. Raises ValueError."""
    sizes = _ints(shard_sizes, "q", "shard_sizes")
    h_off = _ints(holder_offsets, "q", "holder_offsets")
    h_nodes = _ints(holder_nodes, "i", "holder_nodes")
    slots = _ints(node_slots, "q", "node_slots").tolist()
    cap = _ints(node_capacity, "q", "node_capacity").tolist()
    load = _ints(node_load, "q", "node_load").tolist()
    n, m = len(sizes), len(slots)
    if (exclude_offsets is None) != (exclude_nodes is None):
        raise ValueError("exclude_offsets and exclude_nodes go together: give both or neither")
    x_off = x_nodes = None
    if exclude_offsets is not None and exclude_nodes is not None:
        x_off = _ints(exclude_offsets, "q", "exclude_offsets")
        x_nodes = _ints(exclude_nodes, "i", "exclude_nodes")
    todo_a = None if todo is None else _ints(todo, "i", "todo")
    _check(sizes, h_off, h_nodes, slots, cap, load, x_off, x_nodes, todo_a)

    out = array("i", [-1]) * n
    if todo_a is None:
        order = list(range(n))
    else:
        wanted = bytearray(n)
        for s in todo_a:
            wanted[s] = 1
        order = [s for s in range(n) if wanted[s]]
    # Stable, so equal sizes keep ascending shard order (reverse keeps stability).
    order.sort(key=sizes.__getitem__, reverse=True)

    where = [_IN if slots[i] > 0 else _GONE for i in range(m)]
    heap = [(load[i], i) for i in range(m) if slots[i] > 0]  # entries may be stale: see _top
    heapify(heap)
    waiting: list[tuple[int, int]] = []  # (-capacity, node): too small for the current shard
    stamp = [-1] * m  # stamp[i] == k: node i is excluded for the k-th shard placed
    for k, s in enumerate(order):
        size = sizes[s]
        while waiting and -waiting[0][0] >= size:
            i = heappop(waiting)[1]
            where[i] = _IN
            heappush(heap, (load[i], i))
        if x_off is not None and x_nodes is not None:
            for j in range(x_off[s], x_off[s + 1]):
                stamp[x_nodes[j]] = k
        best = -1
        for j in range(h_off[s], h_off[s + 1]):
            h = h_nodes[j]
            if (
                stamp[h] != k
                and slots[h] > 0
                and cap[h] >= size
                and (best < 0 or load[h] < load[best] or (load[h] == load[best] and h < best))
            ):
                best = h
        if best < 0:
            aside = []
            while heap:
                lo, i = heap[0]
                if where[i] != _IN or lo != load[i]:
                    heappop(heap)  # stale: the node left, or its load grew since
                elif cap[i] < size:
                    heappop(heap)
                    where[i] = _WAITING
                    heappush(waiting, (-cap[i], i))
                elif stamp[i] == k:
                    heappop(heap)
                    where[i] = _ASIDE
                    aside.append(i)
                else:
                    best = i
                    break
            for i in aside:
                where[i] = _IN
                heappush(heap, (load[i], i))
        if best >= 0:
            out[s] = best
            slots[best] -= 1
            cap[best] -= size
            load[best] += 1
            if slots[best] == 0:
                where[best] = _GONE
            elif where[best] == _IN:
                heappush(heap, (load[best], best))
    return out


def _ints(values: Sequence[int], code: str, name: str) -> array[int]:
    """A private copy of ``values`` as an array of ``code``; ValueError when a value does not fit.

    Private, so that no other thread can change what was checked while the plan is made.
    """
    if isinstance(values, array) and values.typecode == code:
        return values[:]
    try:
        return array(code, values)
    except OverflowError:
        bits = 64 if code == "q" else 32
        raise ValueError(f"{name}: a value does not fit in a signed {bits}-bit integer") from None


def _check(
    sizes: Sequence[int],
    h_off: Sequence[int],
    h_nodes: Sequence[int],
    slots: Sequence[int],
    cap: Sequence[int],
    load: Sequence[int],
    x_off: Sequence[int] | None,
    x_nodes: Sequence[int] | None,
    todo: Sequence[int] | None,
) -> None:
    n, m = len(sizes), len(slots)
    if n > MAX_COUNT or m > MAX_COUNT:
        raise ValueError(f"at most {MAX_COUNT} shards and {MAX_COUNT} nodes")
    if len(cap) != m or len(load) != m:
        raise ValueError(
            f"node_slots, node_capacity and node_load differ in length ({m}, {len(cap)}, "
            f"{len(load)})"
        )
    for s in range(n):
        if sizes[s] < 0:
            raise ValueError(f"shard_sizes[{s}] is negative ({sizes[s]})")
    for i in range(m):
        if slots[i] < 0:
            raise ValueError(f"node_slots[{i}] is negative ({slots[i]})")
        if cap[i] < 0:
            raise ValueError(f"node_capacity[{i}] is negative ({cap[i]})")
        if not 0 <= load[i] < MAX_LOAD:
            raise ValueError(f"node_load[{i}] is not in 0..2**62-1 ({load[i]})")
    _check_csr(h_off, h_nodes, n, m, "holder")
    if x_off is not None and x_nodes is not None:
        _check_csr(x_off, x_nodes, n, m, "exclude")
    if todo is not None:
        for j in range(len(todo)):
            if not 0 <= todo[j] < n:
                raise ValueError(f"todo[{j}] = {todo[j]} is not a shard index (0..{n - 1})")


def _check_csr(off: Sequence[int], nodes: Sequence[int], n: int, m: int, what: str) -> None:
    if len(off) != n + 1:
        raise ValueError(f"{what}_offsets has {len(off)} entries, expected n_shards + 1 = {n + 1}")
    if off[0] != 0:
        raise ValueError(f"{what}_offsets[0] is {off[0]}, expected 0")
    for s in range(n):
        if off[s + 1] < off[s]:
            raise ValueError(f"{what}_offsets decrease at shard {s} ({off[s]} > {off[s + 1]})")
    if off[n] != len(nodes):
        raise ValueError(
            f"{what}_offsets end at {off[n]} but {what}_nodes has {len(nodes)} entries"
        )
    for j in range(len(nodes)):
        if not 0 <= nodes[j] < m:
            raise ValueError(f"{what}_nodes[{j}] = {nodes[j]} is not a node index (0..{m - 1})")
