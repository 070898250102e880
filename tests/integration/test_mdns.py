"""mDNS discovery between real zeroconf stacks, inside a network namespace made for the test.

mDNS must never reach the host's network, so all of it runs in a child process started under
`unshare -n` with only a multicast-capable loopback; the child prints a JSON report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bacalhau.network.mdns import MdnsDiscovery, MdnsError

ROOT = Path(__file__).resolve().parents[2]
NETNS_SETUP = (
    "set -e; ip link set lo up; ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo; "
    'exec "$0" "$@"'
)

SCRIPT = r"""
import asyncio, json, logging, socket, sys, threading, time

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from bacalhau.identity import Identity
from bacalhau.network.mdns import SERVICE_TYPE, MdnsDiscovery, MdnsError

# Safety belt: refuse to multicast unless this is the namespace the test made (loopback only).
if [name for _, name in socket.if_nameindex()] != ["lo"]:
    sys.exit(f"not in a private network namespace: {socket.if_nameindex()}")

warnings = []
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
logging.getLogger().addHandler(type("H", (logging.Handler,), {
    "emit": lambda self, r: warnings.append(f"{r.name}: {r.getMessage()}")})(logging.WARNING))

IDS = [Identity.generate().node_id for _ in range(4)]
calls = []  # [observer (4: node 0 restarted), node_id, address, on_loop_thread, seconds]
T0 = time.monotonic()
MAIN = threading.get_ident()
found = None  # an asyncio.Event, set whenever on_found is called


def node(i, port, observer):
    def on_found(node_id, address):
        ok = threading.get_ident() == MAIN
        calls.append([observer, node_id, address, ok, round(time.monotonic() - T0, 3)])
        found.set()
    return MdnsDiscovery(IDS[i], "127.0.0.1", port, "v1", on_found)


def latest(i):
    return {c[1]: c[2] for c in calls if c[0] == i}


async def wait(cond, timeout=8.0):
    # Until cond() holds, waking on each discovery; False at the deadline.
    deadline = time.monotonic() + timeout
    while not cond():
        found.clear()
        try:
            await asyncio.wait_for(found.wait(), max(deadline - time.monotonic(), 0))
        except asyncio.TimeoutError:
            return cond()
    return True


async def main():
    global found
    found = asyncio.Event()
    loop_errors = []
    asyncio.get_running_loop().set_exception_handler(
        lambda loop, ctx: loop_errors.append(str(ctx.get("exception") or ctx["message"])))
    out = {"ids": IDS}
    # A record without an id, on its own zeroconf stack, announced with the others: everyone
    # must ignore it (it is long processed by the time node 0 is back, below).
    stranger = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    info = AsyncServiceInfo(SERVICE_TYPE, f"stranger.{SERVICE_TYPE}", port=9999,
                            properties={"v": "v1"}, server="stranger.local.",
                            parsed_addresses=["127.0.0.1"])
    nodes = [node(i, 7000 + i, i) for i in range(4)]
    t = time.monotonic()
    await asyncio.gather(stranger.async_register_service(info), *(n.start() for n in nodes))
    out["start_s"] = round(time.monotonic() - t, 3)
    want = lambda i: {IDS[j]: f"127.0.0.1:{7000 + j}" for j in range(4) if j != i}
    out["all_found"] = await wait(lambda: all(latest(i) == want(i) for i in range(4)))
    out["all_found_s"] = round(time.monotonic() - t, 3)

    # Node 0 goes away (goodbye packets) and comes back on another port, as observer 4.
    t = time.monotonic()
    await nodes[0].stop()
    out["stop_s"] = round(time.monotonic() - t, 3)
    nodes[0] = node(0, 7100, 4)
    await nodes[0].start()
    moved = lambda: all(latest(i).get(IDS[0]) == "127.0.0.1:7100" for i in (1, 2, 3))
    out["moved_found"] = await wait(lambda: moved() and latest(4) == want(0))
    out["moved_found_s"] = round(time.monotonic() - t, 3)

    try:
        await MdnsDiscovery(IDS[0], "10.9.9.9", 7000, "v1", lambda *a: None).start()
        out["foreign_host_error"] = None
    except MdnsError as e:
        out["foreign_host_error"] = str(e)

    await asyncio.gather(*(n.stop() for n in nodes))
    await stranger.async_close()
    out.update(calls=calls, loop_errors=loop_errors, warnings=warnings)
    print(json.dumps(out))


asyncio.run(main())
"""


def _can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_unshare(), reason="needs root, unshare and ip")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    script = tmp_path_factory.mktemp("mdns") / "mdns_net.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", NETNS_SETUP, sys.executable, str(script)],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=40,
    )
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, stderr
    result: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result


def test_four_nodes_find_each_other(report: dict[str, Any]) -> None:
    ids = report["ids"]
    assert report["all_found"], report["calls"]
    first = [c for c in report["calls"] if c[2] != "127.0.0.1:7100"]
    for i in range(4):
        seen = sorted((c[1], c[2]) for c in first if c[0] == i)
        want = sorted((ids[j], f"127.0.0.1:{7000 + j}") for j in range(4) if j != i)
        assert seen == want, (i, seen)  # each peer once, never itself
    assert all(c[3] for c in report["calls"]), "on_found ran off the event loop thread"
    assert report["all_found_s"] < 6  # probing takes ~1.2 s; 8 s is the give-up deadline


def test_stop_and_move_are_seen_and_survived(report: dict[str, Any]) -> None:
    ids = report["ids"]
    assert report["moved_found"], report["calls"]
    for i in (1, 2, 3):
        addrs = [c[2] for c in report["calls"] if c[0] == i and c[1] == ids[0]]
        assert addrs == ["127.0.0.1:7000", "127.0.0.1:7100"], (i, addrs)
    back = sorted((c[1], c[2]) for c in report["calls"] if c[0] == 4)  # node 0, restarted
    assert back == sorted((ids[j], f"127.0.0.1:{7000 + j}") for j in (1, 2, 3)), back
    assert report["loop_errors"] == []
    assert report["warnings"] == []  # zeroconf's own included


def test_records_without_id_are_ignored(report: dict[str, Any]) -> None:
    assert {c[1] for c in report["calls"]} == set(report["ids"])
    assert not any("9999" in c[2] for c in report["calls"])


def test_unusable_host_is_one_line_mdns_error(report: dict[str, Any]) -> None:
    err = report["foreign_host_error"]
    assert err and "10.9.9.9" in err and "mDNS needs multicast on the interface of --host" in err
    assert "\n" not in err


@pytest.mark.parametrize("host", ["localhost", "0.0.0.0"])
def test_host_must_be_a_concrete_ip(host: str) -> None:
    with pytest.raises(MdnsError, match="--host"):
        MdnsDiscovery("12D3KooWnode", host, 1, "v1", lambda _id, _addr: None)
