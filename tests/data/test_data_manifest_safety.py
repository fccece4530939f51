"""Record manifests cannot make a reader read, or a writer delete, anything outside its directory.

Real record directories in temporary folders; `schema.json` edited the way a hostile or
broken producer would. Also: the writer's overwrite deletes only what its manifest owns, it
never truncates a file it did not write, and writing 0 requests is a no-op.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_data_tfrecord import assert_same, make_arrays, make_schema

from lcron_tf.data import (
    CascadeRecordWriter,
    check_tfrecords,
    dataset_to_arrays,
    read_tfrecords,
    write_tfrecords,
)

BAD_ENTRIES = [
    "../outside.tfrecord",
    "sub/../../outside.tfrecord",
    "sub/part.tfrecord",
    "..",
    ".",
    "",
    "schema.json",
    ".hidden.tfrecord",
    "x\\..\\outside.tfrecord",
]


def _set_files(directory: Path, files: dict) -> None:
    path = directory / "schema.json"
    manifest = json.loads(path.read_text())
    manifest["files"] = files
    path.write_text(json.dumps(manifest))


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("entry", [*BAD_ENTRIES, "ABSOLUTE"])
def test_reader_refuses_manifest_entries_outside_the_directory(tmp_path, entry):
    schema, arrays = make_schema(), make_arrays(20)
    write_tfrecords(arrays, schema, tmp_path / "outside_dir")  # real records outside
    outside = tmp_path / "outside.tfrecord"
    outside.write_bytes((tmp_path / "outside_dir" / "part-00000.tfrecord").read_bytes())
    rec = tmp_path / "rec"
    write_tfrecords(make_arrays(5, seed=1), schema, rec)
    name = str(outside) if entry == "ABSOLUTE" else entry
    _set_files(rec, {name: 20})
    for read in (lambda: read_tfrecords(rec, 4), lambda: check_tfrecords(rec)):
        with pytest.raises(ValueError, match="file entry") as info:
            read()
        assert repr(name) in str(info.value) and "schema.json" in str(info.value)


@pytest.mark.parametrize("entry", ["../victim.txt", "../victim.tfrecord", "ABSOLUTE", ".."])
def test_writer_overwrite_never_deletes_outside_its_directory(tmp_path, entry):
    schema = make_schema()
    victim = tmp_path / ("victim.tfrecord" if "tfrecord" in entry else "victim.txt")
    victim.write_text("precious")
    rec = tmp_path / "rec"
    write_tfrecords(make_arrays(8), schema, rec, num_shards=2)
    name = str(victim) if entry == "ABSOLUTE" else entry
    _set_files(rec, {"part-00000.tfrecord": 4, name: 4})
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match="file entry"):
        CascadeRecordWriter(rec, schema, overwrite=True)
    assert victim.read_text() == "precious"
    assert _tree(tmp_path) == before  # nothing at all was deleted, not even listed records


def test_writer_overwrite_deletes_only_the_files_its_manifest_lists(tmp_path):
    schema = make_schema()
    rec = tmp_path / "rec"
    write_tfrecords(make_arrays(8), schema, rec, num_shards=2)
    (rec / "notes.txt").write_text("mine")
    (rec / "unlisted.tfrecord").write_bytes(b"not listed")
    (rec / "sub").mkdir()
    (rec / "sub" / "x.tfrecord").write_bytes(b"nested")
    arrays = make_arrays(6, seed=3)
    with CascadeRecordWriter(rec, schema, overwrite=True) as w:
        w.write(arrays, shard="day-1")
    assert sorted(os.listdir(rec)) == ["day-1.tfrecord", "notes.txt", "schema.json", "sub",
                                       "unlisted.tfrecord"]
    assert (rec / "notes.txt").read_text() == "mine"
    assert (rec / "unlisted.tfrecord").read_bytes() == b"not listed"
    back = dataset_to_arrays(read_tfrecords(rec, 4, drop_remainder=False))
    assert_same(back, {k: np.asarray(v).astype(back[k].dtype) for k, v in arrays.items()})


def test_writer_never_truncates_a_file_it_did_not_write(tmp_path):
    schema = make_schema()
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "part-00000.tfrecord").write_bytes(b"someone's data")  # no schema.json: not ours
    with pytest.raises(FileExistsError, match="not written by this writer"):
        write_tfrecords(make_arrays(4), schema, rec)
    assert (rec / "part-00000.tfrecord").read_bytes() == b"someone's data"
    # A listed file of a replaced manifest may be rewritten (it was deleted first).
    write_tfrecords(make_arrays(4), schema, tmp_path / "ok")
    write_tfrecords(make_arrays(5, seed=2), schema, tmp_path / "ok", overwrite=True)
    assert len(dataset_to_arrays(read_tfrecords(tmp_path / "ok", 5))["label"]) == 5


def test_writing_zero_requests_is_a_no_op(tmp_path):
    schema = make_schema()
    empty = {k: v[:0] for k, v in make_arrays(3).items()}
    arrays = make_arrays(3)
    with CascadeRecordWriter(tmp_path / "rec", schema) as w:
        assert w.write(empty, shard="empty-day") == 0
        assert w.write(arrays, shard="day") == 3
        assert w.write(empty, shard="day") == 0
    manifest = json.loads((tmp_path / "rec" / "schema.json").read_text())
    assert manifest["files"] == {"day.tfrecord": 3}
    assert sorted(os.listdir(tmp_path / "rec")) == ["day.tfrecord", "schema.json"]
    # More shards than requests: the empty shards are not written, the rest reads back.
    paths = write_tfrecords(arrays, schema, tmp_path / "sharded", num_shards=5)
    assert [p.name for p in paths] == sorted(os.listdir(tmp_path / "sharded"))[:-1]
    assert len(paths) == 3 and all(p.is_file() for p in paths)
    back = dataset_to_arrays(read_tfrecords(tmp_path / "sharded", 3, drop_remainder=False))
    assert sorted(back["user_id"].tolist()) == sorted(arrays["user_id"].tolist())
    # Still validated: 0 requests with the wrong trailing shape is an error.
    bad = dict(empty, item_id=np.zeros((0, 2), np.int64))
    with CascadeRecordWriter(tmp_path / "bad", schema) as w, pytest.raises(ValueError):
        w.write(bad)


def test_bad_record_counts_and_shard_names_are_refused(tmp_path):
    schema = make_schema()
    rec = tmp_path / "rec"
    write_tfrecords(make_arrays(4), schema, rec)
    _set_files(rec, {"part-00000.tfrecord": -1})
    with pytest.raises(ValueError, match="negative record count"):
        read_tfrecords(rec, 2)
    with CascadeRecordWriter(tmp_path / "w", schema) as w:
        for shard in ("../up", "a/b", "", ".hidden", "/abs"):
            with pytest.raises(ValueError, match="plain file stem"):
                w.write(make_arrays(2), shard=shard)
    assert os.listdir(tmp_path / "w") == ["schema.json"]
