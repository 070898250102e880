"""The input cache (single flight, reference counts, LRU eviction under a cap) and URL
downloads (limits, retries, redirects, names) against a real web server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bacalhau._pb.bacalhau.v1 import peer_pb2
from bacalhau.blockstore import Blockstore
from bacalhau.compute.inputs import InputCache
from bacalhau.content import Importer, dag
from bacalhau.content.cid import CID
from bacalhau.data import UrlError, UrlFetcher, file_name, mount_paths, parse_url_list
from bacalhau.data.url import public_address
from bacalhau.errors import UsageError
from bacalhau.identity import Identity
from bacalhau.network import Network
from tests._web import QuietHandler, serve, stop

MIB = 1 << 20


class Tally:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, n: float = 1) -> None:
        self.value += n


@pytest.fixture
def blocks(tmp_path: Path) -> Iterator[Blockstore]:
    store = Blockstore(tmp_path / "blocks")
    yield store
    store.close()


def make_cache(tmp_path: Path, blocks: Blockstore, **kw: object) -> InputCache:
    ident = Identity.load_or_create(tmp_path)
    net = Network(ident, peer_pb2.Hello(node_id=ident.node_id))
    return InputCache(net, blocks, tmp_path / "inputs", **kw)  # type: ignore[arg-type]


def add(blocks: Blockstore, data: bytes) -> str:
    with blocks.batch() as batch, Importer(sink=batch, workers=1) as imp:
        cid = imp.add_bytes(data).cid
    return str(CID.from_bytes(cid))


def test_concurrent_acquires_write_out_once_and_count_references(
    tmp_path: Path, blocks: Blockstore
):
    hits, misses = Tally(), Tally()
    cache = make_cache(tmp_path, blocks, hits=hits, misses=misses)
    cid = add(blocks, b"x" * 1000)

    async def main() -> list[Path]:
        return list(await asyncio.gather(*(cache.acquire(cid, "") for _ in range(4))))

    paths = asyncio.run(main())
    assert len(set(paths)) == 1 and paths[0].read_bytes() == b"x" * 1000
    assert (misses.value, hits.value) == (1, 3)
    assert cache.refs(cid) == 4
    for p in paths:
        cache.release(p)
    assert cache.refs(cid) == 0
    cache.release(paths[0])  # one release too many changes nothing
    assert cache.refs(cid) == 0 and cache.holds(cid)


def test_lru_eviction_under_the_cap_never_evicts_what_is_held(tmp_path: Path, blocks: Blockstore):
    # No collection after evictions here (gc_after=0): b is taken from the blockstore again
    # below; tests/test_gc.py has evicted inputs collected.
    cache = make_cache(tmp_path, blocks, max_bytes=int(2.5 * MIB), gc_after=0)
    a, b, c, d = (add(blocks, bytes([i]) * MIB) for i in range(4))

    async def main() -> None:
        pa = await cache.acquire(a, "")  # held throughout
        pb = await cache.acquire(b, "")
        cache.release(pb)
        pc = await cache.acquire(c, "")  # 3 MiB: b (unheld, oldest) goes, a stays
        assert not cache.holds(b) and cache.holds(a) and cache.holds(c)
        assert pa.read_bytes() == bytes([0]) * MIB
        cache.release(pc)
        pd = await cache.acquire(d, "")  # c goes: a is still held
        assert not cache.holds(c) and cache.holds(a) and cache.holds(d)
        pd2 = await cache.acquire(b, "")  # fetched again (from the blockstore) after eviction
        assert pd2.read_bytes() == bytes([1]) * MIB
        # over the cap while everything is held: nothing in use is removed
        assert cache.holds(a) and cache.holds(d) and cache.holds(b)
        assert cache.size == 3 * MIB
        for p in (pa, pd, pd2):
            cache.release(p)
        assert cache.size <= 2.5 * MIB
        await asyncio.gather(*cache.pending)

    asyncio.run(main())
    assert sorted(p.name for p in (tmp_path / "inputs" / ".tmp").iterdir()) == []


def test_a_restarted_cache_knows_its_entries_and_drops_half_written_ones(
    tmp_path: Path, blocks: Blockstore
):
    cache = make_cache(tmp_path, blocks)
    cid = add(blocks, b"kept")
    asyncio.run(cache.acquire(cid, ""))
    (tmp_path / "inputs" / ".tmp" / "half-written").write_bytes(b"partial")
    again = make_cache(tmp_path, blocks)
    assert again.holds(cid) and again.size == 4
    assert list((tmp_path / "inputs" / ".tmp").iterdir()) == []


def test_local_share_counts_inputs_held(tmp_path: Path, blocks: Blockstore):
    cache = make_cache(tmp_path, blocks)
    cid = add(blocks, b"y" * 5000)
    elsewhere = "bafkreibjfez3ryeimujynshf4b7v6gupmpogapn52lfsvgxs56rjdnthc4"
    assert cache.local_share([cid, elsewhere, "not a cid"]) == (5000, 1)


# -- URLs ------------------------------------------------------------------------------------


class Web:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        web = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                n = web.hits[self.path] = web.hits.get(self.path, 0) + 1
                if self.path == "/ok":
                    self._send(200, b"fine\n")
                elif self.path == "/big-header":
                    self.send_response(200)
                    self.send_header("Content-Length", str(10 * MIB))
                    self.end_headers()
                elif self.path == "/short":  # says 100 bytes, sends 10, closes
                    self.send_response(200)
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    self.wfile.write(b"0123456789")
                elif self.path == "/to-ftp":
                    self.send_response(301)
                    self.send_header("Location", "ftp://127.0.0.1/x")
                    self.end_headers()
                elif self.path == "/busy":
                    self._send(429 if n < 3 else 200, b"done\n")
                elif self.path == "/endless":
                    self._endless(b"z" * 65536)
                else:
                    self._send(int(self.path.strip("/")), b"")

        self.server, self.base = serve(Handler)


@pytest.fixture(scope="module")
def web() -> Iterator[Web]:
    w = Web()
    yield w
    stop(w.server)


@pytest.fixture
def fetcher() -> UrlFetcher:
    return UrlFetcher(max_bytes=MIB, backoff_s=0.01, timeout_s=5, allow_private=True)


def test_download_and_retry(web: Web, fetcher: UrlFetcher, tmp_path: Path):
    assert fetcher.fetch(web.base + "/ok", tmp_path / "ok") == 5
    assert (tmp_path / "ok").read_bytes() == b"fine\n"
    assert fetcher.fetch(web.base + "/busy", tmp_path / "busy") == 5  # two 429s, then 200
    assert web.hits["/busy"] == 3


@pytest.mark.parametrize(
    ("path", "why", "tries"),
    [
        ("/404", "HTTP 404", 1),
        ("/503", "HTTP 503", 4),
        ("/endless", "larger than the limit of 1048576 bytes", 1),
        ("/big-header", "it says it has 10485760 bytes", 1),
        ("/short", "got 10 of 100 bytes", 4),
        ("/to-ftp", "not http(s)", 1),
    ],
)
def test_download_failures(
    web: Web, fetcher: UrlFetcher, tmp_path: Path, path: str, why: str, tries: int
):
    before = web.hits.get(path, 0)
    with pytest.raises(UrlError) as err:
        fetcher.fetch(web.base + path, tmp_path / "dest")
    assert why in str(err.value) and web.base + path in str(err.value)
    assert web.hits[path] - before == tries
    assert not (tmp_path / "dest").exists()


def test_by_default_downloads_reach_only_public_addresses(web: Web, tmp_path: Path):
    """What a connection really reached is checked (for every redirect hop too, since each
    opens its own): a loopback server is refused before a byte is sent, and not retried."""
    f = UrlFetcher(backoff_s=0.01)
    before = web.hits.get("/ok", 0)
    with pytest.raises(UrlError) as err:
        f.fetch(web.base + "/ok", tmp_path / "x")
    assert "127.0.0.1 is not a public address" in str(err.value)
    assert "--allow-private-urls" in str(err.value) and not err.value.retryable
    assert web.hits.get("/ok", 0) == before and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("ip", "public"),
    [("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
     ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.251", False),
     ("::1", False), ("fe80::1%eth0", False), ("fd00::1", False), ("::ffff:10.0.0.1", False),
     ("93.184.216.34", True), ("2a00:1450::1", True)],
)  # fmt: skip
def test_public_addresses(ip: str, public: bool):
    assert public_address(ip) is public


def test_connection_refused_is_retried_then_reported(tmp_path: Path):
    f = UrlFetcher(retries=2, backoff_s=0.01, timeout_s=2, allow_private=True)
    with pytest.raises(UrlError, match="cannot connect"):
        f.fetch("http://127.0.0.1:1/x", tmp_path / "x")


def test_url_inputs_in_cache_single_flight_and_folder(web: Web, tmp_path: Path, blocks: Blockstore):
    cache = make_cache(tmp_path, blocks, fetcher=UrlFetcher(backoff_s=0.01, allow_private=True))
    before = web.hits.get("/ok", 0)
    urls = [(web.base + "/ok", "/inputs/ok"), (web.base + "/ok", "/inputs/ok_1")]

    async def main() -> list[tuple[Path, str, list[object]]]:
        a, b = await asyncio.gather(cache.acquire_urls(urls), cache.acquire_urls(urls))
        return [*a, *b]  # type: ignore[list-item]

    (path, folder, resolved), (path2, _, _) = asyncio.run(main())
    assert web.hits["/ok"] - before == 1  # one download for the same URL at the same time
    assert path == path2 and folder == "/inputs"
    assert sorted(p.name for p in path.iterdir()) == ["ok", "ok_1"]
    assert (path / "ok_1").read_bytes() == b"fine\n"
    # the folder and the file are in the blockstore, by CID
    (first, _) = resolved
    assert b"".join(dag.cat(blocks.get, bytes(CID.parse(first.cid)))) == b"fine\n"  # type: ignore[attr-defined]


def test_url_names_and_lists():
    assert file_name("http://127.0.0.1/a/b/data%20set.csv?x=1") == "data set.csv"
    assert file_name("http://127.0.0.1/") == "127.0.0.1"
    assert file_name("http://127.0.0.1/..") == "127.0.0.1"
    urls = ["http://h/x.csv", "http://k/x.csv", "http://h/y", "http://j/x.csv", "http://h/y"]
    assert mount_paths(urls, taken={"/inputs/y"}) == [
        "/inputs/x.csv", "/inputs/x_1.csv", "/inputs/y_1", "/inputs/x_2.csv", "/inputs/y_2",
    ]  # fmt: skip
    assert parse_url_list("# c\n\nhttp://127.0.0.1/a\n https://h/b \n", "f") == [
        "http://127.0.0.1/a",
        "https://h/b",
    ]
    with pytest.raises(UsageError, match="f, line 2: bad URL"):
        parse_url_list("http://h/a\nfile:///etc/passwd\n", "f")
    with pytest.raises(UsageError, match="has no URLs"):
        parse_url_list("\n# only a comment\n", "f")


def test_spec_input_checks():
    from bacalhau._pb.bacalhau.v1 import types_pb2 as pb
    from bacalhau.spec import check_inputs

    cid = "bafkreibjfez3ryeimujynshf4b7v6gupmpogapn52lfsvgxs56rjdnthc4"
    ok = [
        pb.InputSpec(source="ipfs", cid=cid, mount_path="/data"),
        pb.InputSpec(source="ipfs", cid=cid, mount_path="/inputs2/x"),
        pb.InputSpec(source="url", url="http://127.0.0.1/a", mount_path="/inputs/a"),
        pb.InputSpec(source="url", url="https://h/b", mount_path="/inputs/b"),
    ]
    assert check_inputs(ok) == []
    cases = [
        ([pb.InputSpec(source="s3", cid=cid, mount_path="/x")], "unknown source 's3'"),
        ([pb.InputSpec(source="url", url="ftp://h/a", mount_path="/i/a")], "bad URL"),
        ([pb.InputSpec(source="url", url="http://h/a", mount_path="/")], "a file in a folder"),
        ([pb.InputSpec(source="ipfs", mount_path="/x")], "has no CID"),
        ([ok[0], pb.InputSpec(source="ipfs", cid=cid, mount_path="/data")], "used once"),
        (
            [pb.InputSpec(source="ipfs", cid=cid, mount_path="/inputs"), ok[2]],
            "input /inputs is in /inputs, the folder URL inputs are mounted as",
        ),
        (
            [pb.InputSpec(source="ipfs", cid=cid, mount_path="/inputs/x"), ok[2]],
            "input /inputs/x is in /inputs",
        ),
        (
            [
                pb.InputSpec(source="url", url=f"http://h/{'x' * 200}{i}", mount_path=f"/i/{i}")
                for i in range(6000)
            ],
            "more than 1048576",
        ),
    ]
    for inputs, why in cases:
        problems = check_inputs(inputs)
        assert len(problems) == 1 and why in problems[0].message, (why, problems)


def test_serve_size_flags():
    from bacalhau.cli._serve import _size

    assert _size("0", "--input-cache-size") == 0
    assert _size("8Gi", "--input-cache-size") == 8 << 30
    with pytest.raises(UsageError, match="--url-max-size: bad size"):
        _size("lots", "--url-max-size")


def test_block_links_fast_path_agrees_with_decoding(tmp_path: Path):
    import random

    from bacalhau.content import ImportOptions
    from bacalhau.network.blocks import _links, _only_data

    seen: dict[bytes, bytes] = {}

    class Sink:
        def put(self, cid: bytes, *parts: bytes) -> None:
            seen[cid] = b"".join(parts)

    (tmp_path / "t" / "sub").mkdir(parents=True)
    (tmp_path / "t" / "big").write_bytes(random.Random(5).randbytes(3 * MIB))
    (tmp_path / "t" / "sub" / "small").write_bytes(b"small")
    (tmp_path / "t" / "empty").write_bytes(b"")
    for options in (ImportOptions(), ImportOptions(cid_version=1)):
        with Importer(options, sink=Sink(), workers=1) as imp:  # type: ignore[arg-type]
            imp.add_path(tmp_path / "t")
    fast = 0
    for cid, block in seen.items():
        assert _links(cid, block) == [link.cid for link in dag.decode(cid, block).links]
        fast += _only_data(block)
    assert fast >= 12  # the v0 leaves of the big file took the fast path
    assert not _only_data(b"\x0a\x05abc")  # a Data field longer than the block
    assert not _only_data(b"\x12\x00")  # starts with a link


# -- one contract, every storage provider ------------------------------------------------------


@pytest.fixture(params=["ipfs", "url"])
def provider_case(
    request: pytest.FixtureRequest, tmp_path: Path, blocks: Blockstore, web: Web
) -> tuple[object, object, object, object, bytes]:
    """(provider, a good input, an input nobody can give, a malformed input, good content)."""
    from bacalhau._pb.bacalhau.v1 import types_pb2 as pb
    from bacalhau.data import InputRequest, IpfsProvider, UrlProvider
    from bacalhau.network import fetch_dag

    if request.param == "ipfs":
        ident = Identity.load_or_create(tmp_path)
        net = Network(ident, peer_pb2.Hello(node_id=ident.node_id))

        async def fetch(root: bytes, holders: list[str]) -> None:
            await fetch_dag(net, blocks, root, holders)

        provider: object = IpfsProvider(blocks, fetch)
        good = pb.InputSpec(source="ipfs", cid=add(blocks, b"fine\n"))
        absent = "bafkreibjfez3ryeimujynshf4b7v6gupmpogapn52lfsvgxs56rjdnthc4"
        missing = pb.InputSpec(source="ipfs", cid=absent)
        bad = pb.InputSpec(source="ipfs", cid="Qmnotacid")
    else:
        (tmp_path / "tmp").mkdir()
        provider = UrlProvider(
            blocks, UrlFetcher(backoff_s=0.01, allow_private=True), tmp_path / "tmp"
        )
        good = pb.InputSpec(source="url", url=web.base + "/ok")
        missing = pb.InputSpec(source="url", url=web.base + "/404")
        bad = pb.InputSpec(source="url", url="ftp://127.0.0.1/x")
    return provider, InputRequest(good), InputRequest(missing), InputRequest(bad), b"fine\n"


def test_provider_contract(provider_case: tuple[object, object, object, object, bytes]):
    from bacalhau.errors import BacalhauError

    provider, good, missing, bad, content = provider_case
    resolved = asyncio.run(provider.resolve(good))  # type: ignore[attr-defined]
    store: Blockstore = provider._blocks  # type: ignore[attr-defined]
    root = bytes(CID.parse(resolved.cid))
    assert b"".join(dag.cat(store.get, root)) == content and resolved.size == len(content)
    assert store.is_pinned(root)
    for req in (missing, bad):
        with pytest.raises(BacalhauError) as err:
            asyncio.run(provider.resolve(req))  # type: ignore[attr-defined]
        named = req.spec.cid or req.spec.url  # type: ignore[attr-defined]
        assert named in str(err.value)
    tmp = store.root.parent / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


def test_url_downloads_are_bounded_in_parallel(tmp_path: Path, blocks: Blockstore):
    from bacalhau._pb.bacalhau.v1 import types_pb2 as pb
    from bacalhau.data import InputRequest, UrlProvider
    from tests._wait import wait_for

    lock = threading.Lock()
    release = threading.Event()
    active = [0, 0]  # now, most at once

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                active[0] += 1
                active[1] = max(active[1], active[0])
            release.wait(30)
            body = self.path.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            with lock:
                active[0] -= 1

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    (tmp_path / "tmp").mkdir()
    provider = UrlProvider(blocks, UrlFetcher(allow_private=True), tmp_path / "tmp", parallel=3)
    got: list[object] = []

    async def main() -> None:
        reqs = [InputRequest(pb.InputSpec(source="url", url=f"{base}/{i}")) for i in range(10)]
        got.extend(await asyncio.gather(*(provider.resolve(r) for r in reqs)))

    runner = threading.Thread(target=asyncio.run, args=(main(),))
    runner.start()
    try:
        wait_for(lambda: active[0] == 3, 10, "three downloads to start")
        assert active[1] == 3  # never more than `parallel`
    finally:
        release.set()
        runner.join(30)
        server.shutdown()
        server.server_close()
    assert len(got) == 10 and active[1] == 3
