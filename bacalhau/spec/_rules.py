"""The rules every job spec follows, whatever its engine: numbers, inputs, outputs, CIDs."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from bacalhau.content.cid import CID
from bacalhau.errors import BacalhauError
from bacalhau.spec._problems import Problem
from bacalhau.spec._urls import check_url

MAX_TIMEOUT_S = 24 * 60 * 60
MAX_CPU = 1024
MAX_GPU = 64
MAX_BYTES = 1 << 50  # memory and disk: 1 PiB
MAX_CONCURRENCY = 64
MAX_INPUTS = 20_000
# Announcements and decisions carry the spec in signed packets of at most 4 MiB.
MAX_INPUTS_BYTES = 1 << 20
WASM_MAGIC = b"\0asm"
# A whole spec travels in one signed peer packet (at most 4 MiB) with room to spare.
MAX_SPEC_BYTES = 1 << 20
MAX_ID_LENGTH = 128  # job and execution IDs (ours are 55 and 38 characters)

# Result entries every job has; an output folder may not take their names.
RESERVED_OUTPUT_NAMES = frozenset({"stdout", "stderr", "exitCode"})
OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_OUTPUT_NAME_HINT = "use letters, digits, '_', '.', '-'; not stdout, stderr or exitCode"
_SPLIT_HINT = "split the job, or put the files in one folder and give its CID"


def check_size(spec: Any, limit: int = MAX_SPEC_BYTES) -> list[Problem]:
    """A problem if the encoded spec is larger than `limit` bytes."""
    size = spec.ByteSize()
    if size <= limit:
        return []
    return [
        Problem(
            "spec",
            f"the spec takes {size} bytes, more than the {limit} a node takes",
            "pass data as inputs (a CID or a URL), not in arguments or environment variables",
        )
    ]


def check_id(text: str, field: str = "job_id") -> list[Problem]:
    """A problem if `text` is not a plausible job or execution ID (or a prefix of one):
    empty, longer than MAX_ID_LENGTH, or with characters other than printable ASCII."""
    if not text:
        return [Problem(field, f"{field} is required", "give a job ID, or a unique prefix of one")]
    if len(text) > MAX_ID_LENGTH:
        return [Problem(field, f"{field} of {len(text)} characters is longer than {MAX_ID_LENGTH}")]
    if not (text.isascii() and text.isprintable()) or " " in text:
        return [Problem(field, f"{field} {text[:40]!r} has characters no ID has")]
    return []


def cid_problems(field: str, text: str) -> list[Problem]:
    """A problem if `text` is not a CID this implementation reads."""
    try:
        CID.parse(text)
    except BacalhauError as e:
        return [Problem(field, e.message, e.hint or "")]
    return []


def check_timeout(seconds: float) -> list[Problem]:
    """Problems with a timeout: not finite, negative or over MAX_TIMEOUT_S (0: the default)."""
    field = "timeout_seconds"
    if not _finite(seconds):
        return [
            Problem(
                field,
                f"timeout must be a finite number of seconds, not {seconds}",
                "give a number of seconds, e.g. 60",
            )
        ]
    if seconds < 0:
        return [Problem(field, f"timeout must not be negative, not {_num(seconds)}")]
    if seconds > MAX_TIMEOUT_S:
        return [
            Problem(
                field,
                f"timeout {_num(seconds)} s is above the maximum of {MAX_TIMEOUT_S} s (24 h)",
                "split the job into shorter ones",
            )
        ]
    return []


def check_resources(
    *, cpu: float = 0.0, gpu: int = 0, memory_bytes: int = 0, disk_bytes: int = 0
) -> list[Problem]:
    """Problems with what a job asks for: cpu not finite, anything negative or above its
    maximum (MAX_CPU cores, MAX_GPU GPUs, MAX_BYTES of memory or disk)."""
    problems = []
    if not _finite(cpu):
        problems.append(
            Problem(
                "resources.cpu",
                f"cpu must be a finite number of cores, not {cpu}",
                "e.g. 0.5 or 2; 0 means no limit",
            )
        )
    else:
        problems += _in_range("resources.cpu", "cpu", cpu, MAX_CPU, " cores")
    problems += _in_range("resources.gpu", "gpu", gpu, MAX_GPU, "")
    problems += _in_range("resources.memory_bytes", "memory", memory_bytes, MAX_BYTES, " bytes")
    problems += _in_range("resources.disk_bytes", "disk", disk_bytes, MAX_BYTES, " bytes")
    return problems


def check_concurrency(concurrency: int) -> list[Problem]:
    """Problems with the number of nodes that run a job: negative or above MAX_CONCURRENCY."""
    if concurrency < 0:
        return [Problem("deal.concurrency", f"concurrency must not be negative, not {concurrency}")]
    if concurrency > MAX_CONCURRENCY:
        return [
            Problem("deal.concurrency", f"concurrency {concurrency} is above {MAX_CONCURRENCY}")
        ]
    return []


def check_output_volume(name: str, path: str, field: str = "outputs") -> list[Problem]:
    """Problems with one output folder: its name (OUTPUT_NAME, not a reserved name) and its
    path (absolute)."""
    problems = []
    if not OUTPUT_NAME.match(name) or name in RESERVED_OUTPUT_NAMES:
        problems.append(Problem(f"{field}.name", f"bad output name {name!r}", _OUTPUT_NAME_HINT))
    if not path.startswith("/"):
        problems.append(
            Problem(f"{field}.path", f"output path {path!r} must be absolute, like /outputs")
        )
    return problems


def check_outputs(outputs: Sequence[Any]) -> list[Problem]:
    """Problems with a job's outputs (each with `name` and `path`): each one's form, and
    names used twice."""
    problems: list[Problem] = []
    names: set[str] = set()
    for i, out in enumerate(outputs):
        field = f"outputs[{i}]"
        problems += check_output_volume(out.name, out.path, field)
        if out.name in names:
            problems.append(Problem(f"{field}.name", f"output name {out.name!r} is used twice"))
        names.add(out.name)
    return problems


def check_inputs(inputs: Sequence[Any]) -> list[Problem]:
    """Problems with a job's inputs (InputSpec): by CID ("ipfs", or no source) or by URL
    ("url"), each at its own absolute mount path; URL inputs are mounted by folder, so a URL's
    folder is no other input's path."""
    if len(inputs) > MAX_INPUTS:
        return [Problem("inputs", f"{len(inputs)} inputs are more than {MAX_INPUTS}", _SPLIT_HINT)]
    size = sum(inp.ByteSize() for inp in inputs)
    if size > MAX_INPUTS_BYTES:
        return [
            Problem(
                "inputs",
                f"the inputs take {size} bytes in the spec, more than {MAX_INPUTS_BYTES}",
                _SPLIT_HINT,
            )
        ]
    problems: list[Problem] = []
    mounts: set[str] = set()
    cid_mounts: list[tuple[int, str]] = []
    url_folders: set[str] = set()
    for i, inp in enumerate(inputs):
        field = f"inputs[{i}]"
        if inp.source in ("", "ipfs"):
            if not inp.cid:
                problems.append(Problem(f"{field}.cid", f"input at {inp.mount_path!r} has no CID"))
            else:
                problems += cid_problems(f"{field}.cid", inp.cid)
            cid_mounts.append((i, inp.mount_path))
        elif inp.source == "url":
            problems += _url_input(field, inp)
            url_folders.add(str(PurePosixPath(inp.mount_path).parent))
        else:
            where = inp.cid or inp.url or inp.path or inp.mount_path
            problems.append(
                Problem(
                    f"{field}.source",
                    f"input {where[:200]!r}: unknown source {inp.source!r}",
                    "use ipfs (a CID) or url (bacalhauctl uploads local files and folders "
                    "and gives their CIDs)",
                )
            )
        if not inp.mount_path.startswith("/") or inp.mount_path in mounts:
            problems.append(
                Problem(
                    f"{field}.mount_path",
                    f"input mount path {inp.mount_path!r} must be absolute and used once",
                )
            )
        mounts.add(inp.mount_path)
    # URL inputs are mounted as one folder per mount folder: an input by CID at or inside
    # that folder would be a second mount at the same place.
    for i, mount in cid_mounts:
        for folder in sorted(url_folders):
            if mount == folder or mount.startswith(folder.rstrip("/") + "/"):
                problems.append(
                    Problem(
                        f"inputs[{i}].mount_path",
                        f"input {mount} is in {folder}, the folder URL inputs are mounted as",
                        "mount it somewhere else, e.g. -v CID:/data/NAME",
                    )
                )
                break
    return problems


