"""Training input pipelines with a fixed step -> batch mapping, in memory or streamed.

``lcron-tf train`` takes the batch of every global optimizer step from a plan that is fixed
before training starts. Two things follow. A run resumed from a checkpoint at step ``S``
feeds exactly the batches that an uninterrupted run feeds from step ``S`` on. And ``P``
workers together feed exactly the global batches that one process feeds.

* :class:`InMemoryData` (simulator, MovieLens, MSLR, or ``data.in_memory``): epoch ``e``
  is ``numpy.random.default_rng([seed, e]).permutation(num_train)``, cut into batches
  (:func:`step_indices`).
* :class:`RecordData` (``tfrecord`` / ``recflow`` sources): streamed from the record
  files, never held in memory. The training records are split into ``S`` read streams
  (``read_streams``). With at least ``S`` files, stream ``s`` reads the files ``s, s + S,
  ...`` (sorted order). With fewer files, it reads the records ``s, s + S, ...`` (this is
  :func:`~lcron_tf.data.tfrecord.read_tfrecords` sharding). In epoch ``e``, stream ``s``
  shuffles its files and records (a buffer of ``shuffle_buffer // S`` records) with the seed
  :func:`epoch_seed` ``(seed, e, s)`` (``(seed, e, 0)`` for every stream when they shard
  records, so that all see one record order before the shard) and is cut into
  micro-batches of ``B / S``. The
  global batch of a step is the concatenation of the ``S`` micro-batches. An epoch has
  ``min_s(records_s // (B / S))`` steps; the other records of an epoch are not used in that
  epoch, and a different subset of them is left out in each epoch. A run resumed at step
  ``e * steps_per_epoch + b`` re-reads epoch ``e`` and skips its first ``b`` batches. Those
  batches are read and parsed but not trained, at the reader's speed.

The order is fixed by the records, ``seed``, ``B``, ``S`` and ``shuffle_buffer``, and it
holds for one TensorFlow version (``tf.data``'s shuffle algorithm). It does not depend on
the number of workers.

**Workers.** With ``P`` input pipelines (``MultiWorkerMirroredStrategy`` workers,
``input_context`` from ``strategy.distribute_datasets_from_function``), worker ``p`` feeds
the rows ``[p B / P, (p + 1) B / P)`` of every global batch, split among its local replicas.
It reads only the streams that overlap those rows. When ``S`` is a multiple of ``P``, each
worker therefore reads only its own files. With ``S = 1``, every worker reads every record
and keeps its rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf

from lcron_tf.data.tfrecord import (
    read_tfrecords,
    shard_record_counts,
    shards_by_file,
    to_dataset,
)
from lcron_tf.schema import CascadeSchema, cast_arrays, num_requests


def step_indices(n: int, batch_size: int, epochs: int, seed: int) -> np.ndarray:
    """int64 ``[epochs * steps_per_epoch, batch_size]``: the requests of every global step.

    Epoch ``e`` uses ``default_rng([seed, e]).permutation(n)`` (last partial batch dropped),
    so the batch of any step is known in advance.
    """
    steps = n // batch_size
    rows = [np.random.default_rng([seed, e]).permutation(n)[: steps * batch_size]
            for e in range(epochs)]
    return np.concatenate(rows).reshape(epochs * steps, batch_size).astype(np.int64)


def step_dataset(
    arrays: Mapping[str, np.ndarray], index: np.ndarray, start: int
) -> tf.data.Dataset:
    """``tf.data`` of the global batches of steps ``start, start + 1, ...`` (repeated).

    Args:
      arrays: request arrays (first axis = requests).
      index: int64 ``[steps, batch_size]`` from :func:`step_indices`.
      start: the first global step.
    """
    tensors = {k: tf.constant(v) for k, v in cast_arrays(arrays).items()}
    ds = tf.data.Dataset.from_tensor_slices(index[start:])
    ds = ds.map(lambda idx: {k: tf.gather(v, idx) for k, v in tensors.items()},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # repeat(): infinite cardinality, so Keras keeps ONE iterator across epochs (it only
    # re-creates it when the cardinality equals steps_per_epoch).
    return ds.repeat()


_GRAPH_SEED = 0x1C_2025


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """The shuffle seed of ``stream`` in ``epoch`` (a stable hash, the same on every host)."""
    digest = hashlib.sha256(f"lcron_tf/{seed}/{epoch}/{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def pipeline_rows(
    global_batch: int, input_context: tf.distribute.InputContext | None
) -> tuple[int, int, int]:
    """``(lo, hi, local_replicas)``: the rows of every global batch this input pipeline feeds.

    Raises:
      ValueError: the global batch does not divide evenly over the replicas.
    """
    if input_context is None:
        return 0, global_batch, 1
    p, pipes = input_context.input_pipeline_id, input_context.num_input_pipelines
    replicas = input_context.num_replicas_in_sync
    if global_batch % replicas or replicas % pipes:
        raise ValueError(
            f"the global batch size {global_batch} must be a multiple of the "
            f"{replicas} replicas in sync ({pipes} input pipelines)"
        )
    per = global_batch // pipes
    return p * per, (p + 1) * per, replicas // pipes


def _rows_of(ds: tf.data.Dataset, lo: int, hi: int, width: int) -> tf.data.Dataset:
    if (lo, hi) == (0, width):
        return ds
    return ds.map(lambda b: {k: v[lo:hi] for k, v in b.items()})


def _split_local(ds: tf.data.Dataset, local: int) -> tf.data.Dataset:
    """One pipeline batch of ``local * b`` rows -> ``local`` consecutive elements of ``b``."""
    if local == 1:
        return ds
    ds = ds.map(lambda b: {k: tf.reshape(v, [local, -1, *v.shape[1:]]) for k, v in b.items()})
    return ds.unbatch()


def _finish(ds: tf.data.Dataset) -> tf.data.Dataset:
    return ds.prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class InMemoryData:
    """Requests held as numpy arrays (small data sets).

    Attributes:
      schema: the data's schema.
      train, test: request arrays (canonical keys, first axis = requests).
    """

    schema: CascadeSchema
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]

    streaming = False

    @property
    def num_train(self) -> int:
        return num_requests(self.train)

    @property
    def num_test(self) -> int:
        return num_requests(self.test)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps per epoch (the last partial batch is dropped)."""
        return self.num_train // batch_size

    def describe(self, batch_size: int) -> str:
        return (f"in memory, {self.num_train} train requests, full permutation per epoch, "
                f"{self.steps_per_epoch(batch_size)} steps/epoch")

    def train_dataset(
        self,
        batch_size: int,
        epochs: int,
        seed: int,
        start_step: int = 0,
        input_context: tf.distribute.InputContext | None = None,
    ) -> tf.data.Dataset:
        """Batches of the global steps ``start_step, ...`` (this pipeline's rows; repeated).

        Each element is a canonical batch dict of ``batch_size / replicas`` requests.
        """
        index = step_indices(self.num_train, batch_size, epochs, seed)
        lo, hi, local = pipeline_rows(batch_size, input_context)
        ds = step_dataset(self.train, index, min(start_step, len(index) - 1))
        return _finish(_split_local(_rows_of(ds, lo, hi, batch_size), local))

    def test_dataset(
        self,
        batch_size: int,
        *,
        drop_remainder: bool,
        input_context: tf.distribute.InputContext | None = None,
    ) -> tf.data.Dataset:
        """The test split in order, in global batches of ``batch_size`` (this pipeline's rows)."""
        lo, hi, local = pipeline_rows(batch_size, input_context)
        ds = to_dataset(self.test, batch_size, shuffle=False, drop_remainder=drop_remainder)
        return _finish(_split_local(_rows_of(ds, lo, hi, batch_size), local))

    def sample(self, n: int, split: str = "train") -> dict[str, np.ndarray]:
        """The first ``n`` requests of ``split`` (canonical dtypes)."""
        arrays = self.train if split == "train" else self.test
        return {k: v[:n] for k, v in cast_arrays(arrays).items()}


