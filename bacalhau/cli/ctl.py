"""bacalhauctl: the client. Heavy modules are imported inside commands, so --help is fast."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from bacalhau.cli._common import FORMATS, Parser, default_data_dir, print_version, run

PROG = "bacalhauctl"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Client for Bacalhau (Python): run jobs on a network of nodes, follow "
        "them, fetch their results; add and read content-addressed data.",
    )
    parser.add_argument(
        "--api",
        default=None,
        metavar="HOST:PORT",
        help="the node to talk to (default: $BACALHAU_API or 127.0.0.1:1234)",
    )
    parser.add_argument(
        "--output", choices=FORMATS, default="text", help="output format (default: text)"
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="reach the node over TLS, its certificate checked against the system's CAs",
    )
    parser.add_argument(
        "--tls-ca",
        type=Path,
        default=None,
        metavar="PEM",
        help="reach the node over TLS, its certificate checked against these CA certificates "
        "(default: $BACALHAU_TLS_CA)",
    )
    parser.add_argument(
        "--user-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="the Ed25519 key that signs your calls and owns your jobs, created on first use "
        "(default: $BACALHAU_USER_KEY or ~/.bacalhau/user.key)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="local node data directory for commands that work without a node "
        "(default: $BACALHAU_DATA_DIR or ~/.bacalhau)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("version", help="print the client version")

    add = sub.add_parser(
        "add",
        help="add a file or folder to the node; print its CIDs (kubo-compatible)",
        description="Upload PATH to the node at --api, which imports it as UnixFS (folders "
        "recursively, hidden files included) and keeps it pinned as your upload ('uploads', "
        "'unpin'). Prints 'added <CID> <path>' for each file and folder, root last, once the "
        "node has stored everything; progress on stderr when it is a terminal and the data is "
        "large. With --local, stores into the local blockstore (--data-dir) instead, without "
        "a node; --only-hash stores nothing anywhere.",
    )
    add.add_argument("path", metavar="PATH")
    add.add_argument("--api", default=argparse.SUPPRESS, metavar="HOST:PORT", help="node")
    add.add_argument(
        "-n", "--only-hash", action="store_true", help="compute the CIDs locally, store nothing"
    )
    add.add_argument(
        "--local",
        action="store_true",
        help="store into the local blockstore (--data-dir), not the node",
    )
    add.add_argument("--cid-version", type=int, choices=(0, 1), default=0)
    add.add_argument(
        "--raw-leaves",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="raw leaf blocks (default: on with --cid-version 1, off with 0)",
    )
    add.add_argument("--chunker", default="size-262144", help="size-N (default size-262144)")
    add.add_argument("-q", "--quiet", action="store_true", help="print only the root CID")

    cat = sub.add_parser(
        "cat",
        help="write a file's bytes to stdout, read through the node",
        description="Write the bytes of the file CID, or of PATH inside the folder CID, to "
        "stdout, read through the node at --api (which checks every block against its CID and "
        "fetches what it lacks from its peers). With --local, from the local blockstore.",
    )
    cat.add_argument("cid", metavar="CID[/PATH]")
    cat.add_argument("--api", default=argparse.SUPPRESS, metavar="HOST:PORT", help="node")
    cat.add_argument(
        "--local", action="store_true", help="read the local blockstore (--data-dir), not the node"
    )

    car = sub.add_parser("car", help="export or import a DAG as a CAR v1 archive")
    car_sub = car.add_subparsers(dest="car_command", metavar="COMMAND", required=True)
    export = car_sub.add_parser("export", help="write the DAG under CID as CAR v1 to stdout")
    export.add_argument("cid", metavar="CID")
    export.add_argument("-o", "--output", type=Path, help="write to this file, not stdout")
    imp = car_sub.add_parser(
        "import", help="verify and store every block of a CAR v1 file; pin its roots"
    )
    imp.add_argument("file", metavar="FILE", help="the CAR file, or - for stdin")
    _add_repo_commands(sub)
    _add_job_commands(sub)
    return parser


def _add_repo_commands(sub: Any) -> None:
    repo = sub.add_parser("repo", help="check the local blockstore")
    repo_sub = repo.add_subparsers(dest="repo_command", metavar="COMMAND", required=True)
    verify = repo_sub.add_parser(
        "verify",
        help="check every stored block against its CID; --repair drops corrupt ones",
        description="Read every block in DATA_DIR/blocks and check that it hashes to its CID. "
        "Prints each corrupt block's CID on a line (as CIDv0: blocks are stored by multihash) "
        "and a summary on stderr; exits 1 if any is corrupt. With --repair, corrupt blocks are "
        "dropped from the index (pins stay), so 'bacalhauctl add' or 'car import' of the data, "
        "or a node fetching it from a peer, stores it again; it then exits 0. Safe while a "
        "node runs on DATA_DIR: only committed blocks are read, and a block is dropped under "
        "the blockstore's write lock, only if nobody rewrote it meanwhile; the node then "
        "treats it as missing.",
    )
    verify.add_argument(
        "--repair", action="store_true", help="drop corrupt blocks so they can be stored again"
    )
    verify.add_argument("--output", choices=FORMATS, default=argparse.SUPPRESS)
    verify.add_argument(
        "--data-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="the node's (or add's) data directory (default: $BACALHAU_DATA_DIR or ~/.bacalhau)",
    )


def _add_job_commands(sub: Any) -> None:
    # --api and --output are accepted after the command too (`describe JOB --output json`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api", default=argparse.SUPPRESS, metavar="HOST:PORT", help="node")
    common.add_argument("--output", choices=FORMATS, default=argparse.SUPPRESS)
    add = functools.partial(sub.add_parser, parents=[common])
    add("id", help="print the node's ID")
    add("whoami", help="print your user ID (from your user key; no node is asked)")
    add("peers", help="list the node's peers")

    flags = _run_flags(common)
    wasm = sub.add_parser("wasm", help="WebAssembly jobs")
    wasm_sub = wasm.add_subparsers(dest="wasm_command", metavar="COMMAND", required=True)
    run = wasm_sub.add_parser(
        "run",
        parents=[flags],
        help="run a WASI module on the network",
        description="Upload MODULE.wasm (or use a module already stored, by CID) and run it on "
        "a node the network selects. Prints the job ID first; with --wait (the default) "
        "follows the job, prints its stdout and exits 0 only if it completed. With --output "
        "json|yaml, prints the job's document alone.",
    )
    run.add_argument(
        "--deterministic",
        action="store_true",
        help="fixed clocks, seeded randomness, sleeps that return at once: every node gives "
        "the same result, so it can be verified (docs/verification.md)",
    )
    run.add_argument("module", metavar="MODULE.wasm|CID")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="module arguments")

    docker = sub.add_parser("docker", help="container jobs")
    docker_sub = docker.add_subparsers(dest="docker_command", metavar="COMMAND", required=True)
    drun = docker_sub.add_parser(
        "run",
        parents=[flags],
        help="run a container on the network",
        description="Run IMAGE (with CMD, if given) on a node whose Docker engine has it. The "
        "container has no network, inputs are read-only, output folders come back in the "
        "result. Prints the job ID first; with --wait (the default) follows the job, prints "
        "its stdout and exits 0 only if it completed. With --output json|yaml, prints the "
        "job's document alone.",
    )
    drun.add_argument(
        "--entrypoint", metavar="CMD", help="override the image's entrypoint (one program)"
    )
    drun.add_argument("-w", "--workdir", default="", metavar="/DIR", help="working directory")
    drun.add_argument("image", metavar="IMAGE")
    drun.add_argument("args", nargs=argparse.REMAINDER, metavar="CMD", help="command and args")

    from bacalhau.cli import _python_cmds  # light: its heavy imports wait for the command

    run_cmd = sub.add_parser("run", help="run a job with an engine: python")
    engines = run_cmd.add_subparsers(dest="run_command", metavar="ENGINE", required=True)
    _python_cmds.add_parser(engines, flags)

    _job_verbs(add)
    get = add(
        "get",
        help="download a job's result (stdout, stderr, exitCode, output folders)",
        description="Download a job's result folder from the network, every block checked "
        "against its CID, with progress on a terminal. An interrupted get leaves "
        "DIR.partial/; running it again resumes from there. DIR appears whole or not at all. "
        "A sharded job's result is each shard's under per_shard/N/, and merged in shard "
        "order: output folders, stdout and stderr.",
    )
    get.add_argument("job", metavar="JOB")
    get.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="default: ./JOB_ID; with --path, - writes the file to stdout",
    )
    get.add_argument(
        "--path",
        metavar="PATH",
        help="only this file of the result (e.g. stdout, outputs/x.csv), read through the "
        "node's Cat and written to DIR/PATH",
    )
    get.add_argument(
        "--shard",
        type=int,
        metavar="N",
        help="with --path: the result of shard N of a sharded job (default 0)",
    )
    get.add_argument(
        "--execution",
        metavar="ID",
        help="this execution's result (of a job run with --concurrency above 1), not the "
        "first published",
    )
    get.add_argument(
        "--merge",
        choices=("error", "keep-last"),
        default="error",
        help="a sharded job's file that two shards both wrote: an error (default), or the "
        "later shard's kept",
    )
    lineage = add(
        "lineage",
        help="which verified job made a CID, from which function and inputs, and who read it",
    )
    lineage.add_argument("cid", metavar="CID")
    lineage.add_argument(
        "--depth", type=int, default=1, metavar="N", help="input steps to follow back (default 1)"
    )
    cancel = add("cancel", help="cancel a job")
    cancel.add_argument("job", metavar="JOB")
    trace = add(
        "trace",
        help="a job's trace: its spans on every node, as a waterfall (--output json: the spans)",
        description="Draw the job's trace: each span (submit, bid rounds, bids, selection, "
        "input fetches, executions, result storage, verification, get) as a bar on a time axis "
        "shared by every node, with its node and duration, children under their parents. The "
        "requester gathers the spans from the nodes that bid on or ran the job; nodes keep "
        "the spans of their last 1000 jobs. Only the job's owner or an admin may ask.",
    )
    trace.add_argument("job", metavar="JOB")
    _spec_commands(sub, add, common)
    _data_commands(add)


def _data_commands(add: Any) -> None:
    """uploads, unpin, gc: a user's data on the node."""
    add(
        "uploads",
        help="list your uploads to the node (CID, size, when) and your quota",
        description="Your uploads to the node (a job's local files and modules, AddData), newest "
        "first, as counted against its --upload-quota.",
    )
    unpin = add(
        "unpin",
        help="remove your upload of CID from the node (it is unpinned once no other "
        "user's upload holds it)",
        description="Remove your record of the upload CID (with an admin key: every user's); "
        "once no user's record holds it, its root is unpinned and the node's next garbage "
        "collection frees its blocks (unless a job's input or result uses them). Someone "
        "else's upload is refused.",
    )
    unpin.add_argument("cid", metavar="CID")
    add(
        "gc",
        help="collect the node's garbage now (admin keys only)",
        description="Ask the node to remove every block no pin reaches and to rewrite the "
        "packs where that frees at least a quarter of them. It runs on the node, which knows "
        "the data it is fetching or storing meanwhile; it also runs by itself after the input "
        "cache evicts. Only keys in the node's --admin-keys may ask.",
    )


