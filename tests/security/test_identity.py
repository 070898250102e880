"""Client identity: every call signed by a user key, checked at a real node; owners, admins and
the allow-list; unsigned, forged, stale and replayed calls refused with one line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bacalhau import callsign
from bacalhau._pb.bacalhau.v1 import client_pb2, client_pb2_grpc, types_pb2
from bacalhau.callsign import CallRefused, Verifier
from bacalhau.client import Client, ClientError
from bacalhau.identity import Identity
from bacalhau.service.callers import HIDDEN
from tests.conftest import ROOT
from tests.integration.conftest import Ctl, NodeProc, metrics, start_node

NODE_INFO = "/bacalhau.v1.ClientService/NodeInfo"
SECRET = "s3cr3t-token"


def _key(seed_byte: int) -> Identity:
    return Identity.from_seed(bytes([seed_byte]) * 32)


ALICE, BOB, ADMIN, CAROL = _key(1), _key(2), _key(3), _key(4)


# -- the scheme, without a node ------------------------------------------------------------


def test_the_documented_test_vector_is_what_the_code_signs() -> None:
    """docs/security.md gives a key, a call and its signature: other clients check against it."""
    doc = (ROOT / "docs" / "security.md").read_text()
    vector = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|$", doc, re.M))
    key = Identity.from_seed(bytes.fromhex(vector["seed"]))
    assert key.node_id == vector["user"]
    body = bytes.fromhex(vector["body"])
    metadata = callsign.sign(
        key, vector["method"], body, time_ms=int(vector["time"]), nonce=vector["nonce"]
    )
    assert dict(metadata) == {
        "bacalhau-user": vector["user"],
        "bacalhau-time": vector["time"],
        "bacalhau-nonce": vector["nonce"],
        "bacalhau-signature": vector["signature"],
    }
    payload = callsign.payload(vector["method"], int(vector["time"]), vector["nonce"],
                               vector["digest"])  # fmt: skip
    assert payload.decode() == vector["payload"].replace("\\n", "\n")


def _signed(key: Identity, body: bytes = b"", t: int = 1_000_000, **kw: Any) -> dict[str, str]:
    return dict(callsign.sign(key, NODE_INFO, body, time_ms=t, **kw))


def test_a_verifier_takes_a_call_once_and_refuses_what_is_wrong() -> None:
    v = Verifier(max_skew_s=60)
    md = _signed(ALICE, b"req")
    assert v.check(md, NODE_INFO, b"req", 1_000_000) == ALICE.node_id
    with pytest.raises(CallRefused, match="taken already"):
        v.check(md, NODE_INFO, b"req", 1_000_001)
    cases: list[tuple[dict[str, str], str, bytes, int, str]] = [
        ({}, NODE_INFO, b"", 1_000_000, "not signed"),
        ({**_signed(ALICE), "bacalhau-nonce": ""}, NODE_INFO, b"", 1_000_000, "lacks"),
        (_signed(ALICE, b"req"), NODE_INFO, b"other", 1_000_000, "does not match"),
        (_signed(ALICE), "/bacalhau.v1.ClientService/Cancel", b"", 1_000_000, "does not match"),
        ({**_signed(ALICE), "bacalhau-user": BOB.node_id}, NODE_INFO, b"", 1_000_000, "match"),
        ({**_signed(ALICE), "bacalhau-user": "me"}, NODE_INFO, b"", 1_000_000, "not an Ed25519"),
        ({**_signed(ALICE), "bacalhau-time": "1e6"}, NODE_INFO, b"", 1_000_000, "milliseconds"),
        ({**_signed(ALICE), "bacalhau-nonce": "zz"}, NODE_INFO, b"", 1_000_000, "hex"),
        ({**_signed(ALICE), "bacalhau-signature": "!"}, NODE_INFO, b"", 1_000_000, "base64"),
        (_signed(ALICE, t=1_000_000), NODE_INFO, b"", 1_000_000 + 61_000, "61 s ago"),
        (_signed(ALICE, t=1_000_000), NODE_INFO, b"", 1_000_000 - 61_000, "in the future"),
    ]
    for md, method, body, now, fragment in cases:
        with pytest.raises(CallRefused, match=fragment):
            v.check(md, method, body, now)


def test_a_flood_of_calls_keeps_memory_bounded_and_never_takes_a_replay() -> None:
    v = Verifier(max_skew_s=60, max_seen=100)
    first = [_signed(ALICE, t=1_000_000 + i) for i in range(300)]
    for i, md in enumerate(first):
        v.check(md, NODE_INFO, b"", 1_000_000 + i)
    assert len(v.seen) <= 100
    for md in first:  # forgotten or remembered, none is taken again
        with pytest.raises(CallRefused):
            v.check(md, NODE_INFO, b"", 1_000_400)
    # A flood dated in the future does not lock others out.
    for _ in range(300):
        v.check(_signed(BOB, t=1_050_000), NODE_INFO, b"", 1_000_500)
    assert v.check(_signed(ALICE, t=1_000_600), NODE_INFO, b"", 1_000_600) == ALICE.node_id


# -- at a real node -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    d = tmp_path_factory.mktemp("identity")
    (d / "admins").write_text(f"# the operators\n{ADMIN.node_id}  # ops\n")
    yield (
        n := start_node(
            d / "n",
            args=("--engines", "noop", "--metrics-port", "0", "--admin-keys", str(d / "admins")),
        )
    )
    n.stop()


def _pending_job(env: dict[str, str]) -> types_pb2.JobSpec:
    """A python job the node will not take; with a silent peer connected it stays pending."""
    return types_pb2.JobSpec(
        engine="python",
        python=types_pb2.PythonSpec(code="print(1)", env=env),
        node_selector={"nobody": "has-this"},
        outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
    )


def _code(fn: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(ClientError) as err:
        fn()
    assert "\n" not in str(err.value)
    return err.value.code, str(err.value)


def test_unsigned_forged_stale_and_replayed_calls_are_refused(node: NodeProc) -> None:
    def refused(reason: str) -> float:
        return metrics(node).get(f'bacalhau_client_calls_refused_total{{reason="{reason}"}}', 0.0)

    before = {r: refused(r) for r in ("unsigned", "replayed", "stale", "forged")}
    req = client_pb2.NodeInfoRequest()
    with grpc.insecure_channel(node.address) as ch:
        stub = client_pb2_grpc.ClientServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.NodeInfo(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "not signed" in err.value.details()

        raw = ch.unary_unary(NODE_INFO, None, client_pb2.NodeInfoResponse.FromString)
        md = callsign.sign(ALICE, NODE_INFO, b"")
        assert raw(b"", metadata=md, timeout=10).node_id == node.node_id
        for bad, fragment in (
            (md, "taken already"),  # the same call again
            (callsign.sign(ALICE, NODE_INFO, b"", time_ms=1_000), "ago"),
            (callsign.sign(ALICE, "/bacalhau.v1.ClientService/Cancel", b""), "does not match"),
        ):
            with pytest.raises(grpc.RpcError) as err:
                raw(b"", metadata=bad, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value
            assert fragment in err.value.details()
        # a signed request whose bytes are not the message
        junk = b"\xff\xff\xff"
        with pytest.raises(grpc.RpcError) as err:
            raw(junk, metadata=callsign.sign(ALICE, NODE_INFO, junk), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for reason, n in before.items():  # each refusal counted under its reason
        assert refused(reason) >= n + 1, reason
    assert node.info().node_id == node.node_id  # still serving


def test_only_the_owner_or_an_admin_cancels_or_sees_env(node: NodeProc, stranger: Any) -> None:
    stranger.dial(node)  # asked to bid, never answers: jobs stay pending
    with (
        Client(node.address, user_key=ALICE) as alice,
        Client(node.address, user_key=BOB) as bob,
        Client(node.address, user_key=ADMIN) as admin,
    ):
        job = alice.submit(_pending_job({"TOKEN": SECRET})).job
        assert job.client_id == ALICE.node_id
        assert alice.get_job(job.id).job.spec.python.env["TOKEN"] == SECRET
        assert admin.get_job(job.id).job.spec.python.env["TOKEN"] == SECRET
        seen = bob.get_job(job.id).job
        assert seen.spec.python.env["TOKEN"] == HIDDEN and SECRET not in str(seen)

        assert job.id in [j.id for j in alice.list_jobs().jobs]
        assert job.id not in [j.id for j in bob.list_jobs().jobs]
        everyone = bob.list_jobs(all_users=True).jobs
        mine = [j for j in everyone if j.id == job.id]
        assert mine and mine[0].spec.python.env["TOKEN"] == HIDDEN
        by_user = bob.list_jobs(client_id=ALICE.node_id).jobs
        assert [j.id for j in by_user] == [job.id] and SECRET not in str(by_user)

        code, line = _code(lambda: bob.cancel(job.id))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert f"belongs to user {ALICE.node_id}" in line
        assert alice.get_job(job.id).job.state == types_pb2.JOB_STATE_PENDING
        assert alice.cancel(job.id).state == types_pb2.JOB_STATE_CANCELLED

        other = alice.submit(_pending_job({})).job
        assert admin.cancel(other.id).state == types_pb2.JOB_STATE_CANCELLED


def test_allow_clients_limits_who_submits_and_uploads(tmp_path: Path) -> None:
    (tmp_path / "allowed").write_text(CAROL.node_id + "\n")
    n = start_node(tmp_path / "n", args=("--engines", "noop", "--allow-clients",
                                         str(tmp_path / "allowed")))  # fmt: skip
    try:
        with Client(n.address, user_key=CAROL) as carol, Client(n.address, user_key=BOB) as bob:
            assert carol.submit(_pending_job({})).job_id
            code, line = _code(lambda: bob.submit(_pending_job({})))
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert f"user {BOB.node_id} may not submit jobs on this node" in line
            (tmp_path / "f").write_bytes(b"data")
            code, line = _code(lambda: bob.add_file(tmp_path / "f"))
            assert code == grpc.StatusCode.PERMISSION_DENIED and "upload data" in line
            assert carol.add_file(tmp_path / "f").cid
            assert bob.node_info().node_id == n.node_id  # reading is not submitting
    finally:
        n.stop()


def test_the_cli_makes_a_user_key_on_first_use_and_names_it(node: NodeProc, tmp_path: Path):
    ctl = Ctl(node.address, tmp_path)
    key = tmp_path / "keys" / "me.key"
    first = ctl("--user-key", str(key), "whoami")
    assert first.returncode == 0, first.stderr
    user = first.stdout.strip()
    assert key.stat().st_mode & 0o777 == 0o600
    assert Identity.from_seed(key.read_bytes()).node_id == user
    assert ctl("--user-key", str(key), "whoami").stdout.strip() == user  # the same key again
    key.write_bytes(b"short")
    assert "user key" in ctl("--user-key", str(key), "list").one_line_error()


def test_a_bad_admin_keys_file_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "admins").write_text("not-an-id\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bacalhau.cli.daemon", "serve", "--data-dir", str(tmp_path / "d"),
         "--port", "0", "--admin-keys", str(tmp_path / "admins")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "line 1: 'not-an-id' is not an ID" in lines[0], proc.stderr
