"""RecFlow-shaped cascade data with a known ground truth (numpy, deterministic by seed).

A synthetic world of users and items with latent preferences, and a *logged production
cascade* of imperfect stage models run over the whole item corpus for every request:

    retrieval (corpus -> R) -> pre-rank (R -> P) -> coarse rank (P -> C) -> rank (C -> K)
    -> rerank (K -> E) -> exposure (E -> X)

From the logs we cut the same stage groups and labels as RecFlow / the official LCRON code:

* 2-stage (``num_stages=2``, N = 40): 10 each of ``rank_pos`` (passed the rank stage;
  label ``30 - rank_index``, rank_index in 1..20, distinct), ``rank_neg`` (reached rank,
  cut there; label 7), ``coarse_neg`` (reached coarse rank, cut there; label 6),
  ``prerank_neg`` (retrieved, cut by pre-rank; label 5). quotas (30, 20).
* 3-stage (``num_stages=3``, N = 50): ``rerank_pos`` (passed rerank;
  ``30 - rerank_index``), ``rerank_neg`` (8), ``rank_neg`` (7), ``coarse_neg`` (6),
  ``prerank_neg`` (5). quotas (40, 30, 20).

Each negative group is a uniformly random sample of 10 of the items its stage cut; the
positive group is a uniformly random 10 of what its stage kept (rank_index 1..20, the range
of the LCRON paper's Table 1), or the stage's top 10 with ``positives="top"`` (analysis
only: ``benchmarks/fs_ranknet_analysis.py``). Every group is in random order.
gt_num = 10 (the positive group).

The true utility of item j for request r (each term standardised to unit scale)::

    U = w_long  * <u_user, v_j>                      long-term taste (ids, demographics)
      + w_short * smoothmax_h <v_h, v_j>             history x item (target attention)
      + w_topic * [cate1_j == session topic]         the session in progress (history tail)
      + w_ctx   * C[hour // 6, cate1_j]              context x category
      + w_demo  * D[age, cate1_j] + w_dev * E[device, upload_type_j]
      + w_pop   * popularity_j
      + noise   * eps_rj                             unobservable

The logged stage models see different parts of it (see ``docs/data.md`` for the table):
retrieval is a low-rank two-tower score with a strong popularity bias and no context;
pre-rank adds full-rank taste and demographics; coarse rank adds the mean-pooled history and
context; rank sees everything except ``eps`` (incl. the attention term and the session
topic) plus a business boost of some upload types; rerank adds a freshness boost. Every
stage adds its own noise. The labels are what the logged cascade did (as in RecFlow), so a
learned cascade must imitate a biased production system from selection-biased candidates;
the true utility is returned separately (``return_truth=True``) for analysis.

Everything is vectorised with numpy over chunks of requests; the world and each chunk get
their own seeded generator, so results depend only on the config (not on the chunk order),
and the first k requests of a run equal a run with ``num_requests=k``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np

from lcron_tf.schema import (
    THREE_STAGE_GROUPS,
    TWO_STAGE_GROUPS,
    CascadeSchema,
    split_requests,
)

logger = logging.getLogger(__name__)

_CHUNK = 1024  # requests per vectorised chunk (fixed: part of the random stream layout)
# The random streams, ``default_rng([seed, stream, ...])``: the world, the requests (per chunk),
# and the two fields added later, each from its own stream so the older fields stay as they were.
STREAM_WORLD, STREAM_REQUESTS, STREAM_UPLOAD_TIME, STREAM_REQUEST_MINUTE = 0, 1, 3, 4
STAGES = ("retrieval", "prerank", "coarse", "rank", "rerank")
POSITIVES = ("top", "random")  # SimulatorConfig.positives


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    """Sizes and mechanism of the simulated world and logged cascade.

    Attributes:
      num_requests: requests to generate.
      num_stages: 2 (N = 40, RecFlow 2-stage groups) or 3 (N = 50, 3-stage groups).
      num_users, num_items: corpus sizes (ids 1..num_users, 1..num_items; 0 = padding).
      history_length: H, history items per request (left-padded with 0).
      user_log_length: length of each user's behaviour log that histories are cut from.
      session_length: items per session in the log (one topic per session).
      latent_dim: dimension of the user/item latent vectors.
      num_cate1, cate2_per_cate1, num_authors, num_upload_types, num_freshness: item fields.
      num_genders, num_ages, num_provinces, num_devices: user fields.
      per_group: items per stage group (10 in RecFlow).
      positives: how the positive group (``rank_pos``; ``rerank_pos`` in 3-stage) is cut
        from the output of its stage. ``"random"`` (default): a uniformly random
        ``per_group`` of everything the stage kept, so rank_index spans 1..rank_keep (20),
        the range the LCRON paper's Table 1 gives for RecFlow's rank_pos labels.
        ``"top"``: the stage's top ``per_group`` items (rank_index 1..per_group; the
        "Top-10" reading of RecFlow's Figure 1); the items the stage kept below them are
        then in no group. The negative groups are uniformly random samples of what each
        stage cut in both modes, and the same draws: only the positive group differs.
      retrieval_size, prerank_keep, coarse_keep, rank_keep, rerank_keep, exposure_size:
        the logged production cascade's quotas (corpus -> R -> P -> C -> K -> E -> X).
      retrieval_rank: latent dims the retrieval two-tower uses (low capacity).
      w_long, w_short, w_topic, w_ctx, w_demo, w_dev, w_pop, noise: weights of the terms
        of the true utility (module docstring).
      stage_noise: noise std of the 5 logged stage models (retrieval .. rerank).
      popularity_bias: weight of popularity in the 5 logged stage models (the truth uses
        ``w_pop``); > ``w_pop`` early = the popularity bias of the logged cascade.
      business_boost: rank/rerank boost of upload types 0 and 1 (not in the truth).
      freshness_boost: rerank boost of the freshest items (not in the truth).
      seed: master seed.
    """

    num_requests: int = 10_000
    num_stages: int = 2
    num_users: int = 2_000
    num_items: int = 5_000
    history_length: int = 20
    user_log_length: int = 60
    session_length: int = 10
    latent_dim: int = 16
    num_cate1: int = 20
    cate2_per_cate1: int = 8
    num_authors: int = 500
    num_upload_types: int = 4
    num_freshness: int = 8
    num_genders: int = 2
    num_ages: int = 7
    num_provinces: int = 30
    num_devices: int = 5
    per_group: int = 10
    positives: str = "random"
    retrieval_size: int = 500
    prerank_keep: int = 200
    coarse_keep: int = 80
    rank_keep: int = 20
    rerank_keep: int = 10
    exposure_size: int = 6
    retrieval_rank: int = 4
    w_long: float = 1.0
    w_short: float = 1.0
    w_topic: float = 0.8
    w_ctx: float = 0.6
    w_demo: float = 0.5
    w_dev: float = 0.4
    w_pop: float = 0.3
    noise: float = 0.5
    stage_noise: tuple[float, float, float, float, float] = (1.0, 0.8, 0.6, 0.8, 0.3)
    popularity_bias: tuple[float, float, float, float, float] = (1.2, 0.9, 0.6, 0.3, 0.3)
    business_boost: float = 0.5
    freshness_boost: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_stages not in (2, 3):
            raise ValueError(f"`num_stages` must be 2 or 3. Received: num_stages={self.num_stages}")
        if self.positives not in POSITIVES:
            raise ValueError(
                f"`positives` must be one of {POSITIVES}. Received: positives={self.positives!r}"
            )
        for name in ("num_requests", "num_users", "num_items", "history_length", "latent_dim",
                     "user_log_length", "session_length", "per_group", "num_cate1",
                     "cate2_per_cate1", "num_authors", "num_upload_types", "num_freshness",
                     "num_genders", "num_ages", "num_provinces", "num_devices",
                     "retrieval_rank", "exposure_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be >= 1. Received: {name}={getattr(self, name)}")
        g = self.per_group
        pools = {
            "retrieval_size - prerank_keep (prerank_neg pool)": self.retrieval_size
            - self.prerank_keep,
            "prerank_keep - coarse_keep (coarse_neg pool)": self.prerank_keep - self.coarse_keep,
            "coarse_keep - rank_keep (rank_neg pool)": self.coarse_keep - self.rank_keep,
            "rank_keep (rank_pos pool)": self.rank_keep,
        }
        if self.num_stages == 3:
            pools["rerank_keep (rerank_pos pool)"] = self.rerank_keep
            pools["rank_keep - rerank_keep (rerank_neg pool)"] = self.rank_keep - self.rerank_keep
        for what, size in pools.items():
            if size < g:
                raise ValueError(
                    f"the logged cascade must leave >= per_group={g} items per stage group; "
                    f"{what} = {size}"
                )
        if self.retrieval_size > self.num_items - self.history_length:
            raise ValueError(
                f"`retrieval_size` must be <= num_items - history_length = "
                f"{self.num_items - self.history_length}. Received: {self.retrieval_size}"
            )
        if not 1 <= self.exposure_size <= self.rerank_keep <= self.rank_keep:
            raise ValueError("need 1 <= exposure_size <= rerank_keep <= rank_keep")
        if self.retrieval_rank > self.latent_dim:
            raise ValueError("`retrieval_rank` must be <= latent_dim")
        if len(self.stage_noise) != 5 or len(self.popularity_bias) != 5:
            raise ValueError("`stage_noise` and `popularity_bias` need one value per stage (5)")

    @property
    def stage_groups(self) -> tuple[str, ...]:
        return TWO_STAGE_GROUPS if self.num_stages == 2 else THREE_STAGE_GROUPS

    @property
    def list_size(self) -> int:
        return self.per_group * len(self.stage_groups)


USER_FEATURES = ("gender", "age", "province", "device_id", "request_hour", "request_wday",
                 "request_minute")
"""Names of the ``user_features`` columns of :func:`simulate` (RecFlow's names where shared)."""
ITEM_FEATURES = ("author_id", "category_level_two", "category_level_one", "upload_type",
                 "freshness", "upload_wday", "upload_hour", "upload_minute")
"""Names of the ``item_features`` columns of :func:`simulate`."""
HISTORY_FEATURES = ("author_id", "category_level_two", "category_level_one", "upload_type")
"""The item fields the history items carry (``history_features``), as RecFlow's sequence."""


def simulator_schema(config: SimulatorConfig) -> CascadeSchema:
    """The :class:`CascadeSchema` of :func:`simulate` output for ``config``.

    ``user_features`` = [gender, age, province, device, hour, wday, minute] (+1, 0 = pad);
    ``item_features`` = [author, cate2, cate1, upload_type, freshness, upload wday, upload
    hour, upload minute] (+1, 0 = pad); ``history_features`` = [author, cate2, cate1,
    upload_type] of every history item (+1, 0 = padded position). The request minute and the
    upload wday/hour/minute carry no signal (they are not in the true utility); they are
    there so that the ``paper`` model preset sees the fields of RecFlow.
    """
    c = config
    return CascadeSchema(
        list_size=c.list_size,
        history_length=c.history_length,
        user_vocab=c.num_users + 1,
        item_vocab=c.num_items + 1,
        user_feature_vocabs=(
            c.num_genders + 1, c.num_ages + 1, c.num_provinces + 1, c.num_devices + 1, 25, 8, 61
        ),
        item_feature_vocabs=(
            c.num_authors + 1,
            c.num_cate1 * c.cate2_per_cate1 + 1,
            c.num_cate1 + 1,
            c.num_upload_types + 1,
            c.num_freshness + 1,
            8, 25, 61,
        ),
        stage_groups=c.stage_groups,
        gt_num=c.per_group,
        quotas=(30, 20) if c.num_stages == 2 else (40, 30, 20),
        name=f"simulated_{c.num_stages}stage",
        user_feature_names=USER_FEATURES,
        item_feature_names=ITEM_FEATURES,
        history_feature_names=HISTORY_FEATURES,
    )


@dataclasses.dataclass
class SimulatedWorld:
    """The users, items, behaviour logs and truth tables of a simulated world (0-based)."""

    user_latent: np.ndarray  # float32 [num_users, d]
    user_gender: np.ndarray  # int [num_users]
    user_age: np.ndarray
    user_province: np.ndarray
    user_device: np.ndarray
    user_activity: np.ndarray  # float64 [num_users], sums to 1
    user_log: np.ndarray  # int [num_users, user_log_length] item indices
    user_topics: np.ndarray  # int [num_users, num_sessions] cate1 of each session
    item_latent: np.ndarray  # float32 [num_items, d]
    item_author: np.ndarray
    item_cate1: np.ndarray
    item_cate2: np.ndarray
    item_upload_type: np.ndarray
    item_freshness: np.ndarray
    item_upload_time: np.ndarray  # int [num_items, 3]: upload wday 0..6, hour 0..23, minute
    item_popularity: np.ndarray  # float32 [num_items], standardised
    ctx_table: np.ndarray  # float32 [4, num_cate1]: hour bucket x cate1
    demo_table: np.ndarray  # float32 [num_ages, num_cate1]
    device_table: np.ndarray  # float32 [num_devices, num_upload_types]
    scales: dict[str, float]
    retrieval_items: np.ndarray = dataclasses.field(default=None, repr=False)  # [r, items]
    retrieval_bias: np.ndarray = dataclasses.field(default=None, repr=False)  # [items]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_world(config: SimulatorConfig) -> SimulatedWorld:
    """Build the users, items and behaviour logs of ``config`` (deterministic by seed)."""
    c = config
    rng = np.random.default_rng([c.seed, STREAM_WORLD])
    d = c.latent_dim
    # Items: latent = category hierarchy + author + own noise.
    cate1_c = rng.normal(size=(c.num_cate1, d))
    n_cate2 = c.num_cate1 * c.cate2_per_cate1
    cate2_c = np.repeat(cate1_c, c.cate2_per_cate1, axis=0) + 0.6 * rng.normal(size=(n_cate2, d))
    author_cate2 = rng.integers(0, n_cate2, c.num_authors)
    author_c = 0.5 * rng.normal(size=(c.num_authors, d))
    item_author = rng.integers(0, c.num_authors, c.num_items)
    # Authors mostly publish in their own sub-category.
    own = rng.random(c.num_items) < 0.8
    item_cate2 = np.where(own, author_cate2[item_author], rng.integers(0, n_cate2, c.num_items))
    item_cate1 = item_cate2 // c.cate2_per_cate1
    item_latent = _unit_rows(
        cate2_c[item_cate2] + author_c[item_author] + 0.6 * rng.normal(size=(c.num_items, d))
    )
    item_upload_type = rng.choice(
        c.num_upload_types, c.num_items, p=_zipf_probs(c.num_upload_types, 1.0)
    )
    item_freshness = rng.integers(0, c.num_freshness, c.num_items)
    log_pop = rng.normal(size=c.num_items) + 0.5 * rng.normal(size=c.num_authors)[item_author]
    item_popularity = ((log_pop - log_pop.mean()) / log_pop.std()).astype(np.float32)
    # Users: latent = demographic centroid + own taste.
    user_gender = rng.integers(0, c.num_genders, c.num_users)
    user_age = rng.choice(c.num_ages, c.num_users, p=_zipf_probs(c.num_ages, 0.3))
    user_province = rng.choice(c.num_provinces, c.num_users, p=_zipf_probs(c.num_provinces, 0.8))
    user_device = rng.choice(c.num_devices, c.num_users, p=_zipf_probs(c.num_devices, 1.0))
    demo_c = rng.normal(size=(c.num_genders, c.num_ages, d))
    user_latent = _unit_rows(
        0.6 * demo_c[user_gender, user_age] + rng.normal(size=(c.num_users, d))
    )
    user_activity = rng.lognormal(0.0, 1.0, c.num_users)
    user_activity /= user_activity.sum()
    ctx_table = rng.normal(size=(4, c.num_cate1)).astype(np.float32)
    demo_table = rng.normal(size=(c.num_ages, c.num_cate1)).astype(np.float32)
    device_table = rng.normal(size=(c.num_devices, c.num_upload_types)).astype(np.float32)
    user_log, user_topics = _behaviour_logs(
        rng, c, user_latent, cate1_c, item_latent, item_cate1, item_popularity
    )
    # Upload times: their own stream, so every other field is what it was before they existed.
    time_rng = np.random.default_rng([c.seed, STREAM_UPLOAD_TIME])
    item_upload_time = np.stack([time_rng.integers(0, hi, c.num_items) for hi in (7, 24, 60)], 1)
    world = SimulatedWorld(
        user_latent=user_latent, user_gender=user_gender, user_age=user_age,
        user_province=user_province, user_device=user_device, user_activity=user_activity,
        user_log=user_log, user_topics=user_topics, item_latent=item_latent,
        item_author=item_author, item_cate1=item_cate1, item_cate2=item_cate2,
        item_upload_type=item_upload_type, item_freshness=item_freshness,
        item_upload_time=item_upload_time,
        item_popularity=item_popularity, ctx_table=ctx_table, demo_table=demo_table,
        device_table=device_table, scales={},
    )
    world.scales = _term_scales(world, c, rng)
    # The retrieval item tower, precomputed once: low-rank latent / scale, popularity bias.
    world.retrieval_items = np.ascontiguousarray(
        item_latent[:, : c.retrieval_rank].T / world.scales["low"], dtype=np.float32
    )
    world.retrieval_bias = (c.popularity_bias[0] * item_popularity).astype(np.float32)
    return world


def _zipf_probs(n: int, a: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** a
    return p / p.sum()


def _behaviour_logs(
    rng: np.random.Generator,
    c: SimulatorConfig,
    user_latent: np.ndarray,
    cate1_c: np.ndarray,
    item_latent: np.ndarray,
    item_cate1: np.ndarray,
    item_popularity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user behaviour logs: sessions with one cate1 topic, items by taste + popularity."""
    n_sessions = -(-c.user_log_length // c.session_length)
    topic_logits = 2.0 * (user_latent @ _unit_rows(cate1_c).T)
    gumbel = rng.gumbel(size=(c.num_users, n_sessions, c.num_cate1))
    topics = np.argmax(topic_logits[:, None, :] + gumbel, axis=-1)  # [users, sessions]
    # Items grouped by topic, padded to the largest topic.
    order = np.argsort(item_cate1, kind="stable")
    counts = np.bincount(item_cate1, minlength=c.num_cate1)
    width = max(int(counts.max()), c.session_length)
    by_topic = np.full((c.num_cate1, width), -1, np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for t in range(c.num_cate1):
        by_topic[t, : counts[t]] = order[starts[t] : starts[t] + counts[t]]
    cand = by_topic[topics]  # [users, sessions, width]
    valid = cand >= 0
    safe = np.where(valid, cand, 0)
    aff = np.einsum("ud,uswd->usw", user_latent, item_latent[safe]) * 3.0 + item_popularity[safe]
    aff = np.where(valid, aff + rng.gumbel(size=aff.shape), -np.inf)
    k = c.session_length
    picks = np.argpartition(-aff, k - 1, axis=-1)[..., :k]
    chosen = np.take_along_axis(cand, picks, axis=-1)  # [users, sessions, k]
    # A topic with fewer than k items repeats -1 slots: fall back to random items.
    bad = chosen < 0
    chosen[bad] = rng.integers(0, len(item_cate1), int(bad.sum()))
    chosen = rng.permuted(chosen, axis=-1)  # random order within a session
    log = chosen.reshape(c.num_users, n_sessions * k)[:, : c.user_log_length]
    return log, topics


def _term_scales(world: SimulatedWorld, c: SimulatorConfig, rng: np.random.Generator) -> dict:
    """Standard deviations of the raw score terms, from a fixed sample (unit-scale terms)."""
    u = rng.integers(0, c.num_users, 4096)
    j = rng.integers(0, c.num_items, 4096)
    h = world.user_log[u, : c.history_length]
    long = np.einsum("nd,nd->n", world.user_latent[u], world.item_latent[j])
    sims = np.einsum("nhd,nd->nh", world.item_latent[h], world.item_latent[j])
    low = np.einsum(
        "nd,nd->n",
        world.user_latent[u, : c.retrieval_rank],
        world.item_latent[j, : c.retrieval_rank],
    )
    hist_mean = np.einsum("nd,nd->n", world.item_latent[h].mean(1), world.item_latent[j])
    return {
        "long": float(long.std()),
        "short": float(_smooth_max(sims, np.ones_like(sims, bool)).std()),
        "low": float(low.std()),
        "hist_mean": float(hist_mean.std()),
    }


def _smooth_max(sims: np.ndarray, valid: np.ndarray, beta: float = 4.0) -> np.ndarray:
    """log-mean-exp over the last axis (a soft max over valid history items; 0 if none)."""
    z = np.where(valid, beta * sims, -np.inf)
    m = np.max(z, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    s = np.sum(np.exp(z - m), axis=-1)
    n = np.maximum(valid.sum(-1), 1)
    out = (np.log(np.maximum(s, 1e-30)) + m[..., 0] - np.log(n)) / beta
    return np.where(valid.any(-1), out, 0.0).astype(np.float32)


def _sample_from(
    rng: np.random.Generator, pool: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """k random positions (random order) per row of ``pool`` [B, m]; returns (pos, items)."""
    keys = rng.random(pool.shape)
    pos = np.argsort(keys, axis=1)[:, :k] if pool.shape[1] <= 4 * k else _argtopk(keys, k)
    return pos, np.take_along_axis(pool, pos, axis=1)


def _positives(
    rng: np.random.Generator, kept: np.ndarray, k: int, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """The positive group from ``kept`` [B, m] (a stage's output, best first): (pos, items).

    ``"random"``: k random positions. ``"top"``: positions 0..k-1 (the stage's top k), in a
    random order within the group. Both consume the same random draws (the random sample's
    order gives the permutation), so the negative groups cut afterwards are identical.
    """
    pos, items = _sample_from(rng, kept, k)
    if mode == "top":
        pos = np.argsort(pos, axis=1)  # a uniformly random permutation of 0..k-1
        items = np.take_along_axis(kept, pos, axis=1)
    return pos, items


def _argtopk(scores: np.ndarray, k: int, *, ordered: bool = True) -> np.ndarray:
    """Indices of the k largest scores per row (best first when ``ordered``)."""
    m = scores.shape[1]
    part = np.argpartition(scores, m - k, axis=1)[:, m - k :]
    if not ordered:
        return part
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def _rank_all(scores: np.ndarray) -> np.ndarray:
    """Indices sorting each row by descending score."""
    return np.argsort(-scores, axis=1)


def _simulate_chunk(
    world: SimulatedWorld, c: SimulatorConfig, chunk: int, size: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng([c.seed, STREAM_REQUESTS, chunk])
    w = world
    b, hl, g = size, c.history_length, c.per_group
    sn, pb = c.stage_noise, c.popularity_bias
    rows = np.arange(b)[:, None]
    # Requests: user, position in the user's log, context.
    user = rng.choice(c.num_users, b, p=w.user_activity)
    t = rng.integers(hl // 2, c.user_log_length + 1, b)
    offs = t[:, None] - hl + np.arange(hl)[None, :]
    hist_valid = offs >= 0
    hist = np.where(hist_valid, w.user_log[user[:, None], np.maximum(offs, 0)], -1)  # [b, H]
    session = np.minimum(t // c.session_length, w.user_topics.shape[1] - 1)
    topic = w.user_topics[user, session]
    hour = rng.integers(0, 24, b)
    wday = rng.integers(0, 7, b)
    age, device = w.user_age[user], w.user_device[user]
    u_lat = w.user_latent[user]
    h_lat = np.where(hist_valid[..., None], w.item_latent[np.maximum(hist, 0)], 0.0)
    h_mean = h_lat.sum(1) / np.maximum(hist_valid.sum(1, keepdims=True), 1)
    sc = w.scales

    # --- retrieval over the whole corpus (low-rank two-tower, popularity bias, no context)
    r = c.retrieval_rank
    s1 = (u_lat[:, :r] + 0.5 * h_mean[:, :r]).astype(np.float32) @ w.retrieval_items
    s1 += w.retrieval_bias[None, :]
    # Uniform noise with std sn[0] (drawn for every corpus item; normals cost 5x more).
    noise = rng.random(s1.shape, dtype=np.float32)
    noise -= 0.5
    noise *= sn[0] * np.sqrt(12.0)
    s1 += noise
    del noise
    r_idx, h_idx = np.nonzero(hist_valid)
    s1[r_idx, hist[r_idx, h_idx]] = -np.inf  # no re-recommendation of history items
    retrieved = _argtopk(s1, c.retrieval_size, ordered=False)  # [b, R] item indices
    s1 = np.take_along_axis(s1, retrieved, 1)

    # Everything below works on positions into ``retrieved`` ([b, R]).
    lat = np.take(w.item_latent, retrieved, axis=0)  # [b, R, d]
    long = np.matmul(lat, u_lat[:, :, None])[..., 0] / sc["long"]
    hmean = np.matmul(lat, h_mean[:, :, None].astype(np.float32))[..., 0] / sc["hist_mean"]
    c1 = w.item_cate1[retrieved]
    ctx = w.ctx_table[hour[:, None] // 6, c1]
    demo = w.demo_table[age[:, None], c1]
    dev = w.device_table[device[:, None], w.item_upload_type[retrieved]]
    pop = w.item_popularity[retrieved]
    in_topic = (c1 == topic[:, None]).astype(np.float32)
    boost = (w.item_upload_type[retrieved] < 2).astype(np.float32)  # upload types 0 and 1
    fresh = (w.item_freshness[retrieved] <= 1).astype(np.float32)
    eps = [
        sn[k] * rng.standard_normal((b, c.retrieval_size), dtype=np.float32) for k in (1, 2, 3, 4)
    ]
    hist_mask = hist_valid[:, None, :]
    h_lat_t = np.ascontiguousarray(h_lat.transpose(0, 2, 1), dtype=np.float32)

    def short_term(pos: np.ndarray) -> np.ndarray:
        """Target attention of the history on the items at ``pos`` [b, m] (unit scale)."""
        sims = np.matmul(lat[rows, pos], h_lat_t)  # [b, m, H]
        return _smooth_max(sims, np.broadcast_to(hist_mask, sims.shape)) / sc["short"]

    def at(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        return np.take_along_axis(x, pos, 1)

    def rank_score(pos: np.ndarray, short: np.ndarray) -> np.ndarray:
        observable = (c.w_long * at(long, pos) + c.w_short * short + c.w_topic * at(in_topic, pos)
                      + c.w_ctx * at(ctx, pos) + c.w_demo * at(demo, pos) + c.w_dev * at(dev, pos))
        bias = pb[3] * at(pop, pos) + c.business_boost * at(boost, pos)
        return observable + bias + at(eps[2], pos)

    # --- pre-rank (full-rank taste, demographics, half-weight mean history) on R, keep P
    s2 = c.w_long * long + 0.5 * c.w_short * hmean + c.w_demo * demo + pb[1] * pop + eps[0]
    pre_order = _rank_all(s2)
    passed_pre = pre_order[:, : c.prerank_keep]
    # --- coarse rank (adds context, full mean history) on P, keep C
    s3 = (c.w_long * long + c.w_short * hmean + c.w_ctx * ctx + c.w_demo * demo
          + pb[2] * pop + eps[1])
    coarse_order = at(passed_pre, _rank_all(at(s3, passed_pre)))
    passed_coarse = coarse_order[:, : c.coarse_keep]
    # --- rank (target attention, session topic, device; business boost) on C, keep K
    s4_c = rank_score(passed_coarse, short_term(passed_coarse))
    rank_perm = _rank_all(s4_c)
    rank_order = at(passed_coarse, rank_perm)
    passed_rank = rank_order[:, : c.rank_keep]
    # --- rerank (freshness boost) on K, keep E; exposure = the top X of the rerank
    s5_k = at(s4_c, rank_perm)[:, : c.rank_keep] + c.freshness_boost * at(fresh, passed_rank)
    s5_k += at(eps[3], passed_rank)
    rerank_order = at(passed_rank, _rank_all(s5_k))

    # --- cut the stage groups (positions into ``retrieved``) and labels
    groups: list[tuple[np.ndarray, np.ndarray]] = []  # (positions [b, g], labels [b, g])
    kept = passed_rank if c.num_stages == 2 else rerank_order[:, : c.rerank_keep]
    pos, sel = _positives(rng, kept, g, c.positives)  # pos = rank_index - 1
    groups.append((sel, (30 - (pos + 1)).astype(np.float32)))
    if c.num_stages == 3:
        _, sel = _sample_from(rng, rerank_order[:, c.rerank_keep :], g)
        groups.append((sel, np.full((b, g), 8, np.float32)))
    for pool, lab in (
        (rank_order[:, c.rank_keep :], 7),
        (coarse_order[:, c.coarse_keep :], 6),
        (pre_order[:, c.prerank_keep :], 5),
    ):
        _, sel = _sample_from(rng, pool, g)
        groups.append((sel, np.full((b, g), lab, np.float32)))
    cand = np.concatenate([s for s, _ in groups], axis=1)  # [b, N] positions
    label = np.concatenate([lab for _, lab in groups], axis=1)
    n = cand.shape[1]
    items = at(retrieved, cand)  # [b, N] item indices (0-based)

    # Known truth of the candidates. Stage scores of stages an item never reached are what
    # that stage's model would have given it (same model, same noise draw).
    short_cand = short_term(cand)
    s4_cand = rank_score(cand, short_cand)
    s5_cand = s4_cand + c.freshness_boost * at(fresh, cand) + at(eps[3], cand)
    stage_scores = np.stack([at(s1, cand), at(s2, cand), at(s3, cand), s4_cand, s5_cand], -1)
    utility = (
        c.w_long * at(long, cand) + c.w_short * short_cand + c.w_topic * at(in_topic, cand)
        + c.w_ctx * at(ctx, cand) + c.w_demo * at(demo, cand) + c.w_dev * at(dev, cand)
        + c.w_pop * at(pop, cand) + c.noise * rng.standard_normal((b, n), dtype=np.float32)
    )
    exposed = np.zeros((b, c.retrieval_size), bool)
    exposed[rows, rerank_order[:, : c.exposure_size]] = True
    # The request minute: its own stream (the fields above are what they were without it).
    minute = np.random.default_rng([c.seed, STREAM_REQUEST_MINUTE, chunk]).integers(0, 60, b)
    safe_hist = np.maximum(hist, 0)
    hist_features = np.stack(
        [w.item_author[safe_hist] + 1, w.item_cate2[safe_hist] + 1, w.item_cate1[safe_hist] + 1,
         w.item_upload_type[safe_hist] + 1], axis=-1,
    ) * hist_valid[..., None]
    arrays = {
        "user_id": (user + 1).astype(np.int64),
        "user_features": np.stack(
            [w.user_gender[user] + 1, age + 1, w.user_province[user] + 1, device + 1,
             hour + 1, wday + 1, minute + 1], axis=1,
        ).astype(np.int64),
        "history": np.where(hist_valid, hist + 1, 0).astype(np.int64),
        "history_features": hist_features.astype(np.int64),
        "item_id": (items + 1).astype(np.int64),
        "item_features": np.concatenate([np.stack(
            [w.item_author[items] + 1, w.item_cate2[items] + 1, w.item_cate1[items] + 1,
             w.item_upload_type[items] + 1, w.item_freshness[items] + 1], axis=-1,
        ), w.item_upload_time[items] + 1], axis=-1).astype(np.int64),
        "label": label,
        "mask": np.ones((b, n), np.float32),
        "stage_group": np.repeat(np.arange(len(groups), dtype=np.int32), g)[None, :].repeat(b, 0),
    }
    truth = {
        "utility": utility.astype(np.float32),
        "stage_scores": stage_scores.astype(np.float32),
        "exposed": np.take_along_axis(exposed, cand, 1),
        "session_topic": (topic + 1).astype(np.int64),
    }
    return arrays, truth


def simulate(
    config: SimulatorConfig | None = None,
    *,
    return_truth: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **overrides: object,
) -> tuple[CascadeSchema, dict[str, np.ndarray]] | tuple[
    CascadeSchema, dict[str, np.ndarray], dict[str, np.ndarray]
]:
    """Simulate ``num_requests`` logged cascade requests.

    Args:
      config: the :class:`SimulatorConfig` (default config when None).
      return_truth: also return the known truth per candidate.
      progress: called as ``progress(done, total)`` after every chunk of requests.
      **overrides: fields of the config to replace, e.g. ``simulate(num_requests=1000)``.

    Returns:
      ``(schema, arrays)`` with canonical request arrays (``item_id`` int64 [R, N], ...), or
      ``(schema, arrays, truth)`` where ``truth`` has ``utility`` float32 [R, N] (the true
      utility incl. unobservable noise), ``stage_scores`` float32 [R, N, 5] (the logged
      retrieval/prerank/coarse/rank/rerank scores), ``exposed`` bool [R, N] (in the top
      ``exposure_size`` of the rerank) and ``session_topic`` int64 [R] (cate1 id + 1).
    """
    config = config or SimulatorConfig()
    if overrides:
        config = dataclasses.replace(config, **overrides)
    c = config
    start = time.perf_counter()
    world = make_world(c)
    parts, truths = [], []
    total = c.num_requests
    for chunk, lo in enumerate(range(0, total, _CHUNK)):
        # Always a full chunk (then cut), so request i is the same whatever num_requests is.
        a, t = _simulate_chunk(world, c, chunk, _CHUNK)
        keep = min(_CHUNK, total - lo)
        parts.append({k: v[:keep] for k, v in a.items()})
        truths.append({k: v[:keep] for k, v in t.items()})
        if progress is not None:
            progress(min(lo + _CHUNK, total), total)
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    truth = {k: np.concatenate([p[k] for p in truths]) for k in truths[0]}
    logger.info("simulated %d requests in %.1f s", total, time.perf_counter() - start)
    schema = simulator_schema(c)
    if return_truth:
        return schema, arrays, truth
    return schema, arrays


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m lcron_tf.data.simulator --out-dir DIR [--num-requests N] ...``."""
    from lcron_tf.data.tfrecord import write_tfrecords

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", required=True, help="writes <out-dir>/{train,test}")
    p.add_argument("--num-requests", type=int, default=100_000)
    p.add_argument("--num-stages", type=int, default=2, choices=(2, 3))
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--num-shards", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    schema, arrays = simulate(
        num_requests=args.num_requests, num_stages=args.num_stages, seed=args.seed
    )
    train, test = split_requests(arrays, args.test_fraction, seed=args.seed)
    for name, part in (("train", train), ("test", test)):
        write_tfrecords(part, schema, f"{args.out_dir}/{name}", num_shards=args.num_shards,
                        overwrite=args.overwrite)
        print(f"wrote {len(part['user_id'])} requests to {args.out_dir}/{name}")


if __name__ == "__main__":
    main()
