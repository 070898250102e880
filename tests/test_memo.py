"""Memo keys: only deterministic, verified jobs with inputs by CID have one; the documented test
vector is what the code computes; what does not change a result does not change the key."""

from __future__ import annotations

import re

from bacalhau import spec as jobspec
from bacalhau._pb.bacalhau.v1 import types_pb2 as pb
from tests.conftest import ROOT


def vector_spec() -> pb.JobSpec:
    return pb.JobSpec(
        engine="wasm",
        wasm=pb.WasmSpec(
            module_cid="QmNqHpvqYyNpy8dbgGvhYcRahq1t5V5eSLXQ2XbpkM7yBT",
            args=["hello"],
            env={"LANG": "C"},
            deterministic=True,
        ),
        inputs=[
            pb.InputSpec(
                source="ipfs",
                cid="QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u",
                mount_path="/inputs",
            )
        ],
        outputs=[pb.OutputSpec(name="outputs", path="/outputs")],
        deal=pb.Deal(concurrency=3, confidence=2, verifier="deterministic"),
    )


def test_the_documented_vector_is_what_the_code_computes() -> None:
    doc = (ROOT / "docs" / "verification.md").read_text()
    rows = dict(re.findall(r"^\| (record|key) \| `([^`]*)` \|$", doc, re.M))
    record = jobspec.memo_record(vector_spec())
    assert record is not None and record.decode() == rows["record"]
    assert jobspec.memo_key(record) == rows["key"]


def test_only_deterministic_verified_jobs_with_cid_inputs_have_a_key() -> None:
    for change in (
        lambda s: setattr(s.wasm, "deterministic", False),
        lambda s: setattr(s.deal, "verifier", "noop"),
        lambda s: s.inputs.add(source="url", url="http://x/a", mount_path="/inputs/a"),
        lambda s: setattr(s.sharding, "glob_pattern", "*"),
    ):
        spec = vector_spec()
        change(spec)
        assert jobspec.memo_record(spec) is None


def test_what_does_not_change_the_result_does_not_change_the_key() -> None:
    base = jobspec.memo_record(vector_spec())
    spec = vector_spec()
    spec.timeout_seconds = 30
    spec.deal.concurrency = 5
    spec.resources.cpu = 2
    spec.no_memo = True
    assert jobspec.memo_record(spec) == base
    spec.wasm.args.append("more")
    assert jobspec.memo_record(spec) != base
