"""tf.data input pipelines: TFRecord writer/reader and the in-memory path.

On-disk layout of a record directory::

    <dir>/schema.json          {"format_version": 1, "schema": {...CascadeSchema...},
                                "files": {"part-00000.tfrecord": 1234, ...}}
    <dir>/<shard>.tfrecord     one tf.train.Example per request

Every record is one request with the canonical keys of :mod:`lcron_tf.schema`,
flattened row-major: ``user_id`` int64 [1], ``user_features`` int64 [U], ``history`` int64
[H], ``item_id`` int64 [N], ``item_features`` int64 [N*F], ``label`` float [N], ``mask``
float [N], ``stage_group`` int64 [N] (cast to int32 on read), and ``history_features``
int64 [H*Fh] when the schema declares history features. ``schema.json`` stores the
:class:`CascadeSchema` and the number of records in every file; the reader checks both.

Bad input never passes silently. :func:`read_tfrecords` raises an error that names the file
and the record index when a record is corrupt (bad checksum, truncated file), is not a
``tf.train.Example`` with the schema's keys and dtypes, has the wrong length for a key, or
holds out-of-range values. With ``skip_bad_records=True`` such records are dropped and
counted in a :class:`ReadStats` that the caller reads. :func:`check_tfrecords` diagnoses a
directory eagerly, record by record, with the reason for each problem.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from lcron_tf.schema import (
    ALL_KEYS,
    DTYPES,
    HISTORY_FEATURES,
    CascadeSchema,
    _feature_shapes,
    cast_arrays,
    num_requests,
    present_keys,
    validate_arrays,
)

logger = logging.getLogger(__name__)

SCHEMA_FILE = "schema.json"
RECORD_SUFFIX = ".tfrecord"
FORMAT_VERSION = 1

PathLike = str | os.PathLike[str]

_FLOAT_KEYS = ("label", "mask")


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------


def serialize_requests(arrays: Mapping[str, np.ndarray]) -> list[bytes]:
    """Serialize every request of ``arrays`` into a ``tf.train.Example`` byte string.

    Args:
      arrays: dict of request arrays with the canonical keys (first axis = requests).

    Returns:
      One serialized ``tf.train.Example`` per request, keys as in the module docstring.
    """
    a = cast_arrays(arrays)
    r = num_requests(a)
    if r == 0:
        return []
    keys = present_keys(a)
    flat = {k: a[k].reshape(r, -1) for k in keys}
    lists = {k: flat[k].tolist() for k in keys}
    out = []
    for i in range(r):
        ex = tf.train.Example()
        feat = ex.features.feature
        for k in keys:
            if k in _FLOAT_KEYS:
                feat[k].float_list.value.extend(lists[k][i])
            else:
                feat[k].int64_list.value.extend(lists[k][i])
        out.append(ex.SerializeToString())
    return out


def _manifest_path(directory: PathLike) -> Path:
    return Path(directory) / SCHEMA_FILE


def record_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a record file of a manifest (or None when it can).

    A record file name is one plain file name inside the record directory: ``<stem>.tfrecord``
    with a non-empty stem that does not start with ``.``, and no directory part (no ``/`` or
    ``\\``, no ``..``, not absolute, no NUL). So a ``schema.json`` can never make a reader
    read, or a writer delete, a file outside its directory (``"../x.tfrecord"``, ``"/etc/x"``).
    """
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a file name"
    if "/" in name or "\\" in name or (os.altsep and os.altsep in name) or os.path.isabs(name):
        return "has a directory part (record files must lie directly in the record directory)"
    if "\0" in name or name in ("", ".", ".."):
        return "is not a file name"
    if not name.endswith(RECORD_SUFFIX) or len(name) == len(RECORD_SUFFIX):
        return f"does not end with {RECORD_SUFFIX!r} after a non-empty stem"
    if name.startswith("."):
        return "starts with '.'"
    return None


