"""`bacalhaud serve`: run one node until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import time
from pathlib import Path

from bacalhau import engines as engine_registry
from bacalhau import spec
from bacalhau.cli._common import parse_kv, parse_size
from bacalhau.errors import BacalhauError, UsageError
from bacalhau.identity import IdentityError, public_key_from_node_id

BAD_ACTOR_ENV = "BACALHAU_DEVSTACK_BAD_ACTOR"  # set by devstack --bad-actors only


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
    for flag, value in (("--metrics-port", args.metrics_port), ("--web-port", args.web_port)):
        if value is not None and not 0 <= value <= 65535:
            raise UsageError(f"{flag} must be 0 to 65535, not {value}")
    if not args.web_host.strip():
        raise UsageError("--web-host must name an address, e.g. 127.0.0.1")
    if not 1 <= args.max_peers <= 100_000:
        raise UsageError(f"--max-peers must be 1 to 100000, not {args.max_peers}")
    if not 0 < args.max_job_timeout <= spec.MAX_TIMEOUT_S:  # also refuses nan
        raise UsageError(
            f"--max-job-timeout must be above 0 and at most {spec.MAX_TIMEOUT_S}, "
            f"not {args.max_job_timeout:g}"
        )
    if args.default_job_timeout is None:
        args.default_job_timeout = min(600.0, args.max_job_timeout)
    if not 0 < args.default_job_timeout <= args.max_job_timeout:  # also refuses nan
        raise UsageError(
            f"--default-job-timeout must be above 0 and at most --max-job-timeout "
            f"({args.max_job_timeout:g} s), not {args.default_job_timeout:g}"
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
    tls_cert, tls_key, tls_ca = _tls(args)
    otlp = _otlp_endpoint(args.otlp_endpoint)
    if not 0 <= args.penalty <= spec.MAX_TIMEOUT_S * 30:  # also refuses nan
        raise UsageError(
            f"--penalty must be 0 to {spec.MAX_TIMEOUT_S * 30:g} s, not {args.penalty}"
        )
    if args.log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    else:
        logging.basicConfig(
            level=args.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    if os.environ.get(BAD_ACTOR_ENV) == "1":
        logging.getLogger("bacalhau").warning(
            "THIS NODE IS A BAD ACTOR: it returns wrong results on purpose "
            "(bacalhaud devstack --bad-actors, for tests and demos)"
        )
    config = NodeConfig(
        data_dir=args.data_dir.absolute(),  # docker mounts and peers need no cwd
        host=args.host,
        port=args.port,
        peers=list(args.peer),
        engines=engines,
        labels=parse_kv(args.labels, "label"),
        metrics_port=args.metrics_port,
        web_port=args.web_port,
        web_host=args.web_host.strip(),
        tracing=args.tracing == "on",
        otlp_endpoint=otlp,
        max_parallel=args.max_parallel,
        bid_window_s=args.bid_window,
        node_lost_s=args.node_lost_timeout,
        queue_timeout_s=args.queue_timeout,
        mdns=args.mdns,
        advertise=args.advertise,
        limits=Limits(total=resources("total"), job=resources("job")),
        docker_pull=args.docker_pull,
        docker_nvidia_runtime=args.docker_nvidia_runtime,
        nvidia_smi=args.nvidia_smi,
        input_cache_bytes=_size(args.input_cache_size, "--input-cache-size"),
        url_max_bytes=_size(args.url_max_size, "--url-max-size"),
        allow_private_urls=args.allow_private_urls,
        max_job_timeout_s=args.max_job_timeout,
        default_job_timeout_s=args.default_job_timeout,
        max_spec_bytes=max_spec,
        admin_keys=frozenset(_ids(args.admin_keys, "--admin-keys")),
        allow_clients=None
        if args.allow_clients is None
        else frozenset(_ids(args.allow_clients, "--allow-clients")),
        max_peers=args.max_peers,
        bad_actor=os.environ.get(BAD_ACTOR_ENV) == "1",
        penalty_s=args.penalty,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        trusted_peers=None
        if args.trusted_peers is None
        else frozenset(_ids(args.trusted_peers, "--trusted-peers")),
        max_upload_bytes=_size(args.max_upload_size, "--max-upload-size"),
        max_result_bytes=_size(args.max_result_size, "--max-result-size"),
        upload_quota_bytes=_size(args.upload_quota, "--upload-quota"),
    )
    return asyncio.run(_run(Node(config)))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the job and execution IDs
    the message names (`job_id`, `execution_id`), for log pipelines."""

    converter = time.gmtime  # type: ignore[assignment]  # the "Z" is true
    _JOB = re.compile(r"\bj-[0-9a-f]{8}-[0-9a-f-]{27}(?:-[a-z2-7]{16})?\b")
    _EXECUTION = re.compile(r"\be-[0-9a-f]{8}-[0-9a-f-]{27}\b")

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        doc: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        for key, pattern in (("job_id", self._JOB), ("execution_id", self._EXECUTION)):
            found = pattern.search(message)
            if found:
                doc[key] = found.group(0)
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def _tls(args: argparse.Namespace) -> tuple[bytes | None, bytes | None, bytes | None]:
    """--tls-cert, --tls-key and --tls-ca, read and checked: PEM, a key that is the
    certificate's. UsageError naming the flag otherwise."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
    )

    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.tls_ca is not None and args.tls_cert is None:
        raise UsageError(
            "--tls-ca checks peers' certificates: serve TLS too (--tls-cert, --tls-key)"
        )
    cert, key, ca = (_pem(p, f) for p, f in ((args.tls_cert, "--tls-cert"),
                     (args.tls_key, "--tls-key"), (args.tls_ca, "--tls-ca")))  # fmt: skip
    if cert is None or key is None:
        return None, None, None
    try:
        leaf = x509.load_pem_x509_certificate(cert)
    except ValueError:
        raise UsageError(f"--tls-cert: {args.tls_cert} holds no readable certificate") from None
    try:
        private = load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise UsageError(
            f"--tls-key: {args.tls_key} holds no readable key (an encrypted key is not taken)"
        ) from None
    raw = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if private.public_key().public_bytes(*raw) != leaf.public_key().public_bytes(*raw):
        raise UsageError(f"--tls-key: {args.tls_key} is not the key of {args.tls_cert}")
    if ca is not None:
        try:
            x509.load_pem_x509_certificates(ca)
        except ValueError:
            raise UsageError(f"--tls-ca: {args.tls_ca} holds no readable certificate") from None
    return cert, key, ca


def _pem(path: Path | None, flag: str) -> bytes | None:
    """A PEM file's bytes; UsageError if unreadable or not PEM."""
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"{flag}: cannot read {path}: {e.strerror}") from None
    if b"-----BEGIN " not in data:
        raise UsageError(f"{flag}: {path} is not a PEM file", hint="see docs/security.md, TLS")
    return data


