"""A node: identity, datastore, blockstore, network, requester and compute, served over gRPC."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bacalhau import layout
from bacalhau import spec as jobspec
from bacalhau._pb.bacalhau.v1 import (
    client_pb2,
    client_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
    types_pb2,
)
from bacalhau.api import ClientServicer, PeerServicer, reflection
from bacalhau.api.auth import SignedCalls
from bacalhau.api.relay import Relay
from bacalhau.blockstore import Blockstore
from bacalhau.compute.capacity import Allocator, Limits, detect
from bacalhau.compute.inputs import InputCache
from bacalhau.compute.node import Compute, ComputeConfig
from bacalhau.compute.records import accept_in, decide_in, update_of
from bacalhau.content import dag
from bacalhau.content.cid import CID
from bacalhau.content.errors import TooLarge
from bacalhau.data import DEFAULT_MAX_BYTES, UrlFetcher
from bacalhau.datastore import JobNotFound, LmdbDatastore
from bacalhau.engines import EngineContext
from bacalhau.engines import get as get_engine
from bacalhau.errors import BacalhauError
from bacalhau.identity import Identity
from bacalhau.layout import ADDRESS_FILE
from bacalhau.models import JobState
from bacalhau.network import CHANNEL_OPTIONS, DagFetcher, Network
from bacalhau.network.blocks import add_peer_service
from bacalhau.network.dispatch import Dispatcher
from bacalhau.network.peers import API_VERSION, MAX_PEERS
from bacalhau.node.peer_table import PeerTable
from bacalhau.node.replicas import Replicas
from bacalhau.observability import (
    Counter,
    Gauge,
    Histogram,
    Registry,
    Tracing,
    start_http_server,
)
from bacalhau.requester.ledger import ComputeHere
from bacalhau.requester.node import Requester
from bacalhau.service import (
    Access,
    DataService,
    InfoService,
    JobService,
    JobWatch,
    ResultService,
    TraceService,
)
from bacalhau.service.data import DEFAULT_MAX_UPLOAD, DEFAULT_UPLOAD_QUOTA
from bacalhau.service.traces import ASK_TIMEOUT_S
from bacalhau.version import __version__

log = logging.getLogger(__name__)
RESULT_PIN = b"kept-result"  # the pin tag of a result copied to its job's requester
LIVENESS_WAIT_S = 2.0  # /livez: how long the event loop may take to run a no-op
HEALTH_MIN_FREE = 1 << 30  # /healthz: the least free space on the data directory's disk

__all__ = ["ADDRESS_FILE", "Node", "NodeConfig"]


@dataclass
class NodeConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 1234
    peers: list[str] = field(default_factory=list)
    engines: list[str] = field(default_factory=lambda: ["wasm"])
    labels: dict[str, str] = field(default_factory=dict)
    metrics_port: int | None = None
    web_port: int | None = None  # serve the read-only dashboard (None: not served)
    web_host: str = "127.0.0.1"  # where the dashboard listens
    tracing: bool = True  # keep the spans of recent jobs in memory (GetTrace)
    otlp_endpoint: str = ""  # HOST:PORT: export spans there over OTLP/gRPC (plaintext)
    max_parallel: int = 0  # 0: one per CPU
    bid_window_s: float = 0.5
    node_lost_s: float = 10.0  # how long a disconnected node may take to come back
    queue_timeout_s: float = 300.0  # how long a job may wait for a willing node
    advertise: str = ""  # the address peers should dial, if not the one served on
    mdns: bool = False  # advertise and browse _bacalhau._tcp.local. on the --host interface
    limits: Limits = field(default_factory=Limits)  # --limit-total-* and --limit-job-*
    docker_pull: str = "missing"  # never | missing
    docker_nvidia_runtime: str = "auto"  # auto (ask the engine) | yes | no
    nvidia_smi: str | None = None  # the nvidia-smi to ask for GPUs (default: on PATH)
    input_cache_bytes: int = 0  # cap on cached inputs no job holds (0: no cap)
    url_max_bytes: int = DEFAULT_MAX_BYTES  # largest URL input a node downloads
    allow_private_urls: bool = False  # URL inputs may reach loopback, LAN and link-local hosts
    max_job_timeout_s: float = jobspec.MAX_TIMEOUT_S  # the longest timeout a job may ask for
    default_job_timeout_s: float = 600.0  # the timeout of a job that asks for none
    max_spec_bytes: int = jobspec.MAX_SPEC_BYTES  # the largest spec this node takes
    admin_keys: frozenset[str] = frozenset()  # user IDs that may cancel and see any job
    allow_clients: frozenset[str] | None = None  # user IDs that may submit (None: anyone)
    max_peers: int = MAX_PEERS  # peers connected at once; the peer table keeps 10x as many
    trusted_peers: frozenset[str] | None = None  # only these node IDs may connect (None: any)
    tls_cert: bytes | None = None  # PEM: serve TLS (both services) with this chain ...
    tls_key: bytes | None = None  # ... and key; peers are then dialled over TLS too
    tls_ca: bytes | None = None  # PEM roots that peers' certificates must chain to (None: system)
    bad_actor: bool = False  # devstack --bad-actors only: every result wrong on purpose
    penalty_s: float = 3600.0  # how long a peer whose result was rejected gets no work
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD  # the largest upload (AddData) it takes; 0: any
    max_result_bytes: int = DEFAULT_MAX_UPLOAD  # the largest result it keeps as requester; 0: any
    upload_quota_bytes: int = DEFAULT_UPLOAD_QUOTA  # what a user's uploads may add up to; 0: any


class Node:
    """One bacalhaud node. `await start()`, then `await stop()`."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.identity = Identity.load_or_create(config.data_dir)
        self.node_id = self.identity.node_id
        self.address = ""
        self._server: grpc.aio.Server | None = None
        self._metrics_server: Any = None
        self._web_server: Any = None
        self.web_port: int | None = None
        self._mdns: Any = None
        self.metrics_port: int | None = None

    async def start(self) -> None:
        """Open the stores, bind the gRPC port, start dialing peers."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.store = LmdbDatastore(cfg.data_dir / layout.DATASTORE_DIR)
        self.blockstore = Blockstore(cfg.data_dir / layout.BLOCKS_DIR)
        self.watch = JobWatch(loop)
        self.store.add_listener(self.watch.committed)
        ctx = EngineContext(
            cache_dir=cfg.data_dir / layout.CACHE_DIR,
            docker_pull=cfg.docker_pull,
            docker_nvidia_runtime=cfg.docker_nvidia_runtime,
            node_id=self.node_id,
        )
        executors = {name: get_engine(name).make_executor(ctx) for name in cfg.engines}
        executors = {n: e for n, e in executors.items() if e.is_installed()}
        # compile ahead (python: once per data dir); kept, so the tasks are not collected
        self._warm_ups = [t for t in map(_warm_up, executors.values()) if t is not None]
        for executor in executors.values():
            cleanup = getattr(executor, "cleanup", None)
            if cleanup is not None and (n := await asyncio.to_thread(cleanup)):
                log.info("removed %d containers left by an earlier run", n)
        machine = await asyncio.to_thread(detect, cfg.data_dir, cfg.nvidia_smi)
        allocator = Allocator(machine, cfg.limits)
        total = allocator.total
        docker = executors.get("docker")
        gpu_runtime = getattr(docker, "gpu_runtime", None)
        self.nvidia_runtime = bool(gpu_runtime is not None and gpu_runtime())
        if total.gpu and docker is not None and not self.nvidia_runtime:
            log.warning(
                "this node has %d GPU(s) but its Docker engine has no NVIDIA container runtime: "
                "it will not bid on docker jobs that ask for GPUs",
                total.gpu,
            )
        self.client_calls_refused = Counter(
            "bacalhau_client_calls_refused_total",
            "Client calls refused before their handler, by reason: unsigned, malformed, forged, "
            "stale, replayed.",
            ["reason"],
        )
        access = Access(admins=cfg.admin_keys, submitters=cfg.allow_clients)
        signed = SignedCalls(
            access, on_refused=lambda why: self.client_calls_refused.labels(reason=why).inc()
        )
        self._server = grpc.aio.server(options=CHANNEL_OPTIONS, interceptors=[signed])
        bind = f"{_host_for_bind(cfg.host)}:{cfg.port}"
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            creds = grpc.ssl_server_credentials([(cfg.tls_key, cfg.tls_cert)])
            port = self._server.add_secure_port(bind, creds)
        else:
            port = self._server.add_insecure_port(bind)
        self.address = f"{_host_for_bind(cfg.host)}:{port}"
        hello = peer_pb2.Hello(
            node_id=self.node_id,
            version=__version__,
            address=cfg.advertise or self.address,
            engines=sorted(executors),
            labels=cfg.labels,
            api_version=API_VERSION,
            resources=types_pb2.Resources(
                cpu=total.cpu,
                memory_bytes=total.memory_bytes,
                disk_bytes=total.disk_bytes,
                gpu=total.gpu,
            ),
        )
        self.tracing = Tracing(self.node_id, keep=cfg.tracing, otlp_endpoint=cfg.otlp_endpoint)
        self.network = Network(self.identity, hello, Dispatcher())
        self.network.max_peers = cfg.max_peers
        self.network.trusted = cfg.trusted_peers
        if cfg.tls_cert is not None:  # peers serve TLS too: verify them with --tls-ca
            self.network.tls = grpc.ssl_channel_credentials(root_certificates=cfg.tls_ca)
        self.peers = PeerTable(self.store, self.network, max_records=10 * cfg.max_peers)
        self.bids_refused = Counter(
            "bacalhau_bids_refused_total",
            "Bids refused here as requester, by reason (claim: more input data held than the "
            "job has; the bidder's bids are then refused for an hour).",
            ["reason"],
        )
        self.requester = Requester(
            network=self.network,
            store=self.store,
            bid_window_s=cfg.bid_window_s,
            node_lost_s=cfg.node_lost_s,
            queue_timeout_s=cfg.queue_timeout_s,
            penalty_s=cfg.penalty_s,
            input_size=self._input_size,
            on_bid_refused=lambda node_id: self.bids_refused.labels(reason="claim").inc(),
            tracing=self.tracing,
            keep_result=self._keep_result,
            keep_blocks=self._keep_blocks,
        )
        self.block_bytes_received = Counter(
            "bacalhau_block_bytes_received_total", "Block bytes fetched from peers."
        )
        self.block_bytes_sent = Counter(
            "bacalhau_block_bytes_sent_total", "Block bytes served to peers and clients."
        )
        self.input_cache_hits = Counter(
            "bacalhau_input_cache_hits_total",
            "Input acquires served from the cache (or joining a fetch in flight).",
        )
        self.input_cache_misses = Counter(
            "bacalhau_input_cache_misses_total", "Input acquires that started a fetch."
        )
        scratch = cfg.data_dir / layout.SCRATCH_DIR
        # One fetch per DAG at a time on this node, for inputs and for results alike.
        self.dags = DagFetcher(self.network, self.blockstore, self.block_bytes_received)
        inputs = InputCache(
            self.network,
            self.blockstore,
            scratch / "inputs",
            max_bytes=cfg.input_cache_bytes,
            fetcher=UrlFetcher(
                max_bytes=cfg.url_max_bytes or 1 << 62, allow_private=cfg.allow_private_urls
            ),
            received=self.block_bytes_received,
            dags=self.dags,
            hits=self.input_cache_hits,
            misses=self.input_cache_misses,
        )
        self.compute = Compute(
            network=self.network,
            store=self.store,
            blockstore=self.blockstore,
            executors=executors,
            scratch_dir=scratch,
            config=ComputeConfig(
                labels=dict(cfg.labels),
                max_parallel=cfg.max_parallel or os.cpu_count() or 1,
                allocator=allocator,
                bad_actor=cfg.bad_actor,
                default_timeout_s=cfg.default_job_timeout_s,
            ),
            inputs=inputs,
            tracing=self.tracing,
        )
        # Both roles keep their records in this node's datastore: choosing this node, and a
        # decision on a result of it, are written with its compute record, in one commit.
        self.requester.ledger.compute_here = ComputeHere(accept_in, decide_in, update_of)
        self.requester.decided_here = self.compute.decided_here
        self.requester.accepted_here = self.compute.accepted_here
        self.compute.records.report_here = self.requester.report_here
        self.submitted = Counter("bacalhau_jobs_submitted_total", "Jobs submitted to this node.")
        self.results = ResultService(self.blockstore, self.dags, self.block_bytes_sent)
        self.jobs = JobService(
            store=self.store,
            requester=self.requester,
            watch=self.watch,
            results=self.results,
            on_submit=self.submitted.inc,
            max_timeout_s=cfg.max_job_timeout_s,
            max_spec_bytes=cfg.max_spec_bytes,
            access=access,
            ask_peers=self._ask_memo,
        )
        self.info = info = InfoService(
            node_id=self.node_id,
            address=lambda: self.address,
            engines=self.compute.engines,
            labels=cfg.labels,
            peers=self.peers.infos,
            resources=hello.resources,
            nvidia_container_runtime=self.nvidia_runtime,
        )
        data = DataService(
            self.blockstore,
            cfg.data_dir / layout.TMP_DIR,
            cfg.max_upload_bytes,
            store=self.store,
            quota=cfg.upload_quota_bytes,
        )
        self.replicas = Replicas(
            network=self.network,
            blockstore=self.blockstore,
            dags=self.dags,
            data=data,
            max_bytes=cfg.max_result_bytes,
        )
        client = ClientServicer(
            jobs=self.jobs,
            results=self.results,
            data=data,
            info=info,
            relay=(relay := Relay(node_id=self.node_id, network=self.network, is_here=self._holds)),
            traces=(
                traces := TraceService(
                    jobs=self.jobs,
                    tracing=self.tracing,
                    node_id=self.node_id,
                    ask_peer=self._ask_spans,
                )
            ),
        )
        self.traces = traces
        signed.relay = relay
        client_pb2_grpc.add_ClientServiceServicer_to_server(client, self._server)
        peers = PeerServicer(
            network=self.network,
            results=self.results,
            memo=self.store.get_memo,
            traces=traces,
            find_job=lambda job_id: self.jobs.get(job_id).id,
        )
        add_peer_service(peers, self._server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        names = [
            client_pb2.DESCRIPTOR.services_by_name["ClientService"].full_name,
            peer_pb2.DESCRIPTOR.services_by_name["PeerService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ]
        reflection.enable(names, self._server)
        self.network.status = self.compute.status
        self._start_metrics()
        self._start_web()
        await self._server.start()
        for name in ("", *names[:2]):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self.compute.recover()
        await self.requester.recover()
        self.network.start()
        await self.peers.start()
        if cfg.mdns:
            from bacalhau.network.mdns import MdnsDiscovery

            self._mdns = MdnsDiscovery(
                self.node_id, cfg.host, port, API_VERSION, on_found=self.network.discover
            )
            await self._mdns.start()
        for peer in cfg.peers:
            self.network.dial(peer)
        _write_atomic(cfg.data_dir / ADDRESS_FILE, self.address + "\n")
        log.info("node %s serving on %s", self.node_id, self.address)

    async def _ask_memo(self, key: str) -> Any:
        """An equal job's verified result from a connected peer that knows one (peers this
        node penalised are not asked), or None; at most a second of waiting."""
        asked = [n for n in self.network.connected() if self.requester.trusts(n)]

        async def ask(node_id: str) -> Any:
            channel = self.network.channel_to(node_id)
            if channel is None:
                return None
            try:
                answer = await peer_pb2_grpc.PeerServiceStub(channel).LookupMemo(
                    peer_pb2.MemoQuery(key=key), timeout=1.0
                )
            except grpc.RpcError:
                return None
            return answer if answer.found and answer.result_cid else None

        for answer in await asyncio.gather(*(ask(n) for n in asked)):
            if answer is not None:
                return answer
        return None

    async def _keep_result(self, cid_text: str, holder: str) -> None:
        """Copy a result DAG here from `holder` (and any peer that has it), every block
        verified, and pin it: the requester keeps the results of its jobs."""
        root = bytes(CID.parse(cid_text))
        most = self.config.max_result_bytes
        with self.blockstore.hold(root):
            try:
                await self.dags.fetch(root, [holder], max_bytes=most)
            except TooLarge as e:
                raise self._too_large(e.size) from None
            await asyncio.to_thread(self.blockstore.pin, root, RESULT_PIN)

    def _too_large(self, size: int) -> TooLarge:
        """A result larger than this node keeps (`size`: what its root says, 0: unknown)."""
        what = f"{size} bytes" if size else "more than that"
        return TooLarge(
            f"it is {what}; this node keeps results of up to {self.config.max_result_bytes} "
            "bytes (serve --max-result-size)"
        )

    async def _keep_blocks(self, cid_text: str, blocks: list[tuple[bytes, bytes]]) -> bool:
        """Keep a small result sent with its report: every block checked against its CID,
        stored and pinned in one synced batch. False if `blocks` are not its whole DAG or one
        does not match its CID (then it is fetched). Raises TooLarge past --max-result-size."""
        root = bytes(CID.parse(cid_text))
        most = self.config.max_result_bytes
        if most and sum(len(data) for _, data in blocks) > most:
            raise self._too_large(0)

        def store() -> bool:
            have = dict(blocks)
            try:
                whole = list(dag.walk(have.__getitem__, root))
                for cid, data in whole:
                    dag.check_block(cid, data)
            except (KeyError, BacalhauError) as e:  # not all of it, or not what it says
                log.warning("result %s sent with its report is not whole: %s", cid_text, e)
                return False
            with self.blockstore.batch() as batch:
                for cid, data in whole:
                    batch.put(cid, data)
                batch.pin(root, RESULT_PIN)
            return True

        return await asyncio.to_thread(store)

    def _holds(self, job_id: str) -> bool:
        """Whether a call on `job_id` is this node's to answer: the job is here, or the ID is
        not one to look for elsewhere (malformed, or a prefix of several jobs here)."""
        try:
            self.jobs.get(job_id)
        except JobNotFound:
            return False
        except BacalhauError:
            return True
        return True

    async def _ask_spans(self, node_id: str, job_id: str) -> list[Any]:
        """A peer's spans of a job (GetSpans). Raises if it is not connected or fails."""
        channel = self.network.channel_to(node_id)
        if channel is None:
            raise ConnectionError(f"node {node_id} is not connected")
        answer = await peer_pb2_grpc.PeerServiceStub(channel).GetSpans(
            peer_pb2.GetSpansRequest(job_id=job_id), timeout=ASK_TIMEOUT_S
        )
        return list(answer.spans)

    def _input_size(self, cid_text: str) -> int | None:
        """What the DAG under a CID weighs by its root block here; None if not here."""
        try:
            root = bytes(CID.parse(cid_text))
            if not self.blockstore.has(root):
                return None
            return dag.declared_size(root, self.blockstore.get(root, verify=False))
        except BacalhauError:
            return None

    def _start_metrics(self) -> None:
        registry = Registry()

        def jobs_by_state() -> dict[tuple[str, ...], float]:
            counts = self.store.count_jobs_by_state()
            return {(s.value,): float(counts.get(s.pb, 0)) for s in JobState}

        Gauge(
            "bacalhau_jobs",
            "Jobs this node is the requester of, by state.",
            ["state"],
            registry=registry,
            callback=jobs_by_state,
        )
        Gauge(
            "bacalhau_peers_connected",
            "Peers with an open stream.",
            registry=registry,
            callback=lambda: {(): float(len(self.network.connected()))},
        )

        def peers_by_state() -> dict[tuple[str, ...], float]:
            known = self.store.list_peers()
            alive = set(self.network.connected())
            penalised = [p for p in known if not self.requester.trusts(p.node_id)]
            return {
                ("alive",): float(len(alive)),
                ("away",): float(sum(p.node_id not in alive for p in known)),
                ("penalised",): float(len(penalised)),
            }

        Gauge(
            "bacalhau_peers",
            "Peers in this node's table, by state: alive (a stream open), away (known, not "
            "connected), penalised (a result of theirs lost a verification here).",
            ["state"],
            registry=registry,
            callback=peers_by_state,
        )
        Gauge(
            "bacalhau_executions_queued",
            "Executions accepted here and not finished.",
            registry=registry,
            callback=lambda: {(): float(self.compute.queued)},
        )
        registry.register(self.submitted)
        registry.register(self.client_calls_refused)
        registry.register(self.bids_refused)
        declined = Counter(
            "bacalhau_bids_declined_total",
            "Jobs this node declined to bid on, by reason: engine (not enabled here), labels "
            "(its selector does not match), resources, engine_check (the engine's own checks), "
            "queue_full.",
            ["reason"],
            registry=registry,
        )
        self.compute.bidder.on_decline = lambda kind: declined.labels(reason=kind).inc()
        rejected = Counter(
            "bacalhau_peer_packets_rejected_total",
            "Peer packets refused (forged, malformed, oversized, replayed, ...).",
            ["reason"],
            registry=registry,
        )
        for counter in (
            self.block_bytes_received,
            self.block_bytes_sent,
            self.input_cache_hits,
            self.input_cache_misses,
        ):
            registry.register(counter)
        Gauge(
            "bacalhau_input_cache_bytes",
            "Bytes of inputs written out in the input cache.",
            registry=registry,
            callback=lambda: {(): float(self.compute.inputs.size)},
        )
        self.network.on_reject.append(lambda reason: rejected.labels(reason=reason).inc())
        refused = Counter(
            "bacalhau_peer_messages_refused_total",
            "Peer messages refused at the dispatch: the sender may not send that kind (for "
            "that job or execution), or nothing takes that kind that way.",
            ["kind"],
            registry=registry,
        )
        self.network.dispatcher.on_refuse.append(lambda kind: refused.labels(kind=kind).inc())
        Gauge(
            "bacalhau_peer_messages_sent",
            "Messages and signed packets sent to other nodes since start.",
            ["kind"],
            registry=registry,
            callback=lambda: {
                ("messages",): float(self.network.messages_sent),
                ("packets",): float(self.network.packets_sent),
            },
        )
        Gauge(
            "bacalhau_build_info",
            "1, labelled with the version of bacalhaud and of Python it runs on.",
            ["version", "python"],
            registry=registry,
            callback=lambda: {(__version__, platform.python_version()): 1.0},
        )
        timings = Histogram(
            "bacalhau_duration_seconds",
            "How long things take, by what (job: submit to final; bid_round: announce to "
            "selection; queue_wait: accepted here to resources lent, its inputs fetched; "
            "input_fetch: each input; execution: the program's run; result_storage: adding its "
            "result) and engine.",
            ["what", "engine"],
            registry=registry,
        )

        def timing(what: str, engine: str, seconds: float) -> None:
            timings.observe(seconds, what=what, engine=engine)

        self.requester.on_timing = timing
        self.compute.runner.on_timing = timing
        if self.config.metrics_port is None:
            return
        checks = {"livez": self._live, "readyz": self._ready, "healthz": self._healthy}
        self._metrics_server, self.metrics_port = start_http_server(
            registry, self.config.host, self.config.metrics_port, checks
        )

    def _start_web(self) -> None:
        if self.config.web_port is None:
            return
        from bacalhau.web import Dashboard, start_web_server, views

        def node() -> dict[str, Any]:  # on the event loop
            status = self.compute.status()
            own = {
                "capacity": views.resources(self.compute.allocator.total),
                "free": views.resources(status.free),
                "queued": status.queued,
            }
            return views.node(self.info.node(), own)

        traces = self.traces if self.tracing.on else None
        board = Dashboard(
            jobs=self.jobs,
            results=self.results,
            node=node,
            loop=self._loop,
            trace=traces.gather if traces is not None else None,
        )
        self._web_server, self.web_port = start_web_server(
            board, self.config.web_host, self.config.web_port
        )

    def _live(self) -> list[str]:
        """The event loop still runs what it is given (called from the metrics thread)."""
        loop = self._loop
        try:
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(LIVENESS_WAIT_S)
        except (TimeoutError, RuntimeError):
            return [f"the event loop did not answer within {LIVENESS_WAIT_S:g} s"]
        return []

    def _ready(self) -> list[str]:
        """Taking calls: the datastore open, the port served, a --peer reached if any given."""
        problems = self._live()
        if self._server is None or not self.address:
            problems.append("the gRPC port is not served yet")
        try:
            self.store.count_jobs_by_state()
        except Exception as e:
            problems.append(f"the datastore cannot be read: {e}")
        if self.config.peers and not self.network.connected():
            problems.append(f"none of its {len(self.config.peers)} --peer nodes is connected")
        return problems

    def _healthy(self) -> list[str]:
        """Ready, and room on the data directory's disk (HEALTH_MIN_FREE)."""
        problems = self._ready()
        free = shutil.disk_usage(self.data_dir).free
        if free < HEALTH_MIN_FREE:
            problems.append(
                f"{free >> 20} MiB free on the data directory's disk, under {HEALTH_MIN_FREE >> 20}"
            )
        return problems

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking requests, stop executions, close the stores."""
        (self.data_dir / ADDRESS_FILE).unlink(missing_ok=True)
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            await self._server.stop(grace)
        if self._mdns is not None:
            await self._mdns.stop()
        self.requester.close()
        await self.compute.close()
        await self.network.close()
        for server in (self._metrics_server, self._web_server):
            if server is not None:
                server.shutdown()
                server.server_close()
        self.store.close()
        self.blockstore.close()
        await asyncio.to_thread(self.tracing.shutdown)


def _warm_up(executor: Any) -> asyncio.Task[Any] | None:
    """Run an executor's `prepare` (if it has one) in a thread; failures are logged."""
    prepare = getattr(executor, "prepare", None)
    if prepare is None:
        return None

    def done(fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("preparing the %s engine failed: %s", executor.name, fut.exception())

    task = asyncio.ensure_future(asyncio.to_thread(prepare))
    task.add_done_callback(done)
    return task


def _host_for_bind(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
