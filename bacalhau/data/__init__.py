"""Storage providers: how a job's inputs come into a node's blockstore (`base.py`: the
interface), by CID from peers (`ipfs.py`) or by URL (`url.py`). The forms of URLs are spec
rules (bacalhau.spec), re-exported here."""

from __future__ import annotations

from bacalhau.data.base import InputRequest, Resolved, StorageProvider
from bacalhau.data.ipfs import IpfsProvider, nobody_has
from bacalhau.data.url import DEFAULT_MAX_BYTES, UrlError, UrlFetcher, UrlProvider
from bacalhau.spec import check_url, file_name, mount_paths, parse_url_list

__all__ = [
    "DEFAULT_MAX_BYTES",
    "InputRequest",
    "IpfsProvider",
    "Resolved",
    "StorageProvider",
    "UrlError",
    "UrlFetcher",
    "UrlProvider",
    "check_url",
    "file_name",
    "mount_paths",
    "nobody_has",
    "parse_url_list",
]
