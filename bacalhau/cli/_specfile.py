"""Spec files: the `spec` section of `describe --output yaml|json`, read back into a JobSpec.

One table (FIELDS) maps each key of the document to its JobSpec field; the reader, the JSON
Schema (`job validate --output-schema`) and the round trip `describe | job run -` all follow
it. A whole describe document is taken too (its `spec`), and Bacalhau-2022-style keys
(`Engine: Docker`, `Docker: {Image: ...}`, `Deal: {Concurrency: 1}`) where they mean one
thing here. Unknown keys are refused by name. Local paths are never uploaded: a spec names
its inputs by CID or URL.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bacalhau._pb.bacalhau.v1 import types_pb2
from bacalhau.errors import UsageError
from bacalhau.spec import (
    ENGINES,
    MAX_BATCH_SIZE,
    MAX_BYTES,
    MAX_CONCURRENCY,
    MAX_CPU,
    MAX_GLOB_LENGTH,
    MAX_GPU,
    MAX_INPUTS,
    MAX_MIN_BIDS,
    MAX_RESULT_REPLICAS,
    MAX_RETRIES,
    MAX_TIMEOUT_S,
    MAX_URL_LENGTH,
    OUTPUT_NAME,
    RESERVED_OUTPUT_NAMES,
    VERIFIERS,
    Problem,
    parse_cpu,
    parse_duration,
    parse_memory,
)


@dataclass(frozen=True)
class Field:
    """A key of the spec document (`doc`, dotted; `[]` marks a list of objects) and the
    JobSpec field it sets (`proto`, the same way)."""

    doc: str
    proto: str
    help: str


FIELDS: tuple[Field, ...] = (
    Field("engine", "engine", f"the engine: {', '.join(ENGINES)}"),
    Field("wasm.module_cid", "wasm.module_cid", "the module (a UnixFS file), by CID"),
    Field("wasm.entry_point", "wasm.entry_point", "the function to call (default _start)"),
    Field("wasm.args", "wasm.args", "the module's arguments"),
    Field("wasm.env", "wasm.env", "environment variables"),
    Field("wasm.deterministic", "wasm.deterministic", "fixed clocks, seeded randomness"),
    Field("docker.image", "docker.image", "the container image"),
    Field("docker.entrypoint", "docker.entrypoint", "overrides the image's entrypoint"),
    Field("docker.args", "docker.args", "the command (or the entrypoint's arguments)"),
    Field("docker.env", "docker.env", "environment variables"),
    Field("docker.working_dir", "docker.working_dir", "absolute; default: the image's"),
    Field("python.program", "python.program", "a file in the context folder, e.g. main.py"),
    Field("python.code", "python.code", "inline code, instead of a program"),
    Field("python.context_cid", "python.context_cid", "the folder seen at /app, by CID"),
    Field("python.deterministic", "python.deterministic", "same result on every node"),
    Field("python.args", "python.args", "sys.argv[1:]"),
    Field("python.env", "python.env", "environment variables"),
    Field(
        "inputs[].source", "inputs[].source", "ipfs (by cid) or url; default from which is given"
    ),
    Field("inputs[].cid", "inputs[].cid", "the input's CID (source ipfs)"),
    Field("inputs[].url", "inputs[].url", "an http(s) URL the node downloads (source url)"),
    Field("inputs[].mount_path", "inputs[].mount_path", "where the job sees it, read-only"),
    Field("outputs[].name", "outputs[].name", "its folder's name in the result"),
    Field("outputs[].path", "outputs[].path", "the folder the job writes, absolute"),
    Field("resources.cpu", "resources.cpu", "cores: 0.5, 2 or 500m"),
    Field("resources.memory_bytes", "resources.memory_bytes", "bytes, or 512Mb, 1GiB"),
    Field("resources.disk_bytes", "resources.disk_bytes", "bytes, or 10GB"),
    Field("resources.gpu", "resources.gpu", "GPUs"),
    Field("timeout_seconds", "timeout_seconds", "seconds, or 90s, 1m30s, 1h; default: node's"),
    Field("concurrency", "deal.concurrency", "nodes that run each shard (default 1)"),
    Field("verifier", "deal.verifier", f"how results are verified: {', '.join(VERIFIERS)}"),
    Field("confidence", "deal.confidence", "results that must agree (deterministic)"),
    Field("min_bids", "deal.min_bids", "willing bids to wait for before choosing nodes"),
    Field(
        "result_replicas",
        "deal.result_replicas",
        "nodes besides the requester that copy and pin each result before the job completes",
    ),
    Field("node_selector", "node_selector", "run only on nodes with all these labels"),
    Field("annotations", "annotations", "free-form labels of the job"),
    Field("no_memo", "no_memo", "run even when an equal verified job's result is known"),
    Field("sharding.glob_pattern", "sharding.glob_pattern", "files under base_path to shard"),
    Field("sharding.base_path", "sharding.base_path", "where they are mounted (/inputs)"),
    Field("sharding.batch_size", "sharding.batch_size", "files per shard (1)"),
    Field("sharding.retries", "sharding.retries", "tries of a failed shard elsewhere (2)"),
)
# JobSpec fields a spec file does not set, and why (a test checks FIELDS and these cover all).
EXCLUDED: dict[str, str] = {
    "inputs[].path": "a local path: job run uploads nothing; 'bacalhauctl add' it and give its CID",
}
SECTIONS = ("wasm", "docker", "python")  # engine sections; noop has none
# Keys of a whole describe document besides `spec`: taken and ignored.
JOB_DOC_KEYS = frozenset(
    {"id", "state", "message", "requester_node_id", "created_at", "updated_at", "executions",
     "memoized_from", "shards", "result", "events"}
)  # fmt: skip
# Values given as text with a unit, by key.
_UNIT_PARSERS = {
    "resources.cpu": parse_cpu,
    "resources.memory_bytes": parse_memory,
    "resources.disk_bytes": parse_memory,
    "timeout_seconds": parse_duration,
}
_UINT_MAX = {4: (1 << 64) - 1, 13: (1 << 32) - 1}  # FieldDescriptor.TYPE_UINT64, TYPE_UINT32


@dataclass
class _Items:
    """A list of objects in the document, each one message of a repeated JobSpec field."""

    proto: str
    shape: dict[str, Any]


def _tree() -> dict[str, Any]:
    root: dict[str, Any] = {}
    for f in FIELDS:
        node = root
        parts = f.doc.split(".")
        for part in parts[:-1]:
            if part.endswith("[]"):
                node = node.setdefault(part[:-2], _Items(f.proto.split("[]")[0], {})).shape
            else:
                node = node.setdefault(part, {})
        node[parts[-1]] = f
    return root


def read_text(source: str) -> str:
    """The text of a spec file, or of stdin for "-". Raises UsageError naming the file."""
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text()
    except FileNotFoundError:
        raise UsageError(f"spec file {source}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the spec file {source}: {e}") from None


def parse_yaml(text: str, source: str) -> Any:
    """The document in `text` (YAML, or JSON), read with yaml.safe_load. Raises UsageError."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{source}: not valid YAML: {e.problem}{where}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{source}: not valid YAML: {e}") from None


