"""Where a node keeps jobs, events and its own executions (LMDB, or memory for tests)."""

from __future__ import annotations

from bacalhau.datastore.base import (
    AmbiguousID,
    Datastore,
    DatastoreError,
    JobNotFound,
    Tx,
    order_key,
)
from bacalhau.datastore.lmdbstore import LmdbDatastore
from bacalhau.datastore.memory import MemoryDatastore

__all__ = [
    "AmbiguousID",
    "Datastore",
    "DatastoreError",
    "JobNotFound",
    "LmdbDatastore",
    "MemoryDatastore",
    "Tx",
    "order_key",
]
