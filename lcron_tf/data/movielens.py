"""MovieLens-100K as a full-catalogue cascade benchmark (real feedback, simulated logs).

Reads ``<data_dir>/movielens_100k/{u.data, u.item, u.user}`` (never downloaded, never
committed). A request is (user, time of one of the user's ratings): its history is the
user's previously rated movies (most recent last), its ground truth the user's next
``gt_num`` movies rated >= 4. Candidates come from the **whole catalogue** (1,682 movies
minus those the user already rated) through a logged, simulated cascade of fixed baseline
models fitted on the training period only:

* retrieval (catalogue -> ``retrieval_size``): popularity + genre match with the history;
* pre-rank (-> ``prerank_keep``): SVD taste (mean of the history's item factors) +
  popularity;
* coarse rank (-> ``coarse_keep``): SVD + genre match + demographic x genre affinity.

Each model adds seeded Gaussian noise. Stage groups (RecFlow 2-stage names, N = 40):

* ``rank_pos``: the ground truth, the next ``gt_num`` positives in time order, label
  ``30 - k`` (k = 1 for the very next one); padded (mask 0, label 0) when fewer exist;
* ``rank_neg``: 10 random non-GT movies that passed the coarse stage (reached "rank"), 7;
* ``coarse_neg``: 10 random non-GT movies that passed pre-rank but were cut by coarse, 6;
* ``prerank_neg``: 10 random non-GT movies retrieved but cut by pre-rank, 5.

The split is temporal: requests at or after the ``1 - test_fraction`` quantile of all
rating times are ``test``; ``train`` requests are earlier and their ground truth only uses
ratings before that cutoff. The stage models see training-period ratings only.

Ids: ``build_movielens`` emits int64 ids in the canonical format, ``user_id`` = the raw
MovieLens user id (``u.data`` column 1, 1..943) and ``item_id`` = the raw MovieLens movie
id (``u.item`` column 1, 1..1682; 0 is the padding id), so a title is
``u.item``'s row for that id. For the string features of the TFRS tutorials (``user_id``
as text, ``movie_title``) use :func:`movielens_interactions` and
:func:`lcron_tf.data.build_candidates` instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
from pathlib import Path

import numpy as np

from lcron_tf.data.paths import require_file, resolve_data_dir
from lcron_tf.schema import TWO_STAGE_GROUPS, CascadeSchema, validate_arrays

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
SUBDIR = "movielens_100k"
NUM_GENRES = 19
AGE_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M style age buckets


@dataclasses.dataclass(frozen=True)
class MovieLensConfig:
    """Options of :func:`build_movielens`.

    Attributes:
      history_length: H (the most recent H previously rated movies).
      gt_num: ground-truth size (positive group width, as per_group).
      per_group: candidates per negative group.
      positive_rating: ratings >= this are positives.
      min_history: a request needs at least this many previous ratings.
      min_gt: a request needs at least this many future positives.
      request_stride: one request every ``request_stride`` ratings of a user.
      test_fraction: share of the time range (by rating count) that is the test period.
      retrieval_size, prerank_keep, coarse_keep: quotas of the logged cascade.
      svd_rank: rank of the SVD taste model.
      stage_noise: noise std of the retrieval, pre-rank and coarse models.
      seed: seed of the noise and of the negative sampling.
    """

    history_length: int = 50
    gt_num: int = 10
    per_group: int = 10
    positive_rating: int = 4
    min_history: int = 5
    min_gt: int = 1
    request_stride: int = 5
    test_fraction: float = 0.1
    retrieval_size: int = 200
    prerank_keep: int = 100
    coarse_keep: int = 50
    svd_rank: int = 16
    stage_noise: tuple[float, float, float] = (0.5, 0.3, 0.2)
    seed: int = 0


@dataclasses.dataclass
class MovieLensRaw:
    """The parsed files (0-based user/item indices)."""

    user: np.ndarray  # int [E] rating events
    item: np.ndarray
    rating: np.ndarray
    ts: np.ndarray
    genres: np.ndarray  # float32 [items, 19]
    release_year: np.ndarray  # int [items], 0 = unknown
    age: np.ndarray  # int [users]
    gender: np.ndarray  # 0 = M, 1 = F
    occupation: np.ndarray
    zip_region: np.ndarray  # 0..9 first zip digit, 10 = other
    num_occupations: int


def load_movielens(data_dir: PathLike | None = None) -> MovieLensRaw:
    """Parse ``u.data``, ``u.item`` and ``u.user``; errors name the file and the line.

    The parsed files are cached per folder (and file modification times), so building the
    train and the test split parses them once.
    """
    folder = resolve_data_dir(data_dir, SUBDIR)
    paths = [require_file(folder, name) for name in ("u.data", "u.item", "u.user")]
    return _load_cached(str(folder.resolve()), tuple(p.stat().st_mtime_ns for p in paths))


@functools.lru_cache(maxsize=2)
def _load_cached(folder_name: str, mtimes: tuple[int, ...]) -> MovieLensRaw:
    del mtimes  # part of the cache key only
    folder = Path(folder_name)
    data = _read_lines(require_file(folder, "u.data"), "\t", 4)
    try:
        ev = np.array([[int(x) for x in row] for _, row in data], np.int64)
    except ValueError as err:
        line = next(n for n, row in data if not all(x.strip().lstrip("-").isdigit() for x in row))
        raise ValueError(f"{str(folder / 'u.data')!r} line {line}: {err}") from err
    items = _read_lines(require_file(folder, "u.item"), "|", 5 + NUM_GENRES)
    users = _read_lines(require_file(folder, "u.user"), "|", 5)
    n_items, n_users = len(items), len(users)
    genres = np.zeros((n_items, NUM_GENRES), np.float32)
    year = np.zeros(n_items, np.int64)
    for line, row in items:
        j = _index(row[0], n_items, folder / "u.item", line)
        try:
            genres[j] = [float(x) for x in row[5 : 5 + NUM_GENRES]]
        except ValueError as err:
            raise ValueError(f"{str(folder / 'u.item')!r} line {line}: bad genre flags") from err
        date = row[2].strip()
        year[j] = int(date[-4:]) if date[-4:].isdigit() else 0
    occupations = sorted({row[3] for _, row in users})
    age = np.zeros(n_users, np.int64)
    gender = np.zeros(n_users, np.int64)
    occupation = np.zeros(n_users, np.int64)
    zip_region = np.zeros(n_users, np.int64)
    for line, row in users:
        u = _index(row[0], n_users, folder / "u.user", line)
        if not row[1].isdigit() or row[2] not in ("M", "F"):
            raise ValueError(f"{str(folder / 'u.user')!r} line {line}: bad age/gender {row[1:3]}")
        age[u] = int(row[1])
        gender[u] = 0 if row[2] == "M" else 1
        occupation[u] = occupations.index(row[3])
        zip_region[u] = int(row[4][0]) if row[4][:1].isdigit() else 10
    for col, hi, what in ((0, n_users, "user id"), (1, n_items, "item id"), (2, 5, "rating")):
        bad = (ev[:, col] < 1) | (ev[:, col] > hi)
        if bad.any():
            line = data[int(np.argmax(bad))][0]
            raise ValueError(
                f"{str(folder / 'u.data')!r} line {line}: {what} {ev[np.argmax(bad), col]} "
                f"out of range [1, {hi}]"
            )
    raw = MovieLensRaw(
        user=ev[:, 0] - 1, item=ev[:, 1] - 1, rating=ev[:, 2], ts=ev[:, 3], genres=genres,
        release_year=year, age=age, gender=gender, occupation=occupation,
        zip_region=zip_region, num_occupations=len(occupations),
    )
    for value in vars(raw).values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)  # cached and shared: read-only
    return raw


def _read_lines(path: Path, sep: str, min_fields: int) -> list[tuple[int, list[str]]]:
    rows = []
    with open(path, encoding="latin-1") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            row = line.split(sep)
            if len(row) < min_fields:
                raise ValueError(
                    f"{str(path)!r} line {n}: {len(row)} fields, expected >= {min_fields}"
                )
            rows.append((n, row))
    return rows


def _index(text: str, n: int, path: Path, line: int) -> int:
    if not text.isdigit() or not 1 <= int(text) <= n:
        raise ValueError(f"{str(path)!r} line {line}: id {text!r} out of range [1, {n}]")
    return int(text) - 1


def movielens_interactions(data_dir: PathLike | None = None) -> dict[str, np.ndarray]:
    """The 100,000 ratings with the features of TFDS ``movielens/100k-ratings``, from the
    raw files (offline, no ``tensorflow_datasets``).

    Returns:
      ``{"user_id": str [E], "movie_id": str [E], "movie_title": str [E] (u.item's title,
      latin-1 decoded), "user_rating": float32 [E], "timestamp": int64 [E]}``, in
      ``u.data`` order (object arrays of Python ``str``). TFDS serves the same values as
      bytes; ``movielens_movies`` gives the catalogue.
    """
    raw = load_movielens(data_dir)
    titles = movielens_movies(data_dir)["movie_title"]
    return {
        "user_id": (raw.user + 1).astype(str).astype(object),
        "movie_id": (raw.item + 1).astype(str).astype(object),
        "movie_title": titles[raw.item],
        "user_rating": raw.rating.astype(np.float32),
        "timestamp": raw.ts.astype(np.int64),
    }


def movielens_movies(data_dir: PathLike | None = None) -> dict[str, np.ndarray]:
    """The catalogue of TFDS ``movielens/100k-movies``: ``{"movie_id": str [1682],
    "movie_title": str [1682]}`` in ``u.item`` order (movie id ``i`` at row ``i - 1``)."""
    folder = resolve_data_dir(data_dir, SUBDIR)
    rows = _read_lines(require_file(folder, "u.item"), "|", 5 + NUM_GENRES)
    titles = np.empty(len(rows), dtype=object)
    for line, row in rows:
        titles[_index(row[0], len(rows), folder / "u.item", line)] = row[1]
    return {"movie_id": np.arange(1, len(rows) + 1).astype(str).astype(object),
            "movie_title": titles}


def movielens_schema(raw: MovieLensRaw, config: MovieLensConfig) -> CascadeSchema:
    """``user_features`` = [gender, age bucket, occupation, zip region, hour, wday];
    ``item_features`` = [first genre, second genre (1 = none), release decade, popularity
    decile]; all +1 (0 = pad)."""
    return CascadeSchema(
        list_size=config.gt_num + 3 * config.per_group,
        history_length=config.history_length,
        user_vocab=len(raw.age) + 1,
        item_vocab=len(raw.genres) + 1,
        user_feature_vocabs=(3, len(AGE_EDGES) + 2, raw.num_occupations + 1, 12, 25, 8),
        item_feature_vocabs=(NUM_GENRES + 1, NUM_GENRES + 2, 12, 11),
        stage_groups=TWO_STAGE_GROUPS,
        gt_num=config.gt_num,
        quotas=(30, 20),
        name="movielens_100k",
    )


def _top_singular(a: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k singular values and right vectors of ``a`` (randomised subspace iteration)."""
    a = a.astype(np.float64)
    rng = np.random.default_rng([seed, 7])

    def orth(y: np.ndarray) -> np.ndarray:  # Cholesky-QR: cheap for tall, thin y
        chol = np.linalg.cholesky(y.T @ y + 1e-9 * np.eye(y.shape[1]))
        return np.linalg.solve(chol, y.T).T

    q = orth(a @ rng.standard_normal((a.shape[1], k + 10)))
    for _ in range(3):
        q = orth(a @ orth(a.T @ q))
    _, s, vt = np.linalg.svd(q.T @ a, full_matrices=False)
    return s[:k], vt[:k]