def load(source: str) -> tuple[Any, list[Problem]]:
    """The JobSpec of a spec file ("-": stdin) and the problems found reading it ([] if none).

    Only the form is checked here; `bacalhau.spec.validate` checks the rules. Raises
    UsageError for a file that cannot be read or is not YAML."""
    return from_doc(parse_yaml(read_text(source), source))


def from_doc(doc: Any) -> tuple[Any, list[Problem]]:
    """A JobSpec from a spec document (or a whole describe document, or Bacalhau-style keys),
    and every problem with its form."""
    spec = types_pb2.JobSpec()
    if not isinstance(doc, dict):
        return spec, [
            Problem(
                "spec",
                f"a spec is a mapping of keys, not {type(doc).__name__}",
                "write the 'spec' section of 'bacalhauctl describe JOB --output yaml'",
            )
        ]
    problems: list[Problem] = []
    if "spec" in doc:  # a whole describe document
        other = sorted(str(k) for k in doc if k != "spec" and k not in JOB_DOC_KEYS)
        if other:
            problems.append(_unknown("", other, ["spec", *sorted(JOB_DOC_KEYS)]))
        doc = doc["spec"]
        if not isinstance(doc, dict):
            return spec, [*problems, Problem("spec", "spec must be a mapping of keys")]
    if any(str(k) in _BACALHAU_TOP for k in doc):
        doc = _from_bacalhau(doc, problems)
    doc = dict(doc)
    engine = doc.get("engine")
    if engine is None:
        given = [s for s in SECTIONS if doc.get(s) is not None]
        if len(given) == 1:
            doc["engine"] = engine = given[0]
    for section in SECTIONS:
        if doc.get(section) is not None and isinstance(engine, str) and engine != section:
            problems.append(
                Problem(
                    section,
                    f"a {section} section in a {engine} job",
                    f"remove it, or set engine: {section}",
                )
            )
    _fill(spec, doc, _tree(), "", problems)
    return spec, problems


