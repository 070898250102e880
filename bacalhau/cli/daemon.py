"""bacalhaud: the node (`serve`), and a local network of nodes for trying it out (`devstack`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bacalhau.cli._common import Parser, default_data_dir, print_version, run

PROG = "bacalhaud"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="A Bacalhau (Python) node: requester and compute.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("version", help="print the node version")

    serve = sub.add_parser(
        "serve",
        help="run a node",
        description="Run a node: it takes jobs from clients, announces them to its peers, "
        "bids on and runs jobs it is offered. Stops gracefully on SIGTERM or Ctrl-C.",
    )
    serve.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="node key, datastore, blockstore (default: $BACALHAU_DATA_DIR or ~/.bacalhau)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to serve gRPC on")
    serve.add_argument(
        "--port", type=int, default=1234, help="gRPC port (default 1234; 0 picks a free one)"
    )
    serve.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a node to connect to (repeatable); reconnects if it goes away",
    )
    serve.add_argument(
        "--advertise",
        default="",
        metavar="HOST:PORT",
        help="the address peers should dial (default: the one served on), e.g. behind NAT",
    )
    serve.add_argument(
        "--mdns",
        action="store_true",
        help="find and be found by nodes on the LAN (mDNS on the interface of --host; off by "
        "default)",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="serve Prometheus /metrics, /livez, /readyz and /healthz on --host (0 picks a port)",
    )
    serve.add_argument(
        "--web-port",
        type=int,
        metavar="N",
        help="serve the read-only web dashboard (node, peers, jobs, results) on --web-host "
        "(off by default; 0 picks a port)",
    )
    serve.add_argument(
        "--web-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the dashboard listens on (default 127.0.0.1: this machine only); it has "
        "no login, so anyone who reaches it reads what any API client may",
    )
    serve.add_argument(
        "--otlp-endpoint",
        default="",
        metavar="HOST:PORT",
        help="export OpenTelemetry spans (one trace per job) to this OTLP/gRPC collector, "
        "without TLS (Jaeger, Tempo, an OpenTelemetry Collector; off by default)",
    )
    serve.add_argument(
        "--tracing",
        choices=["on", "off"],
        default="on",
        help="keep the spans of recent jobs in memory for `bacalhauctl trace` (default on); "
        "off, with no --otlp-endpoint, makes no spans at all",
    )
    serve.add_argument("--labels", action="append", default=[], metavar="K=V")
    serve.add_argument(
        "--engines",
        default="wasm",
        help="comma-separated engines this node runs jobs with (default: wasm; also docker; "
        "python: CPython 3.12 for WASI, compiled into DATA_DIR/cache on first start; and noop)",
    )
    serve.add_argument(
        "--docker-pull",
        choices=("never", "missing"),
        default="missing",
        help="whether the docker engine may pull images it lacks (default: missing); with "
        "never, the node bids only on jobs whose image its engine already has",
    )
    serve.add_argument(
        "--docker-nvidia-runtime",
        choices=("auto", "yes", "no"),
        default="auto",
        help="whether the Docker engine can give containers NVIDIA GPUs (default: auto, asked "
        "of the engine at start: the nvidia runtime in `docker info`); without it the node "
        "does not bid on docker jobs that ask for GPUs",
    )
    serve.add_argument(
        "--nvidia-smi",
        metavar="PATH",
        help="the nvidia-smi that reports this node's GPUs (default: the one on PATH, if any)",
    )
    for scope, what in (("total", "lends to all jobs at once"), ("job", "gives one job")):
        serve.add_argument(
            f"--limit-{scope}-cpu",
            type=float,
            default=0,
            metavar="N",
            help=f"cores this node {what} (default: "
            + ("what it has)" if scope == "total" else "no limit)"),
        )
        serve.add_argument(
            f"--limit-{scope}-memory",
            default="",
            metavar="SIZE",
            help=f"memory this node {what}, e.g. 8Gi",
        )
        serve.add_argument(
            f"--limit-{scope}-disk",
            default="",
            metavar="SIZE",
            help=f"disk this node {what}",
        )
        serve.add_argument(
            f"--limit-{scope}-gpu",
            type=int,
            default=0,
            metavar="N",
            help=f"GPUs this node {what}",
        )
    serve.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="let URL inputs reach loopback, private, link-local and other non-public "
        "addresses (off by default: a job could read this node's own services or its LAN)",
    )
    serve.add_argument(
        "--admin-keys",
        type=Path,
        metavar="FILE",
        help="user IDs (one per line, '#' comments) that may cancel any job and see every "
        "job's env values",
    )
    serve.add_argument(
        "--allow-clients",
        type=Path,
        metavar="FILE",
        help="only these user IDs (one per line, '#' comments) may submit jobs and upload "
        "data here (default: any signed client)",
    )
    serve.add_argument(
        "--max-peers",
        type=int,
        default=100,
        metavar="N",
        help="peers connected at once (default 100); the peer table keeps at most 10x as "
        "many, forgetting first those whose results were never accepted",
    )
    serve.add_argument(
        "--trusted-peers",
        type=Path,
        metavar="FILE",
        help="only these node IDs (one per line, '#' comments) may connect, in either "
        "direction: for private networks (default: any node)",
    )
    serve.add_argument(
        "--tls-cert",
        type=Path,
        metavar="PEM",
        help="serve TLS on the port (clients and peers) with this certificate chain; peers "
        "are then dialled over TLS too (see docs/security.md)",
    )
    serve.add_argument("--tls-key", type=Path, metavar="PEM", help="the key of --tls-cert")
    serve.add_argument(
        "--tls-ca",
        type=Path,
        metavar="PEM",
        help="the CA certificates peers' TLS certificates must chain to (default: the system's)",
    )
    serve.add_argument(
        "--penalty",
        type=float,
        default=3600,
        metavar="S",
        help="how long a peer whose result lost a verification gets no work from this node "
        "(default 3600 s)",
    )
    serve.add_argument(
        "--default-job-timeout",
        type=float,
        default=None,
        metavar="S",
        help="the timeout of a job that asks for none, in seconds (default 600, or "
        "--max-job-timeout if lower; at most --max-job-timeout)",
    )
    serve.add_argument(
        "--max-job-timeout",
        type=float,
        default=86400,
        metavar="S",
        help="the longest timeout a job submitted here may ask for, in seconds (default and "
        "most: 86400, 24 h)",
    )
    serve.add_argument(
        "--max-spec-size",
        default="1Mi",
        metavar="SIZE",
        help="the largest job spec this node takes (default and most: 1Mi; a spec travels to "
        "peers in one packet)",
    )
    serve.add_argument(
        "--max-parallel",
        type=int,
        default=0,
        metavar="N",
        help="executions run at once (default: one per CPU)",
    )
    serve.add_argument(
        "--bid-window",
        type=float,
        default=0.5,
        metavar="S",
        help="longest wait for bids before selecting (default 0.5 s)",
    )
    serve.add_argument(
        "--queue-timeout",
        type=float,
        default=300,
        metavar="S",
        help="how long a job may wait for a node willing to run it before it fails with each "
        "node's reason (default 300 s)",
    )
    serve.add_argument(
        "--node-lost-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="how long a peer that dropped may take to come back before the executions it "
        "was running are failed (default 10 s)",
    )
    serve.add_argument(
        "--input-cache-size",
        default="8Gi",
        metavar="SIZE",
        help="cap on job inputs kept on disk once no job uses them, least recently used "
        "evicted first; inputs in use are never evicted; evicted inputs are unpinned, and "
        "their blocks collected once a quarter of the cap (at most 1Gi) was evicted "
        "(default 8Gi; 0: no cap)",
    )
    serve.add_argument(
        "--url-max-size",
        default="1Gi",
        metavar="SIZE",
        help="largest file a URL input may be; a longer download fails the job "
        "(default 1Gi; 0: no limit)",
    )
    serve.add_argument(
        "--max-upload-size",
        default="10Gi",
        metavar="SIZE",
        help="largest upload (bacalhauctl add, or a job's local files) this node takes, "
        "counted as it streams in, each file or folder 512 bytes at least; a larger one is "
        "refused and nothing of it kept (default 10Gi; 0: no limit)",
    )
    serve.add_argument(
        "--upload-quota",
        default="100Gi",
        metavar="SIZE",
        help="what one user's uploads to this node may add up to (counted as for "
        "--max-upload-size); an upload that would go over it is refused and nothing of it "
        "kept; 'bacalhauctl uploads' and 'bacalhauctl unpin' free room (default 100Gi; 0: none)",
    )
    serve.add_argument(
        "--max-result-size",
        default="10Gi",
        metavar="SIZE",
        help="largest result of a job submitted here that this node copies and keeps (a job "
        "completes only once its results are kept on its requester); an execution whose "
        "result is larger fails, saying so (default 10Gi; 0: no limit)",
    )
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default), or json: one object a line with time, level, logger, message "
        "and the job and execution IDs it names",
    )

    dev = sub.add_parser(
        "devstack",
        help="run N nodes on loopback, connected to each other",
        description="Start N 'bacalhaud serve' processes on 127.0.0.1 with free ports, each "
        "connected to the ones before it, and print how to point bacalhauctl at them. "
        "Ctrl-C or SIGTERM stops them all.",
    )
    dev.add_argument("--nodes", type=int, default=3)
    dev.add_argument(
        "--data-dir", type=Path, help="parent of the nodes' data dirs (default: a temp dir)"
    )
    dev.add_argument("--engines", default="wasm")
    dev.add_argument(
        "--bad-actors",
        type=int,
        default=0,
        metavar="N",
        help="make the last N nodes return wrong results on purpose (loud in their logs), to "
        "see verification catch them; node-0 is always honest",
    )
    dev.add_argument(
        "--docker-pull",
        choices=("never", "missing"),
        default="never",
        help="the nodes' image pull policy (default: never, so no registry is asked)",
    )
    dev.add_argument("--log-level", default="warning", choices=("debug", "info", "warning"))
    dev.add_argument(
        "--otlp-endpoint",
        default="",
        metavar="HOST:PORT",
        help="every node exports its spans to this OTLP/gRPC collector (serve --otlp-endpoint)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "version":
        return print_version(PROG)
    if args.command == "serve":
        from bacalhau.cli._serve import serve

        return serve(args)
    if args.command == "devstack":
        from bacalhau.cli._devstack import devstack

        return devstack(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
