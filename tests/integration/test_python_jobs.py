"""Python jobs across real nodes: `bacalhauctl run python` against `bacalhaud --engines python`."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import grpc
import pytest

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.client import Client, ClientError
from bacalhau.content import Importer
from bacalhau.content.car import write_car
from bacalhau.content.cid import CID
from tests._python import compiled_cache, seed_node
from tests._web import serve, stop
from tests.integration.conftest import Cluster, Ctl

# Clocks, sleeps, randomness, uuid, set order and file listings: everything that would make
# two nodes disagree unless the engine pins it down. It also tries to change its inputs.
PROGRAM = textwrap.dedent(
    """
    import os, random, sys, time, uuid
    from stats import summary

    t0 = time.time()
    time.sleep(0.25)
    words = open("/inputs/words.txt").read().split()
    listing = os.listdir("/inputs/folder")
    print("at", t0, "slept", round(time.time() - t0, 3), "random", random.random(), uuid.uuid4())
    print("set", list(set(words)), "listing", listing, "args", sys.argv[1:])
    try:
        open("/inputs/words.txt", "w").write("changed")
        print("input changed")
    except OSError as e:
        print("input is read-only:", type(e).__name__)
    with open("/outputs/summary.txt", "w") as f:
        f.write(summary(words, listing) + f" {random.getrandbits(32)} {time.time()}\\n")
    """
)
EMPTY_DIR = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"  # the empty UnixFS folder
STATS = "def summary(words, names):\n    return f'{len(words)} words, {len(names)} files'\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("python-cluster")
    cache = compiled_cache(tmp_path_factory)
    for i in range(2):
        seed_node(root / f"node-{i}", cache)
    c = Cluster(root, 2, args=("--engines", "python", "--allow-private-urls"))
    yield c
    c.close()


@pytest.fixture
def ctl(cluster: Cluster, tmp_path: Path) -> Ctl:
    return Ctl(cluster[0].address, tmp_path)


@pytest.fixture(scope="module")
def inputs(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """CIDs (held by node-0) of a text file and of a folder of files."""
    root = tmp_path_factory.mktemp("inputs")
    words = root / "words.txt"
    words.write_text("the quick brown fox jumps over the lazy dog " * 3)
    folder = root / "folder"
    folder.mkdir()
    for name in ("zeta", "alpha", "mu", "beta", "omega", "kappa"):
        (folder / f"{name}.dat").write_bytes(name.encode() * 10)
    with Client(cluster[0].address) as c:
        return c.add_file(words).cid, c.add_directory(folder).cid


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "main.py").write_text(PROGRAM)
    (ctx / "stats.py").write_text(STATS)
    return ctx


def submit(ctl: Ctl, *args: str) -> tuple[Any, str]:
    res = ctl("run", "python", *args, timeout=120)
    return res, (res.stdout.splitlines()[0] if res.stdout else "")


def result_cids(ctl: Ctl, job_id: str) -> list[str]:
    doc = ctl.json("describe", job_id)
    assert doc["state"] == "completed", doc
    return [ex["result_cid"] for ex in doc["executions"] if ex["state"] == "published"]


def test_deterministic_job_gives_one_cid_on_two_nodes_and_again_later(
    cluster: Cluster, ctl: Ctl, context: Path, inputs: tuple[str, str], tmp_path: Path
):
    words, folder = inputs
    args = ("--deterministic", "--concurrency", "2", "-v", f"{words}:/inputs/words.txt",
            "-v", f"{folder}:/inputs/folder", "--context-path", str(context),
            str(context / "main.py"), "one", "two")  # fmt: skip
    res, job_id = submit(ctl, *args)
    assert res.returncode == 0, res.stderr
    doc = ctl.json("describe", job_id)
    nodes = {ex["node_id"] for ex in doc["executions"] if ex["state"] == "published"}
    assert nodes == {cluster[0].node_id, cluster[1].node_id}  # really ran on both
    first = result_cids(ctl, job_id)
    assert len(first) == 2 and first[0] == first[1]

    again, again_id = submit(ctl, *args)  # a later submission: the same CID again
    assert again.returncode == 0, again.stderr
    assert set(result_cids(ctl, again_id)) == {first[0]}

    out = tmp_path / "result"
    got = ctl("get", job_id, "--output-dir", str(out))
    assert got.returncode == 0, got.stderr
    stdout = (out / "stdout").read_text()
    assert stdout.startswith("at 946684800.0") and "slept 0.25 " in stdout
    listing = "['alpha.dat', 'beta.dat', 'kappa.dat', 'mu.dat', 'omega.dat', 'zeta.dat']"
    assert f"listing {listing} args ['one', 'two']" in stdout
    assert "input is read-only: " in stdout and "input changed" not in stdout
    assert (out / "outputs" / "summary.txt").read_text().startswith("27 words, 6 files ")
    assert (out / "exitCode").read_text() == "0\n" and (out / "stderr").read_bytes() == b""
    with Importer() as imp:  # what came back is what both nodes proposed
        assert str(CID.from_bytes(imp.add_path(out).cid)) == first[0]


def test_without_deterministic_the_two_nodes_disagree(
    ctl: Ctl, context: Path, inputs: tuple[str, str]
):
    words, folder = inputs
    res, job_id = submit(ctl, "--concurrency", "2", "-v", f"{words}:/inputs/words.txt",
                         "-v", f"{folder}:/inputs/folder", "--context-path", str(context),
                         str(context / "main.py"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    cids = result_cids(ctl, job_id)
    assert len(cids) == 2 and cids[0] != cids[1]


def test_program_file_alone_and_inline_code(ctl: Ctl, tmp_path: Path):
    prog = tmp_path / "hello.py"
    prog.write_text("import os, sys\nprint('hello', sys.argv[1:], os.listdir('/app'))\n")
    res, job_id = submit(ctl, "--deterministic", str(prog), "a")
    assert res.returncode == 0, res.stderr
    assert ctl("logs", job_id).stdout == "hello ['a'] ['hello.py']\n"
    res, job_id = submit(ctl, "-c", "import sys; print(sum(map(int, sys.argv[1:])))", "1", "2")
    assert res.returncode == 0, res.stderr
    assert ctl("logs", job_id).stdout == "3\n"
    doc = ctl.json("describe", job_id)
    assert doc["spec"]["python"]["code"].startswith("import sys")


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--deterministic", "--timeout", "1", "-c", "while True: pass"), "timed out after 1 s"),
        # a real sleep (deterministic ones return at once) is cut short too
        (("--timeout", "1", "-c", "import time; time.sleep(600)"), "timed out after 1 s"),
        (("--memory", "64Mi", "-c", "x = bytearray(1 << 30)"),
         "out of memory: the program needs more than its 64 MiB memory limit"),
        (("-c", "print('unclosed'"), "Python exception: SyntaxError: '(' was never closed"),
        (("-c", "{}['key']"), "Python exception: KeyError: 'key'"),
        (("-c", "import sys; sys.exit(7)"), "exit code 7"),
    ],
)  # fmt: skip
def test_failures_name_their_cause(ctl: Ctl, args: tuple[str, ...], reason: str):
    res, job_id = submit(ctl, *args)
    line = res.one_line_error()
    assert f"job {job_id} failed" in line and reason in line, res.stderr
    doc = ctl.json("describe", job_id)
    assert doc["state"] == "failed" and reason in doc["message"]


def test_bad_command_lines_are_refused_before_submitting(ctl: Ctl, tmp_path: Path):
    prog = tmp_path / "p.py"
    prog.write_text("print(1)\n")
    big = tmp_path / "big"
    big.mkdir()
    (big / "main.py").write_text("print(1)\n")
    (big / "data.bin").write_bytes(bytes(11 << 20))
    other = tmp_path / "other"
    other.mkdir()
    cases = [
        ((), "give a program FILE or -c CODE"),
        (("missing.py",), "missing.py: no such file"),
        (("--context-path", str(big), str(big / "main.py")), "more than the 10 MiB"),
        (("--context-path", str(other), str(prog)), "is not inside the context folder"),
        (("--context-path", str(prog), str(prog)), "is not a folder"),
        (("-o", "out:/tmp/out", str(prog)), "clashes with /tmp, which Python jobs reserve"),
    ]
    for args, message in cases:
        res = ctl("run", "python", *args)
        assert message in res.one_line_error(), (args, res.stderr)
        assert res.stdout == ""  # nothing was submitted


def test_folder_upload_is_checked_by_the_node(cluster: Cluster, tmp_path: Path):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.py").write_text("A = 1\n")
    (folder / "sub" / "b.txt").write_text("b\n")
    blocks: dict[bytes, bytes] = {}

    class Sink:
        def put(self, cid: bytes, *parts: Any) -> None:
            blocks[cid] = b"".join(parts)

    with Importer(sink=Sink()) as imp:
        root = imp.add_path(folder).cid
    with Client(cluster[1].address) as c:
        # The DAG without one of its blocks is refused, and so is a corrupt archive ...
        others = [(cid, block) for cid, block in blocks.items() if cid != root]
        partial = io.BytesIO()
        write_car(partial, [CID.from_bytes(root)], [(root, blocks[root]), *others[1:]])
        partial.seek(0)
        with pytest.raises(ClientError, match="lacks blocks of the DAG"):
            c.add_stream(partial, "partial.car", car=True)
        with pytest.raises(ClientError, match="CAR"):
            c.add_stream(io.BytesIO(b"\x05hello"), "junk.car", car=True)
        # ... and the whole folder is taken, with the CID `add` gives it.
        assert c.add_directory(folder).cid == str(CID.from_bytes(root))


def test_node_refuses_python_specs_that_cannot_run(cluster: Cluster):
    def spec(**python: Any) -> Any:
        return types_pb2.JobSpec(
            engine="python",
            python=types_pb2.PythonSpec(**python),
            outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
        )

    cases = [
        (spec(code="1", program="main.py"), "not both"),
        (spec(program="main.py"), "needs a context folder"),
        (spec(program="../main.py", context_cid=EMPTY_DIR), "relative path inside the context"),
    ]
    bad_mount = spec(code="1")
    bad_mount.outputs.add(name="scratch", path="/tmp/scratch")
    cases.append((bad_mount, "clashes with /tmp, which Python jobs reserve"))
    with Client(cluster[0].address) as c:
        for job, message in cases:
            with pytest.raises(ClientError, match=message) as info:
                c.submit(job)
            assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_url_inputs_are_readable_and_read_only(ctl: Ctl, tmp_path: Path):
    served = tmp_path / "site"
    served.mkdir()
    (served / "table.csv").write_text("a,b\n1,2\n")
    (served / "notes.txt").write_text("from the web\n")

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server, base = serve(Quiet)
    code = (
        "import os\n"
        "print(sorted(os.listdir('/inputs')))\n"
        "print(open('/inputs/table.csv').read().splitlines()[1])\n"
        "print(open('/inputs/notes.txt').read().strip())\n"
        "try:\n    open('/inputs/notes.txt', 'w')\nexcept OSError as e:\n"
        "    print('read-only', type(e).__name__)\n"
    )
    try:
        res, job_id = submit(
            ctl, "--deterministic", "-u", f"{base}/table.csv", "-u", f"{base}/notes.txt",
            "-c", code,
        )  # fmt: skip
    finally:
        stop(server)
    assert res.returncode == 0, res.stderr
    assert ctl("logs", job_id).stdout == (
        "['notes.txt', 'table.csv']\n1,2\nfrom the web\nread-only PermissionError\n"
    )


def make_wheel(folder: Path, name: str, files: dict[str, str], *, tag: str = "py3-none-any",
               requires: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """A wheel built here by hand (no registry): `files` are its package's paths and texts."""
    import zipfile

    info = f"{name}-1.0.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    wheel = f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n"
    members = {**files, f"{info}/METADATA": meta, f"{info}/WHEEL": wheel}
    members[f"{info}/RECORD"] = "".join(f"{p},,\n" for p in [*members, f"{info}/RECORD"])
    path = folder / f"{name}-1.0-{tag}.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in members.items():
            zf.writestr(member, text)
    return path


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local folder of wheels: two pure ones (one needing the other), one compiled, and a
    'pure' one that hides a shared library."""
    folder = tmp_path_factory.mktemp("wheels")
    make_wheel(folder, "greeter", {"greeter/__init__.py": "from shouter import shout\n"
               "def greet(who):\n    return shout('hello ' + who)\n"},
               requires=("shouter",))  # fmt: skip
    make_wheel(folder, "shouter", {"shouter.py": "def shout(s):\n    return s.upper()\n"})
    make_wheel(folder, "fastmath", {"fastmath/__init__.py": ""},
               tag="cp312-cp312-manylinux_2_17_x86_64")  # fmt: skip
    make_wheel(folder, "sneaky", {"sneaky/__init__.py": "", "sneaky/_speedups.so": "ELF"})
    return folder


def requirements(tmp_path: Path, wheels: Path, *names: str) -> Path:
    req = tmp_path / "requirements.txt"
    req.write_text(f"--no-index\n--find-links {wheels}\n" + "".join(f"{n}\n" for n in names))
    return req


def test_requirements_resolve_pure_wheels_into_the_context(ctl: Ctl, tmp_path: Path, wheels: Path):
    prog = tmp_path / "main.py"
    prog.write_text("import greeter, os\nprint(greeter.greet('world'))\n"
                    "print(sorted(os.listdir('/app/site-packages'))[:2])\n")  # fmt: skip
    res, job_id = submit(ctl, "-r", str(requirements(tmp_path, wheels, "greeter")), str(prog))
    assert res.returncode == 0, res.stderr
    assert ctl("logs", job_id).stdout == "HELLO WORLD\n['greeter', 'greeter-1.0.dist-info']\n"


@pytest.mark.parametrize(
    ("package", "message"),
    [
        ("fastmath", "fastmath has no pure-Python wheel (py3-none-any); packages with compiled "
         "code cannot run in Python jobs"),
        ("sneaky", "sneaky has compiled code (sneaky/_speedups.so in sneaky-1.0-py3-none-any.whl)"),
    ],
)  # fmt: skip
def test_requirements_with_compiled_code_are_refused(
    ctl: Ctl, tmp_path: Path, wheels: Path, package: str, message: str
):
    res = ctl("run", "python", "-r", str(requirements(tmp_path, wheels, package)), "-c", "1")
    assert message in res.one_line_error()
    assert "bacalhau-context-" not in res.stderr


def test_the_guest_root_and_default_outputs(ctl: Ctl, tmp_path: Path):
    code = ("import os\nos.makedirs('/outputs', exist_ok=True)\nprint(sorted(os.listdir('/')))\n"
            "open('/outputs/a', 'w').write('a')\nopen('/extra/b', 'w').write('b')\n")  # fmt: skip
    res, job_id = submit(ctl, "-o", "extra:/extra", "-c", code)
    assert res.returncode == 0, res.stderr
    assert ctl("logs", job_id).stdout == "['app', 'extra', 'inputs', 'outputs', 'tmp']\n"
    out = tmp_path / "out"
    assert ctl("get", job_id, "--output-dir", str(out)).returncode == 0
    assert (out / "outputs" / "a").read_text() == "a" and (out / "extra" / "b").read_text() == "b"
    code = "import os\nopen('/extra/b', 'w').write('b')\nprint(os.path.isdir('/outputs'))\n"
    res, job_id = submit(ctl, "--no-default-outputs", "-o", "extra:/extra", "-c", code)
    assert res.returncode == 0, res.stderr
    doc = ctl.json("describe", job_id)
    assert [o["name"] for o in doc["spec"]["outputs"]] == ["extra"]
    assert ctl("logs", job_id).stdout == "True\n"  # an empty, read-only folder of the root
