"""Atomic versioned directories for TF Serving: ``<base_dir>/<model_name>/<version>/``.

:func:`write_version` is the one place where an exporter publishes a version: it fills a
temporary directory next to the destination and renames it into place, so TF Serving (which
only loads integer directory names) never sees a partial version, and ``overwrite=True`` never
leaves a moment without a complete version directory. :func:`lcron_tf.serving.export` uses
it; any other exporter should too (pass a function that writes the SavedModel into the
directory it is given).

Every temporary directory ``.tmp-<version>-<random>`` (and ``.old-<version>-<random>``, see
below) has an *owner file* beside it, ``<name>.lcron-export``, written before the directory
and locked (``fcntl.flock``) by the writing process for as long as it runs. A process that
is killed releases the lock, so the next :func:`write_version` in the same model directory
(or :func:`clean_leftovers`) recognises a leftover by three things together: the name
pattern, the owner file with its JSON note, and an unlocked owner file. It deletes only such
leftovers (never a directory without its owner file, never one whose writer is still alive)
and restores an ``.old-`` version that a kill left without its replacement.

This module imports neither TensorFlow nor the rest of lcron_tf.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import logging
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: leftovers are reported, not removed
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

OWNER_SUFFIX = ".lcron-export"
_CREATED_BY = "lcron_tf.serving.versioned"
_TMP = re.compile(r"\.tmp-(\d+)-([0-9a-f]{12})")
_OLD = re.compile(r"\.old-(\d+)-([0-9a-f]{12})")
_LOOKALIKE = re.compile(r"\.(tmp|old)-\d+-.+")
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _after_step(step: str) -> None:
    """Called after every step of :func:`write_version` (a no-op; tests kill the process here)."""


def model_dir(base_dir: PathLike, model_name: str) -> Path:
    """``<base_dir>/<model_name>``, after checking ``model_name`` is one plain path component.

    Raises:
      ValueError: ``model_name`` is empty, has a separator or ``..``, or other characters than
        letters, digits, ``_``, ``-`` and ``.`` (it names a directory and a REST URL part).
    """
    if not isinstance(model_name, str) or not _MODEL_NAME.fullmatch(model_name):
        raise ValueError(
            "`model_name` must be one plain path component (letters, digits, '_', '-', '.', "
            f"starting with a letter or digit, at most 128 characters). Received: {model_name!r}"
        )
    return Path(base_dir) / model_name


def versions(path: PathLike) -> list[int]:
    """The integer version directories of a model directory, ascending."""
    p = Path(path)
    if not p.is_dir():
        return []
    return sorted(int(d.name) for d in p.iterdir() if d.name.isdigit() and d.is_dir())


def next_version(path: PathLike) -> int:
    """One more than the largest version of a model directory (1 for none)."""
    return max(versions(path), default=0) + 1


# ------------------------------------------------------------------------------ owner files


class _Owner:
    """The locked owner file of one temporary directory (see the module docstring)."""

    def __init__(self, directory: Path, note: dict) -> None:
        self.dir = directory
        self.path = directory.with_name(directory.name + OWNER_SUFFIX)
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            note = {"created_by": _CREATED_BY, "pid": os.getpid(),
                    "created": time.time(), **note}
            os.write(fd, json.dumps(note).encode())
        except BaseException:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise
        self.fd = fd

    def release(self) -> None:
        """Delete the owner file (after its directory is gone) and drop the lock."""
        self.path.unlink(missing_ok=True)
        os.close(self.fd)


def _new_dir(model_dir: Path, prefix: str, version: int, note: dict,
             mkdir: bool = True) -> _Owner:
    """Owner file first, then the directory: a kill in between leaves only an owner file."""
    for _ in range(100):
        directory = model_dir / f".{prefix}-{version}-{secrets.token_hex(6)}"
        try:
            owner = _Owner(directory, note)
        except FileExistsError:
            continue
        if mkdir:
            try:
                directory.mkdir()
            except BaseException:
                owner.release()
                raise
        return owner
    raise FileExistsError(f"cannot create a temporary directory in {str(model_dir)!r}")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def clean_leftovers(model_dir: PathLike) -> list[str]:
    """Remove what killed :func:`write_version` calls left in ``model_dir``; returns the names.

    Only a directory matching ``.tmp-<v>-<hex>`` / ``.old-<v>-<hex>`` whose owner file exists,
    holds the writer's JSON note and is not locked (its writer is dead) is touched: an
    ``.old-<v>-`` directory is renamed back to ``<v>`` when ``<v>`` is missing (the kill came
    between the two renames of an overwrite without an atomic exchange), anything else is
    deleted. Look-alike directories without an owner file are left alone and logged.
    """
    path = Path(model_dir)
    if not path.is_dir():
        return []
    done = []
    names = set(os.listdir(path))
    for owner_name in sorted(n for n in names if n.endswith(OWNER_SUFFIX)):
        name = owner_name[: -len(OWNER_SUFFIX)]
        tmp, old = _TMP.fullmatch(name), _OLD.fullmatch(name)
        owner = path / owner_name
        if not (tmp or old) or owner.is_symlink() or not owner.is_file() or fcntl is None:
            continue
        fd = os.open(owner, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            raw = os.read(fd, 1 << 16)
            try:
                note = json.loads(raw)
            except ValueError:
                note = None
            directory = path / name
            if not isinstance(note, dict) or note.get("created_by") != _CREATED_BY:
                if not raw and not directory.exists() and not directory.is_symlink():
                    owner.unlink(missing_ok=True)  # killed between creating and writing it
                continue  # not our note: not ours
            version_dir = path / (tmp or old).group(1)
            if old and directory.is_dir() and not directory.is_symlink() \
                    and not version_dir.exists():
                os.rename(directory, version_dir)
                logger.warning("restored %s from %s (left by a killed overwrite)",
                               version_dir, directory.name)
            elif directory.is_dir() and not directory.is_symlink():
                shutil.rmtree(directory)
            owner.unlink(missing_ok=True)
            done.append(name)
        finally:
            os.close(fd)
    for name in sorted(names):
        if _LOOKALIKE.fullmatch(name) and not name.endswith(OWNER_SUFFIX) and name not in done \
                and name + OWNER_SUFFIX not in names:
            logger.warning("left %s alone: it looks like a temporary export directory but has no "
                           "%s owner file (an older lcron_tf, or not ours); delete it yourself "
                           "if it is a leftover", path / name, OWNER_SUFFIX)
    return done


# ------------------------------------------------------------------------------ exchange


_RENAME_EXCHANGE = 2  # Linux renameat2 flag
_RENAME_SWAP = 2  # macOS renamex_np flag
_AT_FDCWD = -100
_LIBC: ctypes.CDLL | None = None


def _exchange(a: Path, b: Path) -> None:
    """Atomically swap two directory entries (Linux ``renameat2(RENAME_EXCHANGE)``, macOS
    ``renamex_np(RENAME_SWAP)``).

    Raises:
      NotImplementedError: the platform or the file system cannot do it.
    """
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc = _LIBC
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        rc = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                            _RENAME_EXCHANGE)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rc = libc.renamex_np(os.fsencode(a), os.fsencode(b), _RENAME_SWAP)
    else:
        raise NotImplementedError("no atomic directory exchange on this platform")
    if rc != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise NotImplementedError(f"atomic exchange unsupported here: {os.strerror(err)}")
        raise OSError(err, os.strerror(err), str(a), None, str(b))


def _replace(tmp: Path, final: Path, model_dir: Path, version: int) -> None:
    """Replace the complete version ``final`` with the complete version ``tmp``.

    With an atomic exchange (Linux, macOS):
      1. exchange ``tmp`` <-> ``final``: in one step ``<v>`` is the new version and the
         temporary name holds the old one; ``<v>`` is complete before and after;
      2. delete the temporary directory (the old version). A kill before 2 leaves it with its
         owner file: the next call deletes it.
    Without one (e.g. some network file systems), two renames:
      1. rename ``final`` -> ``.old-<v>-<hex>`` (its owner file, written first, says so);
      2. rename ``tmp`` -> ``final``;
      3. delete ``.old-<v>-<hex>``.
      Between 1 and 2 (two consecutive system calls) ``<v>`` is missing; a kill there leaves
      the complete old version under ``.old-<v>-<hex>`` and the next call renames it back.
    """
    try:
        _exchange(tmp, final)
    except NotImplementedError as err:
        logger.warning("overwrite of %s without an atomic exchange (%s): two renames", final, err)
    else:
        _after_step("exchanged")
        _remove(tmp)
        _after_step("old-removed")
        return
    old = _new_dir(model_dir, "old", version, {"restore_to": version}, mkdir=False)
    try:
        os.rename(final, old.dir)
        _after_step("old-moved-aside")
        os.rename(tmp, final)
        _after_step("new-renamed")
        _remove(old.dir)
        _after_step("old-removed")
    except BaseException:
        if old.dir.exists() and not final.exists():
            os.rename(old.dir, final)  # an error (not a kill) between the renames: undo
        raise
    finally:
        old.release()


# ------------------------------------------------------------------------------ publishing


def write_version(
    model_dir: PathLike,
    write: Callable[[Path], None],
    version: int | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Publish ``<model_dir>/<version>/`` atomically; returns its path.

    Steps: remove leftovers of killed calls (:func:`clean_leftovers`); create the owner file
    and the temporary directory ``<model_dir>/.tmp-<version>-<hex>`` (mode 0755: a TF Serving
    container usually runs as another user); ``write(tmp)`` fills it; then one
    ``os.rename(tmp, <version>)``, or, with ``overwrite`` over an existing version, the swap
    of :func:`_replace`. On any error nothing is published and the temporary directory is
    removed; a kill leaves only owned leftovers that the next call removes.

    Args:
      model_dir: ``<base_dir>/<model_name>`` (created with its parents); see :func:`model_dir`.
      write: fills the directory it is given (raise to abort).
      version: integer >= 0; ``None`` = one more than the largest existing version.
      overwrite: replace an existing ``<version>``.

    Raises:
      FileExistsError: ``<version>`` exists and ``overwrite`` is False.
      ValueError: a negative or non-integer ``version``.
    """
    if version is not None and (isinstance(version, bool) or not hasattr(version, "__index__")
                                or int(version) < 0):
        raise ValueError(f"`version` must be an int >= 0. Received: {version!r}")
    path = Path(model_dir)
    path.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    version = int(version) if version is not None else next_version(path)
    final = path / str(version)
    if (final.exists() or final.is_symlink()) and not overwrite:
        raise FileExistsError(
            f"{final} already exists; pass overwrite=True or another version "
            f"(next free: {next_version(path)})"
        )
    owner = _new_dir(path, "tmp", version, {"version": version})
    tmp = owner.dir
    _after_step("tmp-created")
    try:
        tmp.chmod(0o755)
        write(tmp)
        _after_step("written")
        if final.exists() or final.is_symlink():
            _replace(tmp, final, path, version)
        else:
            os.rename(tmp, final)
            _after_step("renamed")
    finally:
        # The unpublished export after an error, or the old version after an exchange.
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)
        owner.release()  # only after its directory is gone
    return final


__all__ = ["OWNER_SUFFIX", "clean_leftovers", "model_dir", "next_version", "versions",
           "write_version"]
