"""Atomic file writes and JSON helpers for everything lcron_tf writes (run dirs, results).

A file is written to a temporary file in the destination's folder and renamed over the
destination (``os.replace``), so a reader, or a process killed mid-write, never sees a partial
file: the destination holds the old content or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder + ``os.replace``.

    ``durable=False`` skips the ``fsync`` (for the per-step progress file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], obj: Any, *, durable: bool = True) -> None:
    """Atomically write ``obj`` as indented JSON."""
    text = json.dumps(obj, indent=1, sort_keys=False, default=_jsonable) + "\n"
    write_atomic(path, text, durable=durable)


def read_json(path: str | os.PathLike[str], default: Any = None) -> Any:
    """``json.load`` of ``path``, or ``default`` when it does not exist."""
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else default


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


__all__ = ["read_json", "write_atomic", "write_json"]
