"""Spec files (bacalhau/cli/_specfile.py): the describe document's `spec` section read back,
its JSON Schema, and every example in docs/spec.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.cli import _specfile
from bacalhau.cli._render import dump, spec_doc
from bacalhau.errors import UsageError
from bacalhau.spec import validate

ROOT = Path(__file__).resolve().parent.parent
SPEC_DOC = ROOT / "docs" / "spec.md"


def doc_examples() -> dict[str, str]:
    """The YAML examples under '## Examples' in docs/spec.md, by their heading."""
    text = SPEC_DOC.read_text().split("## Examples", 1)[1]
    found = re.findall(r"^### (\w+)\n(?:[^`]*?)```yaml\n(.*?)```", text, re.M | re.S)
    return dict(found)


def test_docs_have_one_example_per_engine() -> None:
    assert sorted(doc_examples()) == ["docker", "noop", "python", "wasm"]


@pytest.mark.parametrize("engine", ["wasm", "docker", "python", "noop"])
def test_every_docs_example_validates(engine: str) -> None:
    spec, problems = _specfile.from_doc(yaml.safe_load(doc_examples()[engine]))
    assert problems == []
    assert validate(spec) == []
    assert spec.engine == engine


def _walk(desc: Any, prefix: str = "") -> list[str]:
    """Every leaf field of a message, as `a.b` paths; repeated messages as `a[].b`."""
    out = []
    for fd in desc.fields:
        path = prefix + fd.name
        msg = fd.message_type
        if msg is not None and not msg.GetOptions().map_entry:
            out += _walk(msg, path + ("[]." if fd.is_repeated else "."))
        else:
            out.append(path)
    return out


def test_every_jobspec_field_is_in_the_table_or_excluded_with_a_reason() -> None:
    covered = {f.proto for f in _specfile.FIELDS}
    every = set(_walk(types_pb2.JobSpec.DESCRIPTOR))
    missing = every - covered - set(_specfile.EXCLUDED)
    assert not missing, f"JobSpec fields with no spec-file key (add them to FIELDS): {missing}"
    assert covered <= every
    assert not covered & set(_specfile.EXCLUDED)
    assert all(_specfile.EXCLUDED.values())


def _schema_leaves(schema: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for name, sub in schema.get("properties", {}).items():
        if "properties" in sub:
            out.update(_schema_leaves(sub, f"{prefix}{name}."))
        elif "items" in sub and "properties" in sub["items"]:
            out.update(_schema_leaves(sub["items"], f"{prefix}{name}[]."))
        else:
            out[prefix + name] = sub
    return out


def test_the_schema_covers_every_jobspec_field() -> None:
    schema = _specfile.json_schema()
    leaves = _schema_leaves(schema)
    by_proto = {f.proto: f.doc for f in _specfile.FIELDS}
    for path in _walk(types_pb2.JobSpec.DESCRIPTOR):
        if path in _specfile.EXCLUDED:
            assert path in schema["$comment"]
            continue
        assert by_proto[path] in leaves, path
    assert len(leaves) == len(_specfile.FIELDS)
    assert leaves["concurrency"]["maximum"] == 64
    assert leaves["timeout_seconds"]["maximum"] == 86400
    assert leaves["engine"]["enum"][:4] == ["wasm", "docker", "python", "noop"]
    assert leaves["wasm.args"]["type"] == ["array", "null"]
    assert leaves["node_selector"]["additionalProperties"] == {"type": "string"}
    assert "string" in leaves["resources.memory_bytes"]["type"]  # "1GiB"


def _full_specs() -> list[Any]:
    """Specs that set every field the document has, one per engine."""
    common: dict[str, Any] = dict(
        inputs=[
            types_pb2.InputSpec(source="ipfs", cid=CID_A, mount_path="/data"),
            types_pb2.InputSpec(source="url", url="https://h.example/a.csv", mount_path="/w/a.csv"),
        ],
        outputs=[types_pb2.OutputSpec(name="out", path="/out")],
        resources=types_pb2.Resources(cpu=0.5, memory_bytes=1 << 20, disk_bytes=1 << 30, gpu=1),
        deal=types_pb2.Deal(concurrency=3, confidence=2, min_bids=3, verifier="deterministic"),
        timeout_seconds=90.5,
        node_selector={"zone": "a"},
        annotations={"k": "v"},
        sharding=types_pb2.ShardingSpec(
            glob_pattern="*.csv", base_path="/data", batch_size=2, retries=0
        ),
        no_memo=True,
    )
    return [
        types_pb2.JobSpec(
            engine="wasm",
            wasm=types_pb2.WasmSpec(
                module_cid=CID_A,
                entry_point="main",
                args=["a", "1"],
                env={"X": "1"},
                deterministic=True,
            ),
            **common,
        ),
        types_pb2.JobSpec(
            engine="docker",
            docker=types_pb2.DockerSpec(
                image="busybox",
                entrypoint=["sh"],
                args=["-c", "ls"],
                env={"A": "b"},
                working_dir="/w",
            ),
            **common,
        ),
        types_pb2.JobSpec(
            engine="python",
            python=types_pb2.PythonSpec(
                program="main.py", context_cid=CID_A, deterministic=True, args=["x"], env={}
            ),
            **common,
        ),
        types_pb2.JobSpec(engine="noop"),
    ]


CID_A = "QmWhtTR7hn1PTrLH6j2u1GLa4C19Zrz1FZyuNoYmP3JQpQ"


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize("index", range(4))
def test_the_describe_spec_section_reads_back_as_the_same_spec(index: int, fmt: str) -> None:
    spec = _full_specs()[index]
    text = dump(spec_doc(spec), fmt)
    back, problems = _specfile.from_doc(yaml.safe_load(text))
    assert problems == []
    assert spec_doc(back) == spec_doc(spec)
    if index < 3:  # every field set: equal field for field
        assert back == spec
    else:  # defaults come back written out (concurrency 1, verifier noop): the same job
        assert (back.deal.concurrency, back.deal.verifier) == (1, "noop")
    # and a whole describe document gives the same
    whole = {"id": "j-1", "state": "completed", "spec": spec_doc(spec), "events": []}
    assert _specfile.from_doc(whole)[0] == back


def _problems(doc: Any) -> list[str]:
    return [str(p) for p in _specfile.from_doc(doc)[1]]


def test_unknown_keys_are_named_where_they_stand() -> None:
    problems = _problems(
        {"engine": "wasm", "wasm": {"module_cid": CID_A, "modul": 1}, "colour": "red"}
    )
    assert problems[0].startswith("wasm: unknown key 'modul' (known here: args, deterministic")
    assert problems[1].startswith("spec: unknown key 'colour' (known here: annotations,")
    assert _problems({"engine": "noop", "inputs": [{"cid": CID_A, "mount_path": "/a", "x": 1}]})[
        0
    ].startswith("inputs[0]: unknown key 'x'")
    assert _problems({"id": "j", "spec": {"engine": "noop"}, "junk": 1})[0].startswith(
        "spec: unknown key 'junk'"
    )


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"engine": "wasm", "wasm": {"args": "hello"}}, "wasm.args must be a list of text"),
        ({"engine": "wasm", "wasm": {"env": {"N": 3}}}, "wasm.env must map names to text"),
        ({"engine": "noop", "concurrency": "two"}, "concurrency must be a whole number"),
        ({"engine": "noop", "concurrency": -1}, "concurrency must be 0 to 4294967295, not -1"),
        ({"engine": "noop", "no_memo": "yes please"}, "no_memo must be true or false"),
        ({"engine": "noop", "timeout_seconds": "soon"}, "timeout_seconds: bad duration 'soon'"),
        ({"engine": "noop", "resources": {"cpu": "lots"}}, "resources.cpu: bad cpu amount"),
        ({"engine": "noop", "resources": {"memory_bytes": "1Xb"}}, "resources.memory_bytes: bad"),
        ({"engine": "noop", "inputs": {"cid": CID_A}}, "inputs: inputs must be a list"),
        ({"engine": "noop", "resources": [1]}, "resources: resources must be a mapping"),
        (
            {"engine": "noop", "inputs": [{"source": "local", "mount_path": "/a"}]},
            "inputs[0].source: source local is not taken: job run uploads nothing",
        ),
        (
            {"engine": "noop", "inputs": [{"path": "./data", "mount_path": "/a"}]},
            "inputs[0].path: path is not taken in a spec file: a local path",
        ),
        (
            {"engine": "wasm", "docker": {"image": "x"}, "wasm": {"module_cid": CID_A}},
            "docker: a docker section in a wasm job",
        ),
        ([1, 2], "spec: a spec is a mapping of keys, not list"),
        (None, "spec: a spec is a mapping of keys, not NoneType"),
    ],
)
def test_each_problem_names_its_key(doc: Any, fragment: str) -> None:
    assert any(fragment in p for p in _problems(doc)), _problems(doc)


def test_the_engine_is_taken_from_its_only_section_and_quantities_from_text() -> None:
    spec, problems = _specfile.from_doc(
        {
            "docker": {"image": "busybox"},
            "resources": {"cpu": "250m", "memory_bytes": "1GiB", "disk_bytes": "2GB"},
            "timeout_seconds": "1m30s",
            "inputs": [{"url": "https://h.example/f.txt", "mount_path": "/in/f.txt"}],
        }
    )
    assert problems == []
    assert spec.engine == "docker"
    assert (spec.resources.cpu, spec.resources.memory_bytes) == (0.25, 1 << 30)
    assert spec.resources.disk_bytes == 2 * 10**9
    assert spec.timeout_seconds == 90
    assert spec.inputs[0].source == "url"


def test_bacalhau_2022_keys() -> None:
    doc = yaml.safe_load(
        """
