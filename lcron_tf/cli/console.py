"""What the ``lcron-tf`` commands show the user: status lines and user-facing errors."""

from __future__ import annotations

PROG = "lcron-tf"


class CliError(RuntimeError):
    """A user-facing error: printed without a traceback, exit status 2."""


def log(message: str) -> None:
    """Print a CLI status line (flushed, so logs and progress interleave correctly)."""
    print(f"[{PROG}] {message}", flush=True)
