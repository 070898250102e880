"""Host versions of the WASI preview 1 clock, random and poll calls.

They shadow wasmtime's own (`Linker.allow_shadowing`) for two reasons:

- determinism: in a deterministic run, clocks read a virtual time that starts at a fixed
  epoch and advances by a fixed tick per read (and by the length of every sleep), random
  bytes come from a ChaCha20 stream with a fixed key, and sleeps return at once having
  advanced the virtual time, so a program sees the same values on every node;
- bounded sleeps: wasmtime's `poll_oneoff` blocks the thread, where neither epochs nor a
  cancel can reach it; here a real sleep waits on an event that a timeout or cancel sets.
  Other runs keep wasmtime's own clocks and randomness; only `poll_oneoff` is replaced.

Deterministic clocks: realtime reads `EPOCH_NS + t`, the monotonic, process and thread clocks
read `t` (virtual nanoseconds since the run started). Poll: subscriptions on file descriptors
are reported ready at once (stdin is empty and files are always ready); clock subscriptions
are due after their (relative or absolute) timeout, and the call returns when the first is due.

Each call from wasm into these Python functions costs some 20-30 us (wasmtime-py's callback
path), against about 1 us for wasmtime's own: cheap for sleeps and the odd clock read, slow
for a program that reads the clock in a tight loop.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from collections.abc import Callable, Container
from typing import Any

import wasmtime
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

WASI = "wasi_snapshot_preview1"
EPOCH_NS = 946_684_800 * 10**9  # 2000-01-01T00:00:00Z, the deterministic realtime start
TICK_NS = 1_000  # virtual time that passes with each clock read in a deterministic run
RESOLUTION_NS = 1_000
SEED = hashlib.sha256(b"bacalhau deterministic python v1").digest()

ERRNO_SUCCESS = 0
ERRNO_FAULT = 21
ERRNO_INVAL = 28
CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_PROCESS, CLOCK_THREAD = 0, 1, 2, 3
EVENTTYPE_CLOCK = 0
SUBCLOCKFLAG_ABSTIME = 1
_SUB_SIZE, _EVENT_SIZE = 48, 32
_SUB = struct.Struct("<QB")  # userdata, tag
_SUB_CLOCK = struct.Struct("<IxxxxQQH")  # at 16: clock id, timeout, precision, flags
_EVENT = struct.Struct("<QHBxxxxxQHxxxxxx")  # userdata, errno, type, nbytes, flags
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")

_PARAMS = {  # "i": i32, "I": i64; every one returns an errno (i32)
    "clock_time_get": "iIi",
    "clock_res_get": "ii",
    "random_get": "ii",
    "poll_oneoff": "iiii",
}


def _signature(name: str) -> wasmtime.FuncType:
    # Made afresh for each linker: a FuncType is bound to the first engine that uses it, and
    # wasmtime aborts the process if one is used with another engine.
    params = [wasmtime.ValType.i64() if p == "I" else wasmtime.ValType.i32() for p in _PARAMS[name]]
    return wasmtime.FuncType(params, [wasmtime.ValType.i32()])


class Clocks:
    """The clocks and sleeps one run sees; deterministic or real (see the module doc).

    `stop`, once set, ends real sleeps at once (the run is being timed out or cancelled).
    Make it just before `Store.set_wasi`: wasmtime's monotonic clock counts from then, and a
    real run's absolute deadlines are read against it. `memory`, once the instance exists,
    saves looking the guest's memory up on every call.
    """

    def __init__(self, *, deterministic: bool, stop: threading.Event) -> None:
        self.deterministic = deterministic
        self.stop = stop
        self.memory: wasmtime.Memory | None = None
        self._virtual_ns = 0
        self._start_ns = time.monotonic_ns()
        self._random = (
            Cipher(algorithms.ChaCha20(SEED, bytes(16)), mode=None).encryptor()
            if deterministic
            else None
        )

    def now(self, clock: int) -> int | None:
        """The clock's time in ns (None: no such clock); a deterministic read ticks it."""
        if clock not in (CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_PROCESS, CLOCK_THREAD):
            return None
        if self.deterministic:
            self._virtual_ns += TICK_NS
            t = self._virtual_ns
            return EPOCH_NS + t if clock == CLOCK_REALTIME else t
        if clock == CLOCK_REALTIME:
            return time.time_ns()
        if clock == CLOCK_MONOTONIC:
            return time.monotonic_ns() - self._start_ns
        return time.thread_time_ns()

    def sleep(self, ns: int) -> None:
        """Let `ns` pass: virtual time in a deterministic run; else wait (until `stop`)."""
        if ns <= 0:
            return
        if self.deterministic:
            self._virtual_ns += ns
        else:
            self.stop.wait(ns / 1e9)

    def random(self, n: int) -> bytes:
        """`n` random bytes: the seeded stream, or the host's."""
        if self._random is not None:
            return self._random.update(bytes(n))
        return os.urandom(n)