APIVersion: V1beta1
Spec:
  Engine: Docker
  Verifier: Noop
  Publisher: IPFS
  Docker:
    Image: ubuntu
    Entrypoint: [echo, hello]
    EnvironmentVariables: [A=1, B=two]
    WorkingDirectory: /tmp
  Resources: {CPU: 500m, Memory: 1Gb, GPU: "1"}
  Deal: {Concurrency: 2, Confidence: 0, MinBids: 0}
  Timeout: 1800
  inputs:
    - {StorageSource: IPFS, CID: QmWhtTR7hn1PTrLH6j2u1GLa4C19Zrz1FZyuNoYmP3JQpQ, path: /in, Name: x}
    - {StorageSource: URLDownload, URL: "https://h.example/a.csv", path: /web/a.csv}
  outputs:
    - {StorageSource: IPFS, Name: outputs, path: /outputs}
"""
    )
    spec, problems = _specfile.from_doc(doc)
    assert problems == []
    assert validate(spec) == []
    assert spec.engine == "docker" and spec.deal.verifier == "noop"
    assert list(spec.docker.entrypoint) == ["echo", "hello"]
    assert dict(spec.docker.env) == {"A": "1", "B": "two"}
    assert spec.docker.working_dir == "/tmp"
    assert (spec.resources.cpu, spec.resources.memory_bytes, spec.resources.gpu) == (
        0.5,
        10**9,
        1,
    )
    assert spec.deal.concurrency == 2 and spec.timeout_seconds == 1800
    assert [(i.source, i.mount_path) for i in spec.inputs] == [
        ("ipfs", "/in"),
        ("url", "/web/a.csv"),
    ]
    assert [(o.name, o.path) for o in spec.outputs] == [("outputs", "/outputs")]

    wasm, problems = _specfile.from_doc(
        {
            "Engine": "Wasm",
            "Wasm": {
                "EntryModule": {"StorageSource": "IPFS", "CID": CID_A},
                "EntryPoint": "_start",
                "Parameters": ["hi"],
                "EnvironmentVariables": {"K": "v"},
            },
        }
    )
    assert problems == [] and wasm.wasm.module_cid == CID_A and list(wasm.wasm.args) == ["hi"]


def test_bacalhau_keys_that_mean_nothing_here_are_refused_by_name() -> None:
    problems = _problems({"Engine": "Docker", "Docker": {"Image": "x"}, "Publisher": "Estuary"})
    assert problems[0].startswith("Publisher: publisher 'Estuary' is not offered here")
    problems = _problems({"Engine": "Docker", "Docker": {"Image": "x"}, "Language": {}})
    assert problems[0].startswith("spec: unknown key 'Language'")


def test_yaml_errors_are_one_line_with_the_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: wasm\nwasm: [\n")
    with pytest.raises(UsageError) as e:
        _specfile.load(str(bad))
    assert e.value.message.startswith(f"{bad}: not valid YAML:")
    assert "line 3" in e.value.message
    with pytest.raises(UsageError, match="no such file"):
        _specfile.load(str(tmp_path / "missing.yaml"))


def test_safe_load_only(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("engine: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        _specfile.load(str(evil))
