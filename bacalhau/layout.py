"""The names of what a node keeps in its data directory (`--data-dir`).

Light on purpose: tools that watch a node from outside (`bacalhaud devstack`) read them
without importing the node.
"""

from __future__ import annotations

ADDRESS_FILE = "api.addr"  # the address the node serves on, written once it serves
DATASTORE_DIR = "datastore"  # jobs, executions, events (LMDB)
BLOCKS_DIR = "blocks"  # the blockstore
CACHE_DIR = "cache"  # what executors compiled (python: cache/python)
SCRATCH_DIR = "scratch"  # executions' work folders
TMP_DIR = "tmp"  # uploads and downloads in progress
