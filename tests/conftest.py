"""Shared fixtures: test vectors, pattern files, and running the real CLI."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# No per-example deadline: these machines are noisy, and speed is measured in bench/.
settings.register_profile("bacalhau", deadline=None)
settings.load_profile("bacalhau")

ROOT = Path(__file__).resolve().parent.parent
# Every client call is signed with a user key (~/.bacalhau/user.key by default): the suite's
# clients, in this process and in the bacalhauctl processes it starts, use one of their own.
_USER_KEY_DIR = tempfile.mkdtemp(prefix="bacalhau-user-")
atexit.register(shutil.rmtree, _USER_KEY_DIR, True)
os.environ["BACALHAU_USER_KEY"] = os.path.join(_USER_KEY_DIR, "user.key")
# A copy of ../shared/test-vectors (CIDs computed by kubo), so the suite runs from any clone;
# test_vectors_copy_is_current checks it against the shared one where that is present.
VECTORS = ROOT / "tests" / "vectors"
SHARED_VECTORS = ROOT.parent / "shared" / "test-vectors"


def pattern(n: int) -> bytes:
    """The test vectors' content rule: byte i is i % 251."""
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


@pytest.fixture(scope="session")
def unixfs_vectors() -> dict[str, object]:
    path = VECTORS / "unixfs-cidv0.json"
    if not path.exists():
        pytest.fail(f"test vectors missing at {path}")
    data: dict[str, object] = json.loads(path.read_text())
    return data


def vector_content(name: str, size: int) -> bytes:
    return b"hello world" if name == "hello-world" else pattern(size)


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess[bytes]) -> None:
        self.returncode = proc.returncode
        self.stdout_bytes = proc.stdout
        self.stdout = proc.stdout.decode(errors="replace")
        self.stderr = proc.stderr.decode(errors="replace")


@pytest.fixture
def ctl(tmp_path: Path) -> Callable[..., CliResult]:
    """Run the real ``bacalhauctl`` in a subprocess with its own data directory."""
    data_dir = tmp_path / "node"

    def run(*args: str, stdin: bytes | None = None, data: Path | None = None) -> CliResult:
        env = dict(os.environ, BACALHAU_DATA_DIR=str(data or data_dir))
        proc = subprocess.run(
            [sys.executable, "-m", "bacalhau.cli.ctl", *args],
            input=stdin,
            capture_output=True,
            env=env,
            timeout=300,
            check=False,
        )
        return CliResult(proc)

    return run


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """A user error: non-zero exit, one line on stderr, no traceback, nothing on stdout."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def stranger() -> Iterator[Any]:
    """A peer of the test's own with a fresh identity (tests._peer.Stranger), closed after."""
    from tests._peer import Stranger

    s = Stranger()
    yield s
    s.close()