def doc_field(field: str) -> str:
    """The spec document's name of a rule's field ("deal.concurrency" -> "concurrency")."""
    return field.removeprefix("deal.")


def _unknown(where: str, keys: list[str], known: list[str]) -> Problem:
    names = ", ".join(repr(k)[:60] for k in keys)
    return Problem(
        where or "spec",
        f"unknown key{'s' if len(keys) > 1 else ''} {names}",
        f"known here: {', '.join(known)}" if known else "",
    )


def _fill(
    msg: Any, doc: dict[Any, Any], shape: dict[str, Any], where: str, out: list[Problem]
) -> None:
    unknown = []
    for key, value in doc.items():
        name = str(key)
        path = f"{where}.{name}" if where else name
        node = shape.get(name) if isinstance(key, str) else None
        if node is None:
            excluded = EXCLUDED.get(_generic(path))
            if excluded is not None:
                out.append(Problem(path, f"{name} is not taken in a spec file: {excluded}"))
            else:
                unknown.append(name)
            continue
        if value is None:
            continue
        if isinstance(node, Field):
            _set(msg, node, value, path, out)
        elif isinstance(node, _Items):
            if not isinstance(value, list):
                out.append(Problem(path, f"{name} must be a list"))
                continue
            for i, item in enumerate(value):
                item_path = f"{path}[{i}]"
                if not isinstance(item, dict):
                    out.append(Problem(item_path, f"each of {name} must be a mapping of keys"))
                    continue
                if name == "inputs":
                    if item.get("source") in ("local", "inline"):
                        out.append(
                            Problem(
                                f"{item_path}.source",
                                f"source {item['source']} is not taken: job run uploads nothing",
                                "'bacalhauctl add' the file and give its CID (source ipfs)",
                            )
                        )
                        continue
                    item = _infer_source(item)
                _fill(getattr(msg, node.proto).add(), item, node.shape, item_path, out)
        elif not isinstance(value, dict):
            out.append(Problem(path, f"{name} must be a mapping of keys"))
        else:
            _fill(msg, value, node, path, out)
    if unknown:
        out.append(_unknown(where, unknown, sorted(shape)))


def _generic(path: str) -> str:
    """`inputs[3].cid` -> `inputs[].cid`."""
    return re.sub(r"\[\d+\]", "[]", path)


def _infer_source(item: dict[Any, Any]) -> dict[Any, Any]:
    """An input with a URL and no CID is by URL (source url) when no source is given."""
    if item.get("source") is None and item.get("url") is not None and item.get("cid") is None:
        return {**item, "source": "url"}
    return item


def _set(msg: Any, field: Field, value: Any, path: str, out: list[Problem]) -> None:
    rel = field.proto.split("[].")[-1]
    *parents, last = rel.split(".")
    for part in parents:
        msg = getattr(msg, part)
    fd = msg.DESCRIPTOR.fields_by_name[last]
    try:
        converted = _convert(field, fd, value, path)
    except UsageError as e:
        out.append(Problem(path, e.message.removeprefix(f"{path}: "), e.hint or ""))
        return
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        getattr(msg, last).update(converted)
    elif _repeated(fd):
        getattr(msg, last).extend(converted)
    else:
        setattr(msg, last, converted)


def _repeated(fd: Any) -> bool:
    return bool(fd.is_repeated)


def _convert(field: Field, fd: Any, value: Any, path: str) -> Any:
    """`value` as the field's type; raises UsageError saying what was expected."""
    generic = _generic(field.doc)
    if isinstance(value, str) and generic in _UNIT_PARSERS:
        return _UNIT_PARSERS[generic](value, path)
    if fd.message_type is not None:  # map<string, string>
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise UsageError(
                f"{path} must map names to text", hint="quote values that look like numbers"
            )
        return value
    if _repeated(fd):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{path} must be a list of text", hint="e.g. [hello, '42']")
        return value
    kind = fd.type
    if kind == fd.TYPE_STRING:
        if not isinstance(value, str):
            raise UsageError(f"{path} must be text, not {type(value).__name__}")
        return value
    if kind == fd.TYPE_BOOL:
        if not isinstance(value, bool):
            raise UsageError(f"{path} must be true or false")
        return value
    if kind == fd.TYPE_DOUBLE:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"{path} must be a number")
        if isinstance(value, int) and not math.isfinite(float(min(value, 1 << 1000))):
            raise UsageError(f"{path} is too large")
        return float(value)
    # uint32, uint64
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{path} must be a whole number")
    if not 0 <= value <= _UINT_MAX[kind]:
        raise UsageError(f"{path} must be 0 to {_UINT_MAX[kind]}, not {value}")
    return value


