"""Per-user upload quotas, unpinning uploads, and collecting a node's garbage: at a real
`bacalhaud`, with real `bacalhauctl` and clients signing with their own user keys."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bacalhau.blockstore import Blockstore
from bacalhau.client import Client, ClientError, load_user_key
from bacalhau.content import CID, Importer, dag
from bacalhau.identity import Identity
from tests.conftest import assert_one_line_error
from tests.integration.conftest import Ctl, NodeProc, start_node

MIB = 1 << 20


class Users:
    """Key files for the CLI and identities for the client, by name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys: dict[str, Identity] = {}

    def __getitem__(self, name: str) -> Identity:
        if name not in self.keys:
            self.keys[name] = load_user_key(self.root / f"{name}.key")
        return self.keys[name]

    def path(self, name: str) -> str:
        self[name]
        return str(self.root / f"{name}.key")


@pytest.fixture
def users(tmp_path: Path) -> Users:
    return Users(tmp_path)


@pytest.fixture
def node(tmp_path: Path, users: Users) -> Iterator[NodeProc]:
    (tmp_path / "admins").write_text(users["admin"].node_id + "\n")
    n = start_node(
        tmp_path / "n",
        args=(
            "--engines",
            "noop",
            "--upload-quota",
            "3Mi",
            "--admin-keys",
            str(tmp_path / "admins"),
        ),
    )
    yield n
    n.stop()


def _file(tmp_path: Path, name: str, size: int, seed: int) -> Path:
    path = tmp_path / name
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _root_of(path: Path) -> bytes:
    class Sink:
        def put(self, cid: bytes, *parts: bytes | memoryview) -> None:
            pass

    with Importer(sink=Sink()) as imp:
        return imp.add_path(path).cid


def _packs(node: NodeProc) -> int:
    return sum(p.stat().st_size for p in (node.data_dir / "blocks" / "packs").glob("*.pack"))


def test_an_upload_over_the_quota_is_refused_and_nothing_kept(
    node: NodeProc, users: Users, tmp_path: Path
) -> None:
    first = _file(tmp_path, "first.bin", 2 * MIB, 1)
    second = _file(tmp_path, "second.bin", 2 * MIB, 2)
    with Client(node.address, user_key=users["alice"]) as alice:
        kept = alice.add_file(first).cid
        started = time.monotonic()
        with pytest.raises(ClientError) as err:
            alice.add_file(second)
        refused_after = time.monotonic() - started
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    line = str(err.value)
    assert "\n" not in line and "quota" in line and "3.0 MiB" in line and "unpin" in line
    assert refused_after < 30
    # Another user has a quota of their own.
    with Client(node.address, user_key=users["bob"]) as bob:
        assert bob.add_file(second).cid

    ctl = Ctl(node.address, tmp_path)
    mine = ctl.json("--user-key", users.path("alice"), "uploads")
    assert [u["cid"] for u in mine["uploads"]] == [kept]
    assert mine["used_bytes"] == 2 * MIB and mine["quota_bytes"] == 3 * MIB
    text = ctl("--user-key", users.path("alice"), "uploads")
    assert text.returncode == 0 and kept in text.stdout and "of a quota of" in text.stdout
    # Nothing of the refused upload is left: no scratch file, no pin of alice's, and after a
    # collection none of its blocks (bob's copy aside, which is its own upload).
    assert list((node.data_dir / "tmp").glob("upload-*")) == []
    node.stop()
    with Blockstore(node.data_dir / "blocks") as store:
        pinned = {str(CID.from_bytes(c)) for c in store.pins()}
    assert pinned == {kept, str(CID.from_bytes(_root_of(second)))}


def test_a_refused_upload_leaves_no_blocks(node: NodeProc, users: Users, tmp_path: Path) -> None:
    big = _file(tmp_path, "big.bin", 4 * MIB, 3)  # over the quota on its own
    with Client(node.address, user_key=users["alice"]) as alice, pytest.raises(ClientError) as err:
        alice.add_file(big)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    node.stop()
    with Blockstore(node.data_dir / "blocks") as store:
        assert store.count() == 0 and store.pins() == []


