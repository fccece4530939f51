"""Where the real data sets live: explicit argument > env ``LCRON_DATA_DIR`` > ``../shared/data``.

Data is never downloaded at run time and never committed. A source reads
``<data_dir>/<subdir>/<file>`` (e.g. ``<data_dir>/movielens_100k/u.data``); the data
directory is resolved once, in this order:

1. the ``data_dir`` argument (the CLI's ``--data-dir``),
2. the environment variable ``LCRON_DATA_DIR``,
3. ``../shared/data`` next to the repository root (the CI layout).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "LCRON_DATA_DIR"
"""Name of the environment variable that points to the data directory."""

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
"""``../shared/data`` relative to the repository root."""


def candidate_data_dir(data_dir: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The data directory that would be used and where it came from (no existence check).

    Returns:
      ``(path, origin)`` where ``origin`` is ``"argument"``, ``"$LCRON_DATA_DIR"`` or
      ``"default"``.
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser(), "argument"
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        return Path(env).expanduser(), f"${DATA_DIR_ENV}"
    return DEFAULT_DATA_DIR, "default"


def resolve_data_dir(
    data_dir: str | os.PathLike[str] | None = None, subdir: str | None = None
) -> Path:
    """Resolve the data directory (and optionally one source's sub-directory) and check it exists.

    Args:
      data_dir: explicit directory; ``None`` falls back to ``$LCRON_DATA_DIR``, then
        ``../shared/data`` next to the repository root.
      subdir: a source's folder inside it (e.g. ``"movielens_100k"``).

    Returns:
      The existing directory (``data_dir/subdir`` when ``subdir`` is given).

    Raises:
      FileNotFoundError: naming the missing path, where it came from and the env variable.
    """
    base, origin = candidate_data_dir(data_dir)
    path = base / subdir if subdir else base
    if not path.is_dir():
        raise FileNotFoundError(
            f"data directory {str(path)!r} does not exist (data dir from {origin}: {str(base)!r}). "
            f"Pass data_dir= (CLI: --data-dir) or set the environment variable {DATA_DIR_ENV} "
            f"to the folder that holds {subdir + '/' if subdir else 'the data sets'}; "
            f"the default is {str(DEFAULT_DATA_DIR)!r}. Data is never downloaded at run time."
        )
    return path


def find_data_dir(
    data_dir: str | os.PathLike[str] | None = None, subdir: str | None = None
) -> Path | None:
    """Like :func:`resolve_data_dir` but returns ``None`` when the directory is absent."""
    try:
        return resolve_data_dir(data_dir, subdir)
    except FileNotFoundError:
        return None


def require_file(directory: str | os.PathLike[str], name: str) -> Path:
    """``directory/name``; raise ``FileNotFoundError`` naming the full path if it is missing."""
    path = Path(directory) / name
    if not path.is_file():
        raise FileNotFoundError(f"missing data file {str(path)!r} (expected in {str(directory)!r})")
    return path
