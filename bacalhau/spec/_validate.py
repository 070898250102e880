"""A whole spec against every rule."""

from __future__ import annotations

from typing import Any

from bacalhau.spec._problems import Problem, SpecError
from bacalhau.spec._rules import (
    check_concurrency,
    check_inputs,
    check_outputs,
    check_resources,
    check_size,
    check_timeout,
    check_verification,
)
from bacalhau.spec._sections import ENGINES, SECTIONS
from bacalhau.spec._sharding import check_sharding


def validate(spec: Any) -> list[Problem]:
    """Every rule `spec` (a JobSpec) breaks, in field order; [] if it can be scheduled.

    Rules that need data a node holds (is the wasm module stored, is it WebAssembly) are the
    engine adapters' `check_stored`. Never raises for field values a JobSpec can hold.
    """
    section = SECTIONS.get(spec.engine)
    if section is None:
        problems = [
            Problem(
                "engine", f"unknown engine {spec.engine!r}", f"use one of: {', '.join(ENGINES)}"
            )
        ]
    else:
        problems = section(spec)
    problems += check_inputs(spec.inputs)
    problems += check_outputs(spec.outputs)
    problems += check_concurrency(spec.deal.concurrency)
    problems += check_verification(spec.deal)
    problems += check_timeout(spec.timeout_seconds)
    problems += check_sharding(spec)
    r = spec.resources
    problems += check_resources(
        cpu=r.cpu, gpu=r.gpu, memory_bytes=r.memory_bytes, disk_bytes=r.disk_bytes
    )
    # Checked last, and only alone: a list of inputs over its own limit already says why.
    return problems or check_size(spec)


def check(spec: Any) -> None:
    """Raise SpecError, naming every problem, unless `spec` follows every rule."""
    problems = validate(spec)
    if problems:
        raise SpecError(problems)
