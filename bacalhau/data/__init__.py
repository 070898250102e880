"""Storage providers for job inputs that are not in the network yet: URLs (http/https)."""

from __future__ import annotations

from bacalhau.data.url import (
    DEFAULT_MAX_BYTES,
    UrlError,
    UrlFetcher,
    check_url,
    file_name,
    mount_paths,
    parse_url_list,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "UrlError",
    "UrlFetcher",
    "check_url",
    "file_name",
    "mount_paths",
    "parse_url_list",
]