class CascadeRecordWriter:
    """Write request arrays into a record directory (``*.tfrecord`` + ``schema.json``).

    Use as a context manager; ``schema.json`` (schema + per-file record counts) is written on
    :meth:`close`, so a directory without it is an unfinished write.

    Example::

        with CascadeRecordWriter("out/train", schema) as w:
            w.write(arrays_day1, shard="2024-01-13")
            w.write(arrays_day2, shard="2024-01-14")

    Args:
      out_dir: directory to create (parents included).
      schema: the dataset schema; every written batch is validated against it.
      overwrite: replace an existing record directory: delete the record files its
        ``schema.json`` lists and the ``schema.json`` itself, nothing else (a manifest entry
        that is not a plain record file name in the directory is refused before anything is
        deleted).
      validate: run :func:`~lcron_tf.schema.validate_arrays` before writing.

    Raises:
      FileExistsError: ``schema.json`` exists and ``overwrite`` is False.
      ValueError: with ``overwrite``, the old ``schema.json`` is invalid or lists an entry
        that is not a plain record file (nothing is deleted).
    """

    def __init__(
        self,
        out_dir: PathLike,
        schema: CascadeSchema,
        *,
        overwrite: bool = False,
        validate: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.schema = schema
        self.validate = validate
        manifest = _manifest_path(self.out_dir)
        if manifest.exists():
            if not overwrite:
                raise FileExistsError(
                    f"{str(manifest)!r} exists: {str(self.out_dir)!r} already holds records. "
                    "Pass overwrite=True to replace them."
                )
            # read_manifest refuses a manifest whose entries leave the directory, so only the
            # record files it owns are deleted, and nothing at all unless every entry is one.
            _, old_files = read_manifest(self.out_dir)
            paths = [self.out_dir / name for name in old_files]
            for path in paths:
                if path.exists() and (path.is_dir() or not (path.is_file() or path.is_symlink())):
                    raise ValueError(f"{str(manifest)!r} lists {path.name!r}, which is not a "
                                     "regular file; nothing was deleted")
            for path in paths:
                path.unlink(missing_ok=True)
            manifest.unlink()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._writers: dict[str, tf.io.TFRecordWriter] = {}
        self._counts: dict[str, int] = {}
        self._closed = False

    def write(self, arrays: Mapping[str, np.ndarray], *, shard: str = "part-00000") -> int:
        """Append the requests of ``arrays`` to ``<out_dir>/<shard>.tfrecord``.

        ``arrays`` with 0 requests is a no-op (after the same checks): nothing is written, and a
        shard that never receives a request gets no file and no ``schema.json`` entry.

        Returns:
          The number of records written.

        Raises:
          FileExistsError: ``<shard>.tfrecord`` exists but was not written by this writer (nor
            listed in the ``schema.json`` that ``overwrite=True`` replaced): it is never
            truncated.
        """
        if self._closed:
            raise ValueError(f"writer for {str(self.out_dir)!r} is closed")
        name = shard + RECORD_SUFFIX if isinstance(shard, str) else shard
        problem = record_name_problem(name)
        if problem:
            raise ValueError(f"`shard` must be a plain file stem ({name!r} {problem}). "
                             f"Received: shard={shard!r}")
        if self.validate:
            validate_arrays(arrays, self.schema, source=f"records for {name!r}")
        records = serialize_requests(arrays)
        if not records:
            return 0
        if name not in self._writers:
            path = self.out_dir / name
            if path.exists() or path.is_symlink():
                raise FileExistsError(
                    f"{str(path)!r} exists and was not written by this writer (it is not listed "
                    f"in a {SCHEMA_FILE} that overwrite=True replaced; an unfinished write may "
                    "have left it): delete it yourself or write to another directory"
                )
            self._writers[name] = tf.io.TFRecordWriter(str(path))
            self._counts[name] = 0
        w = self._writers[name]
        for rec in records:
            w.write(rec)
        self._counts[name] += len(records)
        return len(records)

    def close(self) -> dict[str, int]:
        """Close all files and write ``schema.json``. Returns ``{file name: record count}``."""
        if not self._closed:
            for w in self._writers.values():
                w.close()
            manifest = {
                "format_version": FORMAT_VERSION,
                "schema": json.loads(self.schema.to_json()),
                "files": dict(sorted(self._counts.items())),
            }
            tmp = _manifest_path(self.out_dir).with_suffix(".json.tmp")
            tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
            tmp.replace(_manifest_path(self.out_dir))
            self._closed = True
        return dict(self._counts)

    def __enter__(self) -> CascadeRecordWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()


def write_tfrecords(
    arrays: Mapping[str, np.ndarray],
    schema: CascadeSchema,
    out_dir: PathLike,
    *,
    num_shards: int = 1,
    overwrite: bool = False,
) -> list[Path]:
    """Write request arrays to ``out_dir`` as ``num_shards`` TFRecord files + ``schema.json``.

    Requests are split into contiguous, nearly equal shards ``part-00000.tfrecord``, ...

    Args:
      arrays: dict of request arrays with the canonical keys (first axis = requests).
      schema: the dataset schema (validated against ``arrays``).
      out_dir: the record directory to create.
      num_shards: number of files (use >= the number of readers for file-level sharding).
      overwrite: replace an existing record directory.

    Returns:
      The paths of the written record files (a shard that would receive no request, when
      ``num_shards`` exceeds the number of requests, is not written).
    """
    if num_shards < 1:
        raise ValueError(f"`num_shards` must be >= 1. Received: num_shards={num_shards}")
    validate_arrays(arrays, schema, source=f"arrays for {str(out_dir)!r}")
    r = num_requests(arrays)
    bounds = np.linspace(0, r, num_shards + 1).astype(int)
    with CascadeRecordWriter(out_dir, schema, overwrite=overwrite, validate=False) as w:
        for s in range(num_shards):
            part = {k: np.asarray(arrays[k])[bounds[s] : bounds[s + 1]]
                    for k in schema.feature_keys}
            w.write(part, shard=f"part-{s:05d}")
    return [Path(out_dir) / name for name in sorted(w.close())]


# ------------------------------------------------------------------------------------------
# Manifest
# ------------------------------------------------------------------------------------------


def read_manifest(directory: PathLike) -> tuple[CascadeSchema, dict[str, int]]:
    """Read ``<directory>/schema.json``: the schema and ``{file name: record count}``.

    Raises:
      FileNotFoundError: the directory or its ``schema.json`` is missing.
      ValueError: ``schema.json`` is not valid (naming the file and the problem).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"record directory {str(directory)!r} does not exist")
    path = _manifest_path(directory)
    if not path.is_file():
        raise FileNotFoundError(
            f"missing {str(path)!r}: {str(directory)!r} is not a finished record directory "
            "(write it with lcron_tf.data.write_tfrecords / CascadeRecordWriter)"
        )
    try:
        manifest = json.loads(path.read_text())
        version = manifest["format_version"]
        schema = CascadeSchema(**manifest["schema"])
        files = {k: int(v) for k, v in manifest["files"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{str(path)!r} is not a valid record manifest: {err!r}") from err
    for name, count in files.items():
        problem = record_name_problem(name)
        if problem:
            raise ValueError(f"{str(path)!r} is not a valid record manifest: file entry "
                             f"{name!r} {problem}; nothing outside {str(directory)!r} is read "
                             "or deleted")
        if count < 0:
            raise ValueError(f"{str(path)!r} is not a valid record manifest: file entry "
                             f"{name!r} has a negative record count {count}")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has format_version={version}; this reader supports {FORMAT_VERSION}"
        )
    return schema, files


def read_schema(directory: PathLike) -> CascadeSchema:
    """The :class:`CascadeSchema` stored in ``<directory>/schema.json``."""
    return read_manifest(directory)[0]


def _schema_diff(a: CascadeSchema, b: CascadeSchema) -> list[str]:
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    return [f"{k}: stored {da[k]!r} != expected {db[k]!r}" for k in da if da[k] != db[k]]


def _collect_files(
    paths: PathLike | Sequence[PathLike],
    schema: CascadeSchema | None,
    files: Sequence[str] | None,
) -> tuple[CascadeSchema, list[str], list[int]]:
    dirs = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not dirs:
        raise ValueError("`path` must name at least one record directory")
    stored: CascadeSchema | None = None
    names: list[str] = []
    counts: list[int] = []
    for d in dirs:
        s, listed = read_manifest(d)
        if stored is None:
            stored = s
        elif s != stored:
            raise ValueError(
                f"{str(_manifest_path(d))!r}: schema differs from "
                f"{str(_manifest_path(dirs[0]))!r}: " + "; ".join(_schema_diff(s, stored))
            )
        wanted = listed if files is None else {f: listed[f] for f in files if f in listed}
        for name, count in sorted(wanted.items()):
            path = Path(d) / name
            if not path.is_file():
                raise FileNotFoundError(
                    f"record file {str(path)!r} is listed in {str(_manifest_path(d))!r} "
                    "but missing"
                )
            names.append(str(path))
            counts.append(count)
    assert stored is not None
    if schema is not None and schema != stored:
        raise ValueError(
            f"schema mismatch: {str(_manifest_path(dirs[0]))!r} does not match the expected "
            "schema: " + "; ".join(_schema_diff(stored, schema))
        )
    if files is not None:
        found = {Path(n).name for n in names}
        missing = [f for f in files if f not in found]
        if missing:
            raise FileNotFoundError(f"record files {missing} are not listed in any of {dirs}")
    if not names:
        raise ValueError(f"no record files listed in {[str(d) for d in dirs]}")
    return stored, names, counts


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


class ReadStats:
    """Counts records that a reader with ``skip_bad_records=True`` dropped.

    The pipeline reports skipped records through a ``tf.py_function`` (called only when a
    block of records had a bad one), so the count lives in Python and works under any
    ``tf.distribute`` strategy. Read :attr:`skipped` after iterating: it counts what has
    been read so far (over all epochs). A record lost because its file is corrupt or
    truncated counts, as does every later record of that file (the TFRecord format cannot
    resynchronise after a bad checksum).
    """

    def __init__(self) -> None:
        self._skipped = 0
        self._lock = threading.Lock()

    @property
    def skipped(self) -> int:
        return self._skipped

    def reset(self) -> None:
        with self._lock:
            self._skipped = 0

    def _add(self, n: tf.Tensor) -> np.int64:
        with self._lock:
            self._skipped += int(n)
        return np.int64(self._skipped)

    def __repr__(self) -> str:
        return f"ReadStats(skipped={self.skipped})"


def _flat_lengths(schema: CascadeSchema) -> dict[str, int]:
    return {k: int(np.prod(s, dtype=np.int64)) for k, s in _feature_shapes(schema).items()}


def _value_messages(schema: CascadeSchema) -> list[str]:
    g = len(schema.stage_groups)
    return [
        f"user_id out of range [0, {schema.user_vocab})",
        f"user_features out of range [0, {list(schema.user_feature_vocabs)})",
        f"history out of range [0, {schema.item_vocab})",
        f"item_id out of range [0, {schema.item_vocab})",
        f"item_features out of range [0, {list(schema.item_feature_vocabs)})",
        "label not finite",
        "mask not in {0, 1}",
        f"stage_group out of range [-1, {g})",
        "padding convention broken (mask == 0 <=> item_id == 0 <=> stage_group == -1, "
        "zero item_features on padded slots)",
    ] + ([
        f"history_features out of range [0, {list(schema.history_feature_vocabs)})",
        "history_features not 0 where history == 0",
    ] if schema.history_feature_names else [])


def _value_checks(req: Mapping[str, tf.Tensor], schema: CascadeSchema) -> tf.Tensor:
    """bool [K, 9 (+2)]: per-record value checks (as ``validate_arrays``) of requests."""

    def in_range(x: tf.Tensor, hi: tf.Tensor | int) -> tf.Tensor:
        ok = (x >= 0) & (x < hi)
        return tf.reduce_all(tf.reshape(ok, [tf.shape(x)[0], -1]), axis=1)

    uv = tf.constant(schema.user_feature_vocabs, tf.int64)
    iv = tf.constant(schema.item_feature_vocabs, tf.int64)
    mask, item_id, sg = req["mask"], req["item_id"], req["stage_group"]
    real = tf.equal(mask, 1.0)
    pad_ok = tf.reduce_all(
        tf.equal(real, item_id > 0)
        & tf.equal(real, sg >= 0)
        & (real | tf.reduce_all(tf.equal(req["item_features"], 0), axis=-1)),
        axis=1,
    )
    extra = []
    if schema.history_feature_names:
        hf = req[HISTORY_FEATURES]
        extra = [
            in_range(hf, tf.constant(schema.history_feature_vocabs, tf.int64)),
            tf.reduce_all(tf.reshape((req["history"] > 0)[..., None] | tf.equal(hf, 0),
                                     [tf.shape(hf)[0], -1]), axis=1),
        ]
    return tf.stack(
        [
            in_range(req["user_id"], schema.user_vocab),
            in_range(req["user_features"], uv),
            in_range(req["history"], schema.item_vocab),
            in_range(item_id, schema.item_vocab),
            in_range(req["item_features"], iv),
            tf.reduce_all(tf.math.is_finite(req["label"]), axis=1),
            tf.reduce_all(tf.equal(mask, 0.0) | real, axis=1),
            tf.reduce_all((sg >= -1) & (sg < len(schema.stage_groups)), axis=1),
            pad_ok,
            *extra,
        ],
        axis=1,
    )


_BLOCK = 128  # records per vectorised check inside one file

# The reader's dataset functions use no Python control flow on tensors (tf.cond where it
# branches): tracing them without AutoGraph's source conversion is several times faster.
_no_autograph = tf.autograph.experimental.do_not_convert


def _file_dataset(
    filename: tf.Tensor,
    expected: tf.Tensor,
    schema: CascadeSchema,
    skip_bad_records: bool,
    stats: ReadStats,
) -> tf.data.Dataset:
    """Requests of one record file, with bad-record detection naming file and record index.

    Corrupt bytes end the raw stream (``TFRecordDataset`` raises ``DataLossError``, which
    ``ignore_errors`` turns into end of file). A record that is not a ``tf.train.Example``
    with the schema's keys, dtypes and lengths fails ``parse_example`` and is dropped by the
    second ``ignore_errors``. Both show up as gaps in the record index, or as fewer records
    than ``schema.json`` lists, which ``scan`` finds. Values are checked in blocks of
    ``_BLOCK`` records.

    Strict mode parses whole blocks at once (fast); on a gap, the error message comes from
    re-reading that part of the file in Python (:func:`_diagnose`), so it names the exact
    record and the reason. Skip mode parses record by record, so only bad records are lost.
    """
    expected = tf.cast(expected, tf.int64)
    lengths = _flat_lengths(schema)
    shapes = _feature_shapes(schema)
    keys = schema.feature_keys
    spec = {
        k: tf.io.FixedLenFeature([lengths[k]], tf.float32 if k in _FLOAT_KEYS else tf.int64)
        for k in keys
    }

    @_no_autograph
    def parse(idx: tf.Tensor, records: tf.Tensor) -> tuple:
        return idx, tf.io.parse_example(records, spec), tf.zeros_like(idx, tf.bool)

    raw = tf.data.TFRecordDataset(filename).ignore_errors().enumerate()
    if skip_bad_records:
        blocks = (
            raw.map(
                _no_autograph(lambda i, r: parse(i[None], r[None])),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
            .ignore_errors()
            .unbatch()
            .batch(_BLOCK)
        )
    else:
        blocks = (
            raw.batch(_BLOCK)
            .map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .ignore_errors()
        )
    end = tf.data.Dataset.from_tensors(
        (
            tf.reshape(expected, [1]),
            {k: tf.zeros([1, lengths[k]], spec[k].dtype) for k in keys},
            tf.constant([True]),
        )
    )

    @_no_autograph
    def gaps(next_i: tf.Tensor, elem: tuple) -> tuple:
        idx, flat, is_end = elem
        prev = tf.concat([tf.reshape(next_i - 1, [1]), idx[:-1]], 0)
        gap = tf.maximum(idx - prev - 1, 0)
        return idx[-1] + 1, (idx, flat, is_end, gap, prev)

    stream = blocks.concatenate(end).scan(tf.constant(0, tf.int64), gaps)
    value_msgs = tf.constant([*_value_messages(schema), "more records than schema.json lists"])

    @_no_autograph
    def check(idx, flat, is_end, gap, prev) -> dict[str, tf.Tensor]:  # noqa: ANN001
        req = {
            k: tf.cast(tf.reshape(flat[k], [-1, *shapes[k]]), DTYPES[k]) for k in keys
        }
        extra = tf.logical_not(is_end) & (idx >= expected)
        val_ok = tf.concat([_value_checks(req, schema), tf.logical_not(extra)[:, None]], 1)
        ok = tf.reduce_all(val_ok, axis=1) | is_end
        has_gap = tf.reduce_any(gap > 0)
        has_bad = tf.logical_not(tf.reduce_all(ok))

        def gap_message() -> tf.Tensor:
            j = tf.argmax(tf.cast(gap > 0, tf.int32))
            return tf.py_function(
                _diagnose, [filename, prev[j] + 1, idx[j], expected], tf.string
            )

        def bad_message() -> tf.Tensor:
            j = tf.argmax(tf.cast(tf.logical_not(ok), tf.int32))
            reason = tf.strings.reduce_join(
                tf.boolean_mask(value_msgs, tf.logical_not(val_ok[j])), separator="; "
            )
            return tf.strings.join([
                "bad record in TFRecord file ", filename, ": record ",
                tf.strings.as_string(idx[j]), " does not match schema.json: ", reason,
                ". Read with skip_bad_records=True to skip and count bad records.",
            ])

        keep = ok & tf.logical_not(is_end)
        if skip_bad_records:
            skipped = tf.reduce_sum(gap) + tf.reduce_sum(tf.cast(tf.logical_not(ok), tf.int64))
            deps = [
                tf.cond(
                    skipped > 0,
                    lambda: tf.py_function(stats._add, [skipped], tf.int64),
                    lambda: tf.constant(0, tf.int64),
                )
            ]
        else:
            no_msg = lambda: tf.constant("")  # noqa: E731
            deps = [
                tf.debugging.Assert(
                    tf.logical_not(has_gap), [tf.cond(has_gap, gap_message, no_msg)], summarize=1
                ),
                tf.debugging.Assert(
                    tf.logical_not(has_bad), [tf.cond(has_bad, bad_message, no_msg)], summarize=1
                ),
            ]
        with tf.control_dependencies(deps):
            return {k: tf.boolean_mask(v, keep) for k, v in req.items()}

    return stream.map(check).unbatch()


def _tf_message(err: tf.errors.OpError) -> str:
    """The core text of a TF runtime error, without function-node and op decorations."""
    text = re.sub(r"\{\{[^}]*\}\}", "", err.message)
    text = re.sub(r"\[Op:[^\]]*\]( name:.*)?", "", text)
    return " ".join(text.split())


def _diagnose(filename: tf.Tensor, start: tf.Tensor, stop: tf.Tensor, expected: tf.Tensor) -> str:
    """Error text for unreadable records ``[start, stop)`` of a file (runs only on failure)."""
    name = filename.numpy().decode()
    start, stop, expected = int(start), int(stop), int(expected)
    where, reason = start, f"{stop - start} record(s) missing"
    try:
        schema, _ = read_manifest(Path(name).parent)
        lengths = _flat_lengths(schema)
        for raw in tf.data.TFRecordDataset(name).skip(start).take(stop - start):
            problem = _check_example(raw.numpy(), schema, lengths)
            if problem:
                reason = problem
                break
            where += 1
    except tf.errors.DataLossError as err:
        reason = f"corrupt or truncated record ({_tf_message(err)})"
    except Exception as err:  # noqa: BLE001 - the diagnosis must not hide the failure
        reason = f"unreadable ({err!r})"
    return (
        f"bad TFRecord file {name}: record {where}: {reason} "
        f"(schema.json lists {expected} records). Read with skip_bad_records=True to skip and "
        "count bad records, or run lcron_tf.data.check_tfrecords(dir) to list every problem."
    )


def _shard_params(
    num_shards: int, shard_index: int, input_context: tf.distribute.InputContext | None
) -> tuple[int, int]:
    if input_context is not None:
        num_shards = input_context.num_input_pipelines
        shard_index = input_context.input_pipeline_id
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(
            "`shard_index` must be in [0, num_shards) and `num_shards` >= 1. "
            f"Received: num_shards={num_shards}, shard_index={shard_index}"
        )
    return num_shards, shard_index


def _limit_records(counts: Sequence[int], max_records: int | None) -> list[int]:
    """Records read from each file when only the first ``max_records`` (file order) are read."""
    if max_records is None:
        return list(counts)
    if max_records < 1:
        raise ValueError(f"`max_records` must be >= 1. Received: max_records={max_records}")
    out, left = [], int(max_records)
    for n in counts:
        out.append(min(int(n), left))
        left -= out[-1]
    return out


def shard_record_counts(
    path: PathLike | Sequence[PathLike],
    num_shards: int = 1,
    *,
    files: Sequence[str] | None = None,
    max_records: int | None = None,
) -> list[int]:
    """Records that each shard of :func:`read_tfrecords` reads, from ``schema.json`` alone.

    The rule of the reader: with at least ``num_shards`` files (after ``max_records``), shard
    ``i`` reads the files ``i, i + num_shards, ...`` (sorted file order); with fewer files,
    shard ``i`` reads the records ``i, i + num_shards, ...`` of the whole (file, record)
    order. Nothing is read but the manifests.

    Returns:
      ``num_shards`` ints: the records of each shard (assuming no bad records).
    """
    counts = _read_counts(path, files, max_records)
    if num_shards < 1:
        raise ValueError(f"`num_shards` must be >= 1. Received: num_shards={num_shards}")
    if len(counts) >= num_shards:
        return [sum(counts[i::num_shards]) for i in range(num_shards)]
    total = sum(counts)
    return [len(range(i, total, num_shards)) for i in range(num_shards)]


def shards_by_file(
    path: PathLike | Sequence[PathLike],
    num_shards: int,
    *,
    files: Sequence[str] | None = None,
    max_records: int | None = None,
) -> bool:
    """Whether :func:`read_tfrecords` shards by file (True) or by record for ``num_shards``.

    Sharding by record needs the same record order before the shard on every shard: read
    with the same ``seed`` on all of them.
    """
    return len(_read_counts(path, files, max_records)) >= num_shards


def _read_counts(
    path: PathLike | Sequence[PathLike], files: Sequence[str] | None, max_records: int | None
) -> list[int]:
    _, _, counts = _collect_files(path, None, files)
    return [n for n in _limit_records(counts, max_records) if n > 0]


def _batch_size(batch_size: int, input_context: tf.distribute.InputContext | None) -> int:
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
    return batch_size


def read_tfrecords(
    path: PathLike | Sequence[PathLike],
    batch_size: int,
    *,
    schema: CascadeSchema | None = None,
    files: Sequence[str] | None = None,
    shuffle: bool = False,
    seed: int | tf.Tensor | None = None,
    shuffle_buffer: int = 10_000,
    drop_remainder: bool = True,
    repeat: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    skip_bad_records: bool = False,
    stats: ReadStats | None = None,
    cycle_length: int | None = None,
    deterministic: bool | None = None,
    max_records: int | None = None,
) -> tf.data.Dataset:
    """A ``tf.data.Dataset`` of canonical batch dicts read from record directories.

    Files are read in parallel (``interleave``), parsed in parallel, optionally shuffled
    (files and records), batched and prefetched. Each batch is a dict with the canonical
    keys: ``user_id`` int64 [B], ``user_features`` int64 [B, U], ``history`` int64 [B, H],
    ``item_id`` int64 [B, N], ``item_features`` int64 [B, N, F], ``label`` float32 [B, N],
    ``mask`` float32 [B, N], ``stage_group`` int32 [B, N], and ``history_features`` int64
    [B, H, Fh] when the schema declares history features.

    Args:
      path: a record directory (with ``schema.json``) or a list of them (same schema).
      batch_size: global batch size (divided per replica when ``input_context`` is given).
      schema: the expected schema; a mismatch with ``schema.json`` raises ``ValueError``.
      files: read only these file names (e.g. ``["2024-02-04.tfrecord"]``).
      shuffle: shuffle the file order and the records (buffer ``shuffle_buffer``).
      seed: seed of the shuffles (deterministic when given): a Python int or an int64
        scalar tensor (e.g. one per epoch inside ``Dataset.flat_map``).
      shuffle_buffer: record shuffle buffer size.
      drop_remainder: drop the last partial batch (static batch shape, as the paper).
      repeat: repeat forever (after sharding and shuffling; reshuffled every epoch).
      num_shards, shard_index: explicit sharding across workers. Files are sharded when
        there are at least ``num_shards`` files, records otherwise.
      input_context: a ``tf.distribute.InputContext``; overrides ``num_shards``/``shard_index``.
      skip_bad_records: drop bad records instead of raising, counting them in ``stats``.
      stats: where to count skipped records (created and attached to the dataset as
        ``dataset.read_stats`` when None).
      cycle_length: files read concurrently (default: up to 8).
      deterministic: order guarantee of the parallel steps (default: deterministic unless
        ``shuffle`` without a ``seed``; forced when records are sharded).
      max_records: read only the first ``max_records`` records in (directory, sorted file,
        record) order, before sharding and shuffling; the files after them are not opened.

    Returns:
      The dataset; ``dataset.read_stats`` is the :class:`ReadStats` of this reader.

    Raises:
      FileNotFoundError: a missing directory, ``schema.json`` or listed record file.
      ValueError: ``schema.json`` differs from ``schema`` (each differing field is named).
      tf.errors.InvalidArgumentError: while iterating, for a bad record (unless
        ``skip_bad_records``), naming the file and the record index.
    """
    stored, names, counts = _collect_files(path, schema, files)
    batch_size = _batch_size(batch_size, input_context)
    num_shards, shard_index = _shard_params(num_shards, shard_index, input_context)
    if stats is None:
        stats = ReadStats()
    limits = _limit_records(counts, max_records)
    names, counts, limits = (
        [x for x, n in zip(col, limits) if n > 0] for col in (names, counts, limits)
    )
    shard_files = len(names) >= num_shards  # the rule of shard_record_counts
    if deterministic is None:
        deterministic = not shuffle or seed is not None
    if num_shards > 1 and not shard_files:
        deterministic = True
    file_ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(names), tf.constant(counts, tf.int64), tf.constant(limits, tf.int64))
    )
    if num_shards > 1 and shard_files:
        file_ds = file_ds.shard(num_shards, shard_index)
    if shuffle:
        file_ds = file_ds.shuffle(len(names), seed=seed, reshuffle_each_iteration=True)
    ds = file_ds.interleave(
        _no_autograph(
            lambda f, n, lim: _file_dataset(f, n, stored, skip_bad_records, stats).take(lim)
        ),
        cycle_length=cycle_length or (min(8, len(names)) if shuffle else 1),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if num_shards > 1 and not shard_files:
        ds = ds.shard(num_shards, shard_index)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    ds.read_stats = stats
    return ds


def to_dataset(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    shuffle: bool = True,
    seed: int | None = None,
    drop_remainder: bool = True,
    *,
    schema: CascadeSchema | None = None,
    repeat: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """In-memory ``tf.data`` path: request arrays -> shuffled, batched, prefetched dicts.

    Args:
      arrays: dict of request arrays with the canonical keys (first axis = requests), e.g.
        from :func:`~lcron_tf.data.simulate` or a builder; cast to the canonical dtypes.
      batch_size: global batch size (divided per replica when ``input_context`` is given).
      shuffle: shuffle all requests (buffer = the number of requests), every epoch anew.
      seed: shuffle seed (deterministic when given).
      drop_remainder: drop the last partial batch (static batch shape).
      schema: when given, ``arrays`` are validated against it first.
      repeat: repeat forever.
      num_shards, shard_index, input_context: shard requests across workers.

    Returns:
      A dataset of batch dicts (see :func:`read_tfrecords` for keys, dtypes and shapes).
    """
    if schema is not None:
        validate_arrays(arrays, schema, source="to_dataset(arrays)")
    batch_size = _batch_size(batch_size, input_context)
    num_shards, shard_index = _shard_params(num_shards, shard_index, input_context)
    a = cast_arrays(arrays)
    ds = tf.data.Dataset.from_tensor_slices(a)
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    if shuffle:
        ds = ds.shuffle(max(1, num_requests(a)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def dataset_to_arrays(dataset: tf.data.Dataset) -> dict[str, np.ndarray]:
    """Concatenate a (finite) dataset of batch dicts into numpy request arrays."""
    parts: dict[str, list[np.ndarray]] = {}
    for batch in dataset.as_numpy_iterator():
        for k in ALL_KEYS:
            if k in batch:
                parts.setdefault(k, []).append(batch[k])
    return {k: np.concatenate(v, axis=0) for k, v in parts.items() if v}


# ------------------------------------------------------------------------------------------
# Eager diagnosis
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RecordProblem:
    """One bad record: file, record index (-1 = the whole file) and reason."""

    file: str
    index: int
    reason: str

    def __str__(self) -> str:
        where = f"record {self.index}" if self.index >= 0 else "file"
        return f"{self.file}: {where}: {self.reason}"


def check_tfrecords(
    path: PathLike, schema: CascadeSchema | None = None, *, max_problems: int = 100
) -> list[RecordProblem]:
    """Diagnose a record directory record by record (eager; slow for big data).

    Checks ``schema.json`` (and against ``schema`` when given), that every listed file
    exists, checksums, that each record is a ``tf.train.Example`` with the schema's keys,
    dtypes and lengths, the value checks of :func:`~lcron_tf.schema.validate_arrays`,
    and the record count of every file.

    Returns:
      The problems found (empty = the directory is good), at most ``max_problems``.
    """
    stored, names, counts = _collect_files(path, schema, None)
    lengths = _flat_lengths(stored)
    problems: list[RecordProblem] = []
    for name, expected in zip(names, counts):
        index = 0
        it = iter(tf.data.TFRecordDataset(name))
        while len(problems) < max_problems:
            try:
                raw = next(it)
            except StopIteration:
                break
            except tf.errors.DataLossError as err:
                problems.append(
                    RecordProblem(name, index, f"corrupt or truncated record: {_tf_message(err)}")
                )
                break
            reason = _check_example(raw.numpy(), stored, lengths)
            if reason:
                problems.append(RecordProblem(name, index, reason))
            index += 1
        if index != expected and len(problems) < max_problems:
            problems.append(
                RecordProblem(name, -1, f"{index} records readable, schema.json lists {expected}")
            )
    return problems


def _check_example(raw: bytes, schema: CascadeSchema, lengths: Mapping[str, int]) -> str:
    try:
        ex = tf.train.Example.FromString(raw)
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError
        return f"not a tf.train.Example: {err}"
    feat = ex.features.feature
    values: dict[str, np.ndarray] = {}
    for k in schema.feature_keys:
        if k not in feat:
            return f"missing key {k!r}"
        kind = feat[k].WhichOneof("kind")
        want = "float_list" if k in _FLOAT_KEYS else "int64_list"
        if kind != want:
            return f"key {k!r} is a {kind}, expected {want}"
        v = np.asarray(getattr(feat[k], want).value)
        if v.size != lengths[k]:
            return f"key {k!r} has {v.size} values, expected {lengths[k]}"
        values[k] = v.reshape((1, *_feature_shapes(schema)[k])).astype(DTYPES[k].as_numpy_dtype)
    try:
        validate_arrays(values, schema, source="record")
    except ValueError as err:
        return str(err).replace("record: request 0: ", "")
    return ""
