"""The main job: a WASM job through a 3-node devstack, with the real command-line tools.

Starts `bacalhaud devstack --nodes 3`, submits `examples/wasm/echo.wasm` to node-0 with a
label that only node-2 has (so it runs on another node), shows the job, downloads the result
from the network and prints its files, then stops the nodes.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def ctl(*args: str, api: str) -> str:
    print("$ " + " ".join(shlex.quote(a) for a in ("bacalhauctl", *args)), flush=True)
    env = dict(os.environ, BACALHAU_API=api)
    proc = subprocess.run([str(BIN / "bacalhauctl"), *args], capture_output=True, env=env)
    print(proc.stdout.decode(), end="", flush=True)
    sys.stderr.write(proc.stderr.decode())
    if proc.returncode != 0:
        raise SystemExit(proc.returncode)
    return proc.stdout.decode()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bacalhau-devstack-demo-") as tmp:
        print("$ bacalhaud devstack --nodes 3", flush=True)
        dev = subprocess.Popen(
            [str(BIN / "bacalhaud"), "devstack", "--nodes", "3", "--data-dir", f"{tmp}/nodes"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert dev.stdout is not None
            api = ""
            for line in dev.stdout:  # the devstack prints its nodes, then the export line
                print(line, end="", flush=True)
                if line.startswith("export BACALHAU_API="):
                    api = line.strip().split("=", 1)[1]
                    break
            if not api:
                raise SystemExit("devstack did not start")
            echo = str(HERE / "wasm" / "echo.wasm")
            job_id = ctl(
                "wasm", "run", "--labels", "devstack-node=2", echo, "hello", "from", "wasm",
                api=api,
            ).split()[0]  # fmt: skip
            ctl("describe", job_id, api=api)
            out = Path(tmp) / "result"
            ctl("get", job_id, "--output-dir", str(out), api=api)
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                print(f"--- {path.relative_to(out)}: {path.read_text()!r}")
        finally:
            dev.send_signal(signal.SIGTERM)
            dev.wait(timeout=30)


if __name__ == "__main__":
    main()
