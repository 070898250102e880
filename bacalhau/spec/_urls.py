"""The forms of URL inputs: which URLs are taken, the file name and mount path of each."""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from bacalhau.errors import UsageError

MAX_URL_LENGTH = 8192


def check_url(url: str) -> str:
    """`url` if it is an absolute http(s) URL with a host; raises UsageError otherwise."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or len(text) > MAX_URL_LENGTH
        or any(ch.isspace() or ord(ch) < 32 for ch in text)
    ):
        raise UsageError(
            f"bad URL {url[:200]!r}", hint="give an http:// or https:// URL with a host name"
        )
    return text


def file_name(url: str) -> str:
    """The file name a URL is mounted as: the last part of its path, else its host name."""
    parts = urlsplit(url)
    name = unquote(PurePosixPath(parts.path).name) if parts.path else ""
    name = "".join(ch for ch in name if ch not in "/\\\0" and ord(ch) >= 32)
    if name in ("", ".", ".."):
        name = parts.hostname or "download"
    return name[:200]


def mount_paths(
    urls: list[str], folder: str = "/inputs", taken: set[str] | None = None
) -> list[str]:
    """`folder/<file name>` for each URL, in order; a repeated name becomes `name_1.ext`,
    `name_2.ext`, ... (the first keeps its name), skipping paths in `taken`."""
    used = set(taken or ())
    out = []
    for url in urls:
        name = file_name(url)
        stem, dot, ext = name.partition(".") if not name.startswith(".") else (name, "", "")
        path, n = f"{folder}/{name}", 0
        while path in used:
            n += 1
            path = f"{folder}/{stem}_{n}{dot}{ext}"
        used.add(path)
        out.append(path)
    return out


def parse_url_list(text: str, source: str) -> list[str]:
    """URLs from a list, one per line; blank lines and lines starting with '#' are skipped.

    Raises UsageError naming the line of the first bad URL, or if there is none.
    """
    urls = []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            urls.append(check_url(line))
        except UsageError as e:
            raise UsageError(f"{source}, line {i}: {e.message}", hint=e.hint) from None
    if not urls:
        raise UsageError(f"{source} has no URLs", hint="write one http(s) URL per line")
    return urls