@dataclasses.dataclass
class RecordData:
    """Requests streamed from record directories (see the module docstring).

    Attributes:
      schema: the expected schema (checked against every ``schema.json``).
      train_dir, test_dir: record directories.
      shuffle_buffer: records in the shuffle buffers of all streams together (0 = no
        shuffle: files and records in order).
      read_streams: ``S``, independent read streams whose micro-batches make up a batch.
      max_train, max_test: read only the first records of a split (file order).
    """

    schema: CascadeSchema
    train_dir: Path
    test_dir: Path
    shuffle_buffer: int = 10_000
    read_streams: int = 1
    max_train: int | None = None
    max_test: int | None = None

    streaming = True

    def __post_init__(self) -> None:
        self.train_dir, self.test_dir = Path(self.train_dir), Path(self.test_dir)
        if self.read_streams < 1:
            raise ValueError(f"`read_streams` must be >= 1. Received: {self.read_streams}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"`shuffle_buffer` must be >= 0. Received: {self.shuffle_buffer}")
        self.stream_records = shard_record_counts(
            self.train_dir, self.read_streams, max_records=self.max_train
        )
        self.by_file = shards_by_file(self.train_dir, self.read_streams, max_records=self.max_train)
        self._num_test = sum(shard_record_counts(self.test_dir, 1, max_records=self.max_test))

    @property
    def num_train(self) -> int:
        return sum(self.stream_records)

    @property
    def num_test(self) -> int:
        return self._num_test

    def micro_batch(self, batch_size: int) -> int:
        """Requests each stream adds to a batch (``batch_size / read_streams``)."""
        if batch_size % self.read_streams:
            raise ValueError(
                f"the batch size {batch_size} must be a multiple of read_streams="
                f"{self.read_streams} (every stream adds batch_size / read_streams requests)"
            )
        return batch_size // self.read_streams

    def steps_per_epoch(self, batch_size: int) -> int:
        """Optimizer steps per epoch: ``min_s(records_s // micro_batch)``."""
        m = self.micro_batch(batch_size)
        return min(n // m for n in self.stream_records)

    def describe(self, batch_size: int) -> str:
        spe = self.steps_per_epoch(batch_size)
        return (f"streamed from {self.train_dir}, {self.read_streams} read stream(s) of "
                f"{self.stream_records} records, micro-batch {self.micro_batch(batch_size)}, "
                f"shuffle buffer {self.shuffle_buffer}; {spe} steps/epoch use "
                f"{spe * batch_size} of {self.num_train} records")

    def _stream_epoch(self, stream: int, micro: int, seed: tf.Tensor | None,
                      steps: int) -> tf.data.Dataset:
        return read_tfrecords(
            self.train_dir, micro, schema=self.schema, shuffle=seed is not None, seed=seed,
            shuffle_buffer=max(1, self.shuffle_buffer // self.read_streams),
            drop_remainder=True, num_shards=self.read_streams, shard_index=stream,
            max_records=self.max_train,
        ).take(steps)

    def epoch_seeds(self, seed: int, epochs: int) -> np.ndarray | None:
        """int64 ``[epochs, read_streams]``: the shuffle seed of every stream in every epoch.

        Streams that shard records (fewer files than streams) share one seed per epoch, so
        they see the same record order before the shard. None when not shuffling.
        """
        if self.shuffle_buffer == 0:
            return None
        return np.array([[epoch_seed(seed, e, s if self.by_file else 0)
                          for s in range(self.read_streams)] for e in range(epochs)], np.int64)

    def train_dataset(
        self,
        batch_size: int,
        epochs: int,
        seed: int,
        start_step: int = 0,
        input_context: tf.distribute.InputContext | None = None,
    ) -> tf.data.Dataset:
        """Batches of the global steps ``start_step, ..., epochs * steps_per_epoch - 1``.

        Each element is a canonical batch dict of ``batch_size / replicas`` requests (this
        pipeline's rows of the global batch). The dataset is finite: it ends after the last
        step of the last epoch (``start_step`` past the end gives the last batch only).
        """
        m = self.micro_batch(batch_size)
        spe = self.steps_per_epoch(batch_size)
        start = min(start_step, spe * epochs - 1)
        lo, hi, local = pipeline_rows(batch_size, input_context)
        # (stream, first row, end row) of every stream overlapping rows [lo, hi).
        parts = [(s, max(lo, s * m) - s * m, min(hi, (s + 1) * m) - s * m)
                 for s in range(lo // m, (hi - 1) // m + 1)]

        seeds = self.epoch_seeds(seed, epochs)
        seeds = None if seeds is None else tf.constant(seeds)

        def epoch_ds(epoch: tf.Tensor) -> tf.data.Dataset:
            # The graph-level seed of this traced function only (not the program's global
            # seed): the order then depends on `seed` alone, and TF's seed logic does not
            # compare a tensor seed in Python (it fails when the global seed is 0).
            tf.random.set_seed(_GRAPH_SEED)
            streams = tuple(
                self._stream_epoch(s, m, None if seeds is None else seeds[epoch, s], spe)
                for s, _, _ in parts
            )
            return tf.data.Dataset.zip(streams).map(
                lambda *bs: {k: tf.concat([b[k][a:z] for b, (_, a, z) in zip(bs, parts)], 0)
                             for k in bs[0]})

        # One graph for every epoch (the seed is a tensor): epochs run back to back, so
        # skipping `skip` batches skips them in the first epoch.
        first_epoch, skip = divmod(start, spe)
        ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_ds).skip(skip)
        return _finish(_split_local(ds, local))

    def test_dataset(
        self,
        batch_size: int,
        *,
        drop_remainder: bool,
        input_context: tf.distribute.InputContext | None = None,
    ) -> tf.data.Dataset:
        """The test split in file order, in global batches (this pipeline's rows)."""
        lo, hi, local = pipeline_rows(batch_size, input_context)
        ds = read_tfrecords(self.test_dir, batch_size, schema=self.schema,
                            drop_remainder=drop_remainder, max_records=self.max_test)
        return _finish(_split_local(_rows_of(ds, lo, hi, batch_size), local))

    def sample(self, n: int, split: str = "train") -> dict[str, np.ndarray]:
        """The first ``n`` requests of ``split`` in file order (reads only those)."""
        path = self.train_dir if split == "train" else self.test_dir
        limit = self.max_train if split == "train" else self.max_test
        ds = read_tfrecords(path, n, schema=self.schema, drop_remainder=False,
                            max_records=n if limit is None else min(n, limit))
        return {k: v.numpy() for k, v in next(iter(ds)).items()}


TrainingData = InMemoryData | RecordData

