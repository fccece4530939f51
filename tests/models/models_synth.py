"""A tiny learnable cascade task for the model tests (independent of lcron_tf.data).

Users and items have latent vectors; relevance = <u, v> + noise. The categorical
features are the bucketised latent coordinates, so towers can learn the relevance from
features; the history holds items the user likes, so DIN's attention has signal.
Labels follow RecFlow: the top ``gt_num`` candidates get ``30 - rank`` (29, 28, ...), the
rest get 7 / 6 / 5 by relevance tier. Some requests have their last slots padded.
"""

from __future__ import annotations

import numpy as np

from lcron_tf.schema import CascadeSchema


def make_schema(
    list_size: int = 20,
    history_length: int = 6,
    gt_num: int = 4,
    quotas: tuple[int, ...] = (12, 8),
    num_users: int = 64,
    num_items: int = 256,
    latent_dim: int = 3,
    num_buckets: int = 4,
) -> CascadeSchema:
    return CascadeSchema(
        list_size=list_size,
        history_length=history_length,
        user_vocab=num_users,
        item_vocab=num_items,
        user_feature_vocabs=(num_buckets + 1,) * latent_dim,
        item_feature_vocabs=(num_buckets + 1,) * latent_dim,
        stage_groups=("pos", "neg1", "neg2", "neg3"),
        gt_num=gt_num,
        quotas=quotas,
        name="synthetic",
    )


def make_batch(
    schema: CascadeSchema, num_requests: int, *, seed: int = 0, pad_fraction: float = 0.25
) -> dict[str, np.ndarray]:
    """``num_requests`` requests in the canonical batch format (numpy)."""
    world = np.random.default_rng(1234)  # the same users/items for every seed
    d = len(schema.user_feature_vocabs)
    buckets = schema.user_feature_vocabs[0] - 1
    users = world.normal(size=(schema.user_vocab, d))
    items = world.normal(size=(schema.item_vocab, d))
    edges = np.quantile(world.normal(size=10000), np.linspace(0, 1, buckets + 1)[1:-1])
    user_feats = 1 + np.digitize(users, edges)
    item_feats = 1 + np.digitize(items, edges)
    rng = np.random.default_rng(seed)
    n, h, g = schema.list_size, schema.history_length, schema.gt_num
    out = {k: [] for k in ("user_id", "user_features", "history", "item_id", "item_features",
                           "label", "mask", "stage_group")}
    for _ in range(num_requests):
        u = int(rng.integers(1, schema.user_vocab))
        cand = rng.choice(np.arange(1, schema.item_vocab), size=n, replace=False)
        rel = items[cand] @ users[u] + 0.3 * rng.normal(size=n)
        order = np.argsort(-rel, kind="stable")
        label = np.empty(n, np.float32)
        group = np.empty(n, np.int32)
        label[order[:g]] = 30 - np.arange(1, g + 1)
        group[order[:g]] = 0
        rest = np.array_split(order[g:], 3)
        for j, (part, val) in enumerate(zip(rest, (7.0, 6.0, 5.0))):
            label[part] = val
            group[part] = j + 1
        liked = np.argsort(-(items[1:] @ users[u]))[:40] + 1
        hist = rng.choice(liked, size=h, replace=False)
        n_hist = int(rng.integers(h // 2, h + 1))
        hist[: h - n_hist] = 0  # left padding
        mask = np.ones(n, np.float32)
        if rng.random() < pad_fraction:
            mask[n - int(rng.integers(1, n // 4 + 1)) :] = 0
        item_id = np.where(mask > 0, cand, 0)
        out["user_id"].append(u)
        out["user_features"].append(user_feats[u])
        out["history"].append(hist)
        out["item_id"].append(item_id)
        out["item_features"].append(item_feats[cand] * mask[:, None].astype(np.int64))
        out["label"].append(label * mask)
        out["mask"].append(mask)
        out["stage_group"].append(np.where(mask > 0, group, -1))
    dtypes = {"user_id": np.int64, "user_features": np.int64, "history": np.int64,
              "item_id": np.int64, "item_features": np.int64, "label": np.float32,
              "mask": np.float32, "stage_group": np.int32}
    return {k: np.asarray(v).astype(dtypes[k]) for k, v in out.items()}