def test_unpin_by_its_owner_and_not_by_others(node: NodeProc, users: Users, tmp_path: Path) -> None:
    shared = _file(tmp_path, "shared.bin", MIB, 4)
    root = _root_of(shared)
    with (
        Client(node.address, user_key=users["alice"]) as alice,
        Client(node.address, user_key=users["bob"]) as bob,
    ):
        cid = alice.add_file(shared).cid
        assert bob.add_file(shared).cid == cid
    ctl = Ctl(node.address, tmp_path)

    refused = ctl("--user-key", users.path("carol"), "unpin", cid)
    assert_one_line_error(refused, "uploaded by another user", "only they or an admin")
    assert_one_line_error(ctl("--user-key", users.path("carol"), "unpin", "Qm-not-a-cid"), "CID")
    unknown = str(CID.from_bytes(_root_of(_file(tmp_path, "never.bin", 10, 5))))
    assert_one_line_error(ctl("--user-key", users.path("alice"), "unpin", unknown), "not an upload")

    # Bob's record goes; alice's still holds the pin.
    done = ctl.json("--user-key", users.path("bob"), "unpin", cid)
    assert done["unpinned"] is False and [u["user_id"] for u in done["removed"]] == [
        users["bob"].node_id
    ]
    assert ctl.json("--user-key", users.path("bob"), "uploads")["uploads"] == []
    again = ctl("--user-key", users.path("bob"), "unpin", cid)  # bob has none left
    assert_one_line_error(again, "uploaded by another user")
    with Client(node.address, user_key=users["alice"]) as alice:
        assert [u.cid for u in alice.list_uploads().uploads] == [cid]
    last = ctl("--user-key", users.path("alice"), "unpin", cid)
    assert last.returncode == 0 and last.stdout == f"unpinned {cid}\n"
    assert ctl.json("--user-key", users.path("alice"), "uploads")["used_bytes"] == 0
    node.stop()
    with Blockstore(node.data_dir / "blocks") as store:
        assert not store.is_pinned(root)


def test_an_admin_unpins_anyones_upload(node: NodeProc, users: Users, tmp_path: Path) -> None:
    data = _file(tmp_path, "d.bin", 500_000, 6)
    with Client(node.address, user_key=users["alice"]) as alice:
        cid = alice.add_file(data).cid
    ctl = Ctl(node.address, tmp_path)
    done = ctl.json("--user-key", users.path("admin"), "unpin", cid)
    assert done["unpinned"] is True
    assert [u["user_id"] for u in done["removed"]] == [users["alice"].node_id]


def test_gc_is_for_admins_and_gives_the_space_back(
    node: NodeProc, users: Users, tmp_path: Path
) -> None:
    kept_file = _file(tmp_path, "kept.bin", MIB, 7)
    gone_file = _file(tmp_path, "gone.bin", 2 * MIB, 8)
    with Client(node.address, user_key=users["alice"]) as alice:
        kept = alice.add_file(kept_file).cid
        gone = alice.add_file(gone_file).cid
    ctl = Ctl(node.address, tmp_path)
    assert_one_line_error(
        ctl("--user-key", users.path("alice"), "gc"), "may not collect garbage", "admin"
    )
    assert ctl("--user-key", users.path("alice"), "unpin", gone).returncode == 0
    before = _packs(node)
    report = ctl.json("--user-key", users.path("admin"), "gc")
    assert report["blocks_removed"] >= 8 and report["bytes_removed"] >= 2 * MIB
    assert report["bytes_reclaimed"] >= 2 * MIB
    assert before - _packs(node) == report["bytes_reclaimed"]
    text = ctl("--user-key", users.path("admin"), "gc")  # nothing left to do
    assert text.returncode == 0 and text.stdout.startswith("removed 0 blocks")
    # The node still serves what is pinned, every block checked.
    with Client(node.address, user_key=users["alice"]) as alice:
        chunks = list(alice.results(cid=kept))
    blocks = {c.cid: c.data for c in chunks[1:]}
    root = bytes(CID.parse(kept))
    assert b"".join(dag.cat(lambda c: blocks[c], root)) == kept_file.read_bytes()
    node.stop()
    with Blockstore(node.data_dir / "blocks") as store:
        assert store.verify().corrupt == []
        assert not store.has(bytes(CID.parse(gone)))
