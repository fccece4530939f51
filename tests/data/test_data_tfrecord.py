"""TFRecord writer/reader and the in-memory tf.data path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from lcron_tf.data import (
    CascadeRecordWriter,
    CascadeSchema,
    ReadStats,
    check_tfrecords,
    dataset_to_arrays,
    read_schema,
    read_tfrecords,
    split_requests,
    to_dataset,
    validate_arrays,
    write_tfrecords,
)

N, H, U, F = 6, 4, 2, 3


def make_schema(**kw) -> CascadeSchema:
    args = dict(
        list_size=N, history_length=H, user_vocab=50, item_vocab=200,
        user_feature_vocabs=(5, 7), item_feature_vocabs=(4, 9, 3),
        stage_groups=("pos", "neg1", "neg2"), gt_num=2, quotas=(4, 3), name="tiny",
    )
    args.update(kw)
    return CascadeSchema(**args)


def make_arrays(r: int = 37, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((r, N), np.float32)
    mask[::3, -2:] = 0  # some padded slots
    real = mask > 0
    return {
        "user_id": rng.integers(1, 50, r),
        "user_features": np.stack([rng.integers(0, 5, r), rng.integers(0, 7, r)], 1),
        "history": rng.integers(0, 200, (r, H)),
        "item_id": np.where(real, rng.integers(1, 200, (r, N)), 0),
        "item_features": np.stack(
            [rng.integers(1, v, (r, N)) for v in (4, 9, 3)], -1
        ) * real[..., None],
        "label": np.where(real, rng.normal(size=(r, N)), 0).astype(np.float32),
        "mask": mask,
        "stage_group": np.where(real, np.arange(N) // 2, -1).astype(np.int32),
    }


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_round_trip_identical(tmp_path):
    schema, arrays = make_schema(), make_arrays()
    files = write_tfrecords(arrays, schema, tmp_path / "rec", num_shards=3)
    assert [f.name for f in files] == [f"part-0000{i}.tfrecord" for i in range(3)]
    assert read_schema(tmp_path / "rec") == schema
    manifest = json.loads((tmp_path / "rec" / "schema.json").read_text())
    assert sum(manifest["files"].values()) == 37
    ds = read_tfrecords(tmp_path / "rec", 8, schema=schema, drop_remainder=False)
    back = dataset_to_arrays(ds)  # unshuffled: file order, record order
    validate_arrays(back, schema)
    assert_same(back, {k: np.asarray(v).astype(back[k].dtype) for k, v in arrays.items()})
    spec = ds.element_spec
    assert spec["stage_group"].dtype == tf.int32 and spec["item_features"].shape[1:] == (N, F)


def test_batches_have_static_shapes_and_canonical_dtypes(tmp_path):
    schema, arrays = make_schema(), make_arrays()
    write_tfrecords(arrays, schema, tmp_path / "rec")
    for ds in (read_tfrecords(tmp_path / "rec", 8, shuffle=True, seed=1),
               to_dataset(arrays, 8, seed=1)):
        for key, spec in schema.feature_specs(8).items():
            assert ds.element_spec[key].shape == spec.shape, key
            assert ds.element_spec[key].dtype == spec.dtype, key
        assert sum(1 for _ in ds) == 37 // 8  # drop_remainder


def test_shuffle_is_seeded_and_complete(tmp_path):
    schema, arrays = make_schema(), make_arrays()
    write_tfrecords(arrays, schema, tmp_path / "rec", num_shards=2)
    runs = [
        dataset_to_arrays(read_tfrecords(tmp_path / "rec", 5, shuffle=True, seed=3,
                                         drop_remainder=False))
        for _ in range(2)
    ]
    assert_same(runs[0], runs[1])
    assert sorted(runs[0]["user_id"].tolist()) == sorted(arrays["user_id"].tolist())
    mem = dataset_to_arrays(to_dataset(arrays, 5, shuffle=True, seed=3, drop_remainder=False))
    assert sorted(mem["user_id"].tolist()) == sorted(arrays["user_id"].tolist())
    mem2 = dataset_to_arrays(to_dataset(arrays, 5, shuffle=False, drop_remainder=False))
    assert_same(mem2, {k: np.asarray(v).astype(mem2[k].dtype) for k, v in arrays.items()})


@pytest.mark.parametrize("num_files", [1, 4])
def test_sharding_partitions_the_records(tmp_path, num_files):
    schema, arrays = make_schema(), make_arrays(40)
    arrays["user_id"] = np.arange(1, 41)  # unique ids to track records
    write_tfrecords(arrays, schema, tmp_path / "rec", num_shards=num_files)
    seen = []
    for i in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i)
        part = dataset_to_arrays(
            read_tfrecords(tmp_path / "rec", 4, input_context=ctx, drop_remainder=False)
        )
        seen.append(set(part["user_id"].tolist()))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(1, 41))
    mem = [set(dataset_to_arrays(to_dataset(arrays, 4, shuffle=False, num_shards=2,
                                            shard_index=i, drop_remainder=False))["user_id"]
               .tolist()) for i in range(2)]
    assert not mem[0] & mem[1] and mem[0] | mem[1] == set(range(1, 41))


def test_writer_appends_named_shards_and_refuses_overwrite(tmp_path):
    schema, arrays = make_schema(), make_arrays()
    train, test = split_requests(arrays, 0.25, seed=0)
    with CascadeRecordWriter(tmp_path / "rec", schema) as w:
        w.write(train, shard="2024-01-13")
        w.write(test, shard="2024-01-14")
    back = dataset_to_arrays(read_tfrecords(tmp_path / "rec", 64, drop_remainder=False,
                                            files=["2024-01-14.tfrecord"]))
    assert_same(back, {k: np.asarray(v).astype(back[k].dtype) for k, v in test.items()})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        CascadeRecordWriter(tmp_path / "rec", schema)
    write_tfrecords(arrays, schema, tmp_path / "rec", overwrite=True)
    assert not (tmp_path / "rec" / "2024-01-13.tfrecord").exists()


def test_writer_rejects_arrays_that_break_the_schema(tmp_path):
    schema, arrays = make_schema(), make_arrays()
    arrays["item_id"][5, 0] = 200  # == item_vocab
    with pytest.raises(ValueError, match=r"request 5: 'item_id' out of range"):
        write_tfrecords(arrays, schema, tmp_path / "rec")
    arrays = make_arrays()
    arrays["stage_group"][0, -1] = 1  # padded slot with a group
    with pytest.raises(ValueError, match="request 0: 'stage_group' is not -1 where mask == 0"):
        validate_arrays(arrays, schema)


def test_missing_directory_schema_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        read_tfrecords(tmp_path / "nope", 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="schema.json"):
        read_tfrecords(tmp_path / "empty", 4)
    schema = make_schema()
    write_tfrecords(make_arrays(), schema, tmp_path / "rec", num_shards=2)
    (tmp_path / "rec" / "part-00001.tfrecord").unlink()
    with pytest.raises(FileNotFoundError, match="part-00001.tfrecord"):
        read_tfrecords(tmp_path / "rec", 4)


def test_schema_mismatch_names_file_and_fields(tmp_path):
    write_tfrecords(make_arrays(), make_schema(), tmp_path / "rec")
    with pytest.raises(ValueError, match=r"schema.json.*list_size: stored 6 != expected 8"):
        read_tfrecords(tmp_path / "rec", 4, schema=make_schema(list_size=8))


def _rewrite(path, records):
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in records:
            w.write(r)


def test_corrupt_bytes_error_names_file_and_record(tmp_path):
    schema = make_schema()
    write_tfrecords(make_arrays(), schema, tmp_path / "rec")
    path = tmp_path / "rec" / "part-00000.tfrecord"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip bits inside some record
    path.write_bytes(bytes(data))
    problems = check_tfrecords(tmp_path / "rec")
    assert problems and problems[0].file == str(path) and problems[0].index > 0
    bad = problems[0].index
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"part-00000.tfrecord: record {bad}: corrupt"):
        dataset_to_arrays(read_tfrecords(tmp_path / "rec", 4))
    ds = read_tfrecords(tmp_path / "rec", 4, skip_bad_records=True, drop_remainder=False)
    back = dataset_to_arrays(ds)
    # TFRecord cannot resynchronise: the bad record and the rest of the file are skipped.
    assert len(back["user_id"]) == bad and ds.read_stats.skipped == 37 - bad


def test_truncated_file_is_reported(tmp_path):
    write_tfrecords(make_arrays(), make_schema(), tmp_path / "rec")
    path = tmp_path / "rec" / "part-00000.tfrecord"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(tf.errors.InvalidArgumentError, match="record 36: corrupt or truncated"):
        dataset_to_arrays(read_tfrecords(tmp_path / "rec", 4))


def test_bad_record_content_error_and_skip_count(tmp_path):
    schema = make_schema()
    write_tfrecords(make_arrays(), schema, tmp_path / "rec")
    path = tmp_path / "rec" / "part-00000.tfrecord"
    raws = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    ex = tf.train.Example.FromString(raws[7])
    ex.features.feature["item_id"].int64_list.value[0] = 999  # >= item_vocab
    raws[7] = ex.SerializeToString()
    ex = tf.train.Example.FromString(raws[20])
    del ex.features.feature["label"].float_list.value[-1]  # wrong length
    raws[20] = ex.SerializeToString()
    raws[30] = b"not a proto"
    _rewrite(path, raws)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="record 7: .*item_id.* out of range"):
        dataset_to_arrays(read_tfrecords(tmp_path / "rec", 4))
    stats = ReadStats()
    back = dataset_to_arrays(read_tfrecords(tmp_path / "rec", 4, skip_bad_records=True,
                                            stats=stats, drop_remainder=False))
    assert stats.skipped == 3 and len(back["user_id"]) == 34
    reasons = {p.index: p.reason for p in check_tfrecords(tmp_path / "rec")}
    assert set(reasons) == {7, 20, 30}
    assert "'label' has 5 values, expected 6" in reasons[20]
    # A block with a wrong-length record: the error names the exact record and reason.
    raws[7] = tf.train.Example.FromString(raws[8]).SerializeToString()
    raws[30] = raws[31]
    _rewrite(path, raws)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"record 20: key .*label.* has 5 values, expected 6"):
        dataset_to_arrays(read_tfrecords(tmp_path / "rec", 4))


def test_records_missing_from_manifest_count(tmp_path):
    schema = make_schema()
    write_tfrecords(make_arrays(), schema, tmp_path / "rec")
    manifest_path = tmp_path / "rec" / "schema.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["part-00000.tfrecord"] = 40  # claims 3 more records than the file has
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(tf.errors.InvalidArgumentError, match="record 37: 3 record.s. missing"):
        dataset_to_arrays(read_tfrecords(tmp_path / "rec", 4))


def _with_history_features(arrays: dict, seed: int = 0) -> dict:
    """``arrays`` plus ``history_features`` [R, H, 2] (fields 0 and 1), 0 where history is 0."""
    rng = np.random.default_rng(seed)
    r = len(arrays["user_id"])
    hist = np.asarray(arrays["history"])
    feats = np.stack([rng.integers(1, 4, (r, H)), rng.integers(1, 9, (r, H))], -1)
    return {**arrays, "history_features": feats * (hist > 0)[..., None]}


def test_history_features_round_trip_and_checks(tmp_path):
    schema = make_schema(item_feature_names=("a", "b", "c"), history_feature_names=("a", "b"))
    assert schema.history_feature_vocabs == (4, 9) and schema.history_feature_columns == (0, 1)
    arrays = _with_history_features(make_arrays())
    write_tfrecords(arrays, schema, tmp_path / "rec", num_shards=2)
    back = dataset_to_arrays(read_tfrecords(tmp_path / "rec", 8, drop_remainder=False))
    assert_same(back, {k: np.asarray(v).astype(back[k].dtype) for k, v in arrays.items()})
    assert check_tfrecords(tmp_path / "rec") == []
    with pytest.raises(ValueError, match="missing keys \\['history_features'\\]"):
        validate_arrays(make_arrays(), schema)
    bad = dict(arrays, history_features=arrays["history_features"].copy())
    bad["history_features"][0, 0, 1] = 9  # vocab of "b" is 9
    with pytest.raises(ValueError, match="request 0: 'history_features' out of range"):
        validate_arrays(bad, schema)
    hole = dict(arrays, history=arrays["history"].copy())
    hole["history"][2, 1], hole["history_features"] = 0, arrays["history_features"].copy()
    hole["history_features"][2, 1] = 1
    with pytest.raises(ValueError, match="request 2: 'history_features' is not 0 where history"):
        validate_arrays(hole, schema)


def test_records_written_before_the_optional_fields_still_load(tmp_path):
    """A schema.json without the name / history fields (older writers) reads as before."""
    schema, arrays = make_schema(), make_arrays()
    write_tfrecords(arrays, schema, tmp_path / "rec")
    path = tmp_path / "rec" / "schema.json"
    manifest = json.loads(path.read_text())
    for key in ("user_feature_names", "item_feature_names", "history_feature_names"):
        del manifest["schema"][key]
    path.write_text(json.dumps(manifest))
    assert read_schema(tmp_path / "rec") == schema and schema.feature_keys[-1] == "stage_group"
    back = dataset_to_arrays(read_tfrecords(tmp_path / "rec", 8, drop_remainder=False))
    assert "history_features" not in back and len(back["user_id"]) == 37
