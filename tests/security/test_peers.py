"""Peers cannot lie about time or place: a captured Hello replayed on new streams does not make
its node look alive, and a bid claiming more of a job's data than there is loses, on real nodes
over real streams."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from bacalhau._pb.bacalhau.v1 import peer_pb2, peer_pb2_grpc, types_pb2
from bacalhau.client import Client
from bacalhau.content.cid import CID, RAW
from bacalhau.identity import Identity
from bacalhau.models import node_tag
from bacalhau.network.dispatch import ANY_PEER
from bacalhau.network.peers import API_VERSION, NEW_IDS_PER_MINUTE, Connection, Network
from tests._peer import Stranger
from tests._wait import wait_for
from tests.integration.conftest import NodeProc, metrics, start_node

# A raw block's CID: any bytes decode as raw, so only checking the hash tells a lie.
_RIGHT = CID(1, RAW, hashlib.sha256(b"right").digest())


def _captured_hello(victim: Identity) -> peer_pb2.Envelope:
    """The Hello envelope the victim's own network code puts on the wire when it dials."""
    hello = peer_pb2.Hello(
        node_id=victim.node_id, version="0", address="127.0.0.1:9", api_version=API_VERSION
    )
    net = Network(victim, hello)
    conn = Connection(outbound=True)
    net._send_packet(conn, "", [peer_pb2.PeerMessage(hello=hello)])
    env: peer_pb2.Envelope = conn.queue.get_nowait()
    return env


def test_a_replayed_hello_never_makes_its_node_alive(tmp_path: Path) -> None:
    node = start_node(tmp_path / "n", args=("--engines", "noop", "--metrics-port", "0"))
    try:
        victim = Identity.generate()
        hello = _captured_hello(victim)
        with grpc.insecure_channel(node.address) as ch:
            connect = peer_pb2_grpc.PeerServiceStub(ch).Connect

            def once() -> Iterator[peer_pb2.Envelope]:
                yield hello  # the attacker cannot sign the answer to the node's Hello

            # First use: the node answers with its Hello (a challenge), and waits for an
            # answer only the victim could sign. The stream ends without one.
            answers = list(connect(once(), timeout=20))
            assert len(answers) == 1
            answer = peer_pb2.PeerPacket.FromString(answers[0].payload)
            assert answer.ack == peer_pb2.PeerPacket.FromString(hello.payload).nonce
            # Replays on new streams are refused outright.
            for _ in range(3):
                assert list(connect(once(), timeout=20)) == []

        def refused() -> float:
            return metrics(node).get('bacalhau_peer_packets_rejected_total{reason="replayed"}', 0)

        assert wait_for(lambda: refused() >= 3, 10, "the replays counted")
        peers = {p.node_id: p for p in node.info().peers}
        assert victim.node_id not in peers or not peers[victim.node_id].alive
    finally:
        node.stop()


def _lies_in_bids(stranger: Any, **claim: int) -> list[str]:
    """Make the stranger answer every announcement with a willing bid claiming `claim`;
    the jobs it was asked about."""
    asked: list[str] = []

    def on_announce(sender: str, a: Any) -> None:
        asked.append(a.job_id)
        bid = peer_pb2.Bid(job_id=a.job_id, shard=a.shard, willing=True, queued=0, **claim)
        stranger.net.send(sender, bid=bid)

    stranger.net.dispatcher.register("announce", on_announce, ANY_PEER)
    return asked


def _run_noop(node: NodeProc, *inputs: Any) -> Any:
    """Submit a job only the node's own noop engine runs; the GetJobResponse once final."""
    spec = types_pb2.JobSpec(
        engine="noop",
        inputs=inputs,
        outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
    )
    with Client(node.address) as c:
        return c.wait(c.submit(spec).job_id)


