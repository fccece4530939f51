"""build_candidates: cascade requests from an interaction log with the user's own features."""

from __future__ import annotations

import numpy as np
import pytest

from lcron_tf._keras import tf
from lcron_tf.data import CANDIDATE_TYPES, build_candidates

POS, IMP, HARD, POP, UNI = (CANDIDATE_TYPES.index(n) for n in
                            ("positive", "impression", "hard", "popular", "uniform"))


def log(num_users=30, num_items=80, per_user=25, seed=0):
    """String user/item ids, an int genre per item, ratings 1..5 and timestamps."""
    rng = np.random.default_rng(seed)
    u, i, r, t = [], [], [], []
    pop = rng.zipf(1.5, num_items).astype(float)
    for user in range(num_users):
        items = rng.choice(num_items, per_user, replace=False, p=pop / pop.sum())
        u += [user] * per_user
        i += list(items)
        r += list(rng.integers(1, 6, per_user))
        t += list(rng.integers(0, 10_000, per_user))
    i = np.asarray(i)
    return {
        "user_id": np.array([f"u{x}" for x in u], dtype=object),
        "item": np.array([f"item {x}" for x in i], dtype=object),
        "genre": (i % 7).astype(np.int64),
        "rating": np.asarray(r, np.float32),
        "ts": np.asarray(t, np.int64),
    }


KW = {"item_key": "item", "relevance_key": "rating", "timestamp_key": "ts",
      "item_features": ("genre",), "positives_per_request": 5, "popular_negatives": 5,
      "uniform_negatives": 10}


def _valid_items(arrays, b):
    m = arrays["mask"][b] > 0
    return arrays["item"][b][m]


def test_positives_are_the_query_interactions_and_no_candidate_repeats():
    data = log()
    lists = build_candidates(data, **KW)
    pairs = set(zip(data["user_id"], data["item"]))
    tr = lists.rows["train"]
    known = {"train": set(zip(data["user_id"][tr], data["item"][tr])), "test": pairs}
    for split in ("train", "test"):
        a = lists.split(split)
        assert a["item"].shape == (len(a["user_id"]), 20) and a["label"].dtype == np.float32
        for b in range(len(a["user_id"])):
            items = _valid_items(a, b)
            assert len(set(items)) == len(items), (split, b)  # no duplicate candidate
            types = a["candidate_type"][b]
            pos = a["item"][b][types == POS]
            assert len(pos) >= 1
            assert all((a["user_id"][b], x) in pairs for x in pos)  # positives = interactions
            neg = a["item"][b][(types == POP) | (types == UNI)]
            # never a known interaction (training requests know the training rows only)
            assert not any((a["user_id"][b], x) in known[split] for x in neg)
            # item features travel with every candidate
            assert all(int(x.split()[1]) % 7 == g for x, g in
                       zip(a["item"][b][types > 0], a["genre"][b][types > 0]))
    # every positive row of a kept request is used exactly once
    train = lists.train
    used = [(u, x) for b, u in enumerate(train["user_id"])
            for x in train["item"][b][train["candidate_type"][b] == POS]]
    assert len(used) == len(set(used))


def test_deterministic_by_seed_and_input_type():
    data = log()
    a = build_candidates(data, **KW, seed=3)
    b = build_candidates({k: v.copy() for k, v in data.items()}, **KW, seed=3)
    c = build_candidates(data, **KW, seed=4)
    for key in a.train:
        np.testing.assert_array_equal(a.train[key], b.train[key])
    assert not np.array_equal(a.train["item"], c.train["item"])
    np.testing.assert_array_equal(a.train["label"][:, :5], c.train["label"][:, :5])
    # the same log as a tf.data.Dataset (bytes strings) gives the same requests
    ds = tf.data.Dataset.from_tensor_slices({k: v.astype(str) if v.dtype == object else v
                                             for k, v in data.items()})
    d = build_candidates(ds, **KW, seed=3)
    np.testing.assert_array_equal(d.train["label"], a.train["label"])
    np.testing.assert_array_equal(d.train["item"].astype(str), a.train["item"].astype(str))
    pd = pytest.importorskip("pandas")
    e = build_candidates(pd.DataFrame(data), **KW, seed=3)
    np.testing.assert_array_equal(e.train["item"], a.train["item"])


def test_time_split_has_no_leakage():
    data = log()
    lists = build_candidates(data, **KW, test_fraction=0.3)
    cutoff = np.quantile(data["ts"], 0.7)
    assert (data["ts"][lists.rows["train"]] < cutoff).all()
    assert (data["ts"][lists.rows["test"]] >= cutoff).all()
    assert (lists.train["request_time"] < cutoff).all()
    assert (lists.test["request_time"] >= cutoff).all()
    # Training requests depend on training rows only: change every test row.
    changed = {k: v.copy() for k, v in data.items()}
    test = lists.rows["test"]
    changed["item"][test] = np.array([f"new item {j}" for j in range(len(test))], dtype=object)
    changed["rating"][test] = 5.0
    other = build_candidates(changed, **KW, test_fraction=0.3)
    for key in lists.train:
        np.testing.assert_array_equal(lists.train[key], other.train[key], err_msg=key)
    # Test negatives exclude every item the user has in either split.
    pairs = set(zip(data["user_id"], data["item"]))
    a = lists.test
    for b in range(len(a["user_id"])):
        neg = a["item"][b][a["candidate_type"][b] >= POP]
        assert not any((a["user_id"][b], x) in pairs for x in neg)


