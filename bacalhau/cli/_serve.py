"""`bacalhaud serve`: run one node until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from bacalhau import engines as engine_registry
from bacalhau import spec
from bacalhau.cli._common import parse_kv, parse_size
from bacalhau.errors import BacalhauError, UsageError


def serve(args: argparse.Namespace) -> int:
    from bacalhau.compute.capacity import Limits, Resources
    from bacalhau.node import Node, NodeConfig

    def resources(scope: str) -> Resources:
        cpu, gpu = getattr(args, f"limit_{scope}_cpu"), getattr(args, f"limit_{scope}_gpu")
        if cpu < 0 or gpu < 0:
            raise UsageError(f"--limit-{scope}-cpu and --limit-{scope}-gpu must not be negative")
        memory, disk = (getattr(args, f"limit_{scope}_{k}") for k in ("memory", "disk"))
        return Resources(
            cpu=cpu,
            memory_bytes=parse_size(memory) if memory else 0,
            disk_bytes=parse_size(disk) if disk else 0,
            gpu=gpu,
        )

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for engine in engines:
        engine_registry.get(engine)  # UsageError naming the engines there are
    if not 0 <= args.port <= 65535:
        raise UsageError(f"bad port {args.port}")
    if not 0 < args.max_job_timeout <= spec.MAX_TIMEOUT_S:  # also refuses nan
        raise UsageError(
            f"--max-job-timeout must be above 0 and at most {spec.MAX_TIMEOUT_S}, "
            f"not {args.max_job_timeout:g}"
        )
    for flag, value in (
        ("--bid-window", args.bid_window),
        ("--queue-timeout", args.queue_timeout),
        ("--node-lost-timeout", args.node_lost_timeout),
    ):
        if not 0 < value <= spec.MAX_TIMEOUT_S:  # also refuses nan
            raise UsageError(f"{flag} must be above 0 and at most {spec.MAX_TIMEOUT_S} s")
    max_spec = _size(args.max_spec_size, "--max-spec-size")
    if not 0 < max_spec <= spec.MAX_SPEC_BYTES:
        raise UsageError(
            f"--max-spec-size must be above 0 and at most {spec.MAX_SPEC_BYTES} bytes (1Mi)"
        )
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = NodeConfig(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        peers=list(args.peer),
        engines=engines,
        labels=parse_kv(args.labels, "label"),
        metrics_port=args.metrics_port,
        max_parallel=args.max_parallel,
        bid_window_s=args.bid_window,
        node_lost_s=args.node_lost_timeout,
        queue_timeout_s=args.queue_timeout,
        mdns=args.mdns,
        advertise=args.advertise,
        limits=Limits(total=resources("total"), job=resources("job")),
        docker_pull=args.docker_pull,
        nvidia_smi=args.nvidia_smi,
        input_cache_bytes=_size(args.input_cache_size, "--input-cache-size"),
        url_max_bytes=_size(args.url_max_size, "--url-max-size"),
        allow_private_urls=args.allow_private_urls,
        max_job_timeout_s=args.max_job_timeout,
        max_spec_bytes=max_spec,
        max_upload_bytes=_size(args.max_upload_size, "--max-upload-size"),
    )
    return asyncio.run(_run(Node(config)))


def _size(text: str, flag: str) -> int:
    if text.strip() == "0":
        return 0
    try:
        return parse_size(text)
    except UsageError as e:
        raise UsageError(f"{flag}: {e.message}", hint=e.hint) from None


async def _run(node: object) -> int:
    from bacalhau.node import Node

    assert isinstance(node, Node)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
    except RuntimeError as e:  # grpc: "Failed to bind to address ..."
        raise BacalhauError(
            f"cannot serve on {node.config.host}:{node.config.port}: {e}",
            hint="is another node using that port? pick one with --port",
        ) from None
    print(f"bacalhaud: node {node.node_id} serving on {node.address}", flush=True)
    if node.metrics_port is not None:
        print(
            f"bacalhaud: metrics on http://{node.config.host}:{node.metrics_port}/metrics",
            flush=True,
        )
    await stop.wait()
    logging.getLogger("bacalhau").info("stopping")
    await node.stop()
    return 0