def _zscore(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return (x - x.mean(axis, keepdims=True)) / (x.std(axis, keepdims=True) + 1e-6)


def build_movielens(
    data_dir: PathLike | None = None,
    split: str = "train",
    config: MovieLensConfig | None = None,
) -> tuple[CascadeSchema, dict[str, np.ndarray]]:
    """Build MovieLens-100K cascade requests of one split.

    Args:
      data_dir: data folder holding ``movielens_100k/`` (None: ``$LCRON_DATA_DIR``, then
        ``../shared/data``).
      split: ``"train"`` or ``"test"`` (temporal split, module docstring).
      config: a :class:`MovieLensConfig`.

    Returns:
      ``(schema, arrays)`` with canonical request arrays, N = gt_num + 3 * per_group.

    Raises:
      FileNotFoundError: naming the missing folder or file (and ``LCRON_DATA_DIR``).
      ValueError: a malformed line (file and line number), or a bad ``split``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"`split` must be 'train' or 'test'. Received: split={split!r}")
    c = config or MovieLensConfig()
    raw = load_movielens(data_dir)
    schema = movielens_schema(raw, c)
    n_users, n_items = len(raw.age), len(raw.genres)
    order = np.lexsort((np.arange(len(raw.ts)), raw.ts, raw.user))  # by user, time, file
    user, item, rating, ts = raw.user[order], raw.item[order], raw.rating[order], raw.ts[order]
    cutoff = np.quantile(raw.ts, 1.0 - c.test_fraction)
    is_train_event = ts < cutoff

    # ---- fixed stage models, fitted on training-period ratings only
    tr = is_train_event
    counts = np.bincount(item[tr], minlength=n_items).astype(np.float64)
    pop = _zscore(np.log1p(counts)).astype(np.float32)
    inter = np.zeros((n_users, n_items), np.float32)
    inter[user[tr], item[tr]] = 1.0
    s, vt = _top_singular(inter - inter.mean(0, keepdims=True), c.svd_rank, c.seed)
    factors = (vt.T * np.sqrt(s)).astype(np.float32)  # [items, k]
    genre_unit = raw.genres / np.maximum(np.linalg.norm(raw.genres, axis=1, keepdims=True), 1)
    age_bucket = np.searchsorted(AGE_EDGES, raw.age, side="right")  # 0..6
    demo = age_bucket * 2 + raw.gender
    demo_profile = np.zeros((int(demo.max()) + 1, NUM_GENRES), np.float32)
    np.add.at(demo_profile, demo[user[tr]], raw.genres[item[tr]])
    demo_profile /= np.maximum(np.linalg.norm(demo_profile, axis=1, keepdims=True), 1e-6)
    demo_affinity = demo_profile @ genre_unit.T  # [demo groups, items]

    # ---- item features
    first_genre = np.argmax(raw.genres, axis=1) + 1
    rest = raw.genres.copy()
    rest[np.arange(n_items), first_genre - 1] = 0
    second_genre = np.where(rest.any(1), np.argmax(rest, axis=1) + 2, 1)
    decade = np.where(raw.release_year > 0, np.clip((raw.release_year - 1920) // 10, 0, 9) + 2, 1)
    pop_decile = np.searchsorted(np.quantile(counts, np.linspace(0.1, 0.9, 9)), counts) + 1
    item_feat = np.stack([first_genre, second_genre, decade, pop_decile], 1).astype(np.int64)

    # ---- requests
    starts = np.searchsorted(user, np.arange(n_users + 1))
    req_user, req_pos = [], []
    for u in range(n_users):
        lo, hi = starts[u], starts[u + 1]
        for p in range(lo + c.min_history, hi, c.request_stride):
            if (split == "test") == (ts[p] >= cutoff):
                req_user.append(u)
                req_pos.append(p)
    req_user_a, req_pos_a = np.array(req_user, np.int64), np.array(req_pos, np.int64)
    r = len(req_pos_a)
    h, g, k = c.history_length, c.per_group, c.gt_num
    # Ground truth: the next k positives (train: before the cutoff).
    gt = np.zeros((r, k), np.int64) - 1
    n_gt = np.zeros(r, np.int64)
    positive = rating >= c.positive_rating
    for i, (u, p) in enumerate(zip(req_user_a, req_pos_a)):
        end = starts[u + 1]
        fut = np.flatnonzero(positive[p:end] & (is_train_event[p:end] | (split == "test")))
        fut = item[p + fut[:k]]
        gt[i, : len(fut)] = fut
        n_gt[i] = len(fut)
    ok = n_gt >= c.min_gt
    req_user_a, req_pos_a, gt, n_gt = req_user_a[ok], req_pos_a[ok], gt[ok], n_gt[ok]
    r = len(req_pos_a)
    if r == 0:
        raise ValueError(f"MovieLens {split}: no request has >= min_gt={c.min_gt} positives")

    hist_idx = req_pos_a[:, None] - h + np.arange(h)[None, :]
    hist_valid = hist_idx >= starts[req_user_a][:, None]
    hist = np.where(hist_valid, item[np.maximum(hist_idx, 0)], -1)

    rng = np.random.default_rng([c.seed, 0 if split == "train" else 1])
    item_id = np.zeros((r, schema.list_size), np.int64)
    label = np.zeros((r, schema.list_size), np.float32)
    chunk = 1024
    for lo in range(0, r, chunk):
        sl = slice(lo, min(lo + chunk, r))
        item_id[sl], label[sl] = _cascade_chunk(
            rng, c, user, item, starts, req_user_a[sl], req_pos_a[sl], hist[sl],
            hist_valid[sl], gt[sl], pop, factors, genre_unit, raw.genres,
            demo_affinity[demo[req_user_a[sl]]],
        )
    mask = (item_id > 0).astype(np.float32)
    stage_group = np.where(mask > 0, np.repeat(np.arange(4), [k, g, g, g])[None, :], -1)
    req_ts = ts[req_pos_a]
    hour = (req_ts // 3600) % 24
    wday = ((req_ts // 86400) + 3) % 7  # Monday = 0 (UTC)
    u_ = req_user_a
    arrays = {
        "user_id": u_ + 1,
        "user_features": np.stack(
            [raw.gender[u_] + 1, age_bucket[u_] + 1, raw.occupation[u_] + 1,
             raw.zip_region[u_] + 1, hour + 1, wday + 1], 1,
        ).astype(np.int64),
        "history": np.where(hist_valid, hist + 1, 0).astype(np.int64),
        "item_id": item_id,
        "item_features": item_feat[np.maximum(item_id - 1, 0)] * mask[..., None].astype(np.int64),
        "label": label,
        "mask": mask,
        "stage_group": stage_group.astype(np.int32),
    }
    validate_arrays(arrays, schema, source=f"MovieLens {split}")
    return schema, arrays


def _cascade_chunk(
    rng: np.random.Generator,
    c: MovieLensConfig,
    user: np.ndarray,
    item: np.ndarray,
    starts: np.ndarray,
    req_user: np.ndarray,
    req_pos: np.ndarray,
    hist: np.ndarray,
    hist_valid: np.ndarray,
    gt: np.ndarray,
    pop: np.ndarray,
    factors: np.ndarray,
    genre_unit: np.ndarray,
    genres: np.ndarray,
    demo_aff: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the logged cascade for a chunk of requests; returns (item_id, label) [b, N]."""
    b, n_items = len(req_user), len(pop)
    k, g = gt.shape[1], c.per_group
    safe_hist = np.maximum(hist, 0)
    hv = hist_valid[..., None].astype(np.float32)
    n_hist = np.maximum(hv.sum(1), 1)
    taste = (factors[safe_hist] * hv).sum(1) / n_hist  # [b, k]
    profile = (genres[safe_hist] * hv).sum(1)
    profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-6)
    genre_match = _zscore(profile @ genre_unit.T)
    svd = _zscore(taste @ factors.T)
    # Excluded: everything the user rated before the request, and the ground truth.
    excluded = np.zeros((b, n_items), bool)
    for i, (u, p) in enumerate(zip(req_user, req_pos)):
        excluded[i, item[starts[u] : p]] = True
    gt_valid = gt >= 0
    excluded[np.nonzero(gt_valid)[0], gt[gt_valid]] = True
    sn = c.stage_noise

    def noisy(x: np.ndarray, s: float) -> np.ndarray:
        return x + s * rng.standard_normal(x.shape, dtype=np.float32)

    def at(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        return np.take_along_axis(x, pos, 1)

    s1 = np.where(excluded, -np.inf, noisy(pop[None, :] + genre_match, sn[0]))
    # Top retrieval_size (the catalogue is much larger than what a user has rated).
    retrieved = np.argpartition(-s1, c.retrieval_size - 1, axis=1)[:, : c.retrieval_size]
    s2 = noisy(at(svd, retrieved) + 0.5 * pop[retrieved], sn[1])
    pre = at(retrieved, np.argsort(-s2, axis=1))
    passed = pre[:, : c.prerank_keep]
    s3 = noisy(at(svd, passed) + 0.5 * at(genre_match, passed) + at(_zscore(demo_aff), passed),
               sn[2])
    coarse = at(passed, np.argsort(-s3, axis=1))
    pools = (coarse[:, : c.coarse_keep], coarse[:, c.coarse_keep :], pre[:, c.prerank_keep :])
    parts_id = [np.where(gt_valid, gt + 1, 0)]
    parts_label = [np.where(gt_valid, 30.0 - (np.arange(k) + 1), 0.0).astype(np.float32)]
    for pool, lab in zip(pools, (7.0, 6.0, 5.0)):
        pick = np.argsort(rng.random(pool.shape), axis=1)[:, :g]
        parts_id.append(np.take_along_axis(pool, pick, 1) + 1)
        parts_label.append(np.full((b, g), lab, np.float32))
    return np.concatenate(parts_id, 1), np.concatenate(parts_label, 1)


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m lcron_tf.data.movielens --out-dir OUT [--data-dir DIR]``."""
    from lcron_tf.data.tfrecord import write_tfrecords

    p = argparse.ArgumentParser(description="Build the MovieLens-100K cascade TFRecords.")
    p.add_argument("--data-dir", default=None, help="folder holding movielens_100k/")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    for split in ("train", "test"):
        schema, arrays = build_movielens(args.data_dir, split)
        write_tfrecords(arrays, schema, Path(args.out_dir) / split, overwrite=args.overwrite)
        print(f"{split}: {len(arrays['user_id'])} requests -> {Path(args.out_dir) / split}")


if __name__ == "__main__":
    main()
