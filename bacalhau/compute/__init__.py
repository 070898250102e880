"""The compute role: bid on announced jobs, run accepted ones, publish their results."""

from __future__ import annotations

from bacalhau.compute.node import Compute, ComputeConfig
from bacalhau.compute.results import RESERVED_NAMES, publish_result, tail

__all__ = ["RESERVED_NAMES", "Compute", "ComputeConfig", "publish_result", "tail"]
