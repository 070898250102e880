"""bacalhau.engines: the registry, and each engine's adapter against real executors and a
real blockstore."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bacalhau._pb.bacalhau.v1 import types_pb2 as pb
from bacalhau.blockstore import Blockstore
from bacalhau.content import CID, Importer, NotFound
from bacalhau.engines import Engine, EngineContext, blockstore_head, get, names
from bacalhau.errors import UsageError
from bacalhau.executor.base import RunRequest
from bacalhau.spec import ENGINES, validate

ROOT = Path(__file__).resolve().parent.parent
ECHO_WASM = ROOT / "examples" / "wasm" / "echo.wasm"
CID0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


def test_registry_names_every_engine_the_spec_knows() -> None:
    assert names() == ENGINES == ("wasm", "docker", "python", "noop")
    for name in names():
        engine = get(name)
        assert isinstance(engine, Engine) and engine.name == name
        assert get(name) is engine


def test_unknown_engine() -> None:
    with pytest.raises(UsageError, match="unknown engine 'fortran'") as err:
        get("fortran")
    assert err.value.hint == "use one of: wasm, docker, python, noop"


def test_importing_the_registry_stays_light() -> None:
    code = (
        "import sys, bacalhau.engines\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('wasmtime', 'docker', 'grpc',"
        " 'lmdb') or m.startswith(('bacalhau.executor', 'bacalhau.blockstore'))]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_each_engine_checks_its_section_with_the_spec_rules() -> None:
    bad = {
        "wasm": pb.JobSpec(engine="wasm"),
        "docker": pb.JobSpec(engine="docker", docker=pb.DockerSpec(working_dir="w")),
        "python": pb.JobSpec(engine="python", python=pb.PythonSpec(program="../m.py")),
    }
    for name, spec in bad.items():
        problems = get(name).check(spec)
        assert problems and all(p.field.startswith(f"{name}.") for p in problems), problems
        assert problems == validate(spec)[: len(problems)]  # the same rules, the same words
    assert get("noop").check(pb.JobSpec(engine="noop")) == []


def _spec(**kw: Any) -> Any:
    return pb.JobSpec(**kw)


def test_data_cids() -> None:
    assert get("wasm").data_cids(_spec(wasm=pb.WasmSpec(module_cid=CID0))) == {"module": CID0}
    python = get("python")
    assert python.data_cids(_spec(python=pb.PythonSpec(program="m.py", context_cid=CID0))) == {
        "context": CID0
    }
    assert python.data_cids(_spec(python=pb.PythonSpec(code="print(1)"))) == {}
    assert get("docker").data_cids(_spec(docker=pb.DockerSpec(image="busybox"))) == {}
    assert get("noop").data_cids(_spec()) == {}


def test_to_request_gives_run_request_fields(tmp_path: Path) -> None:
    module = tmp_path / "module.wasm"
    module.write_bytes(ECHO_WASM.read_bytes())
    context = tmp_path / "context"
    context.mkdir()
    wasm = _spec(
        wasm=pb.WasmSpec(module_cid=CID0, args=["a", "b"], env={"K": "V"}, deterministic=True)
    )
    assert get("wasm").to_request(wasm, {"module": module}, "j-1", "e-1") == {
        "module": module,
        "args": ["a", "b"],
        "env": {"K": "V"},
        "deterministic": True,
    }
    with pytest.raises(KeyError):
        get("wasm").to_request(wasm, {}, "j-1", "e-1")
    docker = _spec(
        docker=pb.DockerSpec(
            image="busybox",
            entrypoint=["sh"],
            args=["-c", "true"],
            env={"A": "1"},
            working_dir="/w",
        )
    )
    assert get("docker").to_request(docker, {}, "j-1", "e-1") == {
        "image": "busybox",
        "entrypoint": ["sh"],
        "args": ["-c", "true"],
        "env": {"A": "1"},
        "working_dir": "/w",
        "labels": {"bacalhau.job": "j-1", "bacalhau.execution": "e-1"},
    }
    python = _spec(
        python=pb.PythonSpec(
            program="m.py", context_cid=CID0, deterministic=True, args=["x"], env={"B": "2"}
        )
    )
    assert get("python").to_request(python, {"context": context}, "j-1", "e-1") == {
        "context": context,
        "program": "m.py",
        "code": "",
        "deterministic": True,
        "args": ["x"],
        "env": {"B": "2"},
    }
    inline = _spec(python=pb.PythonSpec(code="print(1)"))
    assert get("python").to_request(inline, {}, "j", "e")["context"] is None
    assert get("noop").to_request(_spec(), {}, "j", "e") == {}
    # every field is one RunRequest takes
    for name, spec, fetched in (
        ("wasm", wasm, {"module": module}),
        ("docker", docker, {}),
        ("python", python, {"context": context}),
    ):
        RunRequest(workdir=tmp_path, **get(name).to_request(spec, fetched, "j", "e"))


def test_make_executor(tmp_path: Path) -> None:
    from bacalhau.executor.docker import DockerExecutor
    from bacalhau.executor.noop import NoopExecutor
    from bacalhau.executor.wasm import WasmExecutor

    ctx = EngineContext(cache_dir=tmp_path, docker_pull="never", node_id="n-1")
    noop = get("noop").make_executor(ctx)
    assert isinstance(noop, NoopExecutor) and noop.is_installed()
    wasm = get("wasm").make_executor(ctx)
    assert isinstance(wasm, WasmExecutor) and wasm.is_installed()
    assert get("wasm").make_executor(ctx) is wasm  # shared, one per cache folder
    docker = get("docker").make_executor(ctx)  # connects to no engine until used
    assert isinstance(docker, DockerExecutor)
    assert (docker.pull, docker.node_id) == ("never", "n-1")
    assert EngineContext() == EngineContext(None, "missing", "")


def test_decline_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bacalhau.executor.docker import DockerExecutor

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    spec = _spec(engine="docker", docker=pb.DockerSpec(image="bacalhau-test/never-built:1"))
    docker = get("docker")
    assert docker.decline_reason(spec, DockerExecutor(pull="missing")) == ""
    reason = docker.decline_reason(spec, DockerExecutor(pull="never"))
    assert "no Docker engine answers" in reason
    noop = get("noop").make_executor(EngineContext())
    for name in ("wasm", "python", "noop"):
        assert get(name).decline_reason(spec, noop) == ""

    # GPUs: only for containers, and only where the engine has the NVIDIA runtime
    spec.resources.gpu = 1
    for name in ("wasm", "python", "noop"):
        assert (
            get(name).decline_reason(spec, noop)
            == f"the {name} engine cannot use GPUs (docker jobs can)"
        )
    told_no = DockerExecutor(pull="missing", nvidia_runtime="no")
    assert "GPU jobs need the NVIDIA container runtime" in docker.decline_reason(spec, told_no)
    no_engine = DockerExecutor(pull="missing")  # auto: asks the engine, and none answers
    assert "GPU jobs need the NVIDIA container runtime" in docker.decline_reason(spec, no_engine)
    assert docker.decline_reason(spec, DockerExecutor(pull="missing", nvidia_runtime="yes")) == ""


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Blockstore(tmp_path / "blocks") as s:
        yield s


def _add(store: Any, data: bytes) -> str:
    with store.batch() as batch, Importer(sink=batch) as imp:
        cid = imp.add_bytes(data).cid
    return str(CID.from_bytes(cid))


def test_wasm_check_stored(store: Any, tmp_path: Path) -> None:
    wasm = get("wasm")
    head = blockstore_head(store.get)

    def spec(cid: str) -> Any:
        return _spec(engine="wasm", wasm=pb.WasmSpec(module_cid=cid))

    module = _add(store, ECHO_WASM.read_bytes())
    assert wasm.check_stored(spec(module), head) == []
    text = _add(store, b"plain text, not wasm\n")
    (problem,) = wasm.check_stored(spec(text), head)
    assert problem.field == "wasm.module_cid"
    assert problem.message == f"{text} is not a WebAssembly module (no \\0asm header)"
    assert problem.hint == "give a .wasm file built for WASI"
    empty = _add(store, b"")
    assert "is not a WebAssembly module" in wasm.check_stored(spec(empty), head)[0].message
    missing = "bafkreibjfez3ryeimujynshf4b7v6gupmpogapn52lfsvgxs56rjdnthc4"
    with pytest.raises(NotFound, match=f"module {missing} is not on this node") as err:
        wasm.check_stored(spec(missing), head)
    assert err.value.hint == "pass the .wasm file itself, so it is uploaded"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a").write_bytes(b"a")
    with store.batch() as batch, Importer(sink=batch) as imp:
        folder_cid = str(CID.from_bytes(imp.add_path(folder).cid))
    assert "is a directory" in wasm.check_stored(spec(folder_cid), head)[0].message
    # a spec `check` refuses is not looked up
    assert wasm.check_stored(spec(""), head) == wasm.check_stored(spec("nonsense"), head) == []


def test_other_engines_check_nothing_stored(store: Any) -> None:
    head = blockstore_head(store.get)
    for name in ("docker", "python", "noop"):
        spec = _spec(engine=name, python=pb.PythonSpec(program="m.py", context_cid=CID0))
        assert get(name).check_stored(spec, head) == []