def _job_verbs(add: Any) -> None:
    """list, describe, logs: at the top and in the `job` group."""
    ls = add(
        "list",
        help="list your recent jobs on the node, of every state, newest first",
        description="Your jobs on the node, newest first, with a header row: the 20 most "
        "recent of every state (-n N: N of them; --all: every one; --active: only pending "
        "and running ones).",
    )
    ls.add_argument("--all", action="store_true", help="every job, not only the 20 most recent")
    ls.add_argument(
        "--active", action="store_true", help="only active jobs (pending, running), every one"
    )
    ls.add_argument("-n", type=int, default=0, metavar="N", help="at most N jobs, newest first")
    ls.add_argument(
        "--state",
        action="append",
        default=[],
        choices=("pending", "running", "completed", "failed", "cancelled"),
        help="only jobs in this state (repeatable)",
    )
    ls.add_argument(
        "--all-users",
        action="store_true",
        help="every user's jobs, not only yours (their env values hidden)",
    )
    ls.add_argument("--client", default="", metavar="ID", help="only jobs of this user ID")
    ls.add_argument(
        "--network",
        action="store_true",
        help="jobs submitted to any node the node reaches, not only to it (merged by time)",
    )

    describe = add("describe", help="a job's state, executions and events")
    describe.add_argument("job", metavar="JOB")
    describe.add_argument(
        "--shards", action="store_true", help="a sharded job's executions, shard by shard"
    )
    logs = add("logs", help="a job's stdout and stderr")
    logs.add_argument("job", metavar="JOB")
    logs.add_argument("-f", "--follow", action="store_true", help="wait for the job to finish")
    logs.add_argument(
        "--shard",
        type=int,
        metavar="N",
        help="a sharded job's shard N only (default: every shard's, in shard order)",
    )
    logs.add_argument(
        "--execution",
        metavar="ID",
        default="",
        help="one execution's output, from its result (IDs: 'job executions JOB'); with -f, "
        "once the job has ended",
    )


