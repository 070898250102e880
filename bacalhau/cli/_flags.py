"""The forms of the run flags, both eras of Bacalhau's: inputs (-v, -i, -u), cpu, memory,
timeout. Each refusal is one UsageError naming the flag."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bacalhau.content.cid import CID
from bacalhau.errors import BacalhauError, UsageError
from bacalhau.spec import check_url, file_name, parse_cpu, parse_duration, parse_memory

DEFAULT_CID_MOUNT = "/inputs"
_KEYED = re.compile(r"(src|dst)=(.*?)(?:,(src|dst)=(.*))?", re.DOTALL)


@dataclass(frozen=True)
class InputFlag:
    """One input of the command line: by CID, a local file or folder (to upload), or a URL;
    `mount` None means the default (/inputs for a CID, /inputs/<file name> for a URL)."""

    kind: str  # "cid", "local" or "url"
    value: str | Path
    mount: str | None


def parse_input(text: str, flag: str = "-v") -> InputFlag:
    """An input in any of the forms `-v` and `-i` take:

    `CID:/path`, `./local/path:/path`, `ipfs://CID[:/path]`, `https://host/file[:/path]`,
    `src=ipfs://CID|URL|CID,dst=/path`. Raises UsageError naming `flag`."""
    keyed = _KEYED.fullmatch(text)
    if keyed:
        parts = {keyed.group(1): keyed.group(2)}
        if keyed.group(3):
            if keyed.group(3) in parts:
                raise UsageError(f"{flag}: {keyed.group(3)}= given twice in {text[:200]!r}")
            parts[keyed.group(3)] = keyed.group(4)
        src, dst = parts.get("src", ""), parts.get("dst")
        if not src:
            raise UsageError(
                f"{flag}: {text[:200]!r} has no src=", hint="write src=ipfs://CID,dst=/path"
            )
        if dst is not None and not dst.startswith("/"):
            raise UsageError(f"{flag}: dst {dst[:200]!r} must be an absolute path, like /inputs")
        if ":" not in src:  # a bare CID, or a local path, mounted at dst
            found = _source(f"{src}:{dst or DEFAULT_CID_MOUNT}", flag, text)
        else:
            found = _source(src, flag, text)
        return InputFlag(found.kind, found.value, dst if dst is not None else found.mount)
    return _source(text, flag, text)


def _source(text: str, flag: str, whole: str) -> InputFlag:
    if text.startswith("ipfs://"):
        cid, sep, mount = text.removeprefix("ipfs://").partition(":")
        _cid(cid, flag)
        if sep and not mount.startswith("/"):
            raise UsageError(
                f"{flag}: mount path {mount[:200]!r} must be absolute",
                hint="write ipfs://CID:/path",
            )
        return InputFlag("cid", cid, mount if sep else None)
    if text.startswith(("http://", "https://")):
        url, url_mount = split_url(text, flag)
        return InputFlag("url", url, url_mount)
    src, sep, mount = text.rpartition(":")
    if not sep or not src or not mount.startswith("/"):
        raise UsageError(
            f"{flag}: bad input {whole[:200]!r}",
            hint="write it as CID:/path, ./file:/path, ipfs://CID:/path, https://host/file, or "
            "src=ipfs://CID,dst=/path",
        )
    local = Path(src)
    if local.is_dir() or local.is_file():
        return InputFlag("local", local, mount)
    try:
        CID.parse(src)
    except BacalhauError:
        looks_local = src.startswith((".", "/", "~")) or "/" in src
        hint = "check the path" if looks_local else "give a CID, or a path to a file or folder"
        raise UsageError(
            f"{flag}: input {src[:200]}: no such file or folder, and not a CID either", hint=hint
        ) from None
    return InputFlag("cid", src, mount)


def _cid(text: str, flag: str) -> None:
    try:
        CID.parse(text)
    except BacalhauError as e:
        raise UsageError(f"{flag}: {e.message}", hint=e.hint) from None


def split_url(text: str, flag: str = "-u") -> tuple[str, str | None]:
    """`URL[:/abs/path]` -> (URL, mount path or None). Only a trailing `:/path` after a whole
    http(s) URL with a host counts as the path (so `https://host:8080/f` is one URL); a path
    ending in '/' is a folder, and the URL's file name is added. Raises UsageError."""
    head, sep, tail = text.rpartition(":")
    url, mount = text, None
    if sep and tail.startswith("/") and _is_url(head):
        url, mount = head, tail
    try:
        url = check_url(url)
    except UsageError as e:
        raise UsageError(f"{flag}: {e.message}", hint=e.hint) from None
    if mount is not None and mount.endswith("/"):
        mount += file_name(url)
    return url, mount


def _is_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def flag_cpu(text: str | None) -> float:
    """--cpu: cores (0.5, 2) or millicores (500m); a plain number as given, so the spec's
    rules say what is wrong with nan, inf or -1."""
    if text is None:
        return 0.0
    try:
        return float(text)
    except ValueError:
        return parse_cpu(text, "--cpu")


def flag_memory(text: str | None) -> int:
    """--memory: 512Mb, 1GB, 1Gi, ... (0 when not given)."""
    return parse_memory(text, "--memory") if text else 0


def flag_timeout(text: str | None) -> float:
    """--timeout: seconds (90, 1.5) or a Go duration (90s, 1m30s, 1h); 0 when not given."""
    if text is None:
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        return parse_duration(text, "--timeout")
    if seconds <= 0:
        raise UsageError(f"--timeout must be positive, not {seconds:g}")
    return seconds
