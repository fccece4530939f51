"""A reduced TFRS multitask tutorial set-up for the tests: the example's own model class
(examples/tfrs_multitask.py) on a small synthetic rating log with string features."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

import lcron_tf  # noqa: F401  (binds Keras 2 first)
from lcron_tf.data import build_candidates

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tfrs_multitask.py"


def example_module():
    """``examples/tfrs_multitask.py`` imported as a module (its ``MovielensModel``)."""
    name = "tfrs_multitask_example"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def synthetic_ratings(
    num_users: int = 80, num_items: int = 300, per_user: int = 60, seed: int = 0
) -> dict[str, np.ndarray]:
    """A rating log shaped like TFDS ``movielens/100k-ratings``: string ``user_id`` and
    ``movie_title``, float32 ``user_rating`` 1..5 (from latent tastes), int64 ``timestamp``."""
    rng = np.random.default_rng(seed)
    users, items = rng.normal(size=(num_users, 4)), rng.normal(size=(num_items, 4))
    popularity = rng.zipf(1.6, num_items).astype(float)
    rows_u, rows_i, rows_r = [], [], []
    for u in range(num_users):
        taste = users[u] @ items.T + 0.3 * np.log(popularity)
        p = np.exp(taste - taste.max())
        seen = rng.choice(num_items, per_user, replace=False, p=p / p.sum())
        rows_u += [u] * per_user
        rows_i += list(seen)
        rows_r += list(np.clip(np.round(3 + taste[seen] / 2), 1, 5))
    order = rng.permutation(len(rows_u))
    return {
        "user_id": np.array([f"user_{u}" for u in rows_u], dtype=object)[order],
        "movie_title": np.array([f"Title {i} ({1950 + i % 50})" for i in rows_i],
                                dtype=object)[order],
        "user_rating": np.asarray(rows_r, np.float32)[order],
        "timestamp": (1_000_000 + rng.permutation(len(rows_u)) * 60).astype(np.int64),
    }


def tutorial_data(seed: int = 0) -> dict:
    """The example's ``load_data`` result, on the synthetic log."""
    ex = example_module()
    ratings = synthetic_ratings(seed=seed)
    lists = build_candidates(
        ratings, query_key="user_id", item_key="movie_title", relevance_key="user_rating",
        timestamp_key="timestamp", split="time", test_fraction=0.2,
        positives_per_request=ex.GT, min_positives=ex.GT, popular_negatives=20,
        uniform_negatives=20, seed=seed,
    )
    return {"ratings": ratings, "lists": lists,
            "unique_user_ids": np.unique(ratings["user_id"]).astype(str),
            "unique_movie_titles": np.unique(ratings["movie_title"]).astype(str)}