def _spec_commands(sub: Any, add: Any, common: argparse.ArgumentParser) -> None:
    """`job ...` and `node ...` (Bacalhau's verb groups), `create` and `validate`."""
    job = sub.add_parser("job", help="jobs: run a spec file, validate one, list, describe, ...")
    job_sub = job.add_subparsers(dest="job_command", metavar="COMMAND", required=True)
    job_add = functools.partial(job_sub.add_parser, parents=[common])
    _run_spec(job_add, "run")
    _run_spec(add, "create", bacalhau_name=True)
    _validate(job_add)
    _validate(add)
    _job_verbs(job_add)
    stop = job_add("stop", help="stop (cancel) a job")
    stop.add_argument("job", metavar="JOB")
    executions = job_add("executions", help="a job's executions: node, state, exit code, result")
    executions.add_argument("job", metavar="JOB")
    history = job_add("history", help="a job's events, in order")
    history.add_argument("job", metavar="JOB")

    node = sub.add_parser("node", help="nodes: list the network, describe one")
    node_sub = node.add_subparsers(dest="node_command", metavar="COMMAND", required=True)
    node_add = functools.partial(node_sub.add_parser, parents=[common])
    node_add("list", help="the node at --api and its peers")
    describe = node_add(
        "describe", help="a node: its ID, address, engines, labels (default: the one at --api)"
    )
    describe.add_argument("node", nargs="?", metavar="NODE", help="a node ID, or its end")


