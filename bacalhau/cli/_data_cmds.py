"""`bacalhauctl uploads`, `unpin` and `gc`: a user's uploads to a node, and its garbage."""

from __future__ import annotations

import argparse
from typing import Any

from bacalhau.cli._job_cmds import _client, _print
from bacalhau.cli._render import time_text
from bacalhau.content.cid import CID
from bacalhau.spec import size_text


def _upload_doc(u: Any) -> dict[str, Any]:
    return {
        "cid": u.cid,
        "bytes": u.bytes,
        "created": time_text(u.create_time_unix_nano),
        "user_id": u.user_id,
    }


def uploads(args: argparse.Namespace) -> int:
    with _client(args) as c:
        answer = c.list_uploads()
    docs = [_upload_doc(u) for u in answer.uploads]
    quota = size_text(answer.quota_bytes) if answer.quota_bytes else "none"
    text = "".join(f"{d['cid']}  {size_text(d['bytes'])}  {d['created']}\n" for d in docs)
    text += f"{len(docs)} uploads, {size_text(answer.used_bytes)} of a quota of {quota}\n"
    doc = {"uploads": docs, "used_bytes": answer.used_bytes, "quota_bytes": answer.quota_bytes}
    _print(doc, args, text)
    return 0


def unpin(args: argparse.Namespace) -> int:
    cid = str(CID.parse(args.cid))  # a bad CID is one line here, before any call
    with _client(args) as c:
        answer = c.unpin(cid)
    if answer.unpinned:
        text = f"unpinned {cid}\n"
    else:
        text = f"removed your record of {cid}; other users' uploads still hold it pinned\n"
    doc = {
        "cid": cid,
        "unpinned": answer.unpinned,
        "removed": [_upload_doc(u) for u in answer.removed],
    }
    _print(doc, args, text)
    return 0


def gc(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.collect_garbage()
    doc = {
        "blocks_removed": r.blocks_removed,
        "bytes_removed": r.bytes_removed,
        "bytes_reclaimed": r.bytes_reclaimed,
        "packs_rewritten": r.packs_rewritten,
        "live_blocks": r.live_blocks,
        "corrupt_blocks": r.corrupt_blocks,
        "seconds": round(r.seconds, 3),
    }
    text = (
        f"removed {r.blocks_removed} blocks ({size_text(r.bytes_removed)}), freed "
        f"{size_text(r.bytes_reclaimed)} of packs ({r.packs_rewritten} rewritten) in "
        f"{r.seconds:.2f}s; {r.live_blocks} blocks kept\n"
    )
    if r.corrupt_blocks:
        text += f"{r.corrupt_blocks} corrupt blocks were dropped; add or fetch their data again\n"
    _print(doc, args, text)
    return 0
