"""bacalhau.spec: every rule of a job spec, as a list of problems naming their fields."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bacalhau._pb.bacalhau.v1 import types_pb2 as pb
from bacalhau.errors import UsageError
from bacalhau.spec import (
    ENGINES,
    MAX_CONCURRENCY,
    MAX_INPUTS,
    MAX_TIMEOUT_S,
    OUTPUT_NAME,
    RESERVED_OUTPUT_NAMES,
    Problem,
    SpecError,
    check,
    check_mount_paths,
    check_output_volume,
    check_program,
    check_resources,
    check_timeout,
    validate,
)

CID = "bafkreibjfez3ryeimujynshf4b7v6gupmpogapn52lfsvgxs56rjdnthc4"
CID0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
OUTPUTS = [pb.OutputSpec(name="outputs", path="/outputs")]


def valid(engine: str) -> Any:
    """A spec of `engine` that breaks no rule, with an input and an output."""
    spec = pb.JobSpec(
        engine=engine,
        inputs=[pb.InputSpec(source="ipfs", cid=CID0, mount_path="/inputs/data")],
        outputs=OUTPUTS,
        timeout_seconds=60,
        resources=pb.Resources(cpu=0.5, memory_bytes=64 << 20, gpu=1),
        deal=pb.Deal(concurrency=2),
    )
    if engine == "wasm":
        spec.wasm.CopyFrom(pb.WasmSpec(module_cid=CID, args=["a"]))
    elif engine == "docker":
        spec.docker.CopyFrom(pb.DockerSpec(image="busybox", working_dir="/work"))
    elif engine == "python":
        spec.python.CopyFrom(pb.PythonSpec(program="src/main.py", context_cid=CID0))
    return spec


@pytest.mark.parametrize("engine", ENGINES)
def test_a_valid_spec_of_each_engine_has_no_problems(engine: str) -> None:
    assert validate(valid(engine)) == []
    check(valid(engine))


def test_inline_python_code_needs_no_context() -> None:
    spec = valid("python")
    spec.python.CopyFrom(pb.PythonSpec(code="print(1)"))
    assert validate(spec) == []


def _set(**fields: Any) -> Callable[[Any], None]:
    """A change to a valid spec: dotted field names ("resources.cpu") to values."""

    def change(spec: Any) -> None:
        for path, value in fields.items():
            *parents, leaf = path.split(".")
            target = spec
            for p in parents:
                target = getattr(target, p)
            setattr(target, leaf, value)

    return change


def _inputs(*inputs: Any) -> Callable[[Any], None]:
    def change(spec: Any) -> None:
        del spec.inputs[:]
        spec.inputs.extend(inputs)

    return change


def _outputs(*outputs: tuple[str, str]) -> Callable[[Any], None]:
    def change(spec: Any) -> None:
        del spec.outputs[:]
        spec.outputs.extend(pb.OutputSpec(name=n, path=p) for n, p in outputs)

    return change


URL_INPUT = pb.InputSpec(source="url", url="https://host/a.csv", mount_path="/inputs/a.csv")

# (engine, change, field, fragment of the message)
BAD = [
    # numbers
    ("wasm", _set(timeout_seconds=math.nan), "timeout_seconds", "seconds, not nan"),
    ("wasm", _set(timeout_seconds=math.inf), "timeout_seconds", "seconds, not inf"),
    ("wasm", _set(timeout_seconds=-math.inf), "timeout_seconds", "not -inf"),
    ("wasm", _set(timeout_seconds=-1), "timeout_seconds", "timeout must not be negative, not -1"),
    ("wasm", _set(timeout_seconds=MAX_TIMEOUT_S + 1), "timeout_seconds", "above the maximum"),
    ("wasm", _set(**{"resources.cpu": math.nan}), "resources.cpu", "finite number of cores"),
    ("wasm", _set(**{"resources.cpu": math.inf}), "resources.cpu", "not inf"),
    ("wasm", _set(**{"resources.cpu": -1}), "resources.cpu", "cpu must not be negative, not -1"),
    ("wasm", _set(**{"resources.cpu": 2000}), "resources.cpu", "cpu 2000 cores is above"),
    ("wasm", _set(**{"resources.gpu": 65}), "resources.gpu", "gpu 65 is above the maximum of 64"),
    ("wasm", _set(**{"resources.memory_bytes": 1 << 51}), "resources.memory_bytes", "memory"),
    ("wasm", _set(**{"resources.disk_bytes": 2**64 - 1}), "resources.disk_bytes", "disk"),
    ("wasm", _set(**{"deal.concurrency": MAX_CONCURRENCY + 1}), "deal.concurrency", "is above 64"),
    # engines and their sections
    ("wasm", _set(engine="fortran"), "engine", "unknown engine 'fortran'"),
    ("wasm", _set(engine=""), "engine", "unknown engine ''"),
    ("wasm", _set(**{"wasm.module_cid": ""}), "wasm.module_cid", "a wasm job needs a module"),
    ("wasm", _set(**{"wasm.module_cid": "nonsense"}), "wasm.module_cid", "invalid CID"),
    ("docker", _set(**{"docker.image": ""}), "docker.image", "a docker job needs an image"),
    ("docker", _set(**{"docker.working_dir": "w"}), "docker.working_dir", "must be absolute"),
    ("python", _set(**{"python.code": "1"}), "python.program", "not both"),
    ("python", _set(**{"python.program": ""}), "python.program", "not both"),
    ("python", _set(**{"python.context_cid": ""}), "python.context_cid", "needs a context folder"),
    ("python", _set(**{"python.context_cid": "Qm!"}), "python.context_cid", "invalid CID"),
    ("python", _set(**{"python.program": "../x.py"}), "python.program", "relative path inside"),
    ("python", _set(**{"python.program": "/app/x.py"}), "python.program", "relative path inside"),
    ("python", _outputs(("scratch", "/tmp/s")), "outputs[0].path", "clashes with /tmp"),
    ("python", _outputs(("o", "/")), "outputs[0].path", "clashes with /app"),
    (
        "python",
        _inputs(pb.InputSpec(cid=CID, mount_path="/app")),
        "inputs[0].mount_path",
        "clashes with /app, which Python jobs reserve",
    ),
    (
        "python",
        _inputs(pb.InputSpec(cid=CID, mount_path="/.bacalhau/x")),
        "inputs[0].mount_path",
        "clashes with /.bacalhau",
    ),
    # inputs
    ("noop", _inputs(pb.InputSpec(source="s3", cid=CID, mount_path="/x")), "inputs[0].source",
     "unknown source 's3'"),
    ("noop", _inputs(pb.InputSpec(source="ipfs", mount_path="/x")), "inputs[0].cid", "has no CID"),
    ("noop", _inputs(pb.InputSpec(cid="bafy", mount_path="/x")), "inputs[0].cid", "invalid CID"),
    ("noop", _inputs(pb.InputSpec(cid=CID, mount_path="x")), "inputs[0].mount_path",
     "must be absolute and used once"),
    ("noop", _inputs(*[pb.InputSpec(cid=CID, mount_path="/x")] * 2), "inputs[1].mount_path",
     "used once"),
    ("noop", _inputs(pb.InputSpec(source="url", url="ftp://h/a", mount_path="/i/a")),
     "inputs[0].url", "bad URL"),
    ("noop", _inputs(pb.InputSpec(source="url", url="http://", mount_path="/i/a")),
     "inputs[0].url", "bad URL"),
    ("noop", _inputs(pb.InputSpec(source="url", url="http://h:99999/a", mount_path="/i/a")),
     "inputs[0].url", "bad URL"),
    ("noop", _inputs(pb.InputSpec(source="url", url="http://h/a b", mount_path="/i/a")),
     "inputs[0].url", "bad URL"),
    ("noop", _inputs(pb.InputSpec(source="url", url="http://h/a", mount_path="/")),
     "inputs[0].mount_path", "a file in a folder"),
    ("noop", _inputs(pb.InputSpec(cid=CID, mount_path="/inputs"), URL_INPUT),
     "inputs[0].mount_path", "input /inputs is in /inputs, the folder URL inputs are mounted as"),
    ("noop", _inputs(pb.InputSpec(cid=CID, mount_path="/inputs/x"), URL_INPUT),
     "inputs[0].mount_path", "input /inputs/x is in /inputs"),
    ("noop", _inputs(*[pb.InputSpec(cid=CID, mount_path=f"/{i}") for i in range(MAX_INPUTS + 1)]),
     "inputs", f"{MAX_INPUTS + 1} inputs are more than {MAX_INPUTS}"),
    ("noop", _inputs(*[pb.InputSpec(source="url", url=f"http://h/{'x' * 200}{i}",
                                    mount_path=f"/i/{i}") for i in range(6000)]),
     "inputs", "more than 1048576"),
    # outputs
    ("wasm", _outputs(("../up", "/o")), "outputs[0].name", "bad output name '../up'"),
    ("wasm", _outputs(("", "/o")), "outputs[0].name", "bad output name ''"),
    ("wasm", _outputs((".hidden", "/o")), "outputs[0].name", "bad output name"),
    ("wasm", _outputs(("-x", "/o")), "outputs[0].name", "bad output name"),
    ("wasm", _outputs(("a b", "/o")), "outputs[0].name", "bad output name"),
    ("wasm", _outputs(("out\n", "/o")), "outputs[0].name", "bad output name"),
    ("wasm", _outputs(("é", "/o")), "outputs[0].name", "bad output name"),
    ("wasm", _outputs(("stdout", "/o")), "outputs[0].name", "bad output name 'stdout'"),
    ("wasm", _outputs(("exitCode", "/o")), "outputs[0].name", "bad output name 'exitCode'"),
    ("wasm", _outputs(("a", "/a"), ("b", "/b"), ("a", "/c")), "outputs[2].name",
     "output name 'a' is used twice"),
    ("wasm", _outputs(("a", "rel")), "outputs[0].path", "must be absolute, like /outputs"),
]  # fmt: skip


@pytest.mark.parametrize(("engine", "change", "field", "fragment"), BAD)
def test_each_bad_field_is_a_problem_naming_it(
    engine: str, change: Callable[[Any], None], field: str, fragment: str
) -> None:
    spec = valid(engine)
    change(spec)
    problems = validate(spec)
    assert [p.field for p in problems] == [field], problems
    assert fragment in problems[0].message, problems[0]
    with pytest.raises(SpecError) as err:
        check(spec)
    assert err.value.problems == problems
    assert isinstance(err.value, UsageError) and err.value.exit_code == 2


def test_all_problems_are_listed_and_the_error_names_the_first() -> None:
    spec = pb.JobSpec(
        engine="wasm",
        outputs=[pb.OutputSpec(name="stdout", path="rel")],
        timeout_seconds=math.nan,
        resources=pb.Resources(cpu=-2, gpu=100),
    )
    problems = validate(spec)
    assert [p.field for p in problems] == [
        "wasm.module_cid",
        "outputs[0].name",
        "outputs[0].path",
        "timeout_seconds",
        "resources.cpu",
        "resources.gpu",
    ]
    err = SpecError(problems)
    assert err.message == "a wasm job needs a module (and 5 more problems)"
    assert err.hint == "give a .wasm file or its CID"
    assert (
        str(err) == "a wasm job needs a module (and 5 more problems): give a .wasm file or its CID"
    )
    assert SpecError(problems[1:2]).message == "bad output name 'stdout'"
    assert SpecError(problems[:2]).message.endswith("(and 1 more problem)")


def test_problems_read_as_one_line() -> None:
    p = Problem("outputs[0].path", "output path 'a\\nb' must be absolute", "like /outputs")
    assert str(p) == "outputs[0].path: output path 'a\\nb' must be absolute (like /outputs)"
    assert str(Problem("timeout_seconds", "x")) == "timeout_seconds: x"
    # a mount path written as it is (no repr) still gives one line
    spec = valid("noop")
    _inputs(pb.InputSpec(cid=CID, mount_path="/inputs/x\ny"), URL_INPUT)(spec)
    (problem,) = validate(spec)
    assert "\n" not in str(problem) and "\n" not in SpecError([problem]).message
    with pytest.raises(ValueError):
        SpecError([])


def test_shared_pieces_the_cli_and_executors_use() -> None:
    assert set(RESERVED_OUTPUT_NAMES) == {"stdout", "stderr", "exitCode"}
    assert OUTPUT_NAME.match("out_1.tar-gz") and not OUTPUT_NAME.match("out\n")
    assert check_output_volume("outputs", "/outputs") == []
    assert [p.field for p in check_output_volume("stderr", "x")] == ["outputs.name", "outputs.path"]
    assert check_timeout(0) == [] and check_timeout(MAX_TIMEOUT_S) == []
    assert check_resources(cpu=1024, gpu=64, memory_bytes=1 << 50, disk_bytes=1 << 50) == []
    assert [p.field for p in check_resources(gpu=-1, memory_bytes=-1)] == [
        "resources.gpu",
        "resources.memory_bytes",
    ]
    assert "10000000000" in check_resources(gpu=10**400)[0].message[:20]
    assert check_program("src/main.py").as_posix() == "src/main.py"
    with pytest.raises(UsageError, match="must be a relative path inside the context"):
        check_program("")
    check_mount_paths(["/inputs", "/outputs", "/application"])
    with pytest.raises(UsageError, match="clashes with /tmp") as err:
        check_mount_paths(["/inputs", "/tmp/x"])
    assert err.value.hint and "/inputs and /outputs" in err.value.hint


# Anything a JobSpec's fields can hold: validate answers with problems, never an exception.
_text = st.text(max_size=30)
_some_cid = st.one_of(st.sampled_from(["", CID, CID0, "Qm", "bafy", "f01"]), _text)
_paths = st.one_of(st.sampled_from(["/", "/inputs", "/inputs/a", "/tmp/x", "/app", ""]), _text)
_inputs_st = st.builds(
    pb.InputSpec,
    source=st.one_of(st.sampled_from(["", "ipfs", "url", "local"]), _text),
    cid=_some_cid,
    url=st.one_of(st.sampled_from(["http://h/a", "https://h:1/b?c", "http://[::1/"]), _text),
    path=_text,
    mount_path=_paths,
)
_specs = st.builds(
    pb.JobSpec,
    engine=st.one_of(st.sampled_from([*ENGINES, ""]), _text),
    wasm=st.builds(pb.WasmSpec, module_cid=_some_cid, args=st.lists(_text, max_size=3)),
    docker=st.builds(pb.DockerSpec, image=_text, working_dir=_paths),
    python=st.builds(
        pb.PythonSpec,
        program=_paths,
        code=_text,
        context_cid=_some_cid,
        deterministic=st.booleans(),
    ),
    inputs=st.lists(_inputs_st, max_size=5),
    outputs=st.lists(st.builds(pb.OutputSpec, name=_text, path=_paths), max_size=4),
    resources=st.builds(
        pb.Resources,
        cpu=st.floats(),
        gpu=st.integers(0, 2**32 - 1),
        memory_bytes=st.integers(0, 2**64 - 1),
        disk_bytes=st.integers(0, 2**64 - 1),
    ),
    deal=st.builds(pb.Deal, concurrency=st.integers(0, 2**32 - 1)),
    timeout_seconds=st.floats(),
)


@settings(max_examples=300, deadline=None)
@given(_specs)
def test_validate_never_raises(spec: Any) -> None:
    problems = validate(spec)
    assert isinstance(problems, list)
    assert all(isinstance(p, Problem) and p.field and p.message for p in problems)
    assert all("\n" not in str(p) for p in problems)
    if problems:
        with pytest.raises(SpecError) as err:
            check(spec)
        assert "\n" not in str(err.value)
    else:
        check(spec)