# Bacalhau 2022's spec keys (pkg/model, JSON tags), by section, with our names.
_BACALHAU_TOP = {
    "APIVersion": None, "Spec": None, "Engine": "engine", "Verifier": "verifier",
    "Publisher": None, "Timeout": "timeout_seconds", "Docker": "docker", "Wasm": "wasm",
    "Resources": "resources", "Deal": None, "Sharding": "sharding", "Inputs": "inputs",
    "Outputs": "outputs",
}  # fmt: skip
_BACALHAU_KEYS: dict[str, dict[str, str | None]] = {
    "docker": {"Image": "image", "Entrypoint": "entrypoint", "WorkingDirectory": "working_dir",
               "EnvironmentVariables": "env"},
    "wasm": {"EntryPoint": "entry_point", "Parameters": "args", "EnvironmentVariables": "env",
             "EntryModule": "module_cid"},
    "resources": {"CPU": "cpu", "Memory": "memory_bytes", "Disk": "disk_bytes", "GPU": "gpu"},
    "deal": {"Concurrency": "concurrency", "Confidence": "confidence", "MinBids": "min_bids"},
    "sharding": {"GlobPattern": "glob_pattern", "BasePath": "base_path",
                 "BatchSize": "batch_size"},
    "inputs": {"StorageSource": "source", "CID": "cid", "URL": "url", "path": "mount_path",
               "Path": "mount_path", "Name": None},
    "outputs": {"StorageSource": None, "Name": "name", "path": "path", "Path": "path"},
}  # fmt: skip
_BACALHAU_SOURCES = {"ipfs": "ipfs", "urldownload": "url", "url": "url"}


def _from_bacalhau(doc: dict[Any, Any], problems: list[Problem]) -> dict[Any, Any]:
    """Our document from Bacalhau 2022's keys (any of ours given as well pass through)."""
    if isinstance(doc.get("Spec"), dict):
        api = doc.get("APIVersion")
        if api is not None and not str(api).startswith("V1"):
            problems.append(Problem("APIVersion", f"unknown APIVersion {str(api)[:40]!r}"))
        other = [str(k) for k in doc if k not in ("Spec", "APIVersion")]
        if other:
            problems.append(_unknown("", other, ["APIVersion", "Spec"]))
        doc = doc["Spec"]
    out: dict[Any, Any] = {}

    def put(key: str, value: Any, where: str) -> None:
        if key in out:
            problems.append(Problem(where, f"{where} gives {key} a second time"))
        out[key] = value

    for key, value in doc.items():
        name = str(key)
        if name == "APIVersion":
            continue
        if name == "Publisher":
            if str(value).lower() != "ipfs":
                problems.append(
                    Problem(
                        "Publisher",
                        f"publisher {str(value)[:40]!r} is not offered here",
                        "drop it: results are stored, pinned, on the node that ran the job "
                        "(Publisher: IPFS)",
                    )
                )
            continue
        if name == "Deal" and isinstance(value, dict):
            for k, v in _rename(value, "deal").items():
                put(k, v, "Deal")
            continue
        target = _BACALHAU_TOP.get(name, name) or name
        if name == "Engine" or name == "Verifier":
            value = value.lower() if isinstance(value, str) else value
        elif target in ("docker", "wasm", "resources", "sharding") and isinstance(value, dict):
            value = _section(target, value)
        elif target in ("inputs", "outputs") and isinstance(value, list):
            value = [_rename(v, target) if isinstance(v, dict) else v for v in value]
        put(target, value, name)
    return out


def _rename(doc: dict[Any, Any], section: str) -> dict[Any, Any]:
    table = _BACALHAU_KEYS[section]
    out = {}
    for key, value in doc.items():
        if key in table:
            if table[key] is None:
                continue
            out[table[key]] = value
        else:
            out[key] = value
    if section == "inputs" and isinstance(out.get("source"), str):
        source = out["source"]
        out["source"] = _BACALHAU_SOURCES.get(source.lower(), source)
    return out


