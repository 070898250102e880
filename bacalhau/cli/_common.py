"""What both command-line tools share: one-line errors, the data directory, exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from bacalhau.errors import BacalhauError, UsageError

FORMATS = ("text", "json", "yaml")


def default_data_dir() -> Path:
    """``$BACALHAU_DATA_DIR``, else ``~/.bacalhau``."""
    env = os.environ.get("BACALHAU_DATA_DIR")
    return Path(env) if env else Path.home() / ".bacalhau"


class Parser(argparse.ArgumentParser):
    """argparse with errors on one line (what is wrong, and where to look)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def parse_kv(items: list[str], what: str) -> dict[str, str]:
    """``["K=V", ...]`` -> ``{K: V}``; UsageError naming `what` for a malformed item."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"bad {what} {item!r}", hint="write it as KEY=VALUE")
        out[key] = value
    return out


def print_version(prog: str) -> int:
    """The ``version`` command of either tool."""
    from bacalhau.version import __version__

    print(f"{prog} {__version__}")
    return 0


# What bacalhauctl adds to a node's error, by its ErrorInfo reason (the API's messages name no
# client's commands).
_HINTS = {
    "JOB_NOT_FOUND": "'bacalhauctl list --network' shows the jobs of the nodes it reaches",
    "RESULT_NOT_READY": "wait for it: 'bacalhauctl describe {job_id}' shows its progress",
    "JOB_HAS_NO_RESULT": "'bacalhauctl describe {job_id}' shows what happened",
    "QUOTA_EXCEEDED": "'bacalhauctl uploads' lists yours, 'bacalhauctl unpin CID' removes one",
    "PERMISSION_DENIED": "'bacalhauctl whoami' shows your user ID; --user-key picks the key",
    "TOO_LARGE": "'bacalhauctl get JOB' downloads a whole result, of any size",
    "DATA_CORRUPT": "the node's operator can run 'bacalhauctl repo verify --repair' on its data "
    "directory, or add the data again",
}


def cli_hint(exc: BacalhauError) -> str | None:
    """bacalhauctl's advice for an error a node sent (a ClientError's reason), or None."""
    text = _HINTS.get(getattr(exc, "reason", ""))
    if text is None:
        return None
    meta = getattr(exc, "metadata", {})
    try:
        return text.format(**meta)
    except (KeyError, IndexError, ValueError):
        return None


def run(prog: str, func: Callable[[], int]) -> int:
    """Run a command; user-facing errors become one line on stderr and an exit code."""
    try:
        return func()
    except BacalhauError as exc:
        hint = None if exc.hint else cli_hint(exc)
        print(f"{prog}: error: {exc}" + (f" ({hint})" if hint else ""), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `cat | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3}


def parse_size(text: str) -> int:
    t = text.strip().lower().removesuffix("b")
    num = t.rstrip("kmgi")
    unit = t[len(num) :]
    try:
        value = float(num)
    except ValueError:
        value = -1
    if unit not in _UNITS or value <= 0:
        raise UsageError(f"bad size {text!r}", hint="write it like 64Mi, 512MB or 1Gi")
    return int(value * _UNITS[unit])
