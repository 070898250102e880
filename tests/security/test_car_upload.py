"""A malformed CAR header is bad input, not a crash: through a node's upload (AddData) and
through `bacalhauctl car import`, one line naming what is wrong (found by tools/fuzz)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from bacalhau._fast import _dagpb_py
from bacalhau.client import Client, ClientError
from tests.conftest import CliResult, assert_one_line_error
from tests.integration.conftest import NodeProc, start_node

# dag-cbor {"roots": [], []: 1}: a list as a map key. Before the fix the header decoder raised
# TypeError (unhashable type: 'list'), which the node answered as gRPC UNKNOWN with a traceback.
LIST_KEY = b"\xa2\x65roots\x80\x80\x01"
MAP_KEY = b"\xa1\xa0\x01"  # {{}: 1}


def car_with_header(header: bytes) -> bytes:
    return _dagpb_py.varint(len(header)) + header


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProc]:
    n = start_node(tmp_path_factory.mktemp("car-upload"), args=("--engines", "noop"))
    yield n
    n.stop()


@pytest.mark.parametrize("header", [LIST_KEY, MAP_KEY], ids=["list-key", "map-key"])
def test_node_refuses_a_car_header_with_a_non_string_key(node: NodeProc, header: bytes) -> None:
    with Client(node.address) as c, pytest.raises(ClientError) as err:
        c.add_stream(io.BytesIO(car_with_header(header)), "bad.car", car=True)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, err.value
    assert str(err.value) == "not a CAR file: CAR header has a map key that is not a string"
    assert "Traceback" not in node.log and "TypeError" not in node.log
    with Client(node.address) as c:  # and it goes on serving
        assert c.node_info().node_id == node.node_id


def test_car_import_refuses_it_in_one_line(ctl: Callable[..., CliResult], tmp_path: Path) -> None:
    bad = tmp_path / "bad.car"
    bad.write_bytes(car_with_header(LIST_KEY))
    res = ctl("car", "import", str(bad))
    assert_one_line_error(res, "not a CAR file", "map key that is not a string")
    assert res.returncode == 1
    res = ctl("car", "import", "-", stdin=car_with_header(MAP_KEY))
    assert_one_line_error(res, "map key that is not a string")
