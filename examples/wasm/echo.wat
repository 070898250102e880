;; echo: a small WASI command used by the README, the demo and the tests.
;;   echo ARGS...   prints ARGS joined by spaces to stdout, and writes the same line to
;;                  result.txt in the first preopened folder (fd 3: /outputs by default)
;;   echo fail      prints "failing as asked" to stderr and exits with code 3
;;   echo spin      loops forever (until timed out or cancelled)
;;   echo slow ...  counts down from 50,000,000 first (a fraction of a second), then echoes
;;   echo long ...  counts down from 1,000,000,000 first (seconds), then echoes
;;   echo cat NAME  prints (up to 4 KiB of) the file NAME in the first preopened folder (fd 3:
;;                  the first input, when the job has inputs); exit code 2 if it cannot
;; Build: python -c "import wasmtime,sys; sys.stdout.buffer.write(wasmtime.wat2wasm(open('echo.wat').read()))" > echo.wasm
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0: argc, 4: argv buffer size, 8: iovec, 16: bytes written, 20: opened fd,
  ;; 64: file name, 80: failure message, 1024: argv pointers, 4096: argv buffer
  (data (i32.const 64) "result.txt")
  (data (i32.const 80) "failing as asked\n")
  (data (i32.const 100) "cannot open the file\n")

  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 8) (local.get $ptr))
    (i32.store (i32.const 12) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 8) (i32.const 1) (i32.const 16))))

  ;; Is the NUL-terminated argument at $p the 4-letter word $w (little-endian)?
  (func $is (param $p i32) (param $w i32) (result i32)
    (i32.and
      (i32.eq (i32.load (local.get $p)) (local.get $w))
      (i32.eqz (i32.load8_u offset=4 (local.get $p)))))

  ;; Print the file named by the NUL-terminated string at $name, relative to fd 3; exit.
  (func $cat (param $name i32)
    (local $end i32)
    (local.set $end (local.get $name))
    (block $found
      (loop $scan
        (br_if $found (i32.eqz (i32.load8_u (local.get $end))))
        (local.set $end (i32.add (local.get $end) (i32.const 1)))
        (br $scan)))
    (if (call $path_open (i32.const 3) (i32.const 0) (local.get $name)
          (i32.sub (local.get $end) (local.get $name)) (i32.const 0) (i64.const 2) (i64.const 0)
          (i32.const 0) (i32.const 20))
      (then
        (call $write (i32.const 2) (i32.const 100) (i32.const 21))
        (call $proc_exit (i32.const 2))))
    (i32.store (i32.const 8) (i32.const 8192))
    (i32.store (i32.const 12) (i32.const 4096))
    (drop (call $fd_read (i32.load (i32.const 20)) (i32.const 8) (i32.const 1) (i32.const 16)))
    (call $write (i32.const 1) (i32.const 8192) (i32.load (i32.const 16)))
    (call $proc_exit (i32.const 0)))

  (func (export "_start")
    (local $start i32) (local $end i32) (local $i i32)
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $args_get (i32.const 1024) (i32.const 4096)))
    (local.set $end (i32.add (i32.const 4096) (i32.load (i32.const 4))))
    (local.set $start (i32.sub (local.get $end) (i32.const 1)))
    (if (i32.gt_u (i32.load (i32.const 0)) (i32.const 1))
      (then
        (local.set $start (i32.load (i32.const 1028)))
        (if (call $is (local.get $start) (i32.const 0x6c696166))  ;; "fail"
          (then
            (call $write (i32.const 2) (i32.const 80) (i32.const 17))
            (call $proc_exit (i32.const 3))))
        (if (call $is (local.get $start) (i32.const 0x6e697073))  ;; "spin"
          (then (loop $forever (br $forever))))
        (if (call $is (local.get $start) (i32.const 0x776f6c73))  ;; "slow"
          (then (local.set $i (i32.const 50000000))))
        (if (i32.eq (i32.load (local.get $start)) (i32.const 0x00746163))  ;; "cat"
          (then (call $cat (i32.load (i32.const 1032)))))
        (if (call $is (local.get $start) (i32.const 0x676e6f6c))  ;; "long"
          (then (local.set $i (i32.const 1000000000))))
        (if (local.get $i)
          (then
            (loop $count
              (local.set $i (i32.sub (local.get $i) (i32.const 1)))
              (br_if $count (local.get $i)))))))
    ;; The arguments are NUL-terminated and contiguous: NULs become spaces, the last a newline.
    (local.set $i (local.get $start))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (if (i32.eqz (i32.load8_u (local.get $i)))
          (then (i32.store8 (local.get $i) (i32.const 32))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.store8 (i32.sub (local.get $end) (i32.const 1)) (i32.const 10))
    (call $write (i32.const 1) (local.get $start) (i32.sub (local.get $end) (local.get $start)))
    ;; O_CREAT|O_TRUNC; no output folder mounted means no fd 3, and no file.
    (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 10)
                   (i32.const 9) (i64.const 0x1fffffff) (i64.const 0) (i32.const 0) (i32.const 20)))
      (then
        (call $write (i32.load (i32.const 20)) (local.get $start)
          (i32.sub (local.get $end) (local.get $start)))))))
