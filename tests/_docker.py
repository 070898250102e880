"""The Docker engine for tests: present (or a failure under CI=true), with the test image.

`./dev test` installs and starts the engine where it can and builds TEST_IMAGE locally
(tools/docker-test-image); no test ever pulls from a registry.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

TEST_IMAGE = "bacalhau-test/busybox:latest"


def docker_client() -> Any:
    """A client of the local engine with the test image on it; skips (fails under CI)."""
    reason = ""
    try:
        import docker

        client = docker.from_env(timeout=60)
        client.ping()
        client.images.get(TEST_IMAGE)
        return client
    except ImportError:
        reason = "the docker SDK is not installed"
    except Exception as e:
        reason = f"no Docker engine with {TEST_IMAGE}: {e}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the docker tests must run; see ./dev docker_engine)")
    pytest.skip(reason)


def containers_labelled(client: Any, key: str, value: str) -> list[Any]:
    """Containers, running or not, whose label `key` is `value`."""
    return list(client.containers.list(all=True, sparse=True, filters={"label": f"{key}={value}"}))