def test_a_packet_whose_mac_does_not_check_closes_the_stream(tmp_path: Path, stranger: Any) -> None:
    """A real node and a peer agree stream keys in their Hellos; a packet under any other key
    (a forger's guess) is refused as forged, counted, and the stream is closed."""
    node = start_node(tmp_path / "n", args=("--engines", "noop", "--metrics-port", "0"))
    try:
        stranger.dial(node)
        conn = stranger.net._conns[node.node_id][0]
        assert conn.mac_send and conn.mac_recv  # both Hellos carried key shares
        before = _refusals(node, "forged")
        conn.mac_send = bytes(32)  # not the key the node agreed
        stranger.send(node.node_id, heartbeat=peer_pb2.Heartbeat())
        wait_for(lambda: _refusals(node, "forged") > before, 10, "the forged packet counted")
        wait_for(
            lambda: conn not in stranger.net._conns.get(node.node_id, []), 15, "the stream closed"
        )
    finally:
        node.stop()


def test_a_bid_claiming_more_data_than_the_job_has_is_refused(
    tmp_path: Path, stranger: Any
) -> None:
    """A fresh identity claiming 2^62 bytes in two of a job's one input does not win it over
    an honest node; its later bids are refused too, whatever they claim. (The job has an
    input by CID: one without is placed on an idle requester's own node without asking.)"""
    node = start_node(tmp_path / "n", args=("--engines", "noop", "--metrics-port", "0"))
    try:
        (tmp_path / "in.txt").write_bytes(b"data")
        with Client(node.address) as c:
            cid = c.add_file(tmp_path / "in.txt").cid
        data = types_pb2.InputSpec(source="ipfs", cid=cid, mount_path="/inputs/in.txt")
        asked = _lies_in_bids(stranger, local_input_bytes=1 << 62, local_inputs=2)
        stranger.dial(node)
        for expected in (
            "it claims to hold 2 of the job's 1 CID inputs",
            "made an impossible claim before",
        ):
            done = _run_noop(node, data)
            assert done.job.state == types_pb2.JOB_STATE_COMPLETED, done.job
            ran = {ex.node_id for ex in done.job.executions if ex.result_cid}
            assert ran == {node.node_id}
            refusals = [e.detail for e in done.events if "bid refused" in e.detail]
            assert len(refusals) == 1 and expected in refusals[0], refusals
        assert len(asked) == 2
        assert metrics(node)['bacalhau_bids_refused_total{reason="claim"}'] == 2
    finally:
        node.stop()


def test_a_locality_claim_is_bounded_by_what_the_inputs_weigh(
    tmp_path: Path, stranger: Any
) -> None:
    node = start_node(tmp_path / "n", args=("--engines", "noop", "--metrics-port", "0"))
    try:
        (tmp_path / "in.txt").write_bytes(b"x" * 1000)
        with Client(node.address) as c:
            cid = c.add_file(tmp_path / "in.txt").cid  # the requester holds it: 1000 bytes
        _lies_in_bids(stranger, local_input_bytes=1001, local_inputs=1)
        stranger.dial(node)
        spec = types_pb2.JobSpec(
            engine="noop",
            inputs=[types_pb2.InputSpec(source="ipfs", cid=cid, mount_path="/inputs/in.txt")],
            outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
        )
        with Client(node.address) as c:
            done = c.wait(c.submit(spec).job_id)
        assert done.job.state == types_pb2.JOB_STATE_COMPLETED, done.job
        refusals = [e.detail for e in done.events if "bid refused" in e.detail]
        assert refusals and "1001 bytes of inputs that weigh at most 1000" in refusals[0]
    finally:
        node.stop()


