"""Where a node keeps jobs, events and its own executions (LMDB)."""

from __future__ import annotations

from bacalhau.datastore.base import AmbiguousID, Datastore, DatastoreError, JobNotFound, Tx
from bacalhau.datastore.lmdbstore import LmdbDatastore

__all__ = ["AmbiguousID", "Datastore", "DatastoreError", "JobNotFound", "LmdbDatastore", "Tx"]