def define(linker: wasmtime.Linker, clocks: Clocks, imported: Container[str] | None = None) -> None:
    """Shadow WASI's `poll_oneoff` in `linker` with `clocks`' version, and in a
    deterministic run the clock and random calls too. Call after `linker.define_wasi()`.
    `imported`: the WASI functions the module imports, if known: only those are shadowed
    (a module that never sleeps or reads a clock pays nothing for them)."""
    funcs: dict[str, Callable[..., int]] = {"poll_oneoff": _poll_oneoff(clocks)}
    if clocks.deterministic:
        funcs["clock_time_get"] = _clock_time_get(clocks)
        funcs["clock_res_get"] = _clock_res_get(clocks)
        funcs["random_get"] = _random_get(clocks)
    if imported is not None:
        funcs = {name: f for name, f in funcs.items() if name in imported}
    if not funcs:
        return
    linker.allow_shadowing = True
    for name, func in funcs.items():
        linker.define_func(WASI, name, _signature(name), func, access_caller=True)
    linker.allow_shadowing = False


def _memory(caller: Any, clocks: Clocks) -> wasmtime.Memory:
    if clocks.memory is not None:
        return clocks.memory
    memory = caller["memory"]
    assert isinstance(memory, wasmtime.Memory)
    return memory


def _clock_time_get(clocks: Clocks) -> Callable[..., int]:
    def clock_time_get(caller: Any, clock: int, _precision: int, out: int) -> int:
        t = clocks.now(clock)
        if t is None:
            return ERRNO_INVAL
        _memory(caller, clocks).write(caller, _U64.pack(t), out)
        return ERRNO_SUCCESS

    return clock_time_get


def _clock_res_get(clocks: Clocks) -> Callable[..., int]:
    def clock_res_get(caller: Any, clock: int, out: int) -> int:
        if clock not in (CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_PROCESS, CLOCK_THREAD):
            return ERRNO_INVAL
        _memory(caller, clocks).write(caller, _U64.pack(RESOLUTION_NS), out)
        return ERRNO_SUCCESS

    return clock_res_get


def _random_get(clocks: Clocks) -> Callable[..., int]:
    def random_get(caller: Any, buf: int, n: int) -> int:
        _memory(caller, clocks).write(caller, clocks.random(n), buf)
        return ERRNO_SUCCESS

    return random_get


def _poll_oneoff(clocks: Clocks) -> Callable[..., int]:
    def poll_oneoff(caller: Any, subs_ptr: int, events_ptr: int, n: int, nevents_ptr: int) -> int:
        if n == 0:
            return ERRNO_INVAL
        memory = _memory(caller, clocks)
        subs = memory.read(caller, subs_ptr, subs_ptr + n * _SUB_SIZE)
        if len(subs) != n * _SUB_SIZE:
            return ERRNO_FAULT
        ready: list[tuple[int, int, int]] = []  # (userdata, errno, type) of fd events
        waits: list[tuple[int, int, int]] = []  # (ns to wait, userdata, errno)
        for i in range(n):
            userdata, tag = _SUB.unpack_from(subs, i * _SUB_SIZE)
            if tag != EVENTTYPE_CLOCK:
                ready.append((userdata, ERRNO_SUCCESS, tag))
                continue
            clock, timeout, _precision, flags = _SUB_CLOCK.unpack_from(subs, i * _SUB_SIZE + 16)
            if flags & SUBCLOCKFLAG_ABSTIME:
                now = clocks.now(clock)
                wait, errno = (0, ERRNO_INVAL) if now is None else (timeout - now, ERRNO_SUCCESS)
            else:
                wait, errno = timeout, ERRNO_SUCCESS
            waits.append((max(wait, 0), userdata, errno))
        events = [(u, e, t) for u, e, t in ready]
        if not events and waits:
            first = min(w for w, _, _ in waits)
            clocks.sleep(first)
            events = [(u, e, EVENTTYPE_CLOCK) for w, u, e in waits if w <= first]
        else:
            events += [(u, e, EVENTTYPE_CLOCK) for w, u, e in waits if w <= 0]
        out = b"".join(_EVENT.pack(u, e, t, 0, 0) for u, e, t in events)
        memory.write(caller, out, events_ptr)
        memory.write(caller, _U32.pack(len(events)), nevents_ptr)
        return ERRNO_SUCCESS

    return poll_oneoff
