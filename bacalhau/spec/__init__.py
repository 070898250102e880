"""The rules of a job spec, written once: the node checks submissions with them, bacalhauctl
checks a command line with them before uploading anything, executors check requests with them.

Light on purpose (standard library, `bacalhau.errors` and CID parsing only): bacalhauctl
imports it. `validate(spec)` lists every problem; `check(spec)` raises SpecError naming them.
Engine sections (`check_wasm`, ...) are also what `bacalhau.engines` adapters check.
"""

from __future__ import annotations

from bacalhau.spec._problems import Problem, SpecError
from bacalhau.spec._python import (
    GUEST_APP,
    GUEST_BOOT,
    GUEST_TMP,
    RESERVED_PATHS,
    check_mount_paths,
    check_program,
)
from bacalhau.spec._rules import (
    LOCALITY_CHECKS,
    MAX_BYTES,
    MAX_CONCURRENCY,
    MAX_CPU,
    MAX_GPU,
    MAX_ID_LENGTH,
    MAX_INPUTS,
    MAX_INPUTS_BYTES,
    MAX_SPEC_BYTES,
    MAX_TIMEOUT_S,
    OUTPUT_NAME,
    RESERVED_OUTPUT_NAMES,
    WASM_MAGIC,
    check_concurrency,
    check_id,
    check_inputs,
    check_output_volume,
    check_outputs,
    check_resources,
    check_size,
    check_timeout,
    locality_cids,
    size_text,
)
from bacalhau.spec._sections import (
    ENGINES,
    SECTIONS,
    check_docker,
    check_noop,
    check_python,
    check_wasm,
)
from bacalhau.spec._urls import MAX_URL_LENGTH, check_url, file_name, mount_paths, parse_url_list
from bacalhau.spec._validate import check, validate

__all__ = [
    "ENGINES",
    "GUEST_APP",
    "GUEST_BOOT",
    "GUEST_TMP",
    "LOCALITY_CHECKS",
    "MAX_BYTES",
    "MAX_CONCURRENCY",
    "MAX_CPU",
    "MAX_GPU",
    "MAX_ID_LENGTH",
    "MAX_INPUTS",
    "MAX_INPUTS_BYTES",
    "MAX_SPEC_BYTES",
    "MAX_TIMEOUT_S",
    "MAX_URL_LENGTH",
    "OUTPUT_NAME",
    "RESERVED_OUTPUT_NAMES",
    "RESERVED_PATHS",
    "SECTIONS",
    "WASM_MAGIC",
    "Problem",
    "SpecError",
    "check",
    "check_concurrency",
    "check_docker",
    "check_id",
    "check_inputs",
    "check_mount_paths",
    "check_noop",
    "check_output_volume",
    "check_outputs",
    "check_program",
    "check_python",
    "check_resources",
    "check_size",
    "check_timeout",
    "check_url",
    "check_wasm",
    "file_name",
    "locality_cids",
    "mount_paths",
    "parse_url_list",
    "size_text",
    "validate",
]