def test_a_shard_bid_claiming_more_than_its_file_weighs_is_refused(
    tmp_path: Path, stranger: Any
) -> None:
    """The same bound for bids on many shards at once: each shard's claim is checked against
    its own files; one impossible claim refuses the whole bid, and the shards run elsewhere."""
    node = start_node(tmp_path / "n", args=("--engines", "noop", "--metrics-port", "0"))
    try:
        folder = tmp_path / "files"
        folder.mkdir()
        for i in range(3):
            (folder / f"f{i}.txt").write_bytes(b"x" * 100)
        with Client(node.address) as c:
            cid = c.add_directory(folder).cid  # the requester holds every file

        def on_announce(sender: str, a: Any) -> None:
            claims = [
                peer_pb2.ShardBid(shard=ask.index, local_input_bytes=1 << 62, local_inputs=1)
                for ask in a.shards
            ]
            bid = peer_pb2.Bid(job_id=a.job_id, willing=True, queued=0, shards=claims)
            stranger.net.send(sender, bid=bid)

        stranger.net.dispatcher.register("announce", on_announce, ANY_PEER)
        stranger.dial(node)
        spec = types_pb2.JobSpec(
            engine="noop",
            inputs=[types_pb2.InputSpec(source="ipfs", cid=cid, mount_path="/inputs")],
            outputs=[types_pb2.OutputSpec(name="outputs", path="/outputs")],
            sharding=types_pb2.ShardingSpec(glob_pattern="*.txt", batch_size=1),
        )
        with Client(node.address) as c:
            done = c.wait(c.submit(spec).job_id)
        assert done.job.state == types_pb2.JOB_STATE_COMPLETED, done.job
        assert {ex.node_id for ex in done.job.executions} == {node.node_id}
        refusals = [e.detail for e in done.events if "bid refused" in e.detail]
        assert len(refusals) == 1 and "bytes of inputs that weigh at most 100" in refusals[0]
        assert metrics(node)['bacalhau_bids_refused_total{reason="claim"}'] == 1
    finally:
        node.stop()


def _strangers(n: int) -> list[Stranger]:
    return [Stranger() for _ in range(n)]


def _refusals(node: NodeProc, reason: str) -> float:
    return metrics(node).get(f'bacalhau_peer_packets_rejected_total{{reason="{reason}"}}', 0.0)


def test_a_node_takes_at_most_max_peers_and_few_new_identities_per_address(
    tmp_path: Path,
) -> None:
    node = start_node(tmp_path / "n", args=("--engines", "noop", "--metrics-port", "0",
                                            "--max-peers", "3"))  # fmt: skip
    crowd = _strangers(4)
    try:
        for s in crowd[:3]:
            s.dial(node)
        crowd[3].loop.call_soon_threadsafe(crowd[3].net.dial, node.address)
        wait_for(lambda: _refusals(node, "full") >= 1, 15, "the fourth peer refused")
        assert crowd[3].net.connected() == []
        alive = {p.node_id for p in node.info().peers if p.alive}
        assert alive == {s.net.node_id for s in crowd[:3]}
    finally:
        for s in crowd:
            s.close()
        node.stop()


def test_many_new_identities_from_one_address_are_refused(tmp_path: Path) -> None:
    node = start_node(tmp_path / "n", args=("--engines", "noop", "--metrics-port", "0"))
    crowd = _strangers(NEW_IDS_PER_MINUTE + 1)
    try:
        for s in crowd[:NEW_IDS_PER_MINUTE]:
            s.dial(node)
        last = crowd[-1]
        last.loop.call_soon_threadsafe(last.net.dial, node.address)
        wait_for(lambda: _refusals(node, "rate") >= 1, 15, "the eleventh identity refused")
        assert last.net.connected() == []
        assert _alive(node) == {s.net.node_id for s in crowd[:NEW_IDS_PER_MINUTE]}
    finally:
        for s in crowd:
            s.close()
        node.stop()


def _alive(node: NodeProc) -> set[str]:
    return {p.node_id for p in node.info().peers if p.alive}


def test_trusted_peers_keeps_everyone_else_out(tmp_path: Path) -> None:
    friend, other = _strangers(2)
    (tmp_path / "trusted").write_text(f"{friend.net.node_id}\n")
    trusted = ("--trusted-peers", str(tmp_path / "trusted"))
    node = start_node(tmp_path / "n", args=("--engines", "noop", "--metrics-port", "0", *trusted))
    try:
        friend.dial(node)
        other.loop.call_soon_threadsafe(other.net.dial, node.address)
        wait_for(lambda: _refusals(node, "untrusted") >= 1, 15, "the stranger refused")
        assert _alive(node) == {friend.net.node_id}
    finally:
        friend.close()
        other.close()
        node.stop()


