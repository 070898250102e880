"""Dask's distributed LocalCluster on trivial tasks, as bench/test_bench_jobs.py measures jobs.

Run as `python -m bench._dask_jobs`: two worker processes of one thread each, bound to
127.0.0.1, no dashboard. It prints one JSON line: the p50 seconds of one task from submit to
its result (`latency_p50`), and the median tasks/s of BATCH tasks submitted at once until all
are done (`rate`). `--isolated` first brings up the loopback device: the bench runs this under
`unshare -n` (a network namespace of its own, nothing but loopback) where it may.
"""

from __future__ import annotations

import fcntl
import json
import socket
import statistics
import struct
import sys
import time

LATENCY_ROUNDS = 60
BATCH = 50
BATCH_ROUNDS = 5
WARMUP = 5
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """Bring `lo` up (a new network namespace starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def trivial(arg: str) -> str:
    """The task: what the echo module does with its argument, less the sandbox."""
    return f"{arg}\n"


def measure() -> dict[str, float]:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        times = []
        for i in range(WARMUP + LATENCY_ROUNDS):
            start = time.perf_counter()
            assert client.submit(trivial, "bench", pure=False).result() == "bench\n"
            if i >= WARMUP:
                times.append(time.perf_counter() - start)
        rates = []
        for i in range(1 + BATCH_ROUNDS):
            start = time.perf_counter()
            futures = [client.submit(trivial, f"bench {n}", pure=False) for n in range(BATCH)]
            assert len(client.gather(futures)) == BATCH
            if i:
                rates.append(BATCH / (time.perf_counter() - start))
    return {"latency_p50": statistics.median(times), "rate": statistics.median(rates)}


if __name__ == "__main__":
    if "--isolated" in sys.argv:
        loopback_up()
    print(json.dumps(measure()))