def _run_spec(add: Any, name: str, *, bacalhau_name: bool = False) -> None:
    help_text = "run a job from a spec file (YAML or JSON; - reads stdin)"
    if bacalhau_name:
        help_text = "the same as 'job run' (Bacalhau's name)"
    p = add(
        name,
        help=help_text,
        description="Submit the job a spec file describes: the 'spec' section of "
        "'bacalhauctl describe JOB --output yaml' (a whole describe document is taken too, "
        "and Bacalhau-2022-style keys; docs/spec.md). Inputs are CIDs and URLs only: local "
        "files are not uploaded ('bacalhauctl add' them first). Prints the job ID first; "
        "with --wait (the default) follows the job, prints its stdout and exits 0 only if it "
        "completed. With --output json|yaml, prints the job's document alone.",
    )
    p.add_argument("spec", metavar="SPEC", help="a .yaml or .json file, or - for stdin")
    _submit_flags(p)


def _validate(add: Any) -> None:
    p = add(
        "validate",
        help="check a spec file: one line per problem, or 'ok'",
        description="Check SPEC against every rule a node applies, without a node: prints "
        "one line per problem and exits 1, or 'ok' and exits 0. With --output-schema, prints "
        "the JSON Schema of a spec file instead.",
    )
    p.add_argument("spec", nargs="?", metavar="SPEC", help="a .yaml or .json file, or -")
    p.add_argument(
        "--output-schema", action="store_true", help="print the JSON Schema of a spec file"
    )


