"""Python programs, run by CPython compiled to WASI, in wasmtime."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bacalhau.engines.base import Engine
from bacalhau.spec import Problem, check_python

if TYPE_CHECKING:
    pass


class PythonEngine(Engine):
    name = "python"

    def check(self, spec: Any) -> list[Problem]:
        """See Engine.check: program xor code, its context, reserved guest paths."""
        return check_python(spec)

    def data_cids(self, spec: Any) -> dict[str, str]:
        """See Engine.data_cids: the context folder, if the job has one."""
        cid = spec.python.context_cid
        return {"context": cid} if cid else {}

    def to_request(
        self, spec: Any, fetched: Mapping[str, Path], job_id: str, execution_id: str
    ) -> dict[str, Any]:
        """See Engine.to_request: context, program, code, deterministic, args, env."""
        p = spec.python
        return {
            "context": fetched.get("context"),
            "program": p.program,
            "code": p.code,
            "deterministic": p.deterministic,
            "args": list(p.args),
            "env": dict(p.env),
        }
