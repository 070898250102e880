"""bacalhauctl commands that talk to a node: id, peers, wasm run, list, describe, logs, get,
cancel."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bacalhau._pb.bacalhau.v1 import client_pb2, types_pb2
from bacalhau.cli._common import parse_kv
from bacalhau.cli._flags import (
    DEFAULT_CID_MOUNT,
    InputFlag,
    flag_cpu,
    flag_memory,
    flag_timeout,
    parse_input,
    split_url,
)
from bacalhau.cli._render import describe_text, dump, job_doc, spec_doc, time_text
from bacalhau.client import Client, default_user_key, load_user_key
from bacalhau.content.cid import CID
from bacalhau.errors import BacalhauError, UsageError
from bacalhau.models import ExecutionState, JobState
from bacalhau.spec import (
    WASM_MAGIC,
    SpecError,
    check,
    check_concurrency,
    check_docker,
    check_output_volume,
    check_outputs,
    check_resources,
    check_timeout,
    mount_paths,
    parse_memory,
    parse_url_list,
)


def _client(args: argparse.Namespace) -> Client:
    ca_path = args.tls_ca or (Path(p) if (p := os.environ.get("BACALHAU_TLS_CA")) else None)
    ca = None
    if ca_path is not None:
        try:
            ca = ca_path.read_bytes()
        except OSError as e:
            raise UsageError(f"--tls-ca: cannot read {ca_path}: {e.strerror}") from None
    return Client(args.api, user_key=args.user_key, tls=args.tls, tls_ca=ca)


def _sharding(args: argparse.Namespace) -> Any:
    """The ShardingSpec of the --sharding-* flags; UsageError for numbers out of range."""
    for flag, value in (
        ("--sharding-batch-size", args.sharding_batch_size),
        ("--shard-retries", args.shard_retries),
    ):
        if value is not None and value < (1 if flag == "--sharding-batch-size" else 0):
            raise UsageError(f"{flag} must be at least {1 if 'batch' in flag else 0}, not {value}")
    sharding = types_pb2.ShardingSpec(
        glob_pattern=args.sharding_glob_pattern or "",
        base_path=args.sharding_base_path or "",
        batch_size=args.sharding_batch_size or 0,
    )
    if args.shard_retries is not None:
        sharding.retries = args.shard_retries
    return sharding


def whoami(args: argparse.Namespace) -> int:
    path = args.user_key or default_user_key()
    key = load_user_key(path)
    _print({"user_id": key.node_id, "key": str(path)}, args, key.node_id + "\n")
    return 0


def _print(doc: Any, args: argparse.Namespace, text: str) -> None:
    if args.output == "text":
        sys.stdout.write(text)
    else:
        sys.stdout.write(dump(doc, args.output))


def node_id(args: argparse.Namespace) -> int:
    with _client(args) as c:
        info = c.node_info()
    doc = {
        "id": info.node_id,
        "address": info.address,
        "version": info.version,
        "engines": list(info.engines),
        "labels": dict(info.labels),
    }
    _print(doc, args, info.node_id + "\n")
    return 0


def peers(args: argparse.Namespace) -> int:
    with _client(args) as c:
        info = c.node_info()
    docs = [
        {
            "id": p.node_id,
            "addresses": list(p.addresses) or ([p.address] if p.address else []),
            "alive": p.alive,
            "engines": list(p.engines),
            "resources": {
                **_resources_doc(p.resources),
                "free": _resources_doc(p.free) if p.HasField("free") else None,
            },
            "queued": p.queued,
            "labels": dict(p.labels),
            "version": p.version or None,
            "last_seen": time_text(p.last_seen_unix_nano),
            "results_accepted": p.results_accepted,
            "results_rejected": p.results_rejected,
            "penalized_until": time_text(p.penalized_until_unix_nano)
            if p.penalized_until_unix_nano > time.time_ns()
            else None,
        }
        for p in info.peers
    ]
    text = "".join(
        f"{d['id']}  {','.join(d['addresses'])}  {'alive' if d['alive'] else 'not alive'}  "
        f"{','.join(d['engines']) or '-'}  last seen {d['last_seen']}  "
        f"results {d['results_accepted']} accepted, {d['results_rejected']} rejected"
        + (f"  PENALISED until {d['penalized_until']}" if d["penalized_until"] else "")
        + "\n"
        for d in docs
    )
    _print(docs, args, text)
    return 0


def _resources_doc(r: Any) -> dict[str, Any]:
    return {"cpu": r.cpu, "memory_bytes": r.memory_bytes, "disk_bytes": r.disk_bytes, "gpu": r.gpu}


def parse_output_volume(text: str) -> tuple[str, str]:
    """`NAME:/path` -> (name, path); raises UsageError (SpecError for a bad name) with the fix."""
    name, sep, path = text.partition(":")
    if not sep or not name or not path.startswith("/"):
        raise UsageError(
            f"bad output volume {text!r}",
            hint="write it as NAME:/absolute/path, e.g. outputs:/outputs",
        )
    problems = check_output_volume(name, path)
    if problems:
        raise SpecError(problems)
    return name, path


DEFAULT_OUTPUT = ("outputs", "/outputs")


def with_default_output(outputs: list[tuple[str, str]], drop: bool) -> list[tuple[str, str]]:
    """`-o` outputs plus the default `outputs:/outputs` (first), unless `drop`
    (--no-default-outputs) or an `-o` takes its name, its path, or a path above or below it."""
    name, path = DEFAULT_OUTPUT
    clash = any(
        n == name or p == path or p.startswith(path + "/") or path.startswith(p.rstrip("/") + "/")
        for n, p in outputs
    )
    return outputs if drop or clash else [DEFAULT_OUTPUT, *outputs]


def wasm_run(args: argparse.Namespace) -> int:
    module = args.module
    path = Path(module)
    upload = path.exists() or module.endswith(".wasm")
    if upload:
        _check_wasm_file(path)
    else:
        try:
            CID.parse(module)
        except BacalhauError:
            raise UsageError(
                f"{module} is neither a file nor a CID", hint="give a .wasm file or a module's CID"
            ) from None

    def build(up: Uploads, spec: Any, env: dict[str, str]) -> None:
        module_cid = up.file(path) if upload else module
        spec.engine = "wasm"
        spec.wasm.CopyFrom(
            types_pb2.WasmSpec(
                module_cid=module_cid, args=args.args, env=env, deterministic=args.deterministic
            )
        )

    return run_job(args, build)


def docker_run(args: argparse.Namespace) -> int:
    command = list(args.args)
    if command[:1] == ["--"]:
        command = command[1:]
    section = types_pb2.DockerSpec(image=args.image, working_dir=args.workdir)
    problems = check_docker(types_pb2.JobSpec(engine="docker", docker=section))
    if problems:
        raise SpecError(problems)

    def build(up: Uploads, spec: Any, env: dict[str, str]) -> None:
        spec.engine = "docker"
        spec.docker.CopyFrom(
            types_pb2.DockerSpec(
                image=args.image,
                entrypoint=[args.entrypoint] if args.entrypoint else [],
                args=command,
                env=env,
                working_dir=args.workdir,
            )
        )

    return run_job(args, build)


class Uploads(Protocol):
    """Where a run's local files go: uploaded to the node, or (--dry-run) only hashed."""

    def file(self, path: Path) -> str:
        """The CID of the file at `path`."""
        ...

    def folder(self, path: Path) -> str:
        """The CID of the folder at `path`, as `ipfs add -r --hidden` gives it."""
        ...


