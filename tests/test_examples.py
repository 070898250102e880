"""The committed sample module is the build of its source."""

from __future__ import annotations

from pathlib import Path

import wasmtime

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "wasm"


def test_echo_wasm_is_built_from_echo_wat() -> None:
    built = bytes(wasmtime.wat2wasm((EXAMPLES / "echo.wat").read_text()))
    assert (EXAMPLES / "echo.wasm").read_bytes() == built
