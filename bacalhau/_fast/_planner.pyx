# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The shard planner, compiled: which node runs each shard.

Twin of ``_planner_py.py``, whose docstring states the rules: same names, identical
assignments, the same ``ValueError`` messages. Input is checked with the GIL held; the order
(an LSD radix argsort of the sizes) and the placement loop run in C without it, over an indexed
binary heap of the nodes keyed by (load, index) and a heap, keyed by capacity, of the nodes too
small for the current shard. The input is copied first, and every index in the copy is checked
before that loop, which then never reads outside its arrays (even if the caller's arrays change
meanwhile in another thread).
"""

from cpython cimport array as carray
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from array import array


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define _bac_prefetch(p) __builtin_prefetch(p)
    #else
    #define _bac_prefetch(p) ((void)0)
    #endif
    """
    void _prefetch "_bac_prefetch"(const void* p) noexcept nogil

MAX_LOAD = 1 << 62
MAX_COUNT = (1 << 31) - 1

cdef carray.array _INT_TEMPLATE = array("i")


def plan(
    shard_sizes,
    holder_offsets,
    holder_nodes,
    node_slots,
    node_capacity,
    node_load,
    todo=None,
    exclude_offsets=None,
    exclude_nodes=None,
):
    """Node index per shard (-1: not placed); see the module docstring. Raises ValueError."""
    sizes_a = _ints(shard_sizes, "q", "shard_sizes")
    h_off_a = _ints(holder_offsets, "q", "holder_offsets")
    h_nodes_a = _ints(holder_nodes, "i", "holder_nodes")
    slots_a = _ints(node_slots, "q", "node_slots")
    cap_a = _ints(node_capacity, "q", "node_capacity")
    load_a = _ints(node_load, "q", "node_load")
    if (exclude_offsets is None) != (exclude_nodes is None):
        raise ValueError("exclude_offsets and exclude_nodes go together: give both or neither")
    cdef bint has_x = exclude_offsets is not None
    x_off_a = _ints(exclude_offsets, "q", "exclude_offsets") if has_x else array("q", [0])
    x_nodes_a = _ints(exclude_nodes, "i", "exclude_nodes") if has_x else array("i")
    cdef bint has_todo = todo is not None
    todo_a = _ints(todo, "i", "todo") if has_todo else array("i")

    cdef const long long[::1] sizes = sizes_a
    cdef const long long[::1] h_off = h_off_a
    cdef const int[::1] h_nodes = h_nodes_a
    cdef const long long[::1] slots_in = slots_a
    cdef const long long[::1] cap_in = cap_a
    cdef const long long[::1] load_in = load_a
    cdef const long long[::1] x_off = x_off_a
    cdef const int[::1] x_nodes = x_nodes_a
    cdef const int[::1] todo_v = todo_a
    cdef Py_ssize_t n = sizes.shape[0], m = slots_in.shape[0], j

    if n > MAX_COUNT or m > MAX_COUNT:
        raise ValueError(f"at most {MAX_COUNT} shards and {MAX_COUNT} nodes")
    if cap_in.shape[0] != m or load_in.shape[0] != m:
        raise ValueError(
            f"node_slots, node_capacity and node_load differ in length ({m}, {cap_in.shape[0]}, "
            f"{load_in.shape[0]})"
        )
    for j in range(n):
        if sizes[j] < 0:
            raise ValueError(f"shard_sizes[{j}] is negative ({sizes[j]})")
    for j in range(m):
        if slots_in[j] < 0:
            raise ValueError(f"node_slots[{j}] is negative ({slots_in[j]})")
        if cap_in[j] < 0:
            raise ValueError(f"node_capacity[{j}] is negative ({cap_in[j]})")
        if load_in[j] < 0 or load_in[j] >= MAX_LOAD:
            raise ValueError(f"node_load[{j}] is not in 0..2**62-1 ({load_in[j]})")
    _check_csr(h_off, h_nodes, n, m, "holder")
    if has_x:
        _check_csr(x_off, x_nodes, n, m, "exclude")
    if has_todo:
        for j in range(todo_v.shape[0]):
            if todo_v[j] < 0 or todo_v[j] >= n:
                raise ValueError(f"todo[{j}] = {todo_v[j]} is not a shard index (0..{n - 1})")

    cdef carray.array out_a = carray.clone(_INT_TEMPLATE, n, False)
    cdef int32_t* out = <int32_t*>out_a.data.as_ints
    cdef _Plan p
    p.n = n
    p.m = m
    p.sizes = _qp(sizes)
    p.h_off = _qp(h_off)
    p.h_nodes = _ip(h_nodes)
    p.has_x = has_x
    p.x_off = _qp(x_off)
    p.x_nodes = _ip(x_nodes)
    p.has_todo = has_todo
    p.todo = _ip(todo_v)
    p.n_todo = todo_v.shape[0]
    p.slots_in = _qp(slots_in)
    p.cap_in = _qp(cap_in)
    p.load_in = _qp(load_in)
    p.out = out
    cdef int rc
    with nogil:
        rc = _run(&p)
    if rc != 0:
        raise MemoryError("no memory for the shard planner")
    return out_a