class _NodeUploads:
    def __init__(self, c: Client) -> None:
        self._c = c

    def file(self, path: Path) -> str:
        return str(self._c.add_file(path).cid)

    def folder(self, path: Path) -> str:
        return str(self._c.add_directory(path).cid)


class _HashOnly:
    """The CIDs an upload would give (the node imports with the same defaults); nothing is
    stored or sent."""

    def file(self, path: Path) -> str:
        return self._hash(path)

    def folder(self, path: Path) -> str:
        return self._hash(path)

    def _hash(self, path: Path) -> str:
        from bacalhau.content import Importer, ImportOptions

        try:
            with Importer(ImportOptions(), None) as importer:
                return str(CID.from_bytes(importer.add_path(path).cid))
        except OSError as e:
            raise UsageError(f"cannot read {path}: {e.strerror}") from None


Build = Callable[[Uploads, Any, dict[str, str]], None]


def run_job(args: argparse.Namespace, build: Build) -> int:
    """Submit a job from the shared run flags; `build(uploads, spec, env)` adds the engine's
    part.

    Checks the flags with the spec's rules before anything is uploaded, and the whole spec
    before it is submitted (SpecError); then prints the job ID and, with --wait, follows the
    job and fails unless it completed. With --dry-run, prints the spec instead, and uploads
    and submits nothing.
    """
    outputs = with_default_output(
        [parse_output_volume(o) for o in args.output_volumes], args.no_default_outputs
    )
    env = parse_kv(args.env, "environment variable")
    selector = parse_kv(args.labels, "label")
    timeout = flag_timeout(args.timeout)
    cpu = flag_cpu(args.cpu)
    memory = flag_memory(args.memory)
    disk = parse_memory(args.disk, "--disk") if args.disk else 0
    output_specs = [types_pb2.OutputSpec(name=n, path=p) for n, p in outputs]
    problems = check_outputs(output_specs)
    problems += check_timeout(timeout)
    problems += check_resources(cpu=cpu, gpu=args.gpu, memory_bytes=memory, disk_bytes=disk)
    problems += check_concurrency(args.concurrency)
    for flag, value in (
        ("--confidence", args.confidence),
        ("--min-bids", args.min_bids),
        ("--result-replicas", args.result_replicas),
    ):
        if value < 0:
            raise UsageError(f"{flag} must be 0 or more, not {value}")
    sharding = _sharding(args)
    if problems:
        raise SpecError(problems)
    inputs = input_flags(args)
    by_data = [i for i in inputs if i.kind != "url"]
    urls = [(str(i.value), i.mount) for i in inputs if i.kind == "url"]
    urls += [split_url(u, "-u") for u in args.urls]
    for list_file in args.url_lists:
        urls += [(u, None) for u in _read_url_list(list_file)]
    taken = {i.mount or DEFAULT_CID_MOUNT for i in by_data} | {m for _, m in urls if m}
    auto = iter(mount_paths([u for u, m in urls if m is None], taken=taken))
    url_mounts = [(u, m if m is not None else next(auto)) for u, m in urls]

    def assemble(up: Uploads) -> Any:
        spec = types_pb2.JobSpec(
            inputs=[
                *(
                    types_pb2.InputSpec(
                        source="ipfs",
                        cid=_cid_of(up, i),
                        mount_path=i.mount or DEFAULT_CID_MOUNT,
                    )
                    for i in by_data
                ),
                *(
                    types_pb2.InputSpec(source="url", url=url, mount_path=mount)
                    for url, mount in url_mounts
                ),
            ],
            outputs=output_specs,
            deal=types_pb2.Deal(
                concurrency=args.concurrency,
                confidence=args.confidence,
                min_bids=args.min_bids,
                verifier=args.verifier or "",
                result_replicas=args.result_replicas,
            ),
            timeout_seconds=timeout,
            node_selector=selector,
            resources=types_pb2.Resources(
                cpu=cpu, gpu=args.gpu, memory_bytes=memory, disk_bytes=disk
            ),
            sharding=sharding,
            no_memo=args.no_memo,
        )
        build(up, spec, env)
        check(spec)  # the node's own rules, before it is asked
        return spec

    if args.dry_run:
        print_spec(assemble(_HashOnly()), args)
        return 0
    with _client(args) as c:
        return submit(c, assemble(_NodeUploads(c)), args)