def test_only_a_jobs_requester_may_ask_for_a_copy_of_its_result(tmp_path: Path) -> None:
    """A peer cannot make a node fetch and keep data for jobs that are not the peer's own:
    a job ID names its requester (its tag), and the node refuses the others' requests."""
    node = start_node(tmp_path / "n", args=("--engines", "noop", "--metrics-port", "0"))
    stranger = Stranger()
    answers: list[Any] = []
    stranger.net.dispatcher.register(
        "result_replicated", lambda sender, r: answers.append(r), ANY_PEER
    )
    try:
        stranger.dial(node)
        someone_elses = "j-00000000-0000-0000-0000-000000000000-" + node_tag(node.node_id)
        mine = "j-00000000-0000-0000-0000-000000000000-" + node_tag(stranger.net.node_id)
        cid = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        for job_id in (someone_elses, mine):
            ask = peer_pb2.ReplicateResult(
                job_id=job_id, execution_id="e-1", result_cid=cid, holders=[node.node_id]
            )
            stranger.loop.call_soon_threadsafe(
                lambda a=ask: stranger.net.send(node.node_id, replicate_result=a)
            )
        # Its own job's request is answered (the CID cannot be had: not kept); the other
        # one is refused before any work, and counted.
        wait_for(lambda: answers, 20, "an answer to the stranger's own request")
        assert [a.job_id for a in answers] == [mine] and not answers[0].ok

        def refused() -> float:
            key = 'bacalhau_peer_messages_refused_total{kind="replicate_result"}'
            return metrics(node).get(key, 0)

        assert wait_for(lambda: refused() >= 1, 10, "the refusal counted")
    finally:
        stranger.close()
        node.stop()


def test_a_compute_node_cannot_slip_in_a_wrong_result_or_claim_replicas(
    tmp_path: Path, stranger: Any
) -> None:
    """A compute node that sends blocks with its report that do not match their CIDs, and
    names replicas itself: the blocks are not kept (the requester fetches the result
    instead, and the node cannot serve it, so its execution fails), and its replica claim
    is ignored."""
    node = start_node(tmp_path / "n", args=("--engines", "wasm"))  # it cannot run noop jobs
    lie = peer_pb2.Block(cid=bytes(_RIGHT), data=b"wrong")

    def on_announce(sender: str, a: Any) -> None:
        stranger.net.send(sender, bid=peer_pb2.Bid(job_id=a.job_id, shard=a.shard, willing=True))

    def report(sender: str, d: Any, state: Any, **more: Any) -> None:
        u = peer_pb2.ExecutionUpdate(job_id=d.job_id, execution_id=d.execution_id, state=state)
        for key, value in more.items():
            getattr(u, key).extend(value) if isinstance(value, list) else setattr(u, key, value)
        stranger.net.send(sender, execution_update=u)

    def on_bid_decision(sender: str, d: Any) -> None:
        if d.accepted:
            report(sender, d, types_pb2.EXECUTION_STATE_RUNNING)
            report(
                sender, d, types_pb2.EXECUTION_STATE_RESULT_PROPOSED, exit_code=0,
                result_cid=str(_RIGHT), result_blocks=[lie], replica_node_ids=[node.node_id],
            )  # fmt: skip

    def on_result_decision(sender: str, d: Any) -> None:
        if d.accepted:
            report(sender, d, types_pb2.EXECUTION_STATE_PUBLISHED, replica_node_ids=["x"])

    for kind, handler in (
        ("announce", on_announce),
        ("bid_decision", on_bid_decision),
        ("result_decision", on_result_decision),
    ):
        stranger.net.dispatcher.register(kind, handler, ANY_PEER)
    try:
        stranger.dial(node)
        done = _run_noop(node)
        assert done.job.state == types_pb2.JOB_STATE_FAILED, done.job
        assert "could not be copied to the requester" in done.job.message
        (ex,) = [e for e in done.job.executions if e.node_id == stranger.net.node_id]
        assert list(ex.replica_node_ids) == []
    finally:
        node.stop()