def _section(section: str, doc: dict[Any, Any]) -> dict[Any, Any]:
    out = _rename(doc, section)
    env = out.get("env")
    if section == "docker" and isinstance(env, list):  # ["K=V", ...]
        pairs = [str(e).partition("=") for e in env]
        out["env"] = {k: v for k, _, v in pairs} if all(p[1] for p in pairs) else env
    module = out.get("module_cid")
    if section == "wasm" and isinstance(module, dict):  # a StorageSpec
        out["module_cid"] = module.get("CID", module.get("cid"))
    gpu = out.get("gpu")
    if section == "resources" and isinstance(gpu, str) and gpu.isdigit():
        out["gpu"] = int(gpu)
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a spec file: FIELDS, typed from the JobSpec descriptor,
    bounded by bacalhau.spec's limits."""
    root: dict[str, Any] = _object("A job spec: the 'spec' section of 'bacalhauctl describe'")
    for f in FIELDS:
        node = root
        parts = f.doc.split(".")
        for part in parts[:-1]:
            if part.endswith("[]"):
                name = part[:-2]
                arr = node["properties"].setdefault(
                    name, {"type": ["array", "null"], "items": _object(f"one of {name}")}
                )
                node = arr["items"]
            else:
                node = node["properties"].setdefault(part, _object(f"the {part} section"))
        node["properties"][parts[-1]] = _leaf(f)
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    root["$comment"] = "; ".join(f"{k} is not taken: {v}" for k, v in EXCLUDED.items())
    root["properties"]["inputs"]["maxItems"] = MAX_INPUTS
    return root


def _object(description: str) -> dict[str, Any]:
    return {
        "type": ["object", "null"],
        "description": description,
        "properties": {},
        "additionalProperties": False,
    }


def descriptor_field(proto: str) -> Any:
    """The FieldDescriptor of a JobSpec path like `deal.concurrency` or `inputs[].cid`."""
    desc: Any = types_pb2.JobSpec.DESCRIPTOR
    fd = None
    for part in proto.replace("[]", "").split("."):
        fd = desc.fields_by_name[part]
        desc = fd.message_type
    return fd


_LIMITS: dict[str, dict[str, Any]] = {
    "engine": {"enum": [*ENGINES, None]},
    "verifier": {"enum": [*VERIFIERS, None]},
    "inputs[].source": {"enum": ["ipfs", "url", None]},
    "inputs[].url": {"maxLength": MAX_URL_LENGTH, "pattern": "^https?://"},
    "inputs[].mount_path": {"pattern": "^/"},
    "outputs[].name": {
        "pattern": OUTPUT_NAME.pattern.replace("\\Z", "$"),
        "not": {"enum": sorted(RESERVED_OUTPUT_NAMES)},
    },
    "outputs[].path": {"pattern": "^/"},
    "resources.cpu": {"maximum": MAX_CPU, "pattern": r"^[0-9.]+m?$"},
    "resources.memory_bytes": {"maximum": MAX_BYTES},
    "resources.disk_bytes": {"maximum": MAX_BYTES},
    "resources.gpu": {"maximum": MAX_GPU},
    "timeout_seconds": {"maximum": MAX_TIMEOUT_S},
    "concurrency": {"maximum": MAX_CONCURRENCY},
    "confidence": {"maximum": MAX_CONCURRENCY},
    "min_bids": {"maximum": MAX_MIN_BIDS},
    "result_replicas": {"maximum": MAX_RESULT_REPLICAS},
    "docker.working_dir": {"pattern": "^/"},
    "sharding.glob_pattern": {"maxLength": MAX_GLOB_LENGTH},
    "sharding.base_path": {"pattern": "^/"},
    "sharding.batch_size": {"maximum": MAX_BATCH_SIZE},
    "sharding.retries": {"maximum": MAX_RETRIES},
}


def _leaf(f: Field) -> dict[str, Any]:
    fd = descriptor_field(f.proto)
    limits = dict(_LIMITS.get(f.doc, {}))
    schema: dict[str, Any] = {"description": f.help}
    if fd.message_type is not None:
        schema["type"] = ["object", "null"]
        schema["additionalProperties"] = {"type": "string"}
    elif _repeated(fd):
        schema["type"] = ["array", "null"]
        schema["items"] = {"type": "string"}
    elif fd.type == fd.TYPE_STRING:
        schema["type"] = ["string", "null"]
    elif fd.type == fd.TYPE_BOOL:
        schema["type"] = ["boolean", "null"]
    else:
        number = "number" if fd.type == fd.TYPE_DOUBLE else "integer"
        schema["type"] = [number, "null"]
        schema["minimum"] = 0
        if f.doc in _UNIT_PARSERS:
            schema["type"].append("string")  # "500m", "1GiB", "1m30s"
    if "maximum" in limits and fd.type != fd.TYPE_DOUBLE and fd.type in _UINT_MAX:
        limits["maximum"] = min(limits["maximum"], _UINT_MAX[fd.type])
    if f.doc == "resources.cpu":
        schema["type"] = ["number", "string", "null"]
    if "pattern" in limits and "string" not in schema["type"]:
        limits.pop("pattern")
    schema.update(limits)
    return schema