def _url_input(field: str, inp: Any) -> list[Problem]:
    problems = []
    try:
        check_url(inp.url)
    except BacalhauError as e:
        problems.append(Problem(f"{field}.url", e.message, e.hint or ""))
    folder = str(PurePosixPath(inp.mount_path).parent)
    if not inp.mount_path.startswith("/") or folder == inp.mount_path:
        problems.append(
            Problem(
                f"{field}.mount_path",
                f"URL input {inp.url[:200]} needs a mount path of a file in a folder",
                "e.g. /inputs/data.csv (bacalhauctl -u picks /inputs/<file name>)",
            )
        )
    return problems


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float: finite, and out of any range
        return True


def _num(value: float) -> str:
    """`value` as written: 1.5, 2, 1e+20; an int exactly, however large."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def _in_range(field: str, what: str, value: float, maximum: int, unit: str) -> list[Problem]:
    if value < 0:
        return [Problem(field, f"{what} must not be negative, not {_num(value)}")]
    if value > maximum:
        return [
            Problem(field, f"{what} {_num(value)}{unit} is above the maximum of {maximum}{unit}")
        ]
    return []


LOCALITY_CHECKS = 256  # CID inputs looked at to say how much of a job's data a node holds


def locality_cids(spec: Any) -> list[str]:
    """The CID inputs a bid's locality claim is about: those a node may already hold, at most
    LOCALITY_CHECKS (the bidder counts these; the requester bounds the claim by them)."""
    return [i.cid for i in spec.inputs if i.source in ("", "ipfs")][:LOCALITY_CHECKS]


def size_text(n: int) -> str:
    """`n` bytes in the largest binary unit that keeps it readable: 1 GiB, 512 KiB, 1000 B."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.4g} {unit}"
    return f"{n} B"


