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
    res = ctl("add", "--local", str(root))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines == [
        "added Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD data/a.txt",
        "added QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH data/empty",
        "added QmWKdZuiD9zqoZFnLYbpV2Q5YhRCJWpqiVeYA8ygYEjcEe data/sub/big.bin",
        "added QmSMDeh45F3KW7C34TyVteVQkm1edkWa8u7aWxtaA6Ani7 data/sub",
        "added QmNXf1GUdKG5SDunDet2ih7Po1C3BqhwJH82eAXcoJXsaC data",
    ]
    big = ctl("cat", "--local", "QmWKdZuiD9zqoZFnLYbpV2Q5YhRCJWpqiVeYA8ygYEjcEe")
    assert big.returncode == 0 and big.stdout_bytes == pattern(600000)
    root = "QmNXf1GUdKG5SDunDet2ih7Po1C3BqhwJH82eAXcoJXsaC"
    assert ctl("cat", "--local", f"{root}/sub/big.bin").stdout_bytes == pattern(600000)
    assert_one_line_error(ctl("cat", "--local", f"{root}/sub/nope"), "has no 'nope'")


def test_add_quiet_only_hash_stores_nothing(ctl: Ctl, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"hello world")
    res = ctl("add", "--local", "--only-hash", "-q", str(f))
    assert res.stdout == "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD\n"
    missing = ctl("cat", "--local", res.stdout.strip())
    assert_one_line_error(missing, "not in the local blockstore")


def test_add_cid_version_1(ctl: Ctl, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"hello world")
    res = ctl("add", "--local", "-q", "--cid-version", "1", str(f))
    assert res.stdout.strip() == "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
    res = ctl(
        "add",
        "--local",
        "-q",
        "--cid-version",
        "1",
        "--no-raw-leaves",
        "--chunker",
        "size-4",
        str(f),
    )
    assert res.stdout.startswith("bafybei")
    assert ctl("cat", "--local", res.stdout.strip()).stdout_bytes == b"hello world"


def test_car_roundtrip_between_nodes(ctl: Ctl, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "x").write_bytes(pattern(700000))
    root = ctl("add", "--local", "-q", str(src)).stdout.strip()
    exported = ctl("car", "export", root)
    assert exported.returncode == 0, exported.stderr
    other = tmp_path / "other-node"
    imported = ctl("car", "import", "-", stdin=exported.stdout_bytes, data=other)
    assert imported.returncode == 0, imported.stderr
    assert root in imported.stdout
    listing = ctl("add", "--local", "-q", "-n", str(src / "x")).stdout.strip()
    assert ctl("cat", "--local", listing, data=other).stdout_bytes == pattern(700000)
    assert_one_line_error(ctl("cat", "--local", root, data=other), "is a directory")
    out = tmp_path / "x.car"
    assert ctl("car", "export", root, "-o", str(out)).returncode == 0
    assert out.read_bytes() == exported.stdout_bytes


