"""A WASM module that writes N MiB of pseudo-random bytes to outputs/big.bin (an LCG, so the
bytes are known: the first two 32-bit words are 1015568748 and 1586005467)."""

from __future__ import annotations

_WAT = """
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 17)
  (data (i32.const 64) "big.bin")
  (func (export "_start")
    (local $i i32) (local $j i32) (local $x i32)
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 7) (i32.const 9)
          (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 20))
      (then unreachable))
    (local.set $x (i32.const 1))
    (loop $chunk
      (local.set $j (i32.const 0))
      (loop $fill
        (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1664525))
                               (i32.const 1013904223)))
        (i32.store (i32.add (i32.const 65536) (local.get $j)) (local.get $x))
        (local.set $j (i32.add (local.get $j) (i32.const 4)))
        (br_if $fill (i32.lt_u (local.get $j) (i32.const 1048576))))
      (i32.store (i32.const 8) (i32.const 65536))
      (i32.store (i32.const 12) (i32.const 1048576))
      (drop (call $fd_write (i32.load (i32.const 20)) (i32.const 8) (i32.const 1) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $chunk (i32.lt_u (local.get $i) (i32.const MIB_COUNT))))))
"""


def big_wat(mib: int) -> str:
    """The module's text: it writes `mib` MiB (1 to 4095)."""
    if not 0 < mib < 4096:
        raise ValueError(f"1 to 4095 MiB, not {mib}")
    return _WAT.replace("MIB_COUNT", str(mib))
