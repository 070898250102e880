"""Prometheus text exposition and the /metrics HTTP endpoint."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

import pytest

from bacalhau.errors import BacalhauError
from bacalhau.observability import (
    CONTENT_TYPE,
    Counter,
    Gauge,
    MetricsError,
    Registry,
    start_http_server,
)


def test_render_format() -> None:
    reg = Registry()
    jobs = Counter("bacalhau_jobs_total", "Jobs accepted.", ["executor"], registry=reg)
    Counter("bacalhau_restarts_total", "Restarts.", registry=reg)
    peers = Gauge("bacalhau_peers", "Connected peers.", registry=reg)
    jobs.labels(executor="wasm").inc()
    jobs.labels(executor="wasm").inc(2)
    jobs.labels(executor="noop").inc(0.5)
    peers.set(7)
    peers.inc(3)
    peers.dec()
    assert reg.render() == (
        "# HELP bacalhau_jobs_total Jobs accepted.\n"
        "# TYPE bacalhau_jobs_total counter\n"
        'bacalhau_jobs_total{executor="noop"} 0.5\n'
        'bacalhau_jobs_total{executor="wasm"} 3\n'
        "# HELP bacalhau_restarts_total Restarts.\n"
        "# TYPE bacalhau_restarts_total counter\n"
        "bacalhau_restarts_total 0\n"
        "# HELP bacalhau_peers Connected peers.\n"
        "# TYPE bacalhau_peers gauge\n"
        "bacalhau_peers 9\n"
    )


def test_escaping() -> None:
    reg = Registry()
    c = Counter("x_total", 'Help with \\ and\nnewline and "quotes".', ["path"], registry=reg)
    c.labels(path='C:\\dir\n"q"').inc()
    lines = reg.render().splitlines()
    assert lines[0] == '# HELP x_total Help with \\\\ and\\nnewline and "quotes".'
    assert lines[2] == 'x_total{path="C:\\\\dir\\n\\"q\\""} 1'


def test_special_values_and_multiple_labels() -> None:
    reg = Registry()
    g = Gauge("g", "g", ["a", "b"], registry=reg)
    g.labels(b="2", a=1).set(float("inf"))
    g.labels(a="1", b="3").set(float("-inf"))
    g.labels(a="1", b="4").set(float("nan"))
    g.labels(a="1", b="5").set(0.25)
    assert reg.render().splitlines()[2:] == [
        'g{a="1",b="2"} +Inf',
        'g{a="1",b="3"} -Inf',
        'g{a="1",b="4"} NaN',
        'g{a="1",b="5"} 0.25',
    ]


def test_callback_gauge_computed_at_scrape_time() -> None:
    reg = Registry()
    states = {"queued": 2, "running": 1}

    def by_state() -> Mapping[tuple[str, ...], float]:
        return {(state,): n for state, n in states.items()}

    g = Gauge("bacalhau_jobs", "Jobs by state.", ["state"], registry=reg, callback=by_state)
    assert 'bacalhau_jobs{state="queued"} 2' in reg.render()
    states["queued"] = 0
    states["completed"] = 5
    out = reg.render()
    assert 'bacalhau_jobs{state="queued"} 0' in out
    assert 'bacalhau_jobs{state="completed"} 5' in out
    with pytest.raises(MetricsError):
        g.labels(state="queued").set(1)


def test_failing_callback_does_not_break_the_scrape() -> None:
    reg = Registry()

    def broken() -> Mapping[tuple[str, ...], float]:
        raise RuntimeError("boom")

    Gauge("broken", "Broken.", registry=reg, callback=broken)
    Counter("ok_total", "Fine.", registry=reg).inc()
    out = reg.render()
    assert "# TYPE broken gauge\n" in out
    assert "ok_total 1\n" in out
    assert "\nbroken " not in out


def test_misuse_is_refused() -> None:
    reg = Registry()
    c = Counter("c_total", "c", ["a"], registry=reg)
    with pytest.raises(MetricsError):
        Counter("c_total", "again", registry=reg)
    with pytest.raises(MetricsError):
        c.labels(b="x")
    with pytest.raises(MetricsError):
        c.inc()  # labelled: needs .labels()
    with pytest.raises(MetricsError):
        c.labels(a="x").inc(-1)
    with pytest.raises(MetricsError):
        c.labels(a="x").set(3)
    for name, labels in [("1bad", ()), ("ok", ("__reserved",)), ("ok", ("a", "a"))]:
        with pytest.raises(MetricsError):
            Gauge(name, "h", labels)
    assert issubclass(MetricsError, BacalhauError)


def test_concurrent_increments_are_not_lost() -> None:
    reg = Registry()
    c = Counter("hits_total", "Hits.", ["k"], registry=reg)
    n, per = 8, 2000
    barrier = threading.Barrier(n)

    def work(_: int) -> None:
        barrier.wait()
        child = c.labels(k="a")
        for _ in range(per):
            child.inc()

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(work, range(n)))
    assert f'hits_total{{k="a"}} {n * per}\n' in reg.render()


@pytest.fixture
def served() -> Iterator[tuple[Registry, int]]:
    reg = Registry()
    server, port = start_http_server(reg, "127.0.0.1", 0)
    try:
        yield reg, port
    finally:
        server.shutdown()
        server.server_close()


def test_http_scrape(served: tuple[Registry, int]) -> None:
    reg, port = served
    assert port > 0
    Counter("scrapes_total", "Scrapes.", registry=reg).inc(4)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == CONTENT_TYPE
        body = resp.read().decode("utf-8")
    assert body == reg.render()
    assert "scrapes_total 4\n" in body


def test_http_other_paths_are_404(served: tuple[Registry, int]) -> None:
    _, port = served
    for path in ("/", "/metricsx", "/favicon.ico"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10)
        assert info.value.code == 404
        info.value.close()


def test_port_in_use_is_a_metrics_error(served: tuple[Registry, int]) -> None:
    reg, port = served
    with pytest.raises(MetricsError, match="cannot serve metrics"):
        start_http_server(reg, "127.0.0.1", port)


def test_a_histogram_counts_in_cumulative_buckets_with_sum_and_count() -> None:
    from bacalhau.observability import Histogram, Registry

    registry = Registry()
    h = Histogram("t_seconds", "Times.", ["what"], buckets=(0.1, 1.0), registry=registry)
    for v in (0.05, 0.5, 0.5, 3.0, float("nan"), -1.0):
        h.observe(v, what="x")
    text = registry.render()
    assert "# TYPE t_seconds histogram" in text
    assert 't_seconds_bucket{what="x",le="0.1"} 1' in text
    assert 't_seconds_bucket{what="x",le="1"} 3' in text
    assert 't_seconds_bucket{what="x",le="+Inf"} 4' in text
    assert 't_seconds_sum{what="x"} 4.05' in text and 't_seconds_count{what="x"} 4' in text