def print_spec(spec: Any, args: argparse.Namespace) -> None:
    """The spec document (--dry-run): YAML, or JSON with --output json."""
    sys.stdout.write(dump(spec_doc(spec), "json" if args.output == "json" else "yaml"))


def submit(c: Client, spec: Any, args: argparse.Namespace) -> int:
    """Submit `spec`. Text: print the job ID; with --wait, follow it, then print its stdout
    (unless --quiet), or on failure its stderr tail on stderr, and fail unless it completed.
    --output json|yaml: one document on stdout and nothing else (the job once final with
    --wait, else as submitted); --id-only: the job ID alone, at once."""
    answer = c.submit(spec)
    job_id = answer.job_id
    text = args.output == "text"
    if text or args.id_only:
        print(job_id, flush=True)
    if args.id_only:
        return 0
    if not args.wait:
        if not text:
            sys.stdout.write(dump(job_doc(answer.job), args.output))
        return 0
    job = c.wait(job_id).job
    if not text:
        sys.stdout.write(dump(job_doc(job), args.output))
    state = JobState.of(job.state)
    if state != JobState.COMPLETED:
        _stderr_tails(job)
        raise BacalhauError(
            f"job {job.id} {state.value}: {job.message or 'no reason given'}",
            hint=f"'bacalhauctl describe {job.id}' shows what happened",
        )
    if text and not getattr(args, "quiet", False):
        _print_stdout(c, job.id)
    if args.download:
        _download(c, job.id, args.output_dir)
    if text:
        print(f"completed; 'bacalhauctl get {job.id}' downloads the result", file=sys.stderr)
    return 0


