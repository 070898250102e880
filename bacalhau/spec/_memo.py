"""Memoization keys: y = f(x), with f and x named by content.

A job is memoizable when its result can only be what its function makes of its inputs: a wasm
or python job run `deterministic`, verified by the deterministic verifier, whose inputs are all
by CID (a URL's content may change), not sharded. Its canonical record is one JSON object (keys
sorted, no spaces, UTF-8) naming the engine, the function (module or context and program or
code, entry point, args, env values by their SHA-256), the inputs (CID and mount path, sorted
by mount path) and the outputs (name and path, in order); its key is the CID (v1, raw,
sha2-256) of those bytes. docs/verification.md has a test vector.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bacalhau.content.cid import CID, RAW

MEMO_VERSION = 1


def memo_record(spec: Any) -> bytes | None:
    """The canonical record of a memoizable job's function and inputs; None if it is not."""
    if spec.deal.verifier != "deterministic" or spec.sharding.glob_pattern:
        return None
    if any(i.source not in ("", "ipfs") for i in spec.inputs):
        return None
    if spec.engine == "wasm" and spec.wasm.deterministic:
        w = spec.wasm
        function: dict[str, Any] = {
            "module": w.module_cid,
            "entry_point": w.entry_point or "_start",
            "args": list(w.args),
            "env": _env(w.env),
        }
    elif spec.engine == "python" and spec.python.deterministic:
        p = spec.python
        function = {
            "context": p.context_cid,
            "program": p.program,
            "code": p.code,
            "args": list(p.args),
            "env": _env(p.env),
        }
    else:
        return None
    record = {
        "bacalhau_memo": MEMO_VERSION,
        "engine": spec.engine,
        "function": function,
        "inputs": sorted(
            ({"cid": i.cid, "mount_path": i.mount_path} for i in spec.inputs),
            key=lambda i: i["mount_path"],
        ),
        "outputs": [{"name": o.name, "path": o.path} for o in spec.outputs],
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _env(env: Any) -> dict[str, str]:
    """Env values by their SHA-256: they change the key, and the record (a public block, shown
    by lineage) does not reveal them (users put tokens in env)."""
    return {k: "sha256:" + hashlib.sha256(v.encode()).hexdigest() for k, v in env.items()}


def memo_key(record: bytes) -> str:
    """The key of a canonical record: its CID (v1, raw, sha2-256)."""
    return str(CID(1, RAW, hashlib.sha256(record).digest()))