cdef struct _Plan:
    Py_ssize_t n, m, n_todo
    const long long* sizes
    const long long* h_off
    const int* h_nodes
    bint has_x
    const long long* x_off
    const int* x_nodes
    bint has_todo  # False: plan every shard
    const int* todo
    const long long* slots_in
    const long long* cap_in
    const long long* load_in
    int32_t* out


cdef inline const long long* _qp(const long long[::1] v) noexcept:
    return &v[0] if v.shape[0] > 0 else NULL


cdef inline const int* _ip(const int[::1] v) noexcept:
    return &v[0] if v.shape[0] > 0 else NULL


def _ints(values, code, name):
    """A private copy of ``values`` as an array of ``code``; ValueError when a value does not fit.

    Private, so that no other thread can change what was checked while the GIL is released.
    """
    if isinstance(values, array) and values.typecode == code:
        return values[:]
    try:
        return array(code, values)
    except OverflowError:
        bits = 64 if code == "q" else 32
        raise ValueError(f"{name}: a value does not fit in a signed {bits}-bit integer") from None


cdef _check_csr(const long long[::1] off, const int[::1] nodes, Py_ssize_t n, Py_ssize_t m, str what):
    cdef Py_ssize_t s, j, total = nodes.shape[0]
    if off.shape[0] != n + 1:
        raise ValueError(
            f"{what}_offsets has {off.shape[0]} entries, expected n_shards + 1 = {n + 1}"
        )
    if off[0] != 0:
        raise ValueError(f"{what}_offsets[0] is {off[0]}, expected 0")
    for s in range(n):
        if off[s + 1] < off[s]:
            raise ValueError(f"{what}_offsets decrease at shard {s} ({off[s]} > {off[s + 1]})")
    if off[n] != total:
        raise ValueError(f"{what}_offsets end at {off[n]} but {what}_nodes has {total} entries")
    for j in range(total):
        if nodes[j] < 0 or nodes[j] >= m:
            raise ValueError(f"{what}_nodes[{j}] = {nodes[j]} is not a node index (0..{m - 1})")


# --- the placement loop: C only, no GIL ---------------------------------------------------


cdef struct _Nodes:
    int64_t* slots
    int64_t* cap
    int64_t* load
    int32_t* heap  # min-heap of node indices by (load, index)
    int32_t* pos  # pos[i]: where node i sits in heap, -1 when not there
    Py_ssize_t hn
    int32_t* wait  # max-heap of node indices by capacity: too small for the current shard
    Py_ssize_t wn


cdef inline bint _less(const int64_t* load, int32_t a, int32_t b) noexcept nogil:
    return load[a] < load[b] or (load[a] == load[b] and a < b)


cdef inline void _put(_Nodes* t, Py_ssize_t p, int32_t i) noexcept nogil:
    t.heap[p] = i
    t.pos[i] = <int32_t>p


cdef void _up(_Nodes* t, Py_ssize_t p) noexcept nogil:
    cdef int32_t i = t.heap[p]
    cdef Py_ssize_t q
    while p > 0:
        q = (p - 1) >> 1
        if not _less(t.load, i, t.heap[q]):
            break
        _put(t, p, t.heap[q])
        p = q
    _put(t, p, i)