def _print_stdout(c: Client, job_id: str) -> None:
    """The job's stdout (every shard's, in order) on stdout, as `logs` gives it. The job
    completed whether or not its output can be read now: a failure to read it is one line on
    stderr, not a failed run."""
    out = sys.stdout.buffer
    sys.stdout.flush()
    try:
        for chunk in c.logs(job_id, follow=False):
            if chunk.stream == client_pb2.LogChunk.STREAM_STDOUT:
                out.write(chunk.data)
    except BacalhauError as e:
        out.flush()
        print(
            f"the job completed, but its output could not be read through this node: "
            f"{e.message} ('bacalhauctl logs {job_id}' tries again)",
            file=sys.stderr,
        )
    out.flush()


STDERR_TAIL = "the job's stderr ended with:"  # then its lines, each after TAIL_MARK
TAIL_MARK = "  | "


def _stderr_tails(job: Any) -> None:
    """The last lines of stderr of the job's failed executions (each distinct tail once),
    marked apart from bacalhauctl's own error line, which follows."""
    tails = [ex.stderr_tail for ex in job.executions if ex.stderr_tail]
    for t in dict.fromkeys(tails):
        sys.stderr.write(STDERR_TAIL + "\n")
        sys.stderr.writelines(f"{TAIL_MARK}{line}\n" for line in t.splitlines())
    sys.stderr.flush()


def input_flags(args: argparse.Namespace) -> list[InputFlag]:
    """The inputs of -v and -i, in that order; UsageError naming the flag of a bad one."""
    return [parse_input(t, "-v") for t in args.inputs] + [
        parse_input(t, "-i") for t in args.input_uris
    ]


def _cid_of(up: Uploads, i: InputFlag) -> str:
    """The CID of an input: uploaded (or hashed) first when it is a local file or folder."""
    if isinstance(i.value, str):
        return i.value
    return up.folder(i.value) if i.value.is_dir() else up.file(i.value)


