"""URL inputs reach only public addresses unless the node allows more: a job's `-u` to the
node's own loopback (its admin page, its metrics) fails naming why, and nothing is fetched."""

from __future__ import annotations

from pathlib import Path

from tests._web import QuietHandler, serve, stop
from tests.integration.conftest import ECHO_WASM, Ctl, start_node


def test_a_url_input_on_loopback_is_refused_without_allow_private_urls(tmp_path: Path) -> None:
    hits: list[str] = []

    class Admin(QuietHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self._send(200, b"secret admin page\n")

    server, base = serve(Admin)
    node = start_node(tmp_path / "n", args=("--bid-window", "0.2"))
    try:
        ctl = Ctl(node.address, tmp_path)
        line = ctl("wasm", "run", "-u", f"{base}/admin", str(ECHO_WASM), "hi").one_line_error()
        assert "127.0.0.1 is not a public address" in line, line
        assert "--allow-private-urls" in line
        assert hits == []  # not a byte asked of it
    finally:
        node.stop()
        stop(server)