cdef void _down(_Nodes* t, Py_ssize_t p) noexcept nogil:
    cdef int32_t i = t.heap[p]
    cdef Py_ssize_t c
    while True:
        c = 2 * p + 1
        if c >= t.hn:
            break
        if c + 1 < t.hn and _less(t.load, t.heap[c + 1], t.heap[c]):
            c += 1
        if not _less(t.load, t.heap[c], i):
            break
        _put(t, p, t.heap[c])
        p = c
    _put(t, p, i)


cdef inline void _push(_Nodes* t, int32_t i) noexcept nogil:
    t.hn += 1
    _put(t, t.hn - 1, i)
    _up(t, t.hn - 1)


cdef void _remove(_Nodes* t, Py_ssize_t p) noexcept nogil:
    cdef int32_t i = t.heap[p]
    t.hn -= 1
    t.pos[i] = -1
    if p < t.hn:
        i = t.heap[t.hn]
        _put(t, p, i)
        _down(t, p)
        if t.pos[i] == p:  # did not go down: it may have to go up
            _up(t, p)


cdef void _wait_push(_Nodes* t, int32_t i) noexcept nogil:
    cdef Py_ssize_t p = t.wn, q
    t.wn += 1
    while p > 0:
        q = (p - 1) >> 1
        if t.cap[t.wait[q]] >= t.cap[i]:
            break
        t.wait[p] = t.wait[q]
        p = q
    t.wait[p] = i


cdef int32_t _wait_pop(_Nodes* t) noexcept nogil:
    cdef int32_t top = t.wait[0], i
    cdef Py_ssize_t p = 0, c
    t.wn -= 1
    if t.wn > 0:
        i = t.wait[t.wn]
        while True:
            c = 2 * p + 1
            if c >= t.wn:
                break
            if c + 1 < t.wn and t.cap[t.wait[c + 1]] > t.cap[t.wait[c]]:
                c += 1
            if t.cap[t.wait[c]] <= t.cap[i]:
                break
            t.wait[p] = t.wait[c]
            p = c
        t.wait[p] = i
    return top


cdef bint _order(uint64_t* key, int32_t* idx, uint64_t* key2, int32_t* idx2, Py_ssize_t cnt) noexcept nogil:
    """Stable LSD radix sort of (key, idx) by key, ascending, byte by byte.

    Returns whether the sorted pairs ended up in key2 and idx2 rather than key and idx.
    """
    cdef bint swapped = False
    cdef size_t[8][256] counts
    cdef size_t total, c
    cdef Py_ssize_t j
    cdef int b, d, shift
    cdef uint64_t* kt
    cdef int32_t* it
    memset(counts, 0, sizeof(counts))
    for j in range(cnt):
        for b in range(8):
            counts[b][(key[j] >> (8 * b)) & 0xFF] += 1
    for b in range(8):
        shift = 8 * b
        if cnt == 0 or counts[b][(key[0] >> shift) & 0xFF] == <size_t>cnt:
            continue  # every key has the same byte here
        total = 0
        for d in range(256):
            c = counts[b][d]
            counts[b][d] = total
            total += c
        for j in range(cnt):
            d = (key[j] >> shift) & 0xFF
            key2[counts[b][d]] = key[j]
            idx2[counts[b][d]] = idx[j]
            counts[b][d] += 1
        kt = key
        key = key2
        key2 = kt
        it = idx
        idx = idx2
        idx2 = it
        swapped = not swapped
    return swapped


