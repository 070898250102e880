"""URL inputs: downloads with limits, and the `url` storage provider. The forms of URLs
(`check_url`, `file_name`, `mount_paths`, `parse_url_list`) are spec rules, in bacalhau.spec,
and re-exported here.

A download is blocking (urllib; run it in a thread): redirects are followed (http and https
only, at most 10), proxies from the environment are ignored, a body over `max_bytes` (or a
Content-Length over it) stops the download, and connection failures, timeouts, 429 and 5xx
answers are retried with exponential backoff. Nothing is left at the destination on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ipaddress
import itertools
import os
import random
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from bacalhau.blockstore import INPUT, Blockstore
from bacalhau.content import Importer
from bacalhau.content.cid import CID
from bacalhau.data.base import InputRequest, Resolved
from bacalhau.errors import BacalhauError
from bacalhau.spec import MAX_URL_LENGTH, check_url, file_name, mount_paths, parse_url_list

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_URL_LENGTH",
    "UrlError",
    "UrlFetcher",
    "UrlProvider",
    "check_url",
    "file_name",
    "mount_paths",
    "parse_url_list",
]

DEFAULT_MAX_BYTES = 1 << 30
_READ = 1 << 20
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class UrlError(BacalhauError):
    """A URL could not be downloaded; the message names the URL and why.

    `retryable`: a later attempt may succeed (connection failures, 429, 5xx).
    """

    def __init__(self, message: str, *, hint: str | None = None, retryable: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.retryable = retryable


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = 10

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        if urlsplit(newurl).scheme not in ("http", "https"):
            raise UrlError(f"{req.full_url} redirects to {newurl[:200]}, which is not http(s)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def public_address(ip: str) -> bool:
    """Whether `ip` is a public unicast address (not loopback, private, link-local such as
    169.254.169.254, carrier-grade NAT, multicast, reserved or unspecified)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast


class _PublicOnly(OSError):
    """A connection reached an address downloads may not go to (raised inside urllib)."""


def _connect_public(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
    """`socket.create_connection` that refuses, once connected and before a byte is sent, a
    peer that is not public: what the connection really reached counts, however the name
    resolved, so redirects and DNS answers cannot lead a download inside."""
    sock = socket.create_connection(address, *args, **kwargs)
    peer = sock.getpeername()[0]
    if not public_address(peer):
        sock.close()
        named = "" if address[0] == peer else f"{address[0]} is "
        raise _PublicOnly(f"{named}{peer} is not a public address")
    return sock


class _PublicHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _connect_public  # http.client's own hook for connecting


class _PublicHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = _connect_public


class _PublicHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: Any) -> Any:
        return self.do_open(_PublicHTTPConnection, req)


class _PublicHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: Any) -> Any:
        return self.do_open(_PublicHTTPSConnection, req, context=self._context)  # type: ignore[attr-defined]


