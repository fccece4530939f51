"""MovieLens-100K / MSLR builders (skipped when the data directory is absent) and paths."""

from __future__ import annotations

import numpy as np
import pytest

from lcron_tf.data import (
    DATA_DIR_ENV,
    BuildReport,
    MovieLensConfig,
    build_movielens,
    build_mslr,
    find_data_dir,
    resolve_data_dir,
    validate_arrays,
)


def data_dir_or_skip(subdir: str):
    path = find_data_dir(None, subdir)
    if path is None:
        pytest.skip(f"{subdir}/ not found: set {DATA_DIR_ENV} or put it in ../shared/data")
    return path.parent


def test_resolve_data_dir_order_and_errors(tmp_path, monkeypatch):
    (tmp_path / "a" / "movielens_100k").mkdir(parents=True)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "a"))
    assert resolve_data_dir() == tmp_path / "a"
    assert resolve_data_dir(subdir="movielens_100k") == tmp_path / "a" / "movielens_100k"
    assert resolve_data_dir(tmp_path) == tmp_path  # explicit argument wins
    with pytest.raises(FileNotFoundError, match=rf"mslr_web10k_sample.*{DATA_DIR_ENV}"):
        resolve_data_dir(subdir="mslr_web10k_sample")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=r"nope.*from \$LCRON_DATA_DIR"):
        resolve_data_dir()
    assert find_data_dir() is None
    with pytest.raises(FileNotFoundError, match="u.data"):
        build_movielens(tmp_path / "a")


def test_movielens_builder():
    root = data_dir_or_skip("movielens_100k")
    config = MovieLensConfig(request_stride=20)
    schema, train = build_movielens(root, "train", config)
    _, test = build_movielens(root, "test", config)
    assert schema.list_size == 40 and schema.item_vocab == 1683 and schema.user_vocab == 944
    for arrays in (train, test):
        validate_arrays(arrays, schema)
        assert (arrays["mask"][:, 10:] == 1).all()  # negatives always full
        assert (arrays["mask"][:, 0] == 1).all()  # at least one ground-truth item
        pos = arrays["label"][:, :10]
        np.testing.assert_array_equal(pos[arrays["mask"][:, :10] > 0],
                                      np.broadcast_to(np.arange(29, 19, -1), pos.shape)[
                                          arrays["mask"][:, :10] > 0])
        for hist, items in zip(arrays["history"][:200], arrays["item_id"][:200]):
            assert not set(hist[hist > 0]) & set(items[items > 0])  # unseen candidates only
            assert len(set(items[items > 0])) == int((items > 0).sum())
    assert len(train["user_id"]) > 5 * len(test["user_id"]) > 0
    # Deterministic.
    _, again = build_movielens(root, "test", config)
    for k in test:
        np.testing.assert_array_equal(test[k], again[k])


def test_mslr_builder():
    root = data_dir_or_skip("mslr_web10k_sample")
    report = BuildReport()
    schema, train = build_mslr(root, "train", report=report)
    _, test = build_mslr(root, "test")
    assert report.dropped == 1  # the truncated last query
    assert schema.stage_groups == ("grade_4", "grade_3", "grade_2", "grade_1", "grade_0")
    for arrays in (train, test):
        validate_arrays(arrays, schema)
        assert len(arrays["user_id"]) == 42
        lab, mask = arrays["label"], arrays["mask"]
        assert set(np.unique(lab[mask > 0])) <= {0, 1, 2, 3, 4}
        np.testing.assert_array_equal(arrays["stage_group"][mask > 0], 4 - lab[mask > 0])
    assert (train["mask"].sum(1) < 40).any()  # short queries are padded
    # First train query (qid 1) has > 40 documents: its top-10 by grade are all kept.
    assert train["user_id"][0] == 1
