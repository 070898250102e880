"""Jobs that run nothing: for tests and for measuring the network itself."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bacalhau.engines.base import Engine
from bacalhau.spec import Problem, check_noop

if TYPE_CHECKING:
    pass


class NoopEngine(Engine):
    name = "noop"

    def check(self, spec: Any) -> list[Problem]:
        """See Engine.check: nothing to check."""
        return check_noop(spec)

    def to_request(
        self, spec: Any, fetched: Mapping[str, Path], job_id: str, execution_id: str
    ) -> dict[str, Any]:
        """See Engine.to_request: nothing engine-specific."""
        return {}
