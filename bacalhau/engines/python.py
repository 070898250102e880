"""Python programs, run by CPython compiled to WASI, in wasmtime."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bacalhau.engines.base import Engine, EngineContext
from bacalhau.spec import Problem, check_python

if TYPE_CHECKING:
    from bacalhau.executor.base import Executor


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

    def make_executor(self, ctx: EngineContext) -> Executor:
        """A PythonExecutor compiling into `ctx.cache_dir/python`; raises ExecutorError if
        wasmtime is not installed."""
        from bacalhau.executor.base import ExecutorError

        try:
            from bacalhau.executor.python import PythonExecutor
        except ImportError as e:
            raise ExecutorError(
                "the python executor is not installed", hint="pip install 'wasmtime>=48'"
            ) from e
        return PythonExecutor(ctx.cache_dir / "python" if ctx.cache_dir else None)
