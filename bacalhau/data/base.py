"""The storage provider interface: how an input's content comes into a node's blockstore.

A provider takes one input (an `InputSpec` of its source) and makes its content available in
the node's blockstore, pinned, returning the CID it is there under. What is then mounted for
the job is written out from the blockstore by the input cache, the same way for every source.
Providers never import the network: the `ipfs` provider is handed the node's DAG fetch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class InputRequest:
    """One input of a job: its spec (`source`, `cid` or `url`, `mount_path`), and the job's
    requester (the first node to ask for data by CID)."""

    spec: Any
    requester: str = ""


@dataclass(frozen=True)
class Resolved:
    """An input's content, now in the blockstore: its root CID and its size in bytes."""

    cid: str
    size: int


class StorageProvider(Protocol):
    """Makes inputs of one source local (see the module docstring)."""

    name: str

    async def resolve(self, req: InputRequest) -> Resolved:
        """Bring the input's content into the blockstore, pinned; return its CID.

        Raises a BacalhauError naming the input (its CID or URL) when it cannot: InvalidCID,
        NotFound (nobody has it), CorruptData, UrlError (a failed download), UsageError (an
        input this provider does not take).
        """
        ...