def test_user_split_keeps_users_apart():
    lists = build_candidates(log(), **{**KW, "timestamp_key": None}, split="user")
    tr, te = set(lists.train["user_id"]), set(lists.test["user_id"])
    assert tr and te and not tr & te
    assert "request_time" not in lists.train


def test_labels_grade_the_relevance_and_order_the_candidate_kinds():
    data = log()
    lists = build_candidates(data, **KW, positive_threshold=3.0, impressions_per_request=3)
    a = lists.train
    t, lab, rel = a["candidate_type"], a["label"], a["relevance"]
    assert (t[:, lists.slots["impression"]] != POS).all()
    np.testing.assert_array_equal(lab[t == POS], 3.0 + (rel[t == POS] - 2.0))  # 3..5 -> 1..3
    assert (rel[t == POS] >= 3).all() and (rel[t == IMP] < 3).all() and (t == IMP).any()
    assert (lab[t == IMP] == 3.0).all()
    assert (lab[(t == POP) | (t == UNI)] == 1.0).all()
    assert (lab[t == 0] == 0.0).all() and (a["mask"][t == 0] == 0).all()
    binary = build_candidates(data, **KW, grades="binary").train
    assert set(binary["label"][binary["candidate_type"] == POS]) == {4.0}
    bins = build_candidates(data, **KW, grades=2).train
    assert set(bins["label"][bins["candidate_type"] == POS]) <= {4.0, 5.0}


def test_popularity_sampling_prefers_popular_items():
    data = log(num_users=60)
    pop = build_candidates(data, **{**KW, "popular_negatives": 10, "uniform_negatives": 0})
    uni = build_candidates(data, **{**KW, "popular_negatives": 0, "uniform_negatives": 10})
    counts = {}
    for x in data["item"][pop.rows["train"]]:
        counts[x] = counts.get(x, 0) + 1

    def mean_count(lists, kind):
        a = lists.train
        return np.mean([counts.get(x, 0) for x in a["item"][a["candidate_type"] == kind]])

    # Same exclusions (the user's own items), so only the sampling weight differs.
    assert mean_count(pop, POP) > 1.5 * mean_count(uni, UNI)


def test_hard_negatives_come_from_the_retrieval_model_in_order():
    data = log()
    ranked = np.array([f"item {x}" for x in range(80)], dtype=object)  # "item 0" is best

    def retrieval(queries):  # like a TFRS BruteForce index: (scores, tf.string ids)
        ids = np.tile(ranked[:30], (len(queries["user_id"]), 1)).astype(str)
        return tf.zeros(ids.shape), tf.constant(ids)

    lists = build_candidates(data, **KW, hard_negatives=4, retrieval=retrieval)
    a = lists.train
    for b in range(len(a["user_id"])):
        hard = a["item"][b][lists.slots["hard"]]
        # items of the user's test period are not known at training time: only train rows
        train_pairs = set(zip(data["user_id"][lists.rows["train"]],
                              data["item"][lists.rows["train"]]))
        want = [x for x in ranked[:30] if (a["user_id"][b], x) not in train_pairs][:4]
        assert list(hard) == want
        assert (a["label"][b][lists.slots["hard"]] == 2.0).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"item_key": "title"}, "no column.*title"),
        ({"split": "time", "timestamp_key": None}, "timestamp_key"),
        ({"hard_negatives": 2}, "retrieval"),
        ({"min_positives": 9}, "min_positives"),
        ({"split": "weekly"}, "split"),
        ({"grades": "fancy"}, "grades"),
        ({"query_features": ("label",)}, "reserved"),
        ({"test_fraction": 1.5}, "test_fraction"),
    ],
)
def test_bad_input_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_candidates(log(), **{**KW, **kwargs})


def test_bad_columns_are_named():
    data = log()
    bad = {**data, "rating": np.array(["good"] * len(data["rating"]), dtype=object)}
    with pytest.raises(ValueError, match="'rating' must be numeric"):
        build_candidates(bad, **KW)
    nan = {**data, "rating": data["rating"].copy()}
    nan["rating"][7] = np.nan
    with pytest.raises(ValueError, match="'rating' has a non-finite value .* row 7"):
        build_candidates(nan, **KW)
    short = {**data, "ts": data["ts"][:-1]}
    with pytest.raises(ValueError, match="different lengths"):
        build_candidates(short, **KW)
    with pytest.raises(ValueError, match="tf.data.Dataset of dicts"):
        build_candidates([1, 2, 3], **KW)