cdef int _run(_Plan* p) noexcept nogil:
    cdef Py_ssize_t n = p.n, m = p.m, cnt = 0, j, k, na
    cdef int32_t s, i, h, best
    cdef int64_t size
    cdef _Nodes t
    cdef unsigned char* wanted = NULL
    cdef uint64_t* keys = <uint64_t*>malloc((2 * n + 1) * sizeof(uint64_t))
    cdef int32_t* idx = <int32_t*>malloc((2 * n + 1) * sizeof(int32_t))
    cdef int64_t* node64 = <int64_t*>malloc((3 * m + 1) * sizeof(int64_t))
    cdef int32_t* node32 = <int32_t*>malloc((5 * m + 1) * sizeof(int32_t))
    cdef int32_t* order
    cdef uint64_t* order_key
    cdef int32_t* stamp
    cdef int32_t* aside
    if keys == NULL or idx == NULL or node64 == NULL or node32 == NULL:
        free(keys)
        free(idx)
        free(node64)
        free(node32)
        return -1
    if n > 0:
        memset(p.out, 0xFF, n * sizeof(int32_t))  # -1 everywhere

    if not p.has_todo:
        for j in range(n):
            idx[j] = <int32_t>j
        cnt = n
    else:
        wanted = <unsigned char*>malloc(n + 1)
        if wanted == NULL:
            free(keys)
            free(idx)
            free(node64)
            free(node32)
            return -1
        memset(wanted, 0, n + 1)
        for j in range(p.n_todo):
            wanted[p.todo[j]] = 1
        for j in range(n):
            if wanted[j]:
                idx[cnt] = <int32_t>j
                cnt += 1
        free(wanted)
    for j in range(cnt):
        keys[j] = ~(<uint64_t>p.sizes[idx[j]])  # ascending ~size: largest first
    if _order(keys, idx, keys + n, idx + n, cnt):
        order, order_key = idx + n, keys + n
    else:
        order, order_key = idx, keys

    t.slots = node64
    t.cap = node64 + m
    t.load = node64 + 2 * m
    t.heap = node32
    t.pos = node32 + m
    t.wait = node32 + 2 * m
    stamp = node32 + 3 * m
    aside = node32 + 4 * m
    if m > 0:
        memcpy(t.slots, p.slots_in, m * sizeof(int64_t))
        memcpy(t.cap, p.cap_in, m * sizeof(int64_t))
        memcpy(t.load, p.load_in, m * sizeof(int64_t))
    t.hn = 0
    t.wn = 0
    for j in range(m):
        stamp[j] = -1
        t.pos[j] = -1
        if t.slots[j] > 0:
            _put(&t, t.hn, <int32_t>j)
            t.hn += 1
    j = t.hn // 2 - 1
    while j >= 0:
        _down(&t, j)
        j -= 1

    for k in range(cnt):
        # Shards come in size order, so their rows are scattered over memory: fetch the rows
        # of the shards a few places ahead while this one is placed.
        if k + 16 < cnt:
            s = order[k + 16]
            _prefetch(&p.h_off[s])
            _prefetch(&p.out[s])
            if p.has_x:
                _prefetch(&p.x_off[s])
        if k + 8 < cnt:
            s = order[k + 8]
            _prefetch(&p.h_nodes[p.h_off[s]])
            if p.has_x:
                _prefetch(&p.x_nodes[p.x_off[s]])
        s = order[k]
        size = <int64_t>(~order_key[k])
        while t.wn > 0 and t.cap[t.wait[0]] >= size:
            _push(&t, _wait_pop(&t))
        if p.has_x:
            for j in range(p.x_off[s], p.x_off[s + 1]):
                stamp[p.x_nodes[j]] = <int32_t>k
        best = -1
        for j in range(p.h_off[s], p.h_off[s + 1]):
            h = p.h_nodes[j]
            if stamp[h] != k and t.slots[h] > 0 and t.cap[h] >= size:
                if best < 0 or _less(t.load, h, best):
                    best = h
        if best < 0:
            na = 0
            while t.hn > 0:
                i = t.heap[0]
                if t.cap[i] < size:
                    _remove(&t, 0)
                    _wait_push(&t, i)
                elif stamp[i] == k:
                    _remove(&t, 0)
                    aside[na] = i
                    na += 1
                else:
                    best = i
                    break
            for j in range(na):
                _push(&t, aside[j])
        if best >= 0:
            p.out[s] = best
            t.slots[best] -= 1
            t.cap[best] -= size
            t.load[best] += 1
            if t.pos[best] >= 0:
                if t.slots[best] == 0:
                    _remove(&t, t.pos[best])
                else:
                    _down(&t, t.pos[best])
    free(keys)
    free(idx)
    free(node64)
    free(node32)
    return 0
