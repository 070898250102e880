"""`bacalhaud devstack`: N `bacalhaud serve` processes on loopback, each peered with the ones
before it, stopped together."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bacalhau.cli._serve import BAD_ACTOR_ENV
from bacalhau.errors import BacalhauError, UsageError
from bacalhau.layout import ADDRESS_FILE

START_TIMEOUT_S = 30.0


def _wait_address(proc: subprocess.Popen[bytes], data_dir: Path) -> str:
    """The node's address once it serves; raises if the process dies or takes too long."""
    path = data_dir / ADDRESS_FILE
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text().strip()
        if proc.poll() is not None:
            raise BacalhauError(f"node in {data_dir} exited with code {proc.returncode}")
        time.sleep(0.02)  # polling a child process's startup, not a test
    raise BacalhauError(f"node in {data_dir} did not start within {START_TIMEOUT_S:g} s")


def devstack(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= 64:
        raise UsageError(f"--nodes must be between 1 and 64, not {args.nodes}")
    if not 0 <= args.bad_actors < args.nodes:
        raise UsageError(
            f"--bad-actors must be 0 to {args.nodes - 1} (node-0 stays honest), "
            f"not {args.bad_actors}"
        )
    temp = args.data_dir is None
    root = Path(tempfile.mkdtemp(prefix="bacalhau-devstack-")) if temp else args.data_dir
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    procs: list[subprocess.Popen[bytes]] = []
    addresses: list[str] = []
    try:
        for i in range(args.nodes):
            data_dir = root / f"node-{i}"
            data_dir.mkdir(parents=True, exist_ok=True)
            (data_dir / ADDRESS_FILE).unlink(missing_ok=True)
            cmd = [
                sys.executable,
                "-m",
                "bacalhau.cli.daemon",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                "0",
                "--engines",
                args.engines,
                "--docker-pull",
                args.docker_pull,
                "--log-level",
                args.log_level,
                "--labels",
                f"devstack-node={i}",
            ]
            for addr in addresses:
                cmd += ["--peer", addr]
            if args.otlp_endpoint:
                cmd += ["--otlp-endpoint", args.otlp_endpoint]
            log = open(data_dir / "node.log", "ab")  # noqa: SIM115 - lives as long as the node
            env = dict(os.environ)
            env.pop(BAD_ACTOR_ENV, None)
            if i >= args.nodes - args.bad_actors:
                env[BAD_ACTOR_ENV] = "1"
            procs.append(
                subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True, env=env)
            )
            addresses.append(_wait_address(procs[-1], data_dir))
        print(f"devstack: {args.nodes} nodes running (data in {root})")
        for i, addr in enumerate(addresses):
            bad = "  BAD ACTOR" if i >= args.nodes - args.bad_actors else ""
            print(f"  node-{i}  {addr}  log: {root / f'node-{i}' / 'node.log'}{bad}")
        print(f"export BACALHAU_API={addresses[0]}", flush=True)
        while not stop["now"]:
            for i, proc in enumerate(procs):
                if proc.poll() is not None:
                    raise BacalhauError(
                        f"node-{i} exited with code {proc.returncode}",
                        hint=f"see {root / f'node-{i}' / 'node.log'}",
                    )
            time.sleep(0.2)  # supervising children until a signal arrives
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if temp:
            shutil.rmtree(root, ignore_errors=True)
