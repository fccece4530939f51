"""RecFlow reader on a tiny fixture in the released layout, written by the test itself.

Expected values are computed by hand from the official code (kwai/LCRON dataset2/3.py):
first 10 of each stage list, labels 30 - rank_index / 7 / 6 / 5 (3-stage: 30 -
rerank_index / 8 / 7 / 6 / 5), padded positive slots labelled 30, ids + 1.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from data_recflow_fixture import DAY1, DAY2, ID_CNT, RANK_INDEX_101, write_fixture

from lcron_tf.data import (
    BuildReport,
    build_recflow_day,
    convert_recflow,
    dataset_to_arrays,
    read_tfrecords,
    recflow_schema,
    validate_arrays,
)


@pytest.fixture
def recflow(tmp_path):
    return write_fixture(tmp_path / "recflow")


def test_two_stage_samples_match_the_official_code(recflow):
    schema, a = build_recflow_day(recflow, DAY1)
    assert schema == recflow_schema(ID_CNT, 2)
    assert schema.list_size == 40 and schema.history_length == 50
    assert schema.item_vocab == 5002 and schema.user_vocab == 12
    validate_arrays(a, schema)
    assert a["user_id"].tolist() == [4, 6]  # request order of the feather file
    lab = a["label"][0]
    np.testing.assert_array_equal(lab[:10], [30 - RANK_INDEX_101[1000 + j] for j in range(10)])
    np.testing.assert_array_equal(lab[10:], [7] * 10 + [6] * 10 + [5] * 10)
    np.testing.assert_array_equal(a["mask"][0], [1] * 23 + [0] * 17)
    np.testing.assert_array_equal(a["item_id"][0, :10], np.arange(1000, 1010) + 1)
    np.testing.assert_array_equal(a["item_id"][0, 20:23], [3001, 3002, 3003])
    assert (a["item_id"][0, 23:] == 0).all() and (a["item_features"][0, 23:] == 0).all()
    np.testing.assert_array_equal(a["stage_group"][0], [0] * 10 + [1] * 10 + [2] * 3 + [-1] * 17)
    # Request 102: 4 rank_pos, 6 padded slots labelled 30 as the official code.
    np.testing.assert_array_equal(a["label"][1, :10], [27, 29, 28, 26] + [30] * 6)
    np.testing.assert_array_equal(a["mask"][1, :10], [1] * 4 + [0] * 6)
    np.testing.assert_array_equal(a["item_id"][1, 30:40], np.arange(4100, 4110) + 1)
    # user_features: wday, hour, minute (Beijing) + 1, device, gender, age, province + 1.
    np.testing.assert_array_equal(a["user_features"][0], [6, 14, 8, 5, 2, 3, 8])
    np.testing.assert_array_equal(a["user_features"][1], [6, 14, 9, 7, 1, 4, 10])
    # item_features: author, cate2, cate1, upload_type, upload wday/hour/minute, all + 1.
    v = 1000
    np.testing.assert_array_equal(
        a["item_features"][0, 0], [v % 500 + 1, v % 784 + 1, v % 140 + 1, v % 40 + 1, 1, 9, 1]
    )
    # History: video ids + 1 where the sequence timestamp > 0, left-padded.
    np.testing.assert_array_equal(a["history"][0, -4:], [0, 501, 502, 503])
    assert (a["history"][0, :-3] == 0).all() and (a["history"][1] == 0).all()
    # History items' fields (official seq_arr[:, 1:5]: author, cate2, cate1, upload_type),
    # all + 1 here (the official code keeps cate1 raw), 0 on padded positions.
    assert schema.history_feature_names == (
        "author_id", "category_level_two", "category_level_one", "upload_type")
    np.testing.assert_array_equal(
        a["history_features"][0, -3:], [[8, 71, 4, 2], [9, 81, 1, 3], [10, 91, 140, 1]])
    assert (a["history_features"][0, :-3] == 0).all() and (a["history_features"][1] == 0).all()


def test_three_stage_samples(recflow):
    schema, a = build_recflow_day(recflow, DAY1, num_stages=3)
    assert schema.list_size == 50 and schema.quotas == (40, 30, 20)
    assert schema.stage_groups[0] == "rerank_pos"
    np.testing.assert_array_equal(a["label"][0, :10], [28, 29] + [30] * 8)
    np.testing.assert_array_equal(a["label"][0, 10:], [8] * 10 + [7] * 10 + [6] * 10 + [5] * 10)
    np.testing.assert_array_equal(a["item_id"][0, 10:20], np.arange(1002, 1012) + 1)
    np.testing.assert_array_equal(a["mask"][1, :20], [0] * 20)  # no rerank lists at all
    np.testing.assert_array_equal(a["mask"][1, 20:], [1] * 30)


def test_zero_padding_labels_option(recflow):
    _, a = build_recflow_day(recflow, DAY1, official_padding_labels=False)
    assert (a["label"][a["mask"] == 0] == 0).all()


def test_convert_writes_day_split_tfrecords(recflow, tmp_path):
    out = tmp_path / "out"
    result = convert_recflow(recflow, out, train_dates=[DAY1], test_dates=[DAY2])
    assert result["train"] == {DAY1: 2} and result["test"] == {DAY2: 1}
    assert result["skipped"] == 0
    _, day1 = build_recflow_day(recflow, DAY1)
    back = dataset_to_arrays(read_tfrecords(out / "train", 2, schema=recflow_schema(ID_CNT)))
    for k in day1:
        np.testing.assert_array_equal(back[k], day1[k].astype(back[k].dtype), err_msg=k)
    test = dataset_to_arrays(read_tfrecords(out / "test", 1))
    assert test["user_id"].tolist() == [4]
    np.testing.assert_array_equal(test["history"][0], np.arange(50) + 1)


def test_bad_input_names_file_and_request(tmp_path):
    with pytest.raises(FileNotFoundError, match="RecFlow data directory"):
        build_recflow_day(tmp_path / "missing", DAY1)
    root = write_fixture(tmp_path / "r1", drop_request_dict_entry=102)
    with pytest.raises(ValueError, match=r"request_id_dict/2024-01-13.pkl.*request 1 "
                                         r"\(request_id 102\)"):
        build_recflow_day(root, DAY1)
    report = BuildReport()
    _, a = build_recflow_day(root, DAY1, skip_bad_records=True, report=report)
    assert report.skipped == 1 and a["user_id"].tolist() == [4]
    assert "request_id 102" in report.messages[0]
    (root / "seq_effective_50_dict" / f"{DAY1}.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="seq_effective_50_dict/2024-01-13.pkl"):
        build_recflow_day(root, DAY1)
    with pytest.raises(FileNotFoundError, match="all_stage/2024-01-20.feather"):
        build_recflow_day(root, "2024-01-20")


def test_missing_rank_index_and_bad_ids(tmp_path):
    root = write_fixture(tmp_path / "r")
    df = pd.read_feather(root / "all_stage" / f"{DAY1}.feather")
    df = df[~((df.request_id == 102) & (df.video_id == 1101))].reset_index(drop=True)
    df.to_feather(root / "all_stage" / f"{DAY1}.feather")
    with pytest.raises(ValueError, match=r"no rank_index for the rank_pos video 1101 of request 1"):
        build_recflow_day(root, DAY1)
    with open(root / "others" / "id_cnt.pkl", "wb") as f:
        pickle.dump(dict(ID_CNT, video_id=1050), f)  # too small for the fixture's ids
    with pytest.raises(ValueError, match=r"request 0: 'item_id' out of range"):
        build_recflow_day(root, DAY2)
