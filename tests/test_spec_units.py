"""bacalhau.spec's quantity parsers: cpu (millicores), memory (decimal and binary units),
durations (Go's form, or seconds)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bacalhau.errors import UsageError
from bacalhau.spec import parse_cpu, parse_duration, parse_memory


@pytest.mark.parametrize(
    ("text", "cores"),
    [("500m", 0.5), ("2", 2.0), ("0.25", 0.25), ("1500M", 1.5), (" 250m ", 0.25), ("0m", 0.0)],
)
def test_cpu(text: str, cores: float) -> None:
    assert parse_cpu(text) == cores


@pytest.mark.parametrize("text", ["", "m", "five", "1.5.5", "-1", "500k", "1e3m", "nanm"])
def test_cpu_refused_naming_the_flag(text: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_cpu(text, "--cpu")
    assert e.value.message.startswith("--cpu: bad cpu amount")
    assert "500m" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1Gb", 10**9),
        ("1GB", 10**9),
        ("1gb", 10**9),
        ("512Mb", 512 * 10**6),
        ("512MB", 512 * 10**6),
        ("64Mi", 64 << 20),
        ("64MiB", 64 << 20),
        ("1gib", 1 << 30),
        ("1GiB", 1 << 30),
        ("2k", 2000),
        ("2KiB", 2048),
        ("1T", 10**12),
        ("1.5G", 1_500_000_000),
        ("100", 100),
        ("100b", 100),
        ("1 GB", 10**9),
    ],
)
def test_memory(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["", "0", "0Gb", "1Xb", "Gb", "-1G", "1GiBB", "1 G B", "0.1"])
def test_memory_refused_naming_the_flag(text: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_memory(text, "--memory")
    assert e.value.message.startswith("--memory: bad size")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("1.5", 1.5),
        ("90s", 90.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1h2m3s", 3723.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("2m", 120.0),
        ("1500us", 0.0015),
    ],
)
def test_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0", "0s", "1x", "m", "1m30", "s1", "1h-1m", "-5s", "1 m"])
def test_duration_refused_naming_the_flag(text: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_duration(text, "--timeout")
    assert e.value.message.startswith("--timeout: bad duration")
    assert "1m30s" in (e.value.hint or "")


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59))
def test_duration_parts_add_up(h: int, m: int, s: int) -> None:
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + f"{s}s"
    if h == m == s == 0:
        with pytest.raises(UsageError):
            parse_duration(text)
    else:
        assert parse_duration(text) == h * 3600 + m * 60 + s