def _run_flags(common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags every `... run` command shares (inputs, outputs, limits, placement)."""
    run = argparse.ArgumentParser(add_help=False, parents=[common])
    run.add_argument(
        "-o",
        "--output-volume",
        dest="output_volumes",
        action="append",
        default=[],
        metavar="NAME:/path",
        help="a folder the job writes; it becomes NAME in the result. Added to the default "
        "outputs:/outputs, which an -o with the name outputs or the path /outputs replaces",
    )
    run.add_argument(
        "--no-default-outputs",
        action="store_true",
        help="no outputs:/outputs folder unless an -o asks for it",
    )
    run.add_argument(
        "-v",
        "--input",
        dest="inputs",
        action="append",
        default=[],
        metavar="SRC:/path",
        help="mount an input read-only: SRC is a CID, or a local file or folder (uploaded); "
        "also takes every form of -i",
    )
    run.add_argument(
        "-i",
        dest="input_uris",
        action="append",
        default=[],
        metavar="INPUT",
        help="an input as Bacalhau writes it: src=ipfs://CID,dst=/path, ipfs://CID:/path, "
        "ipfs://CID (at /inputs), https://host/file (as -u), or any form of -v",
    )
    run.add_argument(
        "-u",
        "--input-url",
        dest="urls",
        action="append",
        default=[],
        metavar="URL[:/path]",
        help="an http(s) URL the node downloads, mounted read-only at /path, by default "
        "/inputs/<file name> (a repeated name gets _1, _2, ... before its extension, in the "
        "order given); a /path ending in / is a folder. Only a trailing :/path after the "
        "whole URL counts as the path",
    )
    run.add_argument(
        "-U",
        "--input-urls",
        dest="url_lists",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a file of URLs (one per line; '#' comments), each as with -u; - reads stdin",
    )
    run.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    run.add_argument(
        "--timeout",
        metavar="DURATION",
        help="seconds (90) or a duration (90s, 1m30s, 1h) (default: node's)",
    )
    run.add_argument(
        "--memory",
        metavar="SIZE",
        help="memory limit: 512Mb, 1GB (powers of 1000), 64Mi, 1GiB (of 1024); any case",
    )
    run.add_argument(
        "--disk",
        metavar="SIZE",
        help="disk the job may use: its outputs, and its inputs by CID (default: the node's "
        "--limit-job-disk); units as --memory",
    )
    run.add_argument("--cpu", metavar="N", help="cores the job needs: 0.5, 2, or millicores: 500m")
    run.add_argument("--gpu", type=int, default=0, metavar="N", help="GPUs the job needs")
    run.add_argument(
        "--concurrency",
        "--count",
        type=int,
        default=1,
        metavar="N",
        help="nodes that run it (default 1)",
    )
    run.add_argument(
        "--verifier",
        choices=("noop", "deterministic"),
        default=None,
        help="how results are verified: noop (each stands, default) or deterministic (the "
        "executions of a shard must agree: see --concurrency, --confidence)",
    )
    run.add_argument(
        "--confidence",
        type=int,
        default=0,
        metavar="N",
        help="deterministic: results that must agree (default: a majority of 1 or more)",
    )
    run.add_argument(
        "--no-memo",
        action="store_true",
        help="run it even when an equal verified job's result is known (see docs/verification.md)",
    )
    run.add_argument(
        "--result-replicas",
        type=int,
        default=0,
        metavar="N",
        help="nodes besides the requester that copy and pin each result before the job "
        "completes, so it outlives them (at most 8; default 0)",
    )
    run.add_argument(
        "--min-bids",
        type=int,
        default=0,
        metavar="N",
        help="willing bids to wait for before choosing nodes (default 1)",
    )
    run.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="K=V",
        help="run only on nodes with these labels",
    )
    run.add_argument(
        "--sharding-glob-pattern",
        metavar="PATTERN",
        help="shard the job: the files under the base path matching PATTERN (relative to it; "
        "'**' crosses folders), sorted, in batches; each batch runs alone",
    )
    run.add_argument(
        "--sharding-base-path",
        metavar="/PATH",
        help="where the files to shard are mounted (default /inputs)",
    )
    run.add_argument(
        "--sharding-batch-size", type=int, metavar="N", help="files per shard (default 1)"
    )
    run.add_argument(
        "--shard-retries",
        type=int,
        metavar="N",
        help="tries of a failed shard on other nodes before the job fails (default 2)",
    )
    _submit_flags(run)
    return run


def _submit_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of every command that submits a job: --dry-run, --wait, --download."""
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the spec it would submit (YAML; JSON with --output json), local files "
        "only hashed; upload and submit nothing",
    )
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow the job until it ends, then print its stdout (on failure: the tail of "
        "its stderr, and exit 1) (default: --wait)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="with --wait: do not print the job's stdout"
    )
    parser.add_argument("--id-only", action="store_true", help="print the job ID and return")
    parser.add_argument("--download", action="store_true", help="download the result when done")
    parser.add_argument("--output-dir", type=Path, help="where --download writes")


