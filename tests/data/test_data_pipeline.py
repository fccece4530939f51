"""Training input pipelines: streamed batches equal the in-memory ones; workers and resumed
runs feed exactly the batches of one uninterrupted process; sharding never loses a record."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from lcron_tf.data import (
    CascadeSchema,
    InMemoryData,
    RecordData,
    dataset_to_arrays,
    read_tfrecords,
    shard_record_counts,
    write_tfrecords,
)

N, H = 6, 4
R = 120  # requests; user_id = 1..R identifies each one


def make_schema() -> CascadeSchema:
    return CascadeSchema(
        list_size=N, history_length=H, user_vocab=R + 21, item_vocab=300,
        user_feature_vocabs=(5, 7), item_feature_vocabs=(4, 9, 3),
        stage_groups=("pos", "neg1", "neg2"), gt_num=2, quotas=(4, 3), name="tiny",
    )


def make_arrays(r: int = R, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((r, N), np.float32)
    mask[::3, -2:] = 0
    real = mask > 0
    return {
        "user_id": np.arange(1, r + 1),
        "user_features": np.stack([rng.integers(0, 5, r), rng.integers(0, 7, r)], 1),
        "history": rng.integers(0, 300, (r, H)),
        "item_id": np.where(real, rng.integers(1, 300, (r, N)), 0),
        "item_features": np.stack([rng.integers(1, v, (r, N)) for v in (4, 9, 3)], -1)
        * real[..., None],
        "label": np.where(real, rng.normal(size=(r, N)), 0).astype(np.float32),
        "mask": mask,
        "stage_group": np.where(real, np.arange(N) // 2, -1).astype(np.int32),
    }


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """120 train requests in 4 files of 30, 20 test requests in 1 file."""
    base = tmp_path_factory.mktemp("pipeline")
    schema, arrays = make_schema(), make_arrays(R + 20)
    train = {k: v[:R] for k, v in arrays.items()}
    test = {k: v[R:] for k, v in arrays.items()}
    write_tfrecords(train, schema, base / "train", num_shards=4)
    write_tfrecords(test, schema, base / "test", num_shards=1)
    return schema, train, test, base


def batches(ds: tf.data.Dataset) -> list[dict[str, np.ndarray]]:
    return [{k: v.numpy() for k, v in b.items()} for b in ds]


def ids(ds: tf.data.Dataset) -> list[np.ndarray]:
    return [b["user_id"] for b in batches(ds)]


def ctx(pipes: int, pipe: int, replicas: int | None = None) -> tf.distribute.InputContext:
    return tf.distribute.InputContext(num_input_pipelines=pipes, input_pipeline_id=pipe,
                                      num_replicas_in_sync=replicas or pipes)


def test_unshuffled_stream_gives_the_in_memory_batches(records):
    schema, train, _, base = records
    stream = RecordData(schema, base / "train", base / "test", shuffle_buffer=0)
    got = batches(stream.train_dataset(12, 1, seed=0))
    assert len(got) == stream.steps_per_epoch(12) == R // 12
    for i, b in enumerate(got[:3]):  # every key, dtype and value of the first batches
        assert sorted(b) == sorted(train)
        for k, v in b.items():
            np.testing.assert_array_equal(v, train[k][i * 12:(i + 1) * 12].astype(v.dtype), k)
    # Two read streams: files 0, 2 and files 1, 3 (30 records each), 6 requests of each.
    two = RecordData(schema, base / "train", base / "test", shuffle_buffer=0, read_streams=2)
    assert two.stream_records == [60, 60] and two.by_file
    first = batches(two.train_dataset(12, 1, seed=0))[0]
    expect = np.r_[0:6, 30:36]  # stream 0 starts at file 0, stream 1 at file 1
    for k, v in first.items():
        np.testing.assert_array_equal(v, train[k][expect].astype(v.dtype), k)
    # The in-memory path on the same arrays feeds the same values for the same rows.
    mem = InMemoryData(schema, train, train)
    first = batches(mem.train_dataset(12, 1, seed=0).take(1))[0]
    order = first["user_id"] - 1
    for k, v in first.items():
        np.testing.assert_array_equal(v, train[k][order].astype(v.dtype), k)


@pytest.mark.parametrize("streams", [1, 6])
def test_shuffled_epochs_use_each_record_at_most_once(records, streams):
    schema, _, _, base = records
    data = RecordData(schema, base / "train", base / "test", shuffle_buffer=16,
                      read_streams=streams)
    assert data.by_file == (streams <= 4)  # 6 streams over 4 files: records are sharded
    spe = data.steps_per_epoch(12)
    assert spe * 12 == R  # streams of equal size: every record in every epoch
    got = ids(data.train_dataset(12, 2, seed=5))
    assert len(got) == 2 * spe and all(len(b) == 12 for b in got)
    epochs = [np.concatenate(got[:spe]), np.concatenate(got[spe:])]
    for e in epochs:
        assert sorted(e.tolist()) == list(range(1, R + 1))  # each record once per epoch
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch
    if streams == 1:  # the order depends on `seed` only, not on the global seed
        tf.random.set_seed(123)
        again = ids(data.train_dataset(12, 2, seed=5))
        assert all(np.array_equal(a, b) for a, b in zip(got, again))
        other = ids(data.train_dataset(12, 2, seed=6))
        assert not all(np.array_equal(a, b) for a, b in zip(got, other))


@pytest.mark.parametrize("streams, pipes", [(1, 2), (2, 2), (3, 2)])
def test_workers_together_feed_the_single_process_batches(records, streams, pipes):
    schema, _, _, base = records
    data = RecordData(schema, base / "train", base / "test", shuffle_buffer=16,
                      read_streams=streams)
    whole = ids(data.train_dataset(12, 2, seed=1))
    if streams == 3:  # uneven streams (files 0+3, 1, 2): an epoch uses 7 x 12 of 120
        assert data.stream_records == [60, 30, 30] and len(whole) == 2 * 7
    parts = [ids(data.train_dataset(12, 2, seed=1, input_context=ctx(pipes, p)))
             for p in range(pipes)]
    assert all(len(p) == len(whole) for p in parts)
    for step, expect in enumerate(whole):  # worker p holds rows [p B/P, (p+1) B/P)
        np.testing.assert_array_equal(np.concatenate([p[step] for p in parts]), expect)
    if streams == 2:  # two local replicas on one pipeline: consecutive half batches
        local = ids(data.train_dataset(12, 2, seed=1, input_context=ctx(1, 0, replicas=2)))
        assert len(local) == 2 * len(whole)
        np.testing.assert_array_equal(np.concatenate(local[:2]), whole[0])


def test_in_memory_workers_and_resume_feed_the_same_batches(records):
    schema, train, test, _ = records
    data = InMemoryData(schema, train, test)
    full = ids(data.train_dataset(12, 2, seed=3).take(20))
    halves = [ids(data.train_dataset(12, 2, seed=3, input_context=ctx(2, p)).take(20))
              for p in range(2)]
    for step, expect in enumerate(full):
        np.testing.assert_array_equal(np.concatenate([h[step] for h in halves]), expect)
    resumed = ids(data.train_dataset(12, 2, seed=3, start_step=7).take(13))
    assert all(np.array_equal(a, b) for a, b in zip(resumed, full[7:]))
    val = [ids(data.test_dataset(10, drop_remainder=True, input_context=ctx(2, p)))
           for p in range(2)]
    np.testing.assert_array_equal(np.concatenate([val[0][0], val[1][0]]),
                                  test["user_id"][:10])


@pytest.mark.parametrize("streams, start", [(1, 3), (3, 7 + 4)])
def test_resumed_stream_continues_with_the_batches_of_the_uninterrupted_run(records, streams,
                                                                           start):
    schema, _, _, base = records
    data = RecordData(schema, base / "train", base / "test", shuffle_buffer=16,
                      read_streams=streams)
    full = ids(data.train_dataset(12, 3, seed=2))
    assert start // data.steps_per_epoch(12) == (0 if streams == 1 else 1)  # epoch 1 / 2
    resumed = ids(data.train_dataset(12, 3, seed=2, start_step=start))
    assert len(resumed) == len(full) - start
    assert all(np.array_equal(a, b) for a, b in zip(resumed, full[start:]))


@pytest.mark.parametrize("shards, max_records", [(2, None), (5, None), (3, 45)])
def test_sharding_never_duplicates_or_drops_a_record(records, shards, max_records):
    schema, _, _, base = records
    wanted = list(range(1, (max_records or R) + 1))  # the first records, file order
    counts = shard_record_counts(base / "train", shards, max_records=max_records)
    # 2 and 3 shards: whole files (3 shards over 45 records = 2 files: by record); 5: records.
    for shuffle in (False, True) if max_records else (False,):
        seen = []
        for i in range(shards):
            part = dataset_to_arrays(read_tfrecords(
                base / "train", 7, schema=schema, num_shards=shards, shard_index=i,
                shuffle=shuffle, seed=4, drop_remainder=False, max_records=max_records))
            seen.append(part["user_id"].tolist())
            assert len(seen[-1]) == counts[i]  # the manifest-only count is exact
        assert sorted(x for s in seen for x in s) == wanted


def test_sample_reads_the_first_requests_and_bad_settings_fail(records):
    schema, train, test, base = records
    data = RecordData(schema, base / "train", base / "test", max_train=50, max_test=7)
    assert data.num_train == 50 and data.num_test == 7
    np.testing.assert_array_equal(data.sample(5)["user_id"], train["user_id"][:5])
    np.testing.assert_array_equal(data.sample(9, "test")["user_id"], test["user_id"][:7])
    with pytest.raises(ValueError, match="multiple of read_streams"):
        RecordData(schema, base / "train", base / "test", read_streams=5).steps_per_epoch(12)
    with pytest.raises(ValueError, match="read_streams"):
        RecordData(schema, base / "train", base / "test", read_streams=0)
    with pytest.raises(ValueError, match="multiple of the 2 replicas"):
        data.train_dataset(13, 1, seed=0, input_context=ctx(2, 0))