def _ids(path: Path | None, flag: str) -> list[str]:
    """The user or node IDs in a file: one per line, '#' starts a comment. UsageError naming
    the file and line of anything else."""
    if path is None:
        return []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{flag}: cannot read {path}: {getattr(e, 'strerror', e)}") from None
    ids = []
    for n, line in enumerate(text.splitlines(), 1):
        word = line.split("#", 1)[0].strip()
        if not word:
            continue
        try:
            public_key_from_node_id(word)
        except IdentityError:
            raise UsageError(
                f"{flag}: {path} line {n}: {word[:60]!r} is not an ID",
                hint="one ID per line, as 'bacalhauctl whoami' or 'bacalhauctl id' prints it",
            ) from None
        ids.append(word)
    return ids


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
    if node.web_port is not None:
        host = node.config.web_host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        print(f"bacalhaud: dashboard on http://{host}:{node.web_port}/", flush=True)
    await stop.wait()
    logging.getLogger("bacalhau").info("stopping")
    await node.stop()
    return 0


def _otlp_endpoint(text: str) -> str:
    """--otlp-endpoint as HOST:PORT ("" when not given). Raises UsageError."""
    text = text.strip()
    if not text:
        return ""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise UsageError(
            f"--otlp-endpoint must be HOST:PORT (an OTLP/gRPC collector), not {text!r}",
            hint="e.g. --otlp-endpoint 127.0.0.1:4317",
        )
    if host not in ("127.0.0.1", "localhost", "[::1]") and not host.startswith("127."):
        logging.getLogger("bacalhau").warning(
            "spans go to %s without TLS: keep the collector on a trusted network", text
        )
    return text
