"""The real bacalhauctl: add, cat, car, and one-line errors."""

from __future__ import annotations

import os
import shutil
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
