"""Each engine's section of a spec (`spec.wasm`, `spec.docker`, `spec.python`) and its rules.

`bacalhau.spec.validate` and the engine adapters (`bacalhau.engines`) both call these: a rule
is written here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bacalhau.spec._problems import Problem
from bacalhau.spec._python import mount_path_clash, program_problem
from bacalhau.spec._rules import cid_problems

Section = Callable[[Any], list[Problem]]


def check_wasm(spec: Any) -> list[Problem]:
    """A wasm job names its module by a valid CID."""
    cid = spec.wasm.module_cid
    if not cid:
        hint = "give a .wasm file or its CID"
        return [Problem("wasm.module_cid", "a wasm job needs a module", hint)]
    return cid_problems("wasm.module_cid", cid)


def check_docker(spec: Any) -> list[Problem]:
    """A docker job names an image; its working dir, if any, is absolute."""
    problems = []
    if not spec.docker.image:
        problems.append(
            Problem(
                "docker.image", "a docker job needs an image", "e.g. bacalhauctl docker run IMAGE"
            )
        )
    working_dir = spec.docker.working_dir
    if working_dir and not working_dir.startswith("/"):
        problems.append(
            Problem("docker.working_dir", f"working dir {working_dir!r} must be absolute")
        )
    return problems


def check_python(spec: Any) -> list[Problem]:
    """A python job has a program (in a context folder, by CID) or inline code, not both, and
    mounts nothing over the folders its guest reserves."""
    py = spec.python
    problems = []
    if bool(py.program) == bool(py.code):
        problems.append(
            Problem(
                "python.program",
                "a python job needs a program file or inline code, not both",
                "give a program in its context folder, or code (bacalhauctl run python -c)",
            )
        )
    if py.program and not py.context_cid:
        problems.append(
            Problem("python.context_cid", f"program {py.program!r} needs a context folder (by CID)")
        )
    if py.context_cid:
        problems += cid_problems("python.context_cid", py.context_cid)
    if py.program:
        bad = program_problem(py.program)
        if bad:
            problems.append(Problem("python.program", bad, "e.g. main.py or src/main.py"))
    mounts = [(f"inputs[{i}].mount_path", inp.mount_path) for i, inp in enumerate(spec.inputs)]
    mounts += [(f"outputs[{i}].path", out.path) for i, out in enumerate(spec.outputs)]
    for field, path in mounts:
        clash = mount_path_clash(path)
        if clash:
            problems.append(
                Problem(
                    field, clash, "mount inputs and outputs elsewhere, e.g. /inputs and /outputs"
                )
            )
    return problems


def check_noop(spec: Any) -> list[Problem]:
    """A noop job has no section: nothing to check."""
    return []


SECTIONS: dict[str, Section] = {
    "wasm": check_wasm,
    "docker": check_docker,
    "python": check_python,
    "noop": check_noop,
}
ENGINES = tuple(SECTIONS)
