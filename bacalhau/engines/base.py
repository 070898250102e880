"""The engine interface: what a node needs to know about one kind of job, in one place.

An engine adapter joins a spec's section (`spec.wasm`, `spec.docker`, ...) to its executor:
the section's rules (written in `bacalhau.spec`), checks on stored data, the data to fetch,
the executor's request, reasons to decline, and how to make the executor. Executors are
imported only by `make_executor`, so importing an adapter stays light.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bacalhau.spec import Problem

if TYPE_CHECKING:
    from bacalhau.executor.base import Executor

Head = Callable[[str], bytes]  # a file CID's first bytes; raises content.errors.NotFound


@dataclass(frozen=True)
class EngineContext:
    """What a node gives `make_executor`: its cache folder, Docker settings and ID."""

    cache_dir: Path | None = None
    docker_pull: str = "missing"  # never | missing
    node_id: str = ""
    docker_nvidia_runtime: str = "auto"  # auto (ask the engine) | yes | no


class Engine(abc.ABC):
    """One engine (wasm, docker, python, noop), by the name a JobSpec's `engine` gives."""

    name: str

    @abc.abstractmethod
    def check(self, spec: Any) -> list[Problem]:
        """Problems with this engine's section of `spec` (bacalhau.spec's rules); no errors."""

    def check_stored(self, spec: Any, head: Head) -> list[Problem]:
        """Problems with data the receiving node holds for `spec`; raises NotFound if missing."""
        return []

    def data_cids(self, spec: Any) -> dict[str, str]:
        """CIDs to fetch onto the compute node besides the inputs, by role; no errors."""
        return {}

    @abc.abstractmethod
    def to_request(
        self, spec: Any, fetched: Mapping[str, Path], job_id: str, execution_id: str
    ) -> dict[str, Any]:
        """The engine's RunRequest fields; `fetched` maps data_cids' roles to local paths
        (KeyError if one is missing)."""

    def decline_reason(self, spec: Any, executor: Executor) -> str:
        """Why this engine declines `spec` on a node with `executor` ("" if not); no errors.
        Only containers are given GPUs: other engines decline a job that asks for them."""
        if spec.resources.gpu:
            return f"the {self.name} engine cannot use GPUs (docker jobs can)"
        return ""

    def make_executor(self, ctx: EngineContext) -> Executor:
        """This engine's executor (shared per cache folder: `executor.get_executor`); raises
        ExecutorError if it is not installed."""
        from bacalhau.executor import get_executor

        return get_executor(self.name, cache_dir=ctx.cache_dir)


def blockstore_head(get: Callable[[bytes], bytes]) -> Head:
    """A `head` for `check_stored` reading from a block getter (`Blockstore.get`): the first
    chunk of a UnixFS file. The function raises InvalidCID for a malformed CID and NotFound
    for a block the store lacks."""

    def head(cid_text: str) -> bytes:
        from bacalhau.content import dag
        from bacalhau.content.cid import CID

        return next(dag.cat(get, bytes(CID.parse(cid_text))), b"")

    return head
