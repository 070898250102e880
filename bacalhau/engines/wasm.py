"""WebAssembly (WASI) modules, run by wasmtime."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bacalhau.content.errors import ContentError, NotFound
from bacalhau.engines.base import Engine, Head
from bacalhau.spec import WASM_MAGIC, Problem, check_wasm

if TYPE_CHECKING:
    pass


class WasmEngine(Engine):
    name = "wasm"

    def check(self, spec: Any) -> list[Problem]:
        """See Engine.check: a module by a valid CID."""
        return check_wasm(spec)

    def check_stored(self, spec: Any, head: Head) -> list[Problem]:
        """The module is stored here and starts with \\0asm; raises NotFound if not stored."""
        cid = spec.wasm.module_cid
        if check_wasm(spec):
            return []  # no module, or not a CID: `check` says so
        try:
            first = head(cid)
        except NotFound:
            raise NotFound(
                f"module {cid} is not on this node",
                hint="pass the .wasm file itself, so it is uploaded",
            ) from None
        except ContentError as e:  # e.g. the CID of a folder, not a file
            return [Problem("wasm.module_cid", f"module {cid}: {e.message}", e.hint or "")]
        if not first.startswith(WASM_MAGIC):
            return [
                Problem(
                    "wasm.module_cid",
                    f"{cid} is not a WebAssembly module (no \\0asm header)",
                    "give a .wasm file built for WASI",
                )
            ]
        return []

    def data_cids(self, spec: Any) -> dict[str, str]:
        """See Engine.data_cids: the module."""
        return {"module": spec.wasm.module_cid}

    def to_request(
        self, spec: Any, fetched: Mapping[str, Path], job_id: str, execution_id: str
    ) -> dict[str, Any]:
        """See Engine.to_request: module, args, env, deterministic; KeyError without a
        fetched module."""
        return {
            "module": fetched["module"],
            "args": list(spec.wasm.args),
            "env": dict(spec.wasm.env),
            "deterministic": spec.wasm.deterministic,
        }
