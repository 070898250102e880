"""The real bacalhauctl: add, cat, car, and one-line errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult, assert_one_line_error, pattern

Ctl = Callable[..., CliResult]


def test_version(ctl: Ctl) -> None:
    res = ctl("version")
    assert res.returncode == 0 and res.stdout.startswith("bacalhauctl ")


def test_add_prints_each_entry_root_last(ctl: Ctl, tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"hello world")
    (root / "sub" / "big.bin").write_bytes(pattern(600000))
    (root / "empty").write_bytes(b"")
    res = ctl("add", str(root))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines == [
        "added Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD data/a.txt",
        "added QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH data/empty",
        "added QmWKdZuiD9zqoZFnLYbpV2Q5YhRCJWpqiVeYA8ygYEjcEe data/sub/big.bin",
        "added QmSMDeh45F3KW7C34TyVteVQkm1edkWa8u7aWxtaA6Ani7 data/sub",
        "added QmNXf1GUdKG5SDunDet2ih7Po1C3BqhwJH82eAXcoJXsaC data",
    ]
    big = ctl("cat", "QmWKdZuiD9zqoZFnLYbpV2Q5YhRCJWpqiVeYA8ygYEjcEe")
    assert big.returncode == 0 and big.stdout_bytes == pattern(600000)


def test_add_quiet_only_hash_stores_nothing(ctl: Ctl, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"hello world")
    res = ctl("add", "--only-hash", "-q", str(f))
    assert res.stdout == "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD\n"
    missing = ctl("cat", res.stdout.strip())
    assert_one_line_error(missing, "not in the local blockstore")


def test_add_cid_version_1(ctl: Ctl, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"hello world")
    res = ctl("add", "-q", "--cid-version", "1", str(f))
    assert res.stdout.strip() == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    res = ctl("add", "-q", "--cid-version", "1", "--no-raw-leaves", "--chunker", "size-4", str(f))
    assert res.stdout.startswith("bafybei")
    assert ctl("cat", res.stdout.strip()).stdout_bytes == b"hello world"


def test_car_roundtrip_between_nodes(ctl: Ctl, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "x").write_bytes(pattern(700000))
    root = ctl("add", "-q", str(src)).stdout.strip()
    exported = ctl("car", "export", root)
    assert exported.returncode == 0, exported.stderr
    other = tmp_path / "other-node"
    imported = ctl("car", "import", "-", stdin=exported.stdout_bytes, data=other)
    assert imported.returncode == 0, imported.stderr
    assert root in imported.stdout
    listing = ctl("add", "-q", "-n", str(src / "x")).stdout.strip()
    assert ctl("cat", listing, data=other).stdout_bytes == pattern(700000)
    assert_one_line_error(ctl("cat", root, data=other), "is a directory")
    out = tmp_path / "x.car"
    assert ctl("car", "export", root, "-o", str(out)).returncode == 0
    assert out.read_bytes() == exported.stdout_bytes


def test_bad_car_writes_nothing(ctl: Ctl, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(pattern(300000))
    root = ctl("add", "-q", str(src)).stdout.strip()
    car = ctl("car", "export", root).stdout_bytes
    other = tmp_path / "other"
    for bad, msg in (
        (car[:-100], "truncated"),
        (car[:-5] + bytes(5), "does not match"),
        (b"garbage!" * 10, "CAR"),
    ):
        res = ctl("car", "import", "-", stdin=bad, data=other)
        assert_one_line_error(res, msg)
        assert_one_line_error(ctl("cat", root, data=other), "not in the local blockstore")
    packs = other / "blocks" / "packs"
    assert all(p.stat().st_size == 0 for p in packs.iterdir())


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("add", "/no/such/path"), "no such file or directory"),
        (("cat", "not-a-cid"), "invalid CID"),
        (("cat", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQ"), "invalid CID"),
        (("add", "--chunker", "rabin", "."), "unsupported chunker"),
        (("add", "--cid-version", "0", "--raw-leaves", "."), "raw leaves need CIDv1"),
        (("car", "import", "/no/such.car"), "No such file"),
        (("frobnicate",), "invalid choice"),
        (("add",), "required"),
    ],
)
def test_bad_input_one_line(ctl: Ctl, args: tuple[str, ...], fragment: str) -> None:
    assert_one_line_error(ctl(*args), fragment)


def test_corrupt_block_on_disk(ctl: Ctl, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"precious")
    root = ctl("add", "-q", str(f)).stdout.strip()
    pack = tmp_path / "node" / "blocks" / "packs" / "000001.pack"
    data = bytearray(pack.read_bytes())
    data[-3] ^= 1
    pack.write_bytes(bytes(data))
    assert_one_line_error(ctl("cat", root), "corrupt")


def test_unreadable_file_as_unprivileged_user(tmp_path: Path) -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to act as another user")
    tmp_path.chmod(0o755)
    secret = tmp_path / "secret"
    secret.write_bytes(b"x")
    secret.chmod(0o600)
    proc = subprocess.run(
        [
            setpriv,
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "bacalhau.cli.ctl",
            "add",
            "-n",
            str(secret),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, BACALHAU_DATA_DIR=str(tmp_path / "nobody")),
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "Permission denied" in proc.stderr


def test_help_starts_fast() -> None:
    # Not a timing assertion: a check that --help imports none of the heavy modules.
    code = (
        "import sys; from bacalhau.cli import ctl\n"
        "try:\n    ctl.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('lmdb', 'grpc', 'hashlib', 'bacalhau.content',"
        " 'bacalhau.blockstore') if m in sys.modules]\n"
        "print(heavy, file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stderr.strip() == "[]"


def _unused_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ROOT = Path(__file__).resolve().parent.parent
ECHO_WASM = ROOT / "examples" / "wasm" / "echo.wasm"


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (("--timeout", "nan"), "timeout must be a finite number of seconds, not nan"),
        (("--timeout", "inf"), "timeout must be a finite number of seconds, not inf"),
        (("--timeout", "100000"), "timeout 100000 s is above the maximum of 86400 s"),
        (("--timeout", "-1"), "--timeout must be positive, not -1"),
        (("--cpu", "inf"), "cpu must be a finite number of cores, not inf"),
        (("--cpu", "nan"), "cpu must be a finite number of cores, not nan"),
        (("--cpu", "-1"), "cpu must not be negative, not -1"),
        (("--gpu", "65"), "gpu 65 is above the maximum of 64"),
        (("--gpu", "-1"), "gpu must not be negative, not -1"),
        (("--memory", "2000000Gi"), "is above the maximum of 1125899906842624 bytes"),
        (("--concurrency", "65"), "concurrency 65 is above 64"),
        (("--concurrency", "-1"), "concurrency must not be negative, not -1"),
        (("-o", "out:/a", "-o", "out:/b"), "output name 'out' is used twice"),
        (("-o", "é:/a"), "bad output name 'é'"),
    ],
)
def test_run_flags_are_refused_before_any_node_is_asked(
    ctl: Ctl, flags: tuple[str, ...], fragment: str
) -> None:
    api = f"127.0.0.1:{_unused_port()}"  # were it asked, the error would say it is unreachable
    for command in (("wasm", "run"), ("docker", "run"), ("run", "python", "-c", "print(1)")):
        target = {"wasm": [str(ECHO_WASM)], "docker": ["busybox"], "run": []}[command[0]]
        res = ctl("--api", api, *command, *flags, *target)
        assert_one_line_error(res, fragment)
        assert res.returncode == 2


def test_docker_workdir_is_checked_by_the_spec_rule(ctl: Ctl) -> None:
    res = ctl("--api", f"127.0.0.1:{_unused_port()}", "docker", "run", "-w", "rel", "busybox")
    assert_one_line_error(res, "working dir 'rel' must be absolute")
    assert res.returncode == 2


# What bacalhauctl must never import: it reaches nodes through bacalhau.client only.
NODE_INTERNALS = re.compile(
    r"bacalhau\.(node|api|service|requester|compute|network|datastore|data|executor|blockstore)\b"
)


def test_bacalhauctl_imports_no_node_internals() -> None:
    code = (
        "import bacalhau.cli.ctl, bacalhau.cli._job_cmds, bacalhau.cli._python_cmds, "
        "bacalhau.cli._render, bacalhau.cli._download"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()]
    assert "bacalhau.cli._job_cmds" in imported
    assert [m for m in imported if NODE_INTERNALS.match(m)] == []


def test_run_commands_import_no_node_internals(tmp_path: Path) -> None:
    # The commands' code paths, up to the upload the unreachable node refuses.
    program = tmp_path / "main.py"
    program.write_text("print(1)\n")
    api = f"127.0.0.1:{_unused_port()}"
    code = (
        "import json, sys\n"
        "from bacalhau.cli import ctl\n"
        f"api = {api!r}\n"
        f"codes = [ctl.main(['--api', api, 'wasm', 'run', {str(ECHO_WASM)!r}]),\n"
        "         ctl.main(['--api', api, 'docker', 'run', 'busybox', 'true']),\n"
        f"         ctl.main(['--api', api, 'run', 'python', {str(program)!r}])]\n"
        "print(json.dumps({'codes': codes, 'modules': sorted(sys.modules)}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["codes"] == [1, 1, 1]  # each one failed at the node, not before
    assert proc.stderr.count(f"cannot reach a node at {api}") == 3, proc.stderr
    assert {"bacalhau.spec", "bacalhau.client"} <= set(out["modules"])
    assert [m for m in out["modules"] if NODE_INTERNALS.match(m)] == []


def test_serve_refuses_an_unknown_engine(tmp_path: Path) -> None:
    serve = [sys.executable, "-m", "bacalhau.cli.daemon", "serve", "--data-dir", str(tmp_path)]
    proc = subprocess.run(
        [*serve, "--engines", "wasm,fortran"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "bacalhaud: error: unknown engine 'fortran': use one of: wasm, docker, python, noop"
    )