def _read_url_list(path: Path) -> list[str]:
    """URLs from a -U file (or - for stdin). Raises UsageError for a missing file, a bad line."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except FileNotFoundError:
        raise UsageError(f"URL list {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the URL list {path}: {e}") from None
    return parse_url_list(text, f"URL list {path}")


def _check_wasm_file(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    if head != WASM_MAGIC:
        raise UsageError(
            f"{path} is not a WebAssembly module (no \\0asm header)",
            hint="give a .wasm file built for WASI",
        )


RECENT = 20  # jobs `list` shows without -n, --all or --active
NETWORK_PAGE = 500  # jobs a network-wide list asks for at a time (the node's most)


def list_jobs(args: argparse.Namespace) -> int:
    """Recent jobs of every state, newest first, with a header row; --active: the active
    ones only; --all: every one; -n N: at most N."""
    if args.n < 0:
        raise UsageError(f"-n must not be negative, not {args.n}")
    if args.active and (args.all or args.state):
        raise UsageError("--active shows the active jobs; give it alone, or --state/--all")
    limit = args.n or (0 if args.all or args.active else RECENT)
    jobs: list[Any] = []
    missing: set[str] = set()
    with _client(args) as c:
        states = [JobState(s).pb for s in args.state]
        cursor = ""
        while True:
            want = limit - len(jobs) if limit else 0
            if args.network:  # paged: the network's jobs come at most a page at a time
                want = min(want or NETWORK_PAGE, NETWORK_PAGE)
            page = c.list_jobs(
                all=not args.active,
                limit=want,
                states=states,
                client_id=args.client,
                all_users=args.all_users,
                cursor=cursor,
                network=args.network,
            )
            jobs.extend(page.jobs)
            missing.update(page.missing_nodes)
            cursor = page.next_cursor
            if not (args.network and cursor and (not limit or len(jobs) < limit)):
                break
    docs = [job_doc(j) for j in jobs]
    rows = [("ID", "CREATED", "STATE", "ENGINE", "NODES")]
    for d in docs:
        # each node once, in the order it was chosen (a sharded job runs many times on each)
        ran = [ex["node_id"][-8:] for ex in d["executions"] if ex["state"] != "bid_rejected"]
        nodes = ",".join(dict.fromkeys(ran)) or "-"
        rows.append((d["id"], d["created_at"], d["state"], d["spec"]["engine"], nodes))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    text = "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths, strict=True)) + f"  {r[4]}\n"
        for r in rows
    )
    _print(docs, args, text)
    if args.output == "text" and cursor:
        print(f"(the {len(docs)} newest; -n N or --all for more)", file=sys.stderr)
    if missing:
        names = ", ".join(sorted(n[-8:] for n in missing))
        print(f"({len(missing)} node(s) did not answer: {names})", file=sys.stderr)
    return 0


def describe(args: argparse.Namespace) -> int:
    with _client(args) as c:
        resp = c.get_job(args.job)
    doc = job_doc(resp.job, list(resp.events))
    _print(doc, args, describe_text(doc, by_shard=args.shards))
    return 0


def logs(args: argparse.Namespace) -> int:
    if args.shard is not None and args.shard < 0:
        raise UsageError(f"--shard must be 0 or more, not {args.shard}")
    with _client(args) as c:
        chunks = c.logs(args.job, follow=args.follow, shard=args.shard, execution_id=args.execution)
        for chunk in chunks:
            out = sys.stdout if chunk.stream == client_pb2.LogChunk.STREAM_STDOUT else sys.stderr
            out.buffer.write(chunk.data)
            out.flush()
    return 0


def lineage(args: argparse.Namespace) -> int:
    if not 0 <= args.depth <= 32:
        raise UsageError(f"--depth must be 0 to 32, not {args.depth}")
    CID.parse(args.cid)  # InvalidCID: one line, before the node is asked
    with _client(args) as c:
        nodes = c.lineage(args.cid, args.depth).nodes
    docs = [
        {
            "cid": n.cid,
            "depth": n.depth,
            "job_id": n.job_id or None,
            "record_cid": n.record_cid or None,
            "function": _function(n.record),
            "inputs": list(n.input_cids),
            "used_by": list(n.used_by),
        }
        for n in nodes
    ]
    lines = []
    for d in docs:
        pad = "  " * d["depth"]
        made = f"made by {d['job_id']}: {d['function']}" if d["job_id"] else "made by no job known"
        lines.append(f"{pad}{d['cid']}  {made}")
        if d["used_by"]:
            lines.append(f"{pad}  read by {', '.join(d['used_by'])}")
    _print(docs, args, "\n".join(lines) + "\n")
    return 0


def _function(record: str) -> Any:
    """The function part of a canonical record (engine, module or program, args), or None."""
    if not record:
        return None
    import json

    doc = json.loads(record)
    return {"engine": doc.get("engine"), **doc.get("function", {})}


def cancel(args: argparse.Namespace) -> int:
    with _client(args) as c:
        job = c.cancel(args.job)
    doc = job_doc(job)
    _print(doc, args, f"{job.id} {doc['state']}\n")
    return 0


def get(args: argparse.Namespace) -> int:
    if args.path is not None:
        return _get_file(args)
    if args.shard is not None:
        raise UsageError("--shard goes with --path", hint="a whole get takes every shard")
    with _client(args) as c:
        job = c.get_job(args.job).job
        if job.shard_count > 1:
            dest = _download_shards(c, job, args.output_dir, keep_last=args.merge == "keep-last")
        else:
            cid = _which_result(job, args.execution)
            dest = _download(c, job.id, args.output_dir, cid)
    print(dest)
    return 0


def _get_file(args: argparse.Namespace) -> int:
    """`get JOB --path P`: one file of the result through Cat, written to DIR/P (atomically)
    or, with `--output-dir -`, to stdout."""
    from bacalhau.content.paths import parts_of

    parts = parts_of(args.path)
    if not parts:
        raise UsageError("--path names a file of the result, e.g. stdout or outputs/x.csv")
    if args.shard is not None and args.shard < 0:
        raise UsageError(f"--shard must be 0 or more, not {args.shard}")
    to_stdout = str(args.output_dir) == "-"
    with _client(args) as c:
        job = c.get_job(args.job).job
        if args.execution:
            if args.shard is not None:
                raise UsageError("give --execution or --shard, not both")
            cid = _which_result(job, args.execution)
            chunks = c.cat(f"{cid}/{'/'.join(parts)}")
        else:
            chunks = c.cat(job_id=job.id, file="/".join(parts), shard=args.shard)
        if to_stdout:
            out = sys.stdout.buffer
            for chunk in chunks:
                out.write(chunk.data)
            out.flush()
            return 0
        dest = (args.output_dir or Path(job.id)).joinpath(*parts)
        _write_atomically(dest, (chunk.data for chunk in chunks))
    print(dest)
    return 0


def _write_atomically(dest: Path, pieces: Any) -> None:
    """Write `pieces` to `dest` through a temporary file beside it: whole, or not at all."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {dest.parent}: {e.strerror}") from None
    if dest.is_dir():
        raise UsageError(f"{dest} is a folder", hint="give another --output-dir")
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        with open(tmp, "wb") as f:
            for piece in pieces:
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(dest)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {dest}: {e.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _which_result(job: Any, execution_id: str | None) -> str:
    """The result CID `get` fetches: the execution asked for, else the job's (""); says on
    stderr which execution's result it is when several were published."""
    published = [ex for ex in job.executions if ex.state == types_pb2.EXECUTION_STATE_PUBLISHED]
    if execution_id:
        for ex in job.executions:
            if ex.id == execution_id or (len(execution_id) >= 6 and ex.id.startswith(execution_id)):
                if ex.state != types_pb2.EXECUTION_STATE_PUBLISHED:
                    state = ExecutionState.of(ex.state).value
                    raise UsageError(
                        f"execution {ex.id} of {job.id} has no result to get ({state})"
                    )
                return str(ex.result_cid)
        raise UsageError(
            f"job {job.id} has no execution {execution_id}",
            hint="'bacalhauctl describe' lists its executions",
        )
    if len(published) > 1:
        shown = published[0]
        others = len({ex.result_cid for ex in published} - {shown.result_cid})
        print(
            f"the result of execution {shown.id} (node {shown.node_id[-8:]}), one of "
            f"{len(published)} published ({others} different); another: get --execution ID",
            file=sys.stderr,
        )
        return str(shown.result_cid)
    return ""


def _download_shards(c: Client, job: Any, output_dir: Path | None, *, keep_last: bool) -> Path:
    from bacalhau.cli._download import ProgressBar, download_shards

    bar = ProgressBar() if sys.stderr.isatty() else None
    try:
        return download_shards(
            c, job, output_dir or Path(job.id), keep_last=keep_last, progress=bar
        )
    finally:
        if bar is not None:
            bar.close()


def _download(c: Client, job_id: str, output_dir: Path | None, cid: str = "") -> Path:
    """The job's result into `output_dir` (default ./JOB_ID); resumes an interrupted get.

    On a terminal, shows progress on stderr. Raises UsageError if the folder is in the way."""
    from bacalhau.cli._download import ProgressBar, download_result

    bar = ProgressBar() if sys.stderr.isatty() else None
    try:
        got = download_result(c, job_id, output_dir or Path(job_id), progress=bar, result_cid=cid)
    finally:
        if bar is not None:
            bar.close()
    if got.resumed_bytes:
        print(
            f"resumed: {got.resumed_bytes} bytes were here already, {got.received_bytes} fetched",
            file=sys.stderr,
        )
    return got.path
