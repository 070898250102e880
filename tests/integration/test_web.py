"""The dashboard (`serve --web-port`) of a real node, in headless Chromium (Debian's
`chromium` and `chromium-driver`): it loads, lists the peers and the jobs, follows a running
job's state without a reload, links a completed job's result files; and its HTTP answers
(read-only, loopback, its own Host only).

Chromium talks to 127.0.0.1 only: every other name resolves to nothing, and background
networking, component updates and the like are off. Without chromium the browser test skips
(fails with CI=true). The screenshot goes to $BACALHAU_TEST_ARTIFACTS (else the test's tmp
dir), and its path is printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._wait import wait_for
from tests.integration.conftest import ECHO_WASM, ROOT, Ctl, NodeProc, start_node, wait_connected

CHROMIUM = ("chromium", "/usr/bin/chromium", "/usr/lib/chromium/chromium")
CHROMEDRIVER = ("chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _web(node: NodeProc) -> str:
    port = re.findall(r"dashboard on http://127\.0\.0\.1:(\d+)/", node.log)[-1]
    return f"http://127.0.0.1:{port}"


def _http(url: str, method: str = "GET", host: str | None = None) -> tuple[int, bytes, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, method=method)
    if host is not None:
        req.add_header("Host", host)
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProc, NodeProc]]:
    tmp = tmp_path_factory.mktemp("web")
    a = start_node(tmp / "a", name="a", args=("--web-port", "0", "--metrics-port", "0"))
    b = start_node(tmp / "b", name="b", peers=(a.address,), args=("--engines", "noop"))
    try:
        wait_connected([a, b])
        yield a, b
    finally:
        b.stop()
        a.stop()


def _find(names: tuple[str, ...]) -> str | None:
    for name in names:
        path = shutil.which(name) or (name if os.access(name, os.X_OK) else None)
        if path:
            return path
    return None


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium, driver_path = _find(CHROMIUM), _find(CHROMEDRIVER)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        chromium = None
    if chromium is None or driver_path is None:
        why = "no chromium, chromium-driver and selenium (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",  # we may be root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
        "--metrics-recording-only",
        "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no other host, ever
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    # An explicit driver: Selenium Manager (which would download one) never runs.
    service = Service(executable_path=driver_path, env={**os.environ, "SE_OFFLINE": "true"})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _text(driver: Any, css: str) -> str:
    from selenium.common.exceptions import WebDriverException

    try:
        return str(
            driver.execute_script(
                f"const e = document.querySelector({css!r}); return e ? e.textContent : ''"
            )
        )
    except WebDriverException:
        return ""


def test_the_dashboard_in_a_browser(
    network: tuple[NodeProc, NodeProc], browser: Any, tmp_path: Path
) -> None:
    a, b = network
    ctl = Ctl(a.address, tmp_path)
    done = ctl("wasm", "run", str(ECHO_WASM), "hello", "dashboard")
    assert done.returncode == 0, done.stderr
    done_id = done.stdout.split()[0]
    spin = ctl("wasm", "run", "--no-wait", str(ECHO_WASM), "spin")
    assert spin.returncode == 0, spin.stderr
    spin_id = spin.stdout.split()[0]
    web = _web(a)

    browser.get(f"{web}/#/")
    wait_for(lambda: _text(browser, "#node-id") == a.node_id, 20, "the node page")
    wait_for(lambda: _text(browser, f'#peers tr[data-node-id="{b.node_id}"]'), 20, "peer b listed")
    assert "alive" in _text(browser, f'#peers tr[data-node-id="{b.node_id}"]')

    browser.get(f"{web}/#/jobs")
    for job in (done_id, spin_id):
        wait_for(
            lambda job=job: _text(browser, f'#jobs tr[data-job-id="{job}"]'), 20, f"{job} listed"
        )

    browser.get(f"{web}/#/jobs/{spin_id}")
    wait_for(lambda: _text(browser, "#job-state") == "running", 30, "the job shown running")
    browser.execute_script("window.sameDocument = true")  # gone if the page reloads
    events_before = browser.execute_script(
        "return document.querySelectorAll('#events tbody tr').length"
    )
    assert ctl("cancel", spin_id).returncode == 0
    wait_for(lambda: _text(browser, "#job-state") == "cancelled", 30, "the cancel shown live")
    assert browser.execute_script("return window.sameDocument") is True
    wait_for(
        lambda: (
            browser.execute_script("return document.querySelectorAll('#events tbody tr').length")
            > events_before
        ),
        10,
        "new events appended",
    )
    assert "cancelled" in _text(browser, "#shard-counts")

    browser.get(f"{web}/#/jobs/{done_id}")
    wait_for(
        lambda: _text(browser, '#results tr[data-path="stdout"]'), 30, "the result files listed"
    )
    assert "completed" in _text(browser, "#shard-counts")
    # The finished job's waterfall: its spans across both nodes, each a bar on one time axis.
    wait_for(lambda: _text(browser, '#trace tr[data-span="execution"]'), 30, "the job's trace")
    names = browser.execute_script(
        "return [...document.querySelectorAll('#trace tr[data-span]')].map(r => r.dataset.span)"
    )
    assert {"job", "bid_round", "execution", "run"} <= set(names), names
    assert "null" not in _text(browser, "#trace")
    href = browser.execute_script(
        "return document.querySelector('#results tr[data-path=\"stdout\"] a').href"
    )
    status, body, headers = _http(href)
    assert (status, body) == (200, b"hello dashboard\n")
    assert headers["Content-Security-Policy"].startswith("sandbox")

    # Nothing was fetched from anywhere but this node's dashboard.
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert fetched and all(url.startswith(web + "/") for url in fetched), fetched

    artifacts = Path(os.environ.get("BACALHAU_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "dashboard-job.png"
    assert browser.save_screenshot(str(shot))
    print(f"dashboard screenshot: {shot}")
    browser.execute_script("document.querySelector('#trace').scrollIntoView()")
    assert browser.save_screenshot(str(artifacts / "dashboard-trace.png"))


def test_the_dashboard_is_read_only_and_answers_only_to_its_own_address(
    network: tuple[NodeProc, NodeProc],
) -> None:
    a, _ = network
    web = _web(a)
    status, body, headers = _http(f"{web}/")
    assert status == 200 and b'<script src="/app.js"' in body
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert _http(f"{web}/app.js")[0] == _http(f"{web}/style.css")[0] == 200
    status, body, _ = _http(f"{web}/api/node")
    assert status == 200 and json.loads(body)["node_id"] == a.node_id
    assert _http(f"{web}/api/jobs", method="POST")[0] == 405
    assert _http(f"{web}/api/jobs", method="DELETE")[0] == 405
    assert _http(f"{web}/", host="attacker.example:80")[0] == 421  # DNS rebinding
    assert _http(f"{web}/", host="localhost")[0] == 200
    status, body, _ = _http(f"{web}/api/jobs/j-nope")
    assert status == 404 and "not found" in json.loads(body)["error"]
    assert _http(f"{web}/api/jobs?limit=x")[0] == 400
    assert _http(f"{web}/api/nothing")[0] == 404
    assert _http(f"{web}/../etc/passwd")[0] == 404


def test_env_values_are_hidden(network: tuple[NodeProc, NodeProc], tmp_path: Path) -> None:
    a, _ = network
    res = Ctl(a.address, tmp_path)("wasm", "run", "-e", "TOKEN=s3cret", str(ECHO_WASM), "x")
    assert res.returncode == 0, res.stderr
    status, body, _ = _http(f"{_web(a)}/api/jobs/{res.stdout.split()[0]}")
    assert status == 200 and b"s3cret" not in body and b"<hidden>" in body


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--web-port", "70000"), "--web-port must be 0 to 65535, not 70000"),
        (("--web-port", "0", "--web-host", " "), "--web-host must name an address"),
    ],
)
def test_bad_web_flags_are_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "bacalhau.cli.daemon",
        "serve",
        "--data-dir",
        str(tmp_path),
        "--port",
        "0",
        *args,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_a_taken_web_port_is_one_line(network: tuple[NodeProc, NodeProc], tmp_path: Path) -> None:
    taken = _web(network[0]).rsplit(":", 1)[1]
    cmd = [
        sys.executable,
        "-m",
        "bacalhau.cli.daemon",
        "serve",
        "--data-dir",
        str(tmp_path),
        "--port",
        "0",
        "--web-port",
        taken,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 1, res.stderr
    assert "cannot serve the dashboard on 127.0.0.1" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