VERIFIERS = ("noop", "deterministic")  # bacalhau.verifier's registry (a test keeps them equal)
MAX_MIN_BIDS = 1024
MAX_RESULT_REPLICAS = 8


def check_verification(deal: Any) -> list[Problem]:
    """Problems with how a job's results are verified: a known verifier, a confidence the
    concurrency can reach, a bounded number of bids to wait for."""
    problems: list[Problem] = []
    if deal.verifier and deal.verifier not in VERIFIERS:
        problems.append(
            Problem(
                "deal.verifier",
                f"unknown verifier {deal.verifier[:40]!r}",
                f"use one of: {', '.join(VERIFIERS)}",
            )
        )
    concurrency = max(deal.concurrency, 1)
    if deal.confidence > concurrency:
        problems.append(
            Problem(
                "deal.confidence",
                f"confidence {deal.confidence} is more than the {concurrency} node(s) that run it",
                "raise --concurrency to at least the confidence",
            )
        )
    if deal.min_bids > MAX_MIN_BIDS:
        problems.append(
            Problem("deal.min_bids", f"min bids {deal.min_bids} is above {MAX_MIN_BIDS}")
        )
    if deal.result_replicas > MAX_RESULT_REPLICAS:
        problems.append(
            Problem(
                "deal.result_replicas",
                f"result replicas {deal.result_replicas} is above {MAX_RESULT_REPLICAS}",
            )
        )
    return problems
