"""The run flags' forms (bacalhau/cli/_flags.py): -v/-i inputs, -u URL[:/path], --cpu,
--memory, --timeout; each refusal names its flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from bacalhau.cli._flags import (
    InputFlag,
    flag_cpu,
    flag_memory,
    flag_timeout,
    parse_input,
    split_url,
)
from bacalhau.errors import UsageError

CID = "QmWhtTR7hn1PTrLH6j2u1GLa4C19Zrz1FZyuNoYmP3JQpQ"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (f"src=ipfs://{CID},dst=/data", InputFlag("cid", CID, "/data")),
        (f"dst=/data,src=ipfs://{CID}", InputFlag("cid", CID, "/data")),
        (f"src=ipfs://{CID}", InputFlag("cid", CID, None)),
        (f"src={CID},dst=/d", InputFlag("cid", CID, "/d")),
        (f"ipfs://{CID}:/data", InputFlag("cid", CID, "/data")),
        (f"ipfs://{CID}", InputFlag("cid", CID, None)),
        (f"{CID}:/data", InputFlag("cid", CID, "/data")),
        ("https://h.example/f.csv", InputFlag("url", "https://h.example/f.csv", None)),
        ("https://h.example:8080/f.csv", InputFlag("url", "https://h.example:8080/f.csv", None)),
        (
            "https://h.example/f.csv:/in/x.csv",
            InputFlag("url", "https://h.example/f.csv", "/in/x.csv"),
        ),
        (
            "src=https://h.example/f.csv,dst=/in/f.csv",
            InputFlag("url", "https://h.example/f.csv", "/in/f.csv"),
        ),
        ("http://h.example:81/a?b=1:/in/", InputFlag("url", "http://h.example:81/a?b=1", "/in/a")),
    ],
)  # fmt: skip
def test_input_forms(text: str, want: InputFlag) -> None:
    assert parse_input(text, "-i") == want


def test_a_local_path_is_an_upload(tmp_path: Path) -> None:
    f = tmp_path / "data.txt"
    f.write_text("x")
    assert parse_input(f"{f}:/in", "-v") == InputFlag("local", f, "/in")
    assert parse_input(f"src={f}:/in,dst=/d", "-i").kind == "local"  # src= takes any form


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("ipfs://nope:/d", "-i: invalid CID 'nope'"),
        (f"ipfs://{CID}:rel", "-i: mount path 'rel' must be absolute"),
        (f"src=ipfs://{CID},dst=rel", "-i: dst 'rel' must be an absolute path"),
        ("dst=/d", "-i: 'dst=/d' has no src="),
        (f"src=ipfs://{CID},src=ipfs://{CID}", "-i: src= given twice"),
        ("no-colon", "-i: bad input 'no-colon'"),
        ("./missing:/d", "-i: input ./missing: no such file or folder, and not a CID either"),
        ("https://:80/x", "-i: bad URL"),
    ],
)
def test_bad_inputs_name_the_flag(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_input(text, "-i")
    assert fragment in e.value.message, e.value.message


@pytest.mark.parametrize(
    ("text", "url", "mount"),
    [
        ("https://h.example/a.csv", "https://h.example/a.csv", None),
        ("https://h.example/a.csv:/data/b.csv", "https://h.example/a.csv", "/data/b.csv"),
        ("https://h.example:8443/a.csv", "https://h.example:8443/a.csv", None),
        ("https://h.example:8443/a.csv:/d/", "https://h.example:8443/a.csv", "/d/a.csv"),
        ("https://h.example", "https://h.example", None),  # 'https' + '//h.example' is no path
        ("http://[::1]:8080/f", "http://[::1]:8080/f", None),
        ("http://[::1]:8080/f:/x/f", "http://[::1]:8080/f", "/x/f"),
    ],
)
def test_url_with_an_optional_trailing_mount_path(text: str, url: str, mount: str | None) -> None:
    assert split_url(text, "-u") == (url, mount)


@pytest.mark.parametrize("text", ["ftp://h.example/a", "h.example/a", "https://"])
def test_bad_urls_name_the_flag(text: str) -> None:
    with pytest.raises(UsageError) as e:
        split_url(text, "-u")
    assert e.value.message.startswith("-u: bad URL")


def test_cpu_memory_timeout_flags() -> None:
    assert flag_cpu("500m") == 0.5
    assert flag_cpu("2") == 2.0
    assert flag_cpu(None) == 0.0
    assert flag_memory("1Gb") == 10**9
    assert flag_memory("512Mb") == 512 * 10**6
    assert flag_memory("1GiB") == 1 << 30
    assert flag_memory(None) == 0
    assert flag_timeout("1m30s") == 90
    assert flag_timeout("90s") == 90
    assert flag_timeout("1h") == 3600
    assert flag_timeout("90") == 90
    assert flag_timeout(None) == 0
    for func, text, fragment in (
        (flag_cpu, "5 cores", "--cpu: bad cpu amount '5 cores'"),
        (flag_memory, "lots", "--memory: bad size 'lots'"),
        (flag_timeout, "1 minute", "--timeout: bad duration '1 minute'"),
        (flag_timeout, "-1", "--timeout must be positive, not -1"),
    ):
        with pytest.raises(UsageError) as e:
            func(text)  # type: ignore[operator]
        assert fragment in e.value.message
