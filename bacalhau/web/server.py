"""The dashboard's HTTP server: static pages from the package and read-only JSON views.

Served by a small threaded stdlib server (as /metrics is). Only GET and HEAD are answered;
nothing here changes the node. What it shows is what any client of the API may read: jobs
with the env values of their specs hidden (as `describe` shows them to someone who is not
the job's owner), the peer table, and the files of accepted results. Requests whose Host is
not an IP address, `localhost` or the `--web-host` name are refused (DNS rebinding), and
every page carries a Content-Security-Policy that allows nothing from another origin.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import mimetypes
import socket
import threading
import urllib.parse
from collections.abc import Callable, Coroutine, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Final, TypeVar

import bacalhau.web.views as views
from bacalhau.content import dag
from bacalhau.content.cid import CID
from bacalhau.content.errors import NotFound
from bacalhau.datastore import JobNotFound
from bacalhau.errors import BacalhauError
from bacalhau.service import Caller, JobService, ResultService

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_JOBS: Final = 500  # the most jobs one list answer has
MAX_FILES: Final = 1000  # the most entries a result listing walks
MAX_DEPTH: Final = 16  # the deepest folder a result listing walks
LOOP_WAIT_S: Final = 10.0  # how long a request waits for the event loop
FETCH_WAIT_S: Final = 60.0  # how long a request waits for a result DAG from peers
TRACE_WAIT_S: Final = 10.0  # how long for a job's spans (each node is asked for 3 s at most)
MAX_SPANS_SHOWN: Final = 2000  # spans drawn in a job's waterfall
STATIC: Final = {"/": "index.html", "/app.js": "app.js", "/style.css": "style.css"}
HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# A result file is shown as plain text (or downloaded) and may never run as a page.
FILE_CSP: Final = "sandbox; default-src 'none'"
ANONYMOUS: Final = Caller("")  # who the dashboard reads as: sees no job's env values


class WebError(BacalhauError):
    """The dashboard could not start, or a request cannot be answered (`status`)."""

    def __init__(self, message: str, *, hint: str | None = None, status: int = 500) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class Dashboard:
    """What the pages show, read from the node's own services.

    The datastore and blockstore are read in the request's thread; what lives on the event
    loop (the peer table's live values, this node's free resources, fetching a result DAG)
    is asked there, with a deadline.
    """

    def __init__(
        self,
        *,
        jobs: JobService,
        results: ResultService,
        node: Callable[[], dict[str, Any]],
        loop: asyncio.AbstractEventLoop,
        trace: Callable[[Any], Coroutine[Any, Any, tuple[str, list[Any], list[str]]]] | None = None,
    ) -> None:
        """`trace(job)`: the job's spans from every node that answered, and those that did
        not (`TraceService.gather`); None where the node keeps no traces."""
        self._jobs = jobs
        self._results = results
        self._node = node
        self._loop = loop
        self._trace = trace

    def node(self) -> dict[str, Any]:
        """This node, its capacity and its peers."""

        async def ask() -> dict[str, Any]:
            return self._node()

        return self._on_loop(ask(), LOOP_WAIT_S)

    def jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest jobs this node knows, of every user."""
        limit = max(1, min(limit, MAX_JOBS))
        page = self._jobs.list(ANONYMOUS, all_users=True, all=True, limit=limit)
        return [views.job_summary(job) for job in page.jobs]

    def job(self, job_id: str) -> dict[str, Any]:
        """A job (`job_id` may be a unique prefix), as someone who does not own it sees it."""
        return views.job(self._jobs.describe(job_id, ANONYMOUS))

    def events(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        job = self._jobs.get(job_id)
        return [views.event(ev) for ev in self._jobs.events(job.id, after)]

    def trace(self, job_id: str) -> dict[str, Any]:
        """The job's spans across the nodes (its waterfall), and the nodes that did not
        answer in time."""
        if self._trace is None:
            return {"spans": [], "missing_nodes": [], "recorded": False}
        job = self._jobs.get(job_id)
        _, spans, missing = self._on_loop(self._trace(job), TRACE_WAIT_S)
        return {
            "spans": [views.span(s) for s in spans[:MAX_SPANS_SHOWN]],
            "missing_nodes": missing,
            "recorded": True,
        }

    def files(self, job_id: str, execution_id: str) -> dict[str, Any]:
        """The files of an execution's accepted result: path, size, CID (at most MAX_FILES)."""
        root = self._result_root(job_id, execution_id)
        out: list[dict[str, Any]] = []
        self._walk(root, "", out, 0)
        return {
            "root_cid": str(CID.from_bytes(root)),
            "files": out[:MAX_FILES],
            "truncated": len(out) > MAX_FILES,
        }

    def file(self, job_id: str, execution_id: str, path: str) -> tuple[int, Iterator[bytes]]:
        """(size, bytes chunk by chunk) of the file at `path` in an accepted result."""
        cid = self._result_root(job_id, execution_id)
        for name in path.split("/"):
            if name in ("", ".", ".."):
                raise WebError(f"bad path {path!r}", status=400)
            child = self._results.child(cid, name)
            if child is None:
                raise WebError(f"the result has no file {path!r}", status=404)
            cid = child
        node = dag.decode(cid, self._results.blockstore.get(cid))
        if node.type in (dag.DIRECTORY, dag.SYMLINK):
            raise WebError(f"{path!r} is not a file", status=404)
        return node.filesize or 0, self._results.cat(cid)

    def _result_root(self, job_id: str, execution_id: str) -> bytes:
        job = self._jobs.get(job_id)
        ex = next((e for e in job.executions if e.id == execution_id), None)
        if ex is None:
            raise WebError(f"job {job.id} has no execution {execution_id!r}", status=404)
        if not views.has_files(ex):
            raise WebError(f"execution {ex.id} has no accepted result", status=404)
        fetch = self._results.ensure_dag(ex.result_cid, [ex.node_id])
        return self._on_loop(fetch, FETCH_WAIT_S)

    def _walk(self, cid: bytes, prefix: str, out: list[dict[str, Any]], depth: int) -> None:
        node = dag.decode(cid, self._results.blockstore.get(cid))
        if node.type != dag.DIRECTORY:
            out.append(
                {"path": prefix, "size": node.filesize or 0, "cid": str(CID.from_bytes(cid))}
            )
            return
        if depth > MAX_DEPTH:
            return
        for link in node.links:
            if len(out) > MAX_FILES:
                return
            name = link.name.decode("utf-8", "replace")
            self._walk(link.cid, f"{prefix}/{name}" if prefix else name, out, depth + 1)

    def _on_loop(self, coro: Coroutine[Any, Any, T], wait_s: float) -> T:
        try:
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result(wait_s)
        except TimeoutError:
            raise WebError("the node did not answer in time; try again", status=503) from None
        except RuntimeError as e:  # the loop is closed: the node is stopping
            coro.close()
            raise WebError(f"the node is stopping ({e})", status=503) from None


def start_web_server(
    dashboard: Dashboard, host: str = "127.0.0.1", port: int = 0
) -> tuple[ThreadingHTTPServer, int]:
    """Serve the dashboard on a daemon thread; (the server, its bound port). Raises WebError
    if the address cannot be bound."""
    allowed_hosts = {"localhost", host.strip("[]").lower()}

    class Handler(BaseHTTPRequestHandler):
        def version_string(self) -> str:
            return "bacalhaud"

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            if not _host_allowed(self.headers.get("Host", ""), allowed_hosts):
                self._json(421, {"error": "this dashboard answers only to its own address"})
                return
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            try:
                if url.path in STATIC:
                    self._static(STATIC[url.path])
                elif url.path.startswith("/api/"):
                    self._api([urllib.parse.unquote(p) for p in url.path[5:].split("/")], query)
                else:
                    self._json(404, {"error": f"no page {url.path!r}"})
            except WebError as e:
                self._json(e.status, {"error": str(e)})
            except BacalhauError as e:  # unknown job, bad ID, missing blocks, ...
                status = 404 if isinstance(e, (JobNotFound, NotFound)) else 400
                self._json(status, {"error": str(e)})
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser went away
            except Exception:
                log.exception("dashboard request %s failed", url.path)
                self._json(500, {"error": "internal error (the node's log says more)"})

        def do_POST(self) -> None:
            self._json(405, {"error": "the dashboard is read-only"})

        do_PUT = do_DELETE = do_PATCH = do_POST

        def _api(self, parts: list[str], query: dict[str, list[str]]) -> None:
            match parts:
                case ["node"]:
                    self._json(200, dashboard.node())
                case ["jobs"]:
                    self._json(200, {"jobs": dashboard.jobs(_int(query, "limit", 100))})
                case ["jobs", job_id]:
                    self._json(200, dashboard.job(job_id))
                case ["jobs", job_id, "trace"]:
                    self._json(200, dashboard.trace(job_id))
                case ["jobs", job_id, "events"]:
                    events = dashboard.events(job_id, _int(query, "after", 0))
                    self._json(200, {"events": events})
                case ["jobs", job_id, "executions", ex_id, "files"]:
                    self._json(200, dashboard.files(job_id, ex_id))
                case ["jobs", job_id, "executions", ex_id, "files", *path] if path:
                    self._file(*dashboard.file(job_id, ex_id, "/".join(path)), path[-1])
                case _:
                    self._json(404, {"error": f"no API path /api/{'/'.join(parts)}"})

        def _static(self, name: str) -> None:
            body = resources.files("bacalhau.web").joinpath("static", name).read_bytes()
            kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
            self._send(200, body, f"{kind}; charset=utf-8")

        def _json(self, status: int, value: Any) -> None:
            body = json.dumps(value, separators=(",", ":")).encode()
            self._send(status, body, "application/json")

        def _file(self, size: int, chunks: Iterator[bytes], name: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(size))
            disposition = "inline" if "view" in self.path.split("?", 1)[-1] else "attachment"
            quoted = urllib.parse.quote(name)
            self.send_header("Content-Disposition", f"{disposition}; filename*=UTF-8''{quoted}")
            self._headers(FILE_CSP)
            if self.command == "HEAD":
                return
            for chunk in chunks:
                self.wfile.write(chunk)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self._headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _headers(self, csp: str | None = None) -> None:
            for key, value in HEADERS.items():
                if key == "Content-Security-Policy" and csp is not None:
                    value = csp
                self.send_header(key, value)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            log.debug("dashboard: " + format, *args)

    server_class = _V6Server if ":" in host else _V4Server
    try:
        server = server_class((host.strip("[]"), port), Handler)
    except OSError as e:
        raise WebError(
            f"cannot serve the dashboard on {host}:{port}: {e.strerror}",
            hint="choose another --web-port, or free this one",
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="web-http", daemon=True)
    thread.start()
    return server, int(server.server_address[1])


class _V4Server(ThreadingHTTPServer):
    daemon_threads = True


class _V6Server(_V4Server):
    address_family = socket.AF_INET6


def _host_allowed(header: str, allowed: set[str]) -> bool:
    """An IP address, `localhost` or the --web-host name (a page that rebinds a DNS name to
    this address sends its own name, and is refused)."""
    if header.startswith("["):  # [v6]:port
        host = header[1:].split("]", 1)[0]
    else:
        host = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    host = host.lower()
    if host in allowed:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _int(query: dict[str, list[str]], key: str, default: int) -> int:
    values = query.get(key)
    if not values:
        return default
    try:
        return max(0, int(values[0]))
    except ValueError:
        raise WebError(
            f"{key} must be a whole number, not {values[0][:40]!r}", status=400
        ) from None
