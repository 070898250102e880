"""An executor that runs nothing: for testing the layers above executors."""

from __future__ import annotations

import threading

from bacalhau.executor.base import RunRequest, RunResult, prepare_outputs


class NoopExecutor:
    """Succeeds at once with empty stdout and stderr, leaving empty output folders."""

    name = "noop"

    def is_installed(self) -> bool:
        """Always True. Raises nothing."""
        return True

    def run(self, req: RunRequest, cancel: threading.Event | None = None) -> RunResult:
        """Create the output folders and report exit 0 (or "cancelled" if already cancelled).

        Raises ExecutorError if the request is malformed or the folders cannot be made.
        """
        req.validate()
        outputs_dir = prepare_outputs(req)
        cancelled = cancel is not None and cancel.is_set()
        return RunResult(
            exit_code=-1 if cancelled else 0,
            stdout=b"",
            stderr=b"",
            stdout_truncated=False,
            stderr_truncated=False,
            outputs_dir=outputs_dir,
            error="cancelled" if cancelled else None,
        )