class UrlFetcher:
    """Downloads URLs to files, within limits.

    Unless `allow_private`, every connection (each redirect hop too) must reach a public
    unicast address: a URL input cannot read a node's own services, its LAN or a cloud
    metadata address.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        stop: threading.Event | None = None,
        allow_private: bool = False,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._stop = stop or threading.Event()
        # No ProxyHandler from the environment: requests go where the URL says, nowhere else.
        handlers: list[Any] = [urllib.request.ProxyHandler({}), _Redirects()]
        if not allow_private:
            handlers += [_PublicHTTPHandler(), _PublicHTTPSHandler()]
        self._opener = urllib.request.build_opener(*handlers)

    def stop(self) -> None:
        """Make downloads in progress (and their retries) fail now, and any later ones."""
        self._stop.set()

    def fetch(self, url: str, dest: Path, on_bytes: Callable[[int], None] | None = None) -> int:
        """Download `url` to `dest` (created; removed again on failure); returns its size.

        Raises UrlError: an HTTP error status (after retries for 429 and 5xx), a body over
        `max_bytes`, a connection that fails or times out every time, or a bad redirect.
        """
        attempt = 0
        while True:
            try:
                with open(dest, "wb") as f:
                    return self._once(url, f, on_bytes)
            except UrlError as e:
                dest.unlink(missing_ok=True)
                if not e.retryable or attempt >= self.retries or self._stop.is_set():
                    raise
            except BaseException:
                dest.unlink(missing_ok=True)
                raise
            delay = self.backoff_s * (2**attempt) * (0.75 + random.random() / 2)
            attempt += 1
            if self._stop.wait(delay):
                raise UrlError(f"download of {url} was stopped")

    def _once(self, url: str, f: IO[bytes], on_bytes: Callable[[int], None] | None) -> int:
        if self._stop.is_set():
            raise UrlError(f"download of {url} was stopped")
        req = urllib.request.Request(url, headers={"User-Agent": "bacalhau-python"})
        try:
            resp = self._opener.open(req, timeout=self.timeout_s)
        except urllib.error.HTTPError as e:
            with contextlib.closing(e):
                raise _error(url, f"HTTP {e.code} {e.reason}", e.code in _RETRY_STATUS) from None
        except UrlError:
            raise
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, _PublicOnly):
                raise UrlError(
                    f"cannot download {url[:300]}: {reason}",
                    hint="URL inputs must be on the public internet (a node started with "
                    "--allow-private-urls takes others)",
                ) from None
            raise _error(url, f"cannot connect: {reason}", True) from None
        with resp:
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                raise _too_big(url, self.max_bytes, f"it says it has {int(length)} bytes")
            size = 0
            try:
                while chunk := resp.read(_READ):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise _too_big(url, self.max_bytes, "its body goes on past that")
                    if self._stop.is_set():
                        raise UrlError(f"download of {url} was stopped")
                    f.write(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
            except (OSError, ValueError) as e:
                if isinstance(e, UrlError):
                    raise
                raise _error(url, f"the download broke off after {size} bytes: {e}", True) from None
            if length is not None and length.isdigit() and size < int(length):
                raise _error(url, f"got {size} of {int(length)} bytes", True)
            f.flush()
            os.fsync(f.fileno())
            return size


def _error(url: str, why: str, retryable: bool) -> UrlError:
    return UrlError(f"cannot download {url[:300]}: {why}", retryable=retryable)


def _too_big(url: str, limit: int, why: str) -> UrlError:
    return UrlError(
        f"cannot download {url[:300]}: larger than the limit of {limit} bytes ({why})",
        hint="raise the node's --url-max-size, or give a smaller file",
    )


class UrlProvider:
    """The `url` storage provider: downloads (at most `parallel` at once; one download per URL
    at a time, however many jobs ask for it meanwhile) into `tmp_dir`, then adds the file to
    the blockstore, pinned, and removes the download."""

    name = "url"

    def __init__(
        self, blocks: Blockstore, fetcher: UrlFetcher, tmp_dir: Path, *, parallel: int = 8
    ) -> None:
        self._blocks = blocks
        self.fetcher = fetcher
        self._tmp = tmp_dir
        self._parallel = parallel
        self._slots: asyncio.Semaphore | None = None
        self._downloads: dict[str, asyncio.Future[Resolved]] = {}
        self._seq = itertools.count()

    @property
    def pending(self) -> list[asyncio.Future[Resolved]]:
        return list(self._downloads.values())

    async def resolve(self, req: InputRequest) -> Resolved:
        """See `StorageProvider.resolve`. Raises UsageError for a bad URL, UrlError."""
        url = check_url(req.spec.url)
        fut = self._downloads.get(url)
        if fut is None:
            fut = asyncio.ensure_future(self._download(url))
            self._downloads[url] = fut
            fut.add_done_callback(lambda _: self._downloads.pop(url, None))
        return await asyncio.shield(fut)

    async def _download(self, url: str) -> Resolved:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._parallel)
        async with self._slots:
            return await asyncio.to_thread(self._download_blocking, url)

    def _download_blocking(self, url: str) -> Resolved:
        tmp = self._tmp / f"url-{os.getpid()}-{next(self._seq)}"
        try:
            size = self.fetcher.fetch(url, tmp)
            with self._blocks.batch() as batch:
                with Importer(sink=batch, workers=1) as imp:
                    cid = imp.add_path(tmp).cid
                batch.pin(cid, INPUT)
            return Resolved(str(CID.from_bytes(cid)), size)
        finally:
            tmp.unlink(missing_ok=True)