_JOB_COMMANDS = {
    "id": "node_id",
    "whoami": "whoami",
    "peers": "peers",
    "wasm": "wasm_run",
    "docker": "docker_run",
    "list": "list_jobs",
    "describe": "describe",
    "logs": "logs",
    "get": "get",
    "cancel": "cancel",
    "lineage": "lineage",
}
_DATA_COMMANDS = {"uploads": "uploads", "unpin": "unpin", "gc": "gc"}
_GROUPS = {
    "job": ("job_command", {"run": "run_spec", "validate": "validate", "list": "list_jobs",
                            "describe": "describe", "logs": "logs", "stop": "cancel",
                            "executions": "executions", "history": "history"}),
    "node": ("node_command", {"list": "node_list", "describe": "node_describe"}),
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "version":
        return print_version(PROG)
    if args.command == "run":
        from bacalhau.cli import _python_cmds

        return _python_cmds.run_python(args)
    if args.command in _JOB_COMMANDS:
        from bacalhau.cli import _job_cmds

        return int(getattr(_job_cmds, _JOB_COMMANDS[args.command])(args))
    if args.command == "trace":
        from bacalhau.cli import _trace_cmds

        return _trace_cmds.trace(args)
    if args.command in _DATA_COMMANDS:
        from bacalhau.cli import _data_cmds

        return int(getattr(_data_cmds, _DATA_COMMANDS[args.command])(args))
    if args.command in ("job", "node", "create", "validate"):
        from bacalhau.cli import _group_cmds

        verb = {"create": "run_spec", "validate": "validate"}.get(args.command)
        if verb is None:
            dest, verbs = _GROUPS[args.command]
            verb = verbs[getattr(args, dest)]
        return int(getattr(_group_cmds, verb)(args))

    from bacalhau.cli import _content_cmds

    if args.command == "add":
        return _content_cmds.add(args)
    if args.command == "cat":
        return _content_cmds.cat(args)
    if args.command == "car":
        if args.car_command == "export":
            return _content_cmds.car_export(args)
        return _content_cmds.car_import(args)
    if args.command == "repo":
        return _content_cmds.repo_verify(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
