"""The main job, end to end through the real command-line tools.

Adds the sample folder to a fresh node data directory, prints its CIDs (the same ones
`ipfs add -r --hidden` prints), reads a file back by CID, and moves the whole DAG to a
second data directory as a CAR archive.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CTL = str(Path(sys.executable).with_name("bacalhauctl"))


def sh(*args: str, data_dir: Path, stdin: bytes | None = None) -> bytes:
    shown = " ".join(shlex.quote(a) for a in ("bacalhauctl", *args))
    print(f"$ {shown}", flush=True)
    env = dict(os.environ, BACALHAU_DATA_DIR=str(data_dir))
    proc = subprocess.run([CTL, *args], input=stdin, capture_output=True, env=env, check=False)
    sys.stderr.write(proc.stderr.decode())
    if proc.returncode != 0:
        sys.exit(proc.returncode)
    return proc.stdout


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bacalhau-demo-") as tmp:
        node_a, node_b = Path(tmp) / "node-a", Path(tmp) / "node-b"
        sample = HERE / "sample"
        out = sh("add", "--local", str(sample), data_dir=node_a).decode()
        print(out, end="")
        cids = {line.split()[2]: line.split()[1] for line in out.splitlines()}
        root = cids["sample"]
        hello = sh("cat", "--local", cids["sample/hello.txt"], data_dir=node_a)
        print(hello.decode(), "\n")
        car = sh("car", "export", root, data_dir=node_a)
        print(f"({len(car)} bytes of CAR v1)")
        print(sh("car", "import", "-", data_dir=node_b, stdin=car).decode(), end="")
        back = sh("cat", "--local", cids["sample/notes/data.csv"], data_dir=node_b)
        print(back.decode(), end="")
        print(f"\nroot CID of the sample folder: {root}")


if __name__ == "__main__":
    main()