def test_bad_car_writes_nothing(ctl: Ctl, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(pattern(300000))
    root = ctl("add", "--local", "-q", str(src)).stdout.strip()
    car = ctl("car", "export", root).stdout_bytes
    other = tmp_path / "other"
    for bad, msg in (
        (car[:-100], "truncated"),
        (car[:-5] + bytes(5), "does not match"),
        (b"garbage!" * 10, "CAR"),
    ):
        res = ctl("car", "import", "-", stdin=bad, data=other)
        assert_one_line_error(res, msg)
        assert_one_line_error(
            ctl("cat", "--local", root, data=other), "not in the local blockstore"
        )
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
    root = ctl("add", "--local", "-q", str(f)).stdout.strip()
    pack = tmp_path / "node" / "blocks" / "packs" / "000001.pack"
    data = bytearray(pack.read_bytes())
    data[-3] ^= 1
    pack.write_bytes(bytes(data))
    assert_one_line_error(ctl("cat", "--local", root), "corrupt")


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
        (("--cpu", "lots"), "--cpu: bad cpu amount 'lots'"),
        (("--memory", "1Xb"), "--memory: bad size '1Xb'"),
        (("--timeout", "soon"), "--timeout: bad duration 'soon'"),
        (("--timeout", "1m30"), "--timeout: bad duration '1m30'"),
        (("--count", "65"), "concurrency 65 is above 64"),
        (("-i", "ipfs://nope:/data"), "-i: invalid CID 'nope'"),
        (("-i", "src=ipfs://x"), "-i: invalid CID 'x'"),
        (("-i", "ipfs://QmWhtTR7hn1PTrLH6j2u1GLa4C19Zrz1FZyuNoYmP3JQpQ:rel"), "-i: mount path"),
        (("-u", "ftp://h.example/f"), "-u: bad URL 'ftp://h.example/f'"),
        (("-v", "nothing-here:/d"), "-v: input nothing-here: no such file or folder"),
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


# -- --dry-run and spec files, no node needed ------------------------------------------------

SPEC_MD = ROOT / "docs" / "spec.md"


def _dry(ctl: Ctl, *args: str, stdin: bytes | None = None) -> dict[str, object]:
    api = f"127.0.0.1:{_unused_port()}"  # nobody there: a dry run asks no node
    res = ctl("--api", api, *args, stdin=stdin)
    assert res.returncode == 0, res.stderr
    import yaml

    doc = yaml.safe_load(res.stdout)
    assert isinstance(doc, dict)
    return doc


def test_dry_run_of_each_run_verb_prints_the_spec_with_the_cids_an_upload_gives(
    ctl: Ctl, tmp_path: Path
) -> None:
    module_cid = ctl("add", "-q", "--only-hash", str(ECHO_WASM)).stdout.strip()
    doc = _dry(ctl, "wasm", "run", "--dry-run", "--cpu", "500m", str(ECHO_WASM), "hi")
    assert doc["engine"] == "wasm"
    assert doc["wasm"] == {
        "module_cid": module_cid,
        "entry_point": None,
        "args": ["hi"],
        "env": {},
        "deterministic": False,
    }
    assert doc["resources"]["cpu"] == 0.5  # type: ignore[index]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    folder_cid = ctl("add", "-q", "--only-hash", str(folder)).stdout.strip()
    doc = _dry(
        ctl, "docker", "run", "--dry-run", "-v", f"{folder}:/in", "--memory", "1Gb",
        "--timeout", "1m30s", "--count", "2", "busybox", "ls", "/in",
    )  # fmt: skip
    assert doc["docker"]["image"] == "busybox"  # type: ignore[index]
    assert doc["inputs"] == [{"source": "ipfs", "cid": folder_cid, "mount_path": "/in"}]
    assert doc["resources"]["memory_bytes"] == 10**9  # type: ignore[index]
    assert (doc["timeout_seconds"], doc["concurrency"]) == (90, 2)
    doc = _dry(ctl, "run", "python", "--dry-run", "-c", "print(1)")
    assert doc["python"]["code"] == "print(1)"  # type: ignore[index]
    res = ctl("--output", "json", "wasm", "run", "--dry-run", str(ECHO_WASM))
    assert json.loads(res.stdout)["wasm"]["module_cid"] == module_cid
    assert not (tmp_path / "node").exists()  # nothing stored either


def test_job_run_dry_run_reads_its_own_output_back(ctl: Ctl) -> None:
    first = ctl(
        "wasm",
        "run",
        "--dry-run",
        "-i",
        "ipfs://QmWhtTR7hn1PTrLH6j2u1GLa4C19Zrz1FZyuNoYmP3JQpQ",
        str(ECHO_WASM),
        "a",
    )
    assert first.returncode == 0, first.stderr
    for verb in (("job", "run"), ("create",)):
        again = ctl(*verb, "--dry-run", "-", stdin=first.stdout_bytes)
        assert again.returncode == 0, again.stderr
        assert again.stdout == first.stdout


def test_job_validate(ctl: Ctl, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("engine: noop\n")
    res = ctl("job", "validate", str(good))
    assert (res.returncode, res.stdout) == (0, "ok\n")
    assert ctl("validate", str(good)).stdout == "ok\n"  # Bacalhau 2022's name
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: wasm\nwasm: {module_cid: nope}\nconcurrency: 99\ncolour: red\n")
    res = ctl("job", "validate", str(bad))
    assert res.returncode == 1
    assert res.stdout.splitlines() == [
        f"{bad}: spec: unknown key 'colour' (known here: annotations, concurrency, confidence, "
        "docker, engine, inputs, min_bids, no_memo, node_selector, outputs, python, resources, "
        "result_replicas, sharding, timeout_seconds, verifier, wasm)"
    ]
    bad.write_text("engine: wasm\nwasm: {module_cid: nope}\nconcurrency: 99\n")
    res = ctl("job", "validate", "-", stdin=bad.read_bytes())
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("stdin: wasm.module_cid: invalid CID 'nope'")
    assert lines[1] == "stdin: concurrency: concurrency 99 is above 64"
    res = ctl("--output", "json", "job", "validate", str(bad))
    doc = json.loads(res.stdout)
    assert doc["valid"] is False and [p["field"] for p in doc["problems"]] == [
        "wasm.module_cid",
        "concurrency",
    ]
    # job run refuses it in one line, before asking a node
    res = ctl("--api", f"127.0.0.1:{_unused_port()}", "job", "run", str(bad))
    assert_one_line_error(res, "wasm.module_cid: invalid CID 'nope'")
    assert "(and 1 more: 'bacalhauctl job validate' lists them)" in res.stderr
    assert_one_line_error(ctl("job", "validate"), "validate needs a SPEC file")
    assert_one_line_error(ctl("job", "run", str(tmp_path / "none.yaml")), "no such file")
    (tmp_path / "broken.yaml").write_text("a: [\n")
    assert_one_line_error(ctl("job", "run", str(tmp_path / "broken.yaml")), "not valid YAML")


def test_every_example_in_the_spec_docs_validates(ctl: Ctl, tmp_path: Path) -> None:
    from tests.test_specfile import doc_examples

    for engine, text in doc_examples().items():
        path = tmp_path / f"{engine}.yaml"
        path.write_text(text)
        res = ctl("job", "validate", str(path))
        assert (res.returncode, res.stdout) == (0, "ok\n"), (engine, res.stdout)


def test_output_schema(ctl: Ctl) -> None:
    res = ctl("job", "validate", "--output-schema")
    assert res.returncode == 0
    schema = json.loads(res.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["additionalProperties"] is False
    assert "wasm" in schema["properties"] and "sharding" in schema["properties"]
