"""Run directories of ``lcron-tf train``: who owns them and what ``--fresh`` may delete.

``train`` writes a marker file, :data:`MARKER` (``.lcron-tf-run``), into every run directory
it creates or starts using (a new or an empty directory). Only a directory with that marker
is lcron-tf's:

* ``train`` refuses a non-empty directory without the marker (``--run-dir ~/thesis``,
  ``--run-dir .``): nothing in it is read, written or deleted;
* ``train --fresh`` deletes, in a marked directory, only the entries lcron-tf writes there
  (:data:`ENTRIES` and the temporary names of its atomic writes, :data:`_TEMPORARY`); anything
  else found there is kept and listed.

Run directories written before the marker existed have no marker; they are refused too, with
a message that says how to adopt one (create the marker by hand) or to delete it yourself.
Code that writes a new kind of file into the run directory must add its name to
:data:`ENTRIES`, or ``--fresh`` will keep it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

MARKER = ".lcron-tf-run"
"""Name of the marker file that makes a directory an lcron-tf run directory."""

ENTRIES = (
    MARKER,
    "config.yaml",
    "schema.json",
    "backup",
    "progress.json",
    "history.json",
    "state.json",
    "model",
    "tb",
    "eval.json",
    "survival.npz",
    "export.json",
    "report",
)
"""Every name lcron-tf's commands write directly under a run directory."""

_FILES = "|".join(re.escape(e) for e in ENTRIES if "." in e and not e.startswith("."))
_TEMPORARY = (
    re.compile(rf"\.({_FILES})\.[A-Za-z0-9_]+\.tmp"),  # lcron_tf._files.write_atomic
    re.compile(r"\.model-[A-Za-z0-9_]+"),  # final weights being saved (mkdtemp)
    re.compile(r"\.model-old-\d+"),  # previous weights during the swap
    re.compile(r"\.survival\.[A-Za-z0-9_]+\.npz"),  # survival.npz being written (lcron-tf <= 0.1.0)
)
_OLD_RUN_SIGNS = ("config.yaml", "state.json", "progress.json", "history.json", "backup")


class RunDirError(RuntimeError):
    """A run directory that lcron-tf must not use (a usage error: exit status 2)."""


def is_owned(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` holds lcron-tf's marker (a regular file, not a symlink)."""
    marker = Path(run_dir) / MARKER
    return marker.is_file() and not marker.is_symlink()


def is_owned_entry(name: str) -> bool:
    """Whether ``name`` (an entry directly under a run directory) is one lcron-tf writes."""
    return name in ENTRIES or any(p.fullmatch(name) for p in _TEMPORARY)


def check(run_dir: str | os.PathLike[str], *, fresh: bool = False) -> None:
    """Raise :class:`RunDirError` unless ``train`` may use ``run_dir``.

    It may when ``run_dir`` does not exist yet, is an empty directory, or holds the marker.

    Raises:
      RunDirError: ``run_dir`` is not a directory, or is a non-empty directory without the
        marker (the message explains what to do; nothing was touched).
    """
    path = Path(run_dir)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise RunDirError(f"run directory {str(path)!r} (output.run_dir) exists and is not a "
                          "directory")
    if is_owned(path):
        return
    try:
        entries = sorted(os.listdir(path))
    except OSError as err:
        raise RunDirError(f"cannot read run directory {str(path)!r} (output.run_dir): "
                          f"{err.strerror or err}") from None
    if not entries:
        return
    action = "delete the contents of" if fresh else "train in"
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    message = (f"refusing to {action} {str(path)!r}{' (--fresh)' if fresh else ''}: it is not "
               f"empty ({shown}) and has no "
               f"{MARKER} marker, so lcron-tf did not create it. Nothing in it was touched. "
               "Use a new or empty --run-dir (output.run_dir).")
    if any(sign in entries for sign in _OLD_RUN_SIGNS):
        message += (f" It looks like a run directory of an earlier lcron-tf, which did not mark "
                    f"its run directories. If it is one, adopt it with `touch "
                    f"{str(path / MARKER)!r}` and run again (train resumes it; --fresh then "
                    "deletes only the files lcron-tf writes there), or delete it yourself.")
    raise RunDirError(message)


def clear(run_dir: str | os.PathLike[str]) -> list[str]:
    """``--fresh``: delete the entries lcron-tf wrote in the marked ``run_dir``.

    Only :func:`is_owned_entry` names are removed (a symlink among them is unlinked, never
    followed); the marker is kept so the directory stays lcron-tf's.

    Returns:
      The names of the entries that were kept (not lcron-tf's), sorted.

    Raises:
      RunDirError: ``run_dir`` does not hold the marker (nothing is deleted).
    """
    path = Path(run_dir)
    if not is_owned(path):
        raise RunDirError(f"refusing to clear {str(path)!r}: it has no {MARKER} marker")
    kept = []
    for name in sorted(os.listdir(path)):
        entry = path / name
        if name == MARKER:
            continue
        if not is_owned_entry(name):
            kept.append(name)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return kept


def claim(run_dir: str | os.PathLike[str]) -> None:
    """Create ``run_dir`` (parents included) if needed and write the marker.

    Call after :func:`check`. Raises :class:`RunDirError` naming the directory and the
    system's reason when it cannot be created or written (read-only, permission, ``/proc``).
    """
    path = Path(run_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied (not writable)")
        if not is_owned(path):
            check(path)  # still empty: nothing appeared since the first check
            from lcron_tf import __version__

            marker = {"created_by": "lcron-tf train", "lcron_tf_version": __version__,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            # Not atomic on purpose: the marker's existence is the claim, its text is only a
            # note (a temporary file left by a crash would make the directory look foreign).
            (path / MARKER).write_text(json.dumps(marker) + "\n")
    except OSError as err:
        raise RunDirError(f"cannot create or write run directory {str(path)!r} "
                          f"(output.run_dir): {err.strerror or err}") from None


__all__ = ["ENTRIES", "MARKER", "RunDirError", "check", "claim", "clear", "is_owned",
           "is_owned_entry"]
