"""The docker executor on the real local engine: isolation, limits, failures, cleanup."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from bacalhau.executor.base import ExecutorError, RunRequest, RunResult
from bacalhau.executor.docker import LABEL_NODE, DockerExecutor, ImageMissing
from tests._docker import TEST_IMAGE, containers_labelled, docker_client
from tests._wait import wait_for

MIB = 1 << 20


@pytest.fixture(scope="module")
def client() -> Any:
    return docker_client()


@pytest.fixture
def executor(client: Any) -> DockerExecutor:
    # A node ID of its own per test, so that cleanup checks see only this test's containers.
    return DockerExecutor(pull="never", node_id=f"test-{uuid.uuid4().hex[:12]}", client=client)


def run(ex: DockerExecutor, tmp_path: Path, script: str, **kw: Any) -> RunResult:
    kw.setdefault("timeout_s", 60)
    cancel = kw.pop("cancel", None)
    req = RunRequest(image=TEST_IMAGE, args=["sh", "-c", script], workdir=tmp_path / "w", **kw)
    return ex.run(req, cancel)


def no_containers_left(client: Any, ex: DockerExecutor) -> None:
    ex.close()
    wait_for(
        lambda: not containers_labelled(client, LABEL_NODE, ex.node_id), 30, "containers removed"
    )


def test_output_inputs_and_exit(client: Any, executor: DockerExecutor, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    single = tmp_path / "single.txt"
    single.write_text("beta\n")
    res = run(
        executor,
        tmp_path,
        "cat /inputs/a.txt /one.txt; echo $GREETING; pwd; echo made > /outputs/out.txt; "
        "echo to-stderr >&2",
        inputs=[(data, "/inputs"), (single, "/one.txt")],
        outputs=[("outputs", "/outputs")],
        env={"GREETING": "hi"},
        working_dir="/tmp",
    )
    assert res.ok, res
    assert res.stdout == b"alpha\nbeta\nhi\n/tmp\n"
    assert res.stderr == b"to-stderr\n"
    assert (res.outputs_dir / "outputs" / "out.txt").read_text() == "made\n"
    no_containers_left(client, executor)


def test_inputs_are_read_only(executor: DockerExecutor, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("keep\n")
    res = run(executor, tmp_path, "echo x > /inputs/a.txt", inputs=[(data, "/inputs")])
    assert res.exit_code != 0
    assert b"Read-only file system" in res.stderr
    assert (data / "a.txt").read_text() == "keep\n"


def test_only_loopback_no_privileges(executor: DockerExecutor, tmp_path: Path) -> None:
    res = run(
        executor,
        tmp_path,
        "ls /sys/class/net; grep CapEff /proc/self/status; "
        "ip link set lo down 2>/dev/null && echo changed-network || echo refused",
    )
    assert res.ok, res
    lines = res.stdout.decode().split()
    assert lines[0] == "lo" and "eth0" not in lines
    assert "CapEff:\t0000000000000000" in res.stdout.decode()
    assert lines[-1] == "refused"


def test_nonzero_exit_is_reported(executor: DockerExecutor, tmp_path: Path) -> None:
    res = run(executor, tmp_path, "echo failing >&2; exit 3")
    assert res.exit_code == 3 and res.error is None
    assert res.stderr == b"failing\n"


def test_memory_hog_is_oom_killed(client: Any, executor: DockerExecutor, tmp_path: Path) -> None:
    # dd's buffer is bs bytes, touched as /dev/zero fills it: 200 MiB under a 32 MiB limit.
    res = run(
        executor,
        tmp_path,
        "dd if=/dev/zero of=/dev/null bs=200M count=1",
        memory_limit_bytes=32 * MIB,
    )
    # The engine's OOMKilled flag can come after the exit under load: then the SIGKILL is
    # named as most likely memory, and its exit code kept.
    assert res.exit_code in (-1, 137)
    assert res.error is not None and "out of memory" in res.error, res
    no_containers_left(client, executor)


def test_an_unexplained_sigkill_is_named(executor: DockerExecutor, tmp_path: Path) -> None:
    res = run(executor, tmp_path, "exit 137", memory_limit_bytes=48 * MIB)
    assert res.exit_code == 137
    assert res.error == (
        "killed by SIGKILL (exit code 137): most likely out of memory at the 48 MiB limit"
    )


def test_timeout_stops_the_container(client: Any, executor: DockerExecutor, tmp_path: Path) -> None:
    res = run(executor, tmp_path, "echo started; sleep 60", timeout_s=1.5)
    assert res.exit_code == -1
    assert res.error == "timed out after 1.5 s"
    assert res.stdout == b"started\n"
    no_containers_left(client, executor)


def test_cancel_stops_the_container(client: Any, executor: DockerExecutor, tmp_path: Path) -> None:
    cancel = threading.Event()
    seen: list[bytes] = []

    def on_log(stream: int, data: bytes) -> None:
        seen.append(data)
        cancel.set()  # cancel as soon as it has written something

    res = run(executor, tmp_path, "echo running; sleep 60", cancel=cancel, on_log=on_log)
    assert res.error == "cancelled"
    assert seen == [b"running\n"]
    no_containers_left(client, executor)


def test_output_is_capped_and_streamed(executor: DockerExecutor, tmp_path: Path) -> None:
    chunks: list[tuple[int, bytes]] = []
    res = run(
        executor,
        tmp_path,
        "head -c 5000 /dev/zero; echo oops >&2",
        stdout_limit_bytes=1000,
        on_log=lambda stream, data: chunks.append((stream, data)),
    )
    assert res.ok
    assert res.stdout == bytes(1000) and res.stdout_truncated
    assert res.stderr == b"oops\n" and not res.stderr_truncated
    assert sum(len(d) for s, d in chunks if s == 1) == 5000
    assert b"".join(d for s, d in chunks if s == 2) == b"oops\n"


def test_missing_image_is_refused_without_pulling(executor: DockerExecutor, tmp_path: Path) -> None:
    image = f"bacalhau-test/absent-{uuid.uuid4().hex[:8]}:1"
    assert "does not pull" in executor.can_run(image)
    assert executor.can_run(TEST_IMAGE) == ""
    with pytest.raises(ImageMissing, match="is not on this node's Docker engine"):
        executor.run(RunRequest(image=image, workdir=tmp_path / "w"))


def test_entrypoint_override(executor: DockerExecutor, tmp_path: Path) -> None:
    req = RunRequest(
        image=TEST_IMAGE, entrypoint=["echo"], args=["from", "echo"], workdir=tmp_path / "w"
    )
    res = executor.run(req)
    assert res.ok and res.stdout == b"from echo\n"


def test_cpu_limit_is_applied(client: Any, executor: DockerExecutor, tmp_path: Path) -> None:
    res = run(
        executor,
        tmp_path,
        "cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        cpu=0.5,
    )
    assert res.ok, res
    assert res.stdout.split()[0] == b"50000"


def test_cleanup_removes_what_a_crashed_node_left(
    client: Any, executor: DockerExecutor, tmp_path: Path
) -> None:
    left = client.containers.create(
        TEST_IMAGE, ["sleep", "60"], labels={LABEL_NODE: executor.node_id}
    )
    left.start()
    other = client.containers.create(TEST_IMAGE, ["true"], labels={LABEL_NODE: "another-node"})
    try:
        assert executor.cleanup() == 1
        assert not containers_labelled(client, LABEL_NODE, executor.node_id)
        assert containers_labelled(client, LABEL_NODE, "another-node")  # not ours: kept
    finally:
        other.remove(force=True)


def test_bad_pull_policy() -> None:
    with pytest.raises(ExecutorError, match="pull policy"):
        DockerExecutor(pull="always")


def test_stdout_past_the_disk_limit_stops_the_container(
    client: Any, executor: DockerExecutor, tmp_path: Path
) -> None:
    res = run(executor, tmp_path, "cat /dev/zero", disk_limit_bytes=16 * MIB)
    assert res.exit_code == -1
    assert res.error is not None and res.error.startswith("output limit of 16 MiB exceeded")
    assert len(res.stdout) == MIB and res.stdout_truncated
    no_containers_left(client, executor)


def test_an_output_folder_past_the_disk_limit_stops_the_container(
    client: Any, executor: DockerExecutor, tmp_path: Path
) -> None:
    res = run(
        executor,
        tmp_path,
        "cat /dev/zero > /outputs/big",
        outputs=[("outputs", "/outputs")],
        disk_limit_bytes=16 * MIB,
    )
    assert res.error is not None and res.error.startswith("output limit of 16 MiB exceeded")
    assert list((res.outputs_dir / "outputs").iterdir()) == []
    no_containers_left(client, executor)


def test_no_log_file_is_kept(client: Any, executor: DockerExecutor, tmp_path: Path) -> None:
    """Output reaches the node through the attach stream alone: the engine keeps no log file
    that a chatty container could grow past any limit."""
    seen: list[str] = []

    def look(stream: int, data: bytes) -> None:
        if not seen:
            found = containers_labelled(client, LABEL_NODE, executor.node_id)
            seen.extend(
                client.containers.get(c.id).attrs["HostConfig"]["LogConfig"]["Type"] for c in found
            )

    res = run(executor, tmp_path, "echo hi; sleep 1", on_log=look)
    assert res.ok and res.stdout == b"hi\n"
    assert seen == ["none"]
