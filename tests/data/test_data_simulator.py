"""The RecFlow-shaped simulator: determinism, shapes, labels, stage groups, known truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lcron_tf.data import (
    THREE_STAGE_GROUPS,
    TWO_STAGE_GROUPS,
    SimulatorConfig,
    simulate,
    validate_arrays,
)
from lcron_tf.data.simulator import ITEM_FEATURES, STREAM_REQUEST_MINUTE, STREAM_UPLOAD_TIME

# Fields of the first 3 requests of SMALL (seed 0) as the simulator made them before the
# request minute, upload times and history features existed (values recorded from that code).
OLD_USER_FEATURES = [[1, 3, 4, 4, 1, 5], [2, 7, 4, 4, 17, 1], [2, 1, 1, 4, 7, 5]]

# Small world so the tests take well under a second each.
SMALL = SimulatorConfig(
    num_requests=300, num_users=100, num_items=600, history_length=8, user_log_length=24,
    retrieval_size=120, prerank_keep=60, coarse_keep=40, rank_keep=20, rerank_keep=10,
)


def test_deterministic_by_seed_and_prefix_stable():
    s1, a1 = simulate(SMALL)
    s2, a2 = simulate(SMALL)
    assert s1 == s2
    for k in a1:
        np.testing.assert_array_equal(a1[k], a2[k], err_msg=k)
    _, b = simulate(SMALL, seed=1)
    assert not np.array_equal(a1["item_id"], b["item_id"])
    # The first k requests do not depend on how many are generated (chunked streams).
    _, longer = simulate(SMALL, num_requests=1100)
    for k in a1:
        np.testing.assert_array_equal(a1[k], longer[k][:300], err_msg=k)


@pytest.mark.parametrize("num_stages", [2, 3])
def test_shapes_dtypes_and_schema(num_stages):
    schema, arrays, truth = simulate(SMALL, num_stages=num_stages, return_truth=True)
    n = 40 if num_stages == 2 else 50
    assert schema.list_size == n and schema.history_length == 8
    assert schema.stage_groups == (TWO_STAGE_GROUPS if num_stages == 2 else THREE_STAGE_GROUPS)
    assert schema.quotas == ((30, 20) if num_stages == 2 else (40, 30, 20))
    assert schema.gt_num == 10
    validate_arrays(arrays, schema)
    r = 300
    assert arrays["item_id"].shape == (r, n) and arrays["item_id"].dtype == np.int64
    assert arrays["item_features"].shape == (r, n, 8)
    assert arrays["user_features"].shape == (r, 7)
    assert arrays["history_features"].shape == (r, 8, 4)
    assert schema.feature_keys[-1] == "history_features"
    assert arrays["label"].dtype == np.float32 and arrays["stage_group"].dtype == np.int32
    assert truth["utility"].shape == (r, n) and truth["stage_scores"].shape == (r, n, 5)
    assert truth["exposed"].shape == (r, n)
    # Groups in order, 10 each; no duplicate candidates within a request.
    np.testing.assert_array_equal(arrays["stage_group"][0], np.repeat(np.arange(n // 10), 10))
    assert all(len(set(row)) == n for row in arrays["item_id"])
    # History items are never candidates (no re-recommendation).
    for hist, items in zip(arrays["history"], arrays["item_id"]):
        assert not set(hist[hist > 0]) & set(items)


def test_labels_follow_the_official_code():
    _, a2 = simulate(SMALL)
    lab = a2["label"]
    pos = lab[:, :10]
    assert ((pos >= 10) & (pos <= 29)).all()  # 30 - rank_index (1..10, or 1..20 "random")
    assert all(len(set(row)) == 10 for row in pos)  # distinct rank_index
    np.testing.assert_array_equal(lab[:, 10:], np.repeat([[7.0] * 10 + [6.0] * 10 + [5.0] * 10],
                                                         300, 0))
    _, a3 = simulate(SMALL, num_stages=3)
    lab = a3["label"]
    np.testing.assert_array_equal(np.sort(lab[:, :10], 1), np.tile(np.arange(20, 30), (300, 1)))
    np.testing.assert_array_equal(lab[:, 10:], np.repeat(
        [[8.0] * 10 + [7.0] * 10 + [6.0] * 10 + [5.0] * 10], 300, 0))


def test_logged_cascade_is_consistent_and_biased():
    _, a, truth = simulate(SMALL, num_requests=1000, return_truth=True)
    ss = truth["stage_scores"].reshape(1000, 4, 10, 5).mean(axis=(0, 2))  # [group, stage]
    # Each stage separates what it kept from what it cut.
    assert ss[0, 3] > ss[1, 3]  # rank: rank_pos over rank_neg
    assert ss[1, 2] > ss[2, 2]  # coarse: rank_neg over coarse_neg
    assert ss[2, 1] > ss[3, 1]  # pre-rank: coarse_neg over prerank_neg
    # The true utility is ordered by stage reached, but not perfectly (imperfect stages).
    u = truth["utility"].reshape(1000, 4, 10).mean(axis=(0, 2))
    assert u[0] > u[1] > u[2] > u[3]
    pos_u, neg_u = truth["utility"][:, :10], truth["utility"][:, 10:20]
    assert 0.05 < (neg_u.max(1) > pos_u.min(1)).mean()
    # Only positives can be exposed; the rank stage's own top is not fully recoverable.
    assert truth["exposed"][:, 10:].sum() == 0 and truth["exposed"][:, :10].any()


def test_positives_top_are_the_top_of_their_stage_in_random_order():
    """positives="top": rank_pos / rerank_pos = the top 10 of the stage."""
    _, a, truth = simulate(SMALL, num_requests=500, positives="top", return_truth=True)
    pos_label = a["label"][:, :10]
    # rank_index = 30 - label is exactly 1..10 in every request: the rank stage's top 10.
    np.testing.assert_array_equal(np.sort(pos_label, 1), np.tile(np.arange(20.0, 30.0), (500, 1)))
    # rank_index is the rank stage's own order: the best label has the best logged rank score.
    rank_score = truth["stage_scores"][:, :10, 3]
    np.testing.assert_array_equal(np.argsort(-pos_label, 1), np.argsort(-rank_score, 1))
    # ... and every positive beats every rank_neg on the rank stage's score.
    assert (rank_score.min(1) > truth["stage_scores"][:, 10:20, 3].max(1)).all()
    # The group is laid out in random order, not in rank order.
    assert (np.diff(pos_label, axis=1) < 0).all(1).mean() < 0.01
    # 3-stage: the rerank's top 10 out of a longer rerank output (15 kept here).
    cfg = dataclasses.replace(SMALL, num_stages=3, coarse_keep=50, rank_keep=30, rerank_keep=15,
                              positives="top")
    _, a3 = simulate(cfg)
    np.testing.assert_array_equal(np.sort(a3["label"][:, :10], 1),
                                  np.tile(np.arange(20.0, 30.0), (300, 1)))


@pytest.mark.parametrize("num_stages", [2, 3])
def test_positives_random_default_changes_only_the_positive_group(num_stages):
    cfg = dataclasses.replace(SMALL, num_stages=num_stages, coarse_keep=50, rank_keep=30,
                              rerank_keep=15)
    _, top = simulate(cfg, positives="top")
    _, rnd = simulate(cfg)  # the default
    # A random 10 of everything the stage kept: rank_index beyond 10 occurs.
    kept = 30 if num_stages == 2 else 15
    rnd_index = 30 - rnd["label"][:, :10]
    assert rnd_index.min() >= 1 and rnd_index.max() <= kept and (rnd_index > 10).any()
    assert all(len(set(row)) == 10 for row in rnd_index)
    # The negative groups are the same draws in both modes (only the positives differ).
    for k in ("item_id", "item_features", "label"):
        np.testing.assert_array_equal(top[k][:, 10:], rnd[k][:, 10:], err_msg=k)
    for k in ("user_id", "user_features", "history", "stage_group", "mask"):
        np.testing.assert_array_equal(top[k], rnd[k], err_msg=k)
    # The random sample's members from the stage's top 10 are among the top positives.
    for t_items, r_items, r_index in zip(top["item_id"][:, :10], rnd["item_id"][:, :10],
                                         rnd_index):
        assert set(r_items[r_index <= 10]) <= set(t_items)
    assert not np.array_equal(top["item_id"][:, :10], rnd["item_id"][:, :10])


def test_config_validation():
    with pytest.raises(ValueError, match="positives"):
        SimulatorConfig(positives="bottom")
    with pytest.raises(ValueError, match="num_stages"):
        SimulatorConfig(num_stages=4)
    with pytest.raises(ValueError, match="rank_neg pool"):
        dataclasses.replace(SMALL, coarse_keep=25)
    with pytest.raises(ValueError, match="retrieval_size"):
        dataclasses.replace(SMALL, retrieval_size=600)


def test_history_features_are_the_history_items_fields():
    """``history_features`` = the item fields of each history item (as RecFlow's sequence)."""
    schema, a = simulate(SMALL)
    assert schema.history_feature_names == (
        "author_id", "category_level_two", "category_level_one", "upload_type")
    cols = schema.history_feature_columns
    # An item's fields are static: wherever an item is a candidate, its fields there equal
    # its fields wherever it is in a history.
    fields = {}
    for ids, feats in zip(a["item_id"].reshape(-1), a["item_features"].reshape(-1, 8)):
        fields[int(ids)] = feats[list(cols)]
    seen = 0
    for ids, feats in zip(a["history"].reshape(-1), a["history_features"].reshape(-1, 4)):
        if ids == 0:
            assert (feats == 0).all()
        elif int(ids) in fields:
            np.testing.assert_array_equal(feats, fields[int(ids)])
            seen += 1
    assert seen > 100


def test_new_fields_leave_the_old_fields_unchanged(monkeypatch):
    """The request minute and upload times come from their own random streams: the fields
    that existed before them are unchanged. The user fields are integer draws, pinned at
    seed 0 on any machine. The item ids go through float32 BLAS scores, whose last bits (and
    so near-tie orders) differ between CPU kernels (AVX2 vs AVX-512), so they are checked on
    the machine itself: reseeding only the new fields' streams must change the new fields and
    nothing else."""
    _, a = simulate(SMALL, num_requests=3)
    np.testing.assert_array_equal(a["user_features"][:, :6], OLD_USER_FEATURES)
    real_rng = np.random.default_rng

    def other_time_streams(seed=None):  # reseed only the new fields' streams
        if isinstance(seed, list) and len(seed) >= 2 and \
                seed[1] in (STREAM_UPLOAD_TIME, STREAM_REQUEST_MINUTE):
            seed = [seed[0] + 1000, *seed[1:]]
        return real_rng(seed)

    monkeypatch.setattr(np.random, "default_rng", other_time_streams)
    _, b = simulate(SMALL, num_requests=3)
    new_item_cols = [ITEM_FEATURES.index(n)
                     for n in ("upload_wday", "upload_hour", "upload_minute")]
    old_item_cols = [i for i in range(len(ITEM_FEATURES)) if i not in new_item_cols]
    assert not np.array_equal(a["item_features"][..., new_item_cols],
                              b["item_features"][..., new_item_cols])
    assert not np.array_equal(a["user_features"][:, 6], b["user_features"][:, 6])
    np.testing.assert_array_equal(a["user_features"][:, :6], b["user_features"][:, :6])
    np.testing.assert_array_equal(a["item_features"][..., old_item_cols],
                                  b["item_features"][..., old_item_cols])
    for name in a:
        if name not in ("user_features", "item_features"):
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
