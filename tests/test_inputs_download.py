"""The client side of `get`: the partial-download file and the progress line."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from bacalhau.cli._download import _HEAD, ProgressBar, _load
from bacalhau.data import UrlError, UrlFetcher


def record(data: bytes) -> tuple[bytes, bytes]:
    cid = b"\x12\x20" + hashlib.sha256(data).digest()
    return cid, _HEAD.pack(len(cid), len(data)) + cid + data


def test_partial_file_keeps_whole_verified_records_and_cuts_the_rest(tmp_path: Path):
    path = tmp_path / "blocks"
    (c1, r1), (c2, r2), (c3, r3) = record(b"one"), record(b"two"), record(b"three")
    bad = bytearray(r3)
    bad[-1] ^= 1  # a record whose bytes do not match its CID
    path.write_bytes(r1 + r2 + bytes(bad) + r1[:5])
    h = _HEAD.size + 34
    assert _load(path) == {c1: (h, 3), c2: (len(r1) + h, 3)}
    assert path.read_bytes() == r1 + r2  # cut after the last good record
    path.write_bytes(r1 + r2[:-1])  # torn in the middle of the data
    assert _load(path) == {c1: (h, 3)}
    assert _load(tmp_path / "absent") == {}
    assert c3


def test_progress_line_shows_bytes_rate_and_eta():
    out = io.StringIO()
    bar = ProgressBar(out)
    bar(0, 64 << 20)
    bar(64 << 20, 64 << 20)
    bar.close()
    last = out.getvalue().split("\r")[-1]
    assert "64.0/64.0 MiB 100%" in last and "MiB/s" in last and "ETA 0:00" in last
    assert out.getvalue().endswith("\n")
    quiet = io.StringIO()
    ProgressBar(quiet).close()
    assert quiet.getvalue() == ""  # nothing shown, nothing to end


def test_a_stopped_fetcher_refuses_at_once(tmp_path: Path):
    f = UrlFetcher()
    f.stop()
    with pytest.raises(UrlError, match="stopped"):
        f.fetch("http://127.0.0.1:1/x", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_one_get_at_a_time_into_a_folder(tmp_path: Path):
    import fcntl
    import os

    from bacalhau.cli._download import download_result
    from bacalhau.client import Client
    from bacalhau.errors import UsageError

    (tmp_path / "out.partial").mkdir()
    fd = os.open(tmp_path / "out.partial" / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a running get holds it
    try:
        with Client("127.0.0.1:1") as c, pytest.raises(UsageError, match="another bacalhauctl"):
            download_result(c, "j-1", tmp_path / "out")
    finally:
        os.close(fd)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_bytes(b"")
    with Client("127.0.0.1:1") as c, pytest.raises(UsageError, match="not an empty folder"):
        download_result(c, "j-1", tmp_path / "full")
