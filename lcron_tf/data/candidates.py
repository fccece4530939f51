"""Cascade requests (candidate lists with graded labels) from a plain interaction log.

:func:`build_candidates` turns interactions - a ``tf.data.Dataset`` of dicts, a dict of
arrays or a pandas ``DataFrame``, with **your own feature names and dtypes** (string ids
included) - into cascade requests that ``LcronTask`` trains on and your own towers
(``StringLookup`` + ``Embedding``) consume unchanged.

**Requests.** Rows are grouped by ``query_key`` (a user, or a session: one column or a
tuple of columns). Within a group the rows are ordered by ``timestamp_key`` (input order
when there is none); duplicate (group, item) rows keep the one with the highest
relevance. A group's positives, in that order, are cut into consecutive requests of
``positives_per_request``; the last, shorter one is kept when it has at least
``min_positives`` (then its empty positive slots are padded). Each request carries the
query features of its first positive.

**Candidates** of a request, laid out block by block (``CandidateLists.slots``)::

    [positives | impressions | hard negatives | popular negatives | uniform negatives]

* positives: rows with ``relevance >= positive_threshold`` (every row when it is None);
* impressions: logged rows below the threshold (shown, not engaged), at most
  ``impressions_per_request``, chosen at random among those of the request's time window
  (after the previous request's last positive, up to its own last positive; rows after a
  group's last positive join its last request);
* hard negatives: the highest-scored items of a retrieval model (``retrieval=``) that the
  query never interacted with;
* popular / uniform negatives: sampled without replacement from the split's catalogue,
  with probability proportional to ``count ** popularity_exponent`` (training counts) or
  uniformly; never an item of the query's group, never twice in a request.

A block with fewer candidates than its width is padded (``mask`` 0, ``candidate_type`` 0,
``label`` 0, item features ``""`` for strings and 0 for numbers).

**Labels** (float32, higher = better; only their order matters to LCRON, JointRecall and
the ground truth ``GT = top gt_num labels``)::

    padding 0 < sampled negative 1 < hard negative 2 < impression 3 < positive 3 + grade

``grade >= 1`` grades the relevance signal (``grades``): ``"rank"`` = the dense rank of
the value among the distinct training positive values (ratings 1..5 -> grades 1..5),
``"binary"`` = 1, an int ``G`` = ``G`` quantile bins of the training positive values, or
a tuple of bin edges. The official LCRON data (lcron_method.md §7) labels positives
``30 - rank_index`` (their rank in the production ranker, 10..29) and negatives 7 / 6 / 5
by the stage that cut them (rank / coarse / pre-rank). This scheme keeps that order with
what an interaction log has: positives first (graded by your signal instead of a
production rank; equal signals tie), then candidates that got closest to the user
(impressions ~ ``rank_neg``, retrieval hard negatives ~ ``coarse/prerank_neg``), then
never-retrieved random items. With ``gt_num = positives_per_request`` and
``min_positives = positives_per_request`` every request's GT is exactly its positives.

**Splits** (``split``), leak-free: ``"time"`` - rows before the ``1 - test_fraction``
quantile of the timestamps are training rows, the others test rows; ``"user"`` - a
seeded ``test_fraction`` of the query groups are test groups; ``"none"`` - everything is
training. Training requests are built from training rows only: their negatives exclude the
group's training items, are drawn from items seen in training (plus the ``items`` table),
and popularity and grades come from training rows, so changing test rows never changes
the training requests. Test requests hold test positives; their negatives exclude every
item the group has in either split.

Everything is vectorised numpy and deterministic for a given input and ``seed`` (training
and test use separate random streams). ``benchmarks/bench_candidates.py`` measures it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CANDIDATE_TYPES",
    "RESERVED_KEYS",
    "CandidateConfig",
    "CandidateLists",
    "build_candidates",
    "interactions_to_arrays",
]

# candidate_type values, in slot order (0 = padded slot).
CANDIDATE_TYPES = ("padding", "positive", "impression", "hard", "popular", "uniform")
PAD, POSITIVE, IMPRESSION, HARD, POPULAR, UNIFORM = range(6)
LABEL_OF_TYPE = {PAD: 0.0, UNIFORM: 1.0, POPULAR: 1.0, HARD: 2.0, IMPRESSION: 3.0}
POSITIVE_LABEL_BASE = 3.0
RESERVED_KEYS = ("label", "mask", "relevance", "candidate_type", "request_time")
SPLITS = ("time", "user", "none")
_MAX_SAMPLING_ROUNDS = 12


@dataclasses.dataclass(frozen=True)
class CandidateConfig:
    """Options of :func:`build_candidates` (see the module docstring for the semantics).

    Attributes:
      query_key: column (or tuple of columns) that groups rows into queries: a user id, or
        a session id.
      item_key: the item id column (any dtype; strings are kept as strings).
      relevance_key: the relevance signal (rating, click, watch time); None = 1 per row.
      timestamp_key: event time (numbers or numpy datetime64); needed by ``split="time"``.
      query_features: more per-request columns (from the request's first positive);
        the ``query_key`` columns are always included.
      item_features: more per-item columns carried with every candidate.
      positives_per_request: width P of the positive block.
      min_positives: drop requests with fewer positives.
      positive_threshold: ``relevance >= threshold`` is a positive; rows below are logged
        impressions. None: every row is a positive.
      impressions_per_request: width of the impression block.
      hard_negatives: width of the hard-negative block (needs ``retrieval=``).
      popular_negatives: width of the popularity-sampled block.
      uniform_negatives: width of the uniformly sampled block.
      popularity_exponent: popularity sampling weight ``count ** exponent``.
      grades: ``"rank"``, ``"binary"``, an int number of quantile bins, or bin edges.
      split: ``"time"``, ``"user"`` or ``"none"``.
      test_fraction: share of the timestamps (``"time"``) or of the groups (``"user"``).
      seed: seed of every random choice.
    """

    query_key: str | tuple[str, ...] = "user_id"
    item_key: str = "item_id"
    relevance_key: str | None = "rating"
    timestamp_key: str | None = None
    query_features: tuple[str, ...] = ()
    item_features: tuple[str, ...] = ()
    positives_per_request: int = 10
    min_positives: int = 1
    positive_threshold: float | None = None
    impressions_per_request: int = 0
    hard_negatives: int = 0
    popular_negatives: int = 0
    uniform_negatives: int = 40
    popularity_exponent: float = 0.75
    grades: str | int | tuple[float, ...] = "rank"
    split: str = "time"
    test_fraction: float = 0.2
    seed: int = 0

    @property
    def query_keys(self) -> tuple[str, ...]:
        return (self.query_key,) if isinstance(self.query_key, str) else tuple(self.query_key)

    @property
    def block_sizes(self) -> dict[str, int]:
        """Width of every candidate block, in slot order."""
        return {
            "positive": self.positives_per_request,
            "impression": self.impressions_per_request,
            "hard": self.hard_negatives,
            "popular": self.popular_negatives,
            "uniform": self.uniform_negatives,
        }

    @property
    def list_size(self) -> int:
        """N, the number of candidate slots of every request."""
        return sum(self.block_sizes.values())


@dataclasses.dataclass
class CandidateLists:
    """The result of :func:`build_candidates`.

    Attributes:
      train, test: dicts of numpy arrays, request axis first (``R`` requests,
        ``N = config.list_size``): every query feature ``[R]``; the item column and every
        item feature ``[R, N]`` (padded slots ``""`` / 0); ``label`` float32 ``[R, N]``;
        ``mask`` float32 ``[R, N]`` (1 = real candidate); ``relevance`` float32 ``[R, N]``
        (the raw signal of positives and impressions, 0 elsewhere); ``candidate_type``
        int32 ``[R, N]`` (index into :data:`CANDIDATE_TYPES`); ``request_time`` ``[R]``
        when there is a timestamp (time of the request's first positive).
      rows: ``{"train", "test"}`` -> int64 indices of the input rows of each split (for the
        per-interaction tasks, e.g. the TFRS tutorial's ``Retrieval`` / ``Ranking``).
      items: the catalogue, ``{item_key: [M], feature: [M], ...}`` (every item seen).
      slots: block name -> ``slice`` of the candidate axis.
      config: the :class:`CandidateConfig` used.
      report: counts (requests, dropped requests, short blocks) per split.
    """

    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    rows: dict[str, np.ndarray]
    items: dict[str, np.ndarray]
    slots: dict[str, slice]
    config: CandidateConfig
    report: dict[str, dict[str, int]]

    @property
    def list_size(self) -> int:
        return self.config.list_size

    def split(self, name: str) -> dict[str, np.ndarray]:
        if name not in ("train", "test"):
            raise ValueError(f"`split` must be 'train' or 'test'. Received: {name!r}")
        return self.train if name == "train" else self.test

    def dataset(
        self, split: str = "train", batch_size: int | None = None, *,
        shuffle: bool = False, seed: int = 0, drop_remainder: bool = True,
    ) -> Any:
        """The split as a ``tf.data.Dataset`` of dicts (batched when ``batch_size`` is given).

        ``drop_remainder=True`` keeps every batch the same shape (XLA compiles once).
        """
        import tensorflow as tf

        arrays = self.split(split)
        ds = tf.data.Dataset.from_tensor_slices(arrays)
        if shuffle:
            ds = ds.shuffle(len(arrays["label"]), seed=seed, reshuffle_each_iteration=True)
        if batch_size is not None:
            ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
        return ds.prefetch(2)


# ------------------------------------------------------------------------------ input


def interactions_to_arrays(
    interactions: Any, columns: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """A dict of 1-D numpy arrays from a ``tf.data.Dataset``, a mapping or a DataFrame.

    Args:
      interactions: ``tf.data.Dataset`` of dicts (unbatched scalars or batched ``[b]``),
        a mapping ``{name: array-like [E]}``, or a pandas ``DataFrame``.
      columns: the columns to keep (default: all).

    Raises:
      ValueError: an unsupported type, a missing column (named, with the ones present),
        a column that is not 1-D, or columns of different lengths.
    """
    kind = type(interactions).__module__.split(".")[0]
    if kind == "pandas" and hasattr(interactions, "columns"):
        present = [str(c) for c in interactions.columns]
        data = {c: interactions[c] for c in (columns or present) if c in present}
        data = {c: np.asarray(v.to_numpy()) for c, v in data.items()}
    elif isinstance(interactions, Mapping):
        present = [str(c) for c in interactions]
        data = {c: np.asarray(interactions[c]) for c in (columns or present) if c in present}
    elif hasattr(interactions, "element_spec") and hasattr(interactions, "as_numpy_iterator"):
        spec = interactions.element_spec
        if not isinstance(spec, Mapping):
            raise ValueError(
                "a tf.data.Dataset of interactions must yield dicts of features. "
                f"Received element_spec={spec!r}"
            )
        present = [str(c) for c in spec]
        keep = [c for c in (columns or present) if c in present]
        ds = interactions.map(lambda x: {c: x[c] for c in keep})
        if all(spec[c].shape.rank == 0 for c in keep):
            ds = ds.batch(1 << 16)
        parts: dict[str, list[np.ndarray]] = {c: [] for c in keep}
        for batch in ds.as_numpy_iterator():
            for c in keep:
                parts[c].append(np.asarray(batch[c]))
        data = {
            c: np.concatenate(v) if v else np.zeros(0, spec[c].dtype.as_numpy_dtype)
            for c, v in parts.items()
        }
    else:
        raise ValueError(
            "`interactions` must be a tf.data.Dataset of dicts, a dict of arrays or a pandas "
            f"DataFrame. Received: {type(interactions).__name__}"
        )
    missing = [c for c in (columns or []) if c not in data]
    if missing:
        raise ValueError(
            f"`interactions` has no column(s) {missing}; it has {sorted(present)}"
        )
    lengths = {c: v.shape[0] if v.ndim else -1 for c, v in data.items()}
    for c, v in data.items():
        if v.ndim != 1:
            raise ValueError(f"column {c!r} must be 1-D (one value per row); shape {v.shape}")
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the interaction columns have different lengths: {lengths}")
    return data


def _factorize(values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique values, int64 codes) of a column; object arrays are compared as text."""
    key = values
    if values.dtype == object and values.size:
        kinds = {type(v) for v in values[: min(values.size, 1000)]}
        if kinds <= {bytes, np.bytes_}:
            key = values.astype(bytes)
        elif kinds <= {str, np.str_}:
            key = values.astype(str)
    try:
        uniq, first, codes = np.unique(key, return_index=True, return_inverse=True)
    except TypeError as err:
        raise ValueError(
            f"column {name!r} mixes value types that cannot be compared: {err}"
        ) from None
    del uniq
    return values[first], codes.reshape(-1).astype(np.int64)


def _as_float(values: np.ndarray, name: str) -> np.ndarray:
    try:
        out = values.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"column {name!r} must be numeric; {err}") from None
    bad = ~np.isfinite(out)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"column {name!r} has a non-finite value {values[i]!r} at row {i}")
    return out


def _as_time(values: np.ndarray, name: str) -> np.ndarray:
    if np.issubdtype(values.dtype, np.datetime64):
        if np.isnat(values).any():
            raise ValueError(f"column {name!r} has a missing (NaT) timestamp")
        return values.astype("datetime64[ns]").astype(np.int64).astype(np.float64)
    return _as_float(values, name)


def _pad_value(values: np.ndarray) -> Any:
    if values.dtype.kind in "SU":
        return values.dtype.type()
    if values.dtype == object:
        sample = values[0] if values.size else ""
        return b"" if isinstance(sample, bytes | np.bytes_) else ""
    return values.dtype.type(0)


def _check_config(c: CandidateConfig) -> None:
    for name in ("positives_per_request", "min_positives"):
        v = getattr(c, name)
        if not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"`{name}` must be an int >= 1. Received: {v!r}")
    if c.min_positives > c.positives_per_request:
        raise ValueError(
            f"`min_positives` ({c.min_positives}) must be <= `positives_per_request` "
            f"({c.positives_per_request})"
        )
    for name in ("impressions_per_request", "hard_negatives", "popular_negatives",
                 "uniform_negatives"):
        v = getattr(c, name)
        if not isinstance(v, int | np.integer) or v < 0:
            raise ValueError(f"`{name}` must be an int >= 0. Received: {v!r}")
    if c.split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}. Received: {c.split!r}")
    if c.split == "time" and c.timestamp_key is None:
        raise ValueError("`split='time'` needs `timestamp_key` (or use split='user')")
    if c.split != "none" and not 0.0 < float(c.test_fraction) < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1). Received: {c.test_fraction!r}")
    if c.popularity_exponent < 0:
        raise ValueError(f"`popularity_exponent` must be >= 0. Received: {c.popularity_exponent}")
    g = c.grades
    if not (g in ("rank", "binary") or (isinstance(g, int) and g >= 1) or (
        isinstance(g, tuple | list) and len(g) > 0 and all(np.diff(np.asarray(g, float)) > 0)
    )):
        raise ValueError(
            "`grades` must be 'rank', 'binary', an int >= 1 (quantile bins) or increasing bin "
            f"edges. Received: {g!r}"
        )
    names = [*c.query_keys, c.item_key, *c.query_features, *c.item_features]
    clash = sorted(set(names) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"feature names {clash} are reserved for the output ({RESERVED_KEYS})")
    if len(set(names)) != len(names):
        raise ValueError(f"a column is listed twice among the query/item features: {names}")


# ------------------------------------------------------------------------------ helpers


def _in_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Elementwise ``keys in sorted_keys`` (both int64)."""
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return sorted_keys[pos] == keys


def _rank_in_run(sorted_ids: np.ndarray) -> np.ndarray:
    """0-based position of every element within its run of equal (sorted) ids."""
    n = sorted_ids.size
    if n == 0:
        return np.zeros(0, np.int64)
    start = np.r_[True, sorted_ids[1:] != sorted_ids[:-1]]
    idx = np.arange(n)
    return idx - np.maximum.accumulate(np.where(start, idx, 0))


def _fill_block(
    req: np.ndarray, pos: np.ndarray, values: np.ndarray, num_req: int, width: int, fill: Any
) -> np.ndarray:
    out = np.full((num_req, width), fill, dtype=values.dtype)
    keep = pos < width
    out[req[keep], pos[keep]] = values[keep]
    return out


def _grade_edges(c: CandidateConfig, train_pos_rel: np.ndarray) -> np.ndarray | None:
    """Edges ``e`` so that ``grade = 1 + searchsorted(e, r, 'right')`` (None = binary)."""
    g = c.grades
    if g == "binary" or train_pos_rel.size == 0:
        return None
    if g == "rank":
        return np.unique(train_pos_rel)[1:]
    if isinstance(g, int):
        return np.unique(np.quantile(train_pos_rel, np.linspace(0, 1, g + 1)[1:-1]))
    return np.asarray(g, np.float64)


def _sample_negatives(
    rng: np.random.Generator,
    width: int,
    req_group: np.ndarray,
    taken: np.ndarray,
    catalogue: np.ndarray,
    probs: np.ndarray | None,
    excluded: np.ndarray,
    vocab: int,
) -> tuple[np.ndarray, int]:
    """Sample ``width`` distinct item codes per request, by rejection, vectorised.

    Args:
      req_group: int64 ``[R]`` group code of every request.
      taken: int64 ``[R, T]`` codes already in the request (-1 = empty).
      catalogue: sorted int64 item codes to draw from; ``probs`` their weights (None =
        uniform).
      excluded: sorted int64 keys ``group * vocab + item`` that must not be drawn.

    Returns:
      ``(codes [R, width] with -1 where the catalogue ran out, number of short requests)``.
    """
    r = req_group.size
    out = np.full((r, width), -1, np.int64)
    if width == 0 or r == 0 or catalogue.size == 0:
        return out, int(r > 0 and width > 0) * r
    cdf = None if probs is None else np.cumsum(probs) / np.sum(probs)
    row_taken = np.sort(
        (np.arange(r)[:, None] * vocab + np.where(taken >= 0, taken, 0))[taken >= 0]
    )
    filled = np.zeros(r, np.int64)
    rows = np.arange(r)
    draws = 2 * width + 8
    for _ in range(_MAX_SAMPLING_ROUNDS):
        if rows.size == 0:
            break
        u = rng.random((rows.size, draws))
        pos = np.minimum(
            (u * catalogue.size).astype(np.int64) if cdf is None else np.searchsorted(cdf, u),
            catalogue.size - 1,
        )
        cand = catalogue[pos]
        ok = ~_in_sorted(req_group[rows, None] * vocab + cand, excluded)
        row_keys = rows[:, None] * vocab + cand
        ok &= ~_in_sorted(row_keys, row_taken)
        # Keep the first occurrence of a repeated draw within a row.
        flat = row_keys.reshape(-1)
        first = np.zeros(flat.size, bool)
        first[np.unique(flat, return_index=True)[1]] = True
        ok &= first.reshape(cand.shape)
        rank = np.cumsum(ok, axis=1) - 1
        need = width - filled[rows]
        ok &= rank < need[:, None]
        ri, ci = np.nonzero(ok)
        out[rows[ri], filled[rows[ri]] + rank[ri, ci]] = cand[ri, ci]
        new_keys = rows[ri] * vocab + cand[ri, ci]
        row_taken = np.sort(np.concatenate([row_taken, new_keys]))
        filled[rows] += ok.sum(1)
        rows = rows[filled[rows] < width]
        draws *= 2
    return out, int(rows.size)


# ------------------------------------------------------------------------------ build


def build_candidates(
    interactions: Any,
    config: CandidateConfig | None = None,
    *,
    items: Any = None,
    retrieval: Callable[[dict[str, np.ndarray]], Any] | None = None,
    retrieval_batch_size: int = 4096,
    **overrides: Any,
) -> CandidateLists:
    """Build cascade requests from interactions (see the module docstring).

    Args:
      interactions: ``tf.data.Dataset`` of dicts, mapping of 1-D arrays or pandas
        ``DataFrame``; one row per interaction (or logged impression).
      config: a :class:`CandidateConfig`; keyword ``overrides`` replace its fields, e.g.
        ``build_candidates(ratings, item_key="movie_title", relevance_key="user_rating")``.
      items: optional catalogue table (same input types) with ``item_key`` and the
        ``item_features``: every item in it can be sampled as a negative, and its feature
        values win over the ones seen in ``interactions``.
      retrieval: for ``hard_negatives``: a function of a dict of query features (numpy
        ``[b]`` each, the request's query columns) returning ``ids`` ``[b, k]`` or
        ``(scores, ids)`` (e.g. a TFRS ``BruteForce`` index: ``lambda q:
        index(q["user_id"])``), best first, in the ``item_key`` values; tensors are fine.
      retrieval_batch_size: requests per ``retrieval`` call.

    Returns:
      :class:`CandidateLists`.

    Raises:
      ValueError: a bad option, a missing or malformed column (named), hard negatives
        without ``retrieval``, or no request at all in the training split.
    """
    c = dataclasses.replace(config or CandidateConfig(), **overrides)
    _check_config(c)
    if c.hard_negatives and retrieval is None:
        raise ValueError("`hard_negatives` > 0 needs `retrieval=` (a retrieval model)")
    needed = [*c.query_keys, c.item_key, *c.query_features, *c.item_features]
    needed += [k for k in (c.relevance_key, c.timestamp_key) if k is not None]
    data = interactions_to_arrays(interactions, list(dict.fromkeys(needed)))
    e = data[c.item_key].shape[0]
    if e == 0:
        raise ValueError("`interactions` is empty")
    rel = _as_float(data[c.relevance_key], c.relevance_key) if c.relevance_key else np.ones(e)
    t = _as_time(data[c.timestamp_key], c.timestamp_key) if c.timestamp_key else None

    # -- codes: items over interactions + catalogue table, groups over the query columns
    table = None
    if items is not None:
        table = interactions_to_arrays(items, [c.item_key, *c.item_features])
    all_items = data[c.item_key] if table is None else np.concatenate(
        [data[c.item_key], table[c.item_key]]
    )
    vocab_values, item_codes_all = _factorize(all_items, c.item_key)
    item_code = item_codes_all[:e]
    vocab = int(vocab_values.size)
    group = np.zeros(e, np.int64)
    for key in c.query_keys:
        uniq, codes = _factorize(data[key], key)
        group = group * uniq.size + codes
    _, group = np.unique(group, return_inverse=True)
    group = group.astype(np.int64)
    num_groups = int(group.max()) + 1

    # -- split rows
    is_test = np.zeros(e, bool)
    if c.split == "time":
        cutoff = np.quantile(t, 1.0 - c.test_fraction)
        is_test = t >= cutoff
    elif c.split == "user":
        perm = np.random.default_rng([c.seed, 2]).permutation(num_groups)
        test_groups = np.zeros(num_groups, bool)
        test_groups[perm[: int(np.ceil(c.test_fraction * num_groups))]] = True
        is_test = test_groups[group]
    rows = {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}

    positive = np.ones(e, bool) if c.positive_threshold is None else rel >= c.positive_threshold
    train_rows = rows["train"]
    counts = np.bincount(item_code[train_rows[positive[train_rows]]], minlength=vocab)
    edges = _grade_edges(c, rel[train_rows[positive[train_rows]]])

    out: dict[str, dict[str, np.ndarray]] = {}
    report: dict[str, dict[str, int]] = {}
    for split in ("train", "test"):
        known = rows["train"] if split == "train" else np.arange(e)
        in_cat = np.zeros(vocab, bool)
        in_cat[item_code[known]] = True
        if table is not None:
            in_cat[item_codes_all[e:]] = True
        catalogue = np.flatnonzero(in_cat).astype(np.int64)
        excluded = np.unique(group[known] * vocab + item_code[known])
        out[split], report[split] = _build_split(
            c, data, rows[split], group, item_code, rel, t, positive, edges, catalogue,
            counts, excluded, vocab, vocab_values, table, item_codes_all[e:], known,
            retrieval, retrieval_batch_size,
            np.random.default_rng([c.seed, 0 if split == "train" else 1]),
        )
    if report["train"]["requests"] == 0:
        raise ValueError(
            f"no training request has >= min_positives={c.min_positives} positives "
            f"(positive_threshold={c.positive_threshold}, {len(rows['train'])} training rows)"
        )
    item_table = _item_table(c, data, np.arange(e), item_code, vocab, table, item_codes_all[e:])
    present = np.flatnonzero(item_table.pop("_present"))
    catalogue_all = {k: v[present] for k, v in item_table.items()}
    slots, start = {}, 0
    for name, width in c.block_sizes.items():
        slots[name] = slice(start, start + width)
        start += width
    return CandidateLists(
        train=out["train"], test=out["test"], rows=rows, items=catalogue_all, slots=slots,
        config=c, report=report,
    )


def _item_table(
    c: CandidateConfig,
    data: Mapping[str, np.ndarray],
    known: np.ndarray,
    item_code: np.ndarray,
    vocab: int,
    table: Mapping[str, np.ndarray] | None,
    table_codes: np.ndarray,
) -> dict[str, np.ndarray]:
    """Per item code: the item column and features (first known row; the table wins)."""
    cols = [c.item_key, *c.item_features]
    out = {}
    first = np.full(vocab, -1, np.int64)
    rev = known[::-1]
    first[item_code[rev]] = rev
    present = first >= 0
    for col in cols:
        src = data[col]
        values = np.full(vocab, _pad_value(src), dtype=src.dtype)
        values[present] = src[first[present]]
        if table is not None:
            tv = table[col]
            if values.dtype != tv.dtype:
                values = values.astype(np.result_type(values.dtype, tv.dtype))
            values[table_codes] = tv
        out[col] = values
    if table is not None:
        present = present.copy()
        present[table_codes] = True
    out["_present"] = present
    return out


def _build_split(
    c: CandidateConfig,
    data: Mapping[str, np.ndarray],
    split_rows: np.ndarray,
    group: np.ndarray,
    item_code: np.ndarray,
    rel: np.ndarray,
    t: np.ndarray | None,
    positive: np.ndarray,
    edges: np.ndarray | None,
    catalogue: np.ndarray,
    counts: np.ndarray,
    excluded: np.ndarray,
    vocab: int,
    vocab_values: np.ndarray,
    table: Mapping[str, np.ndarray] | None,
    table_codes: np.ndarray,
    known: np.ndarray,
    retrieval: Callable | None,
    retrieval_batch_size: int,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    p, imp_w = c.positives_per_request, c.impressions_per_request
    # -- dedupe (group, item): keep the highest relevance, then the latest row.
    r0 = split_rows
    tt = t[r0] if t is not None else r0.astype(np.float64)
    order = np.lexsort((r0, tt, rel[r0], item_code[r0], group[r0]))
    r0 = r0[order]
    gi = group[r0] * vocab + item_code[r0]
    last = np.r_[gi[1:] != gi[:-1], True] if r0.size else np.zeros(0, bool)
    r0 = r0[last]
    # -- order within the group by time (then input row)
    tt = t[r0] if t is not None else r0.astype(np.float64)
    r0 = r0[np.lexsort((r0, tt, group[r0]))]
    g = group[r0]
    pos_flag = positive[r0]
    # Positive ordinal within the group; impressions belong to the chunk of the next positive.
    start = np.r_[True, g[1:] != g[:-1]] if r0.size else np.zeros(0, bool)
    seg = np.cumsum(start) - 1
    cum_excl = np.cumsum(pos_flag) - pos_flag  # positives before this row (all groups)
    before = cum_excl - cum_excl[np.flatnonzero(start)][seg]  # ... of the same group
    n_pos_group = np.bincount(seg, weights=pos_flag).astype(np.int64) if r0.size else seg
    chunk = np.where(pos_flag, before // p, np.minimum(before // p, np.maximum(
        (n_pos_group[seg] - 1) // p, 0)))
    has_pos = n_pos_group[seg] > 0
    # Request id = (group segment, chunk); count positives per request.
    req_key = seg * (int(n_pos_group.max()) // p + 2 if r0.size else 1) + chunk
    uniq_req, req = np.unique(req_key[has_pos], return_inverse=True)
    r1, pos1 = r0[has_pos], pos_flag[has_pos]
    req = req.astype(np.int64)
    n_pos_req = np.bincount(req, weights=pos1, minlength=uniq_req.size).astype(np.int64)
    keep_req = n_pos_req >= c.min_positives
    new_id = np.cumsum(keep_req) - 1
    keep_row = keep_req[req]
    r1, pos1, req = r1[keep_row], pos1[keep_row], new_id[req[keep_row]]
    num_req = int(keep_req.sum())
    report = {
        "requests": num_req,
        "dropped_requests": int((~keep_req).sum()),
        "rows": int(split_rows.size),
    }
    n = c.list_size
    codes = np.full((num_req, n), -1, np.int64)
    ctype = np.zeros((num_req, n), np.int32)
    relevance = np.zeros((num_req, n), np.float32)
    # Rows are grouped by request (requests are contiguous, in order); position in request.
    rp, rrel = r1[pos1], req[pos1]
    ppos = _rank_in_run(rrel)
    codes[:, :p] = _fill_block(rrel, ppos, item_code[rp], num_req, p, -1)
    relevance[:, :p] = _fill_block(rrel, ppos, rel[rp].astype(np.float32), num_req, p, 0.0)
    first_row = np.full(num_req, -1, np.int64)
    first_row[rrel[::-1]] = rp[::-1]
    col = p
    if imp_w:
        ri, rreq = r1[~pos1], req[~pos1]
        shuffle = np.lexsort((rng.random(ri.size), rreq))
        ri, rreq = ri[shuffle], rreq[shuffle]
        ipos = _rank_in_run(rreq)
        codes[:, col : col + imp_w] = _fill_block(rreq, ipos, item_code[ri], num_req, imp_w, -1)
        relevance[:, col : col + imp_w] = _fill_block(
            rreq, ipos, rel[ri].astype(np.float32), num_req, imp_w, 0.0
        )
        col += imp_w
    req_group = group[first_row] if num_req else np.zeros(0, np.int64)
    query_cols = list(dict.fromkeys([*c.query_keys, *c.query_features]))
    arrays: dict[str, np.ndarray] = {k: data[k][first_row] for k in query_cols}
    short = {}
    if c.hard_negatives:
        hard = _hard_negatives(
            c, arrays, retrieval, retrieval_batch_size, vocab_values, catalogue, excluded,
            req_group, codes[:, :col], vocab,
        )
        codes[:, col : col + c.hard_negatives] = hard
        short["short_hard"] = int((hard < 0).any(1).sum())
        col += c.hard_negatives
    for width, probs, name in (
        (c.popular_negatives, counts[catalogue].astype(np.float64) ** c.popularity_exponent,
         "popular"),
        (c.uniform_negatives, None, "uniform"),
    ):
        if not width:
            continue
        cat, pr = catalogue, probs
        if pr is not None:
            nz = pr > 0
            cat, pr = catalogue[nz], pr[nz]
        sampled, n_short = _sample_negatives(
            rng, width, req_group, codes[:, :col], cat, pr, excluded, vocab
        )
        codes[:, col : col + width] = sampled
        short[f"short_{name}"] = n_short
        col += width
    report.update(short)
    # -- candidate types, labels, item columns
    types = []
    for name, width in c.block_sizes.items():
        types += [CANDIDATE_TYPES.index(name)] * width
    ctype[:] = np.where(codes >= 0, np.asarray(types, np.int32)[None, :], 0)
    label = np.zeros((num_req, n), np.float32)
    for typ, value in LABEL_OF_TYPE.items():
        label[ctype == typ] = value
    is_pos = ctype == POSITIVE
    grade = (
        np.ones(int(is_pos.sum()))
        if edges is None
        else 1 + np.searchsorted(edges, relevance[is_pos].astype(np.float64), side="right")
    )
    label[is_pos] = POSITIVE_LABEL_BASE + grade
    relevance[(ctype != POSITIVE) & (ctype != IMPRESSION)] = 0.0
    item_table = _item_table(c, data, known, item_code, vocab, table, table_codes)
    item_table.pop("_present")
    safe = np.maximum(codes, 0)
    for key, values in item_table.items():
        col_values = values[safe]
        col_values[codes < 0] = _pad_value(values)
        arrays[key] = col_values
    arrays["label"] = label
    arrays["mask"] = (codes >= 0).astype(np.float32)
    arrays["relevance"] = relevance
    arrays["candidate_type"] = ctype
    if t is not None:
        arrays["request_time"] = data[c.timestamp_key][first_row]
    return arrays, report


def _like(ids: np.ndarray, key_values: np.ndarray) -> np.ndarray:
    """Text ids in the representation of ``key_values`` (bytes <-> str as UTF-8)."""
    flat = ids.reshape(-1)
    if key_values.dtype.kind == "U" and flat.size and isinstance(flat[0], bytes | np.bytes_):
        flat = np.array([x.decode("utf-8") for x in flat])
    elif key_values.dtype.kind == "S" and flat.size and isinstance(flat[0], str | np.str_):
        flat = np.array([x.encode("utf-8") for x in flat])
    return flat.astype(key_values.dtype).reshape(ids.shape)


def _hard_negatives(
    c: CandidateConfig,
    queries: Mapping[str, np.ndarray],
    retrieval: Callable,
    batch_size: int,
    vocab_values: np.ndarray,
    catalogue: np.ndarray,
    excluded: np.ndarray,
    req_group: np.ndarray,
    taken: np.ndarray,
    vocab: int,
) -> np.ndarray:
    """The top ``hard_negatives`` retrieved items per request that the group never had."""
    r = req_group.size
    out = np.full((r, c.hard_negatives), -1, np.int64)
    key_values = vocab_values
    if vocab_values.dtype == object:
        key_values = vocab_values.astype(
            bytes if isinstance(vocab_values[0], bytes | np.bytes_) else str
        )
    in_cat = np.zeros(vocab, bool)
    in_cat[catalogue] = True
    for lo in range(0, r, batch_size):
        sl = slice(lo, min(lo + batch_size, r))
        res = retrieval({k: v[sl] for k, v in queries.items()})
        ids = res[1] if isinstance(res, tuple | list) else res
        ids = np.asarray(ids.numpy() if hasattr(ids, "numpy") else ids)
        if ids.ndim != 2 or ids.shape[0] != sl.stop - sl.start:
            raise ValueError(
                f"`retrieval` must return ids [b, k] (or (scores, ids)) for b = "
                f"{sl.stop - sl.start} queries. Received shape {ids.shape}"
            )
        if ids.dtype == object or ids.dtype.kind in "SU":
            ids = _like(ids, key_values)
        try:
            pos = np.minimum(np.searchsorted(key_values, ids), vocab - 1)
        except TypeError as err:
            raise ValueError(
                f"`retrieval` returned ids of another type than `{c.item_key}`: {err}"
            ) from None
        code = np.where(key_values[pos] == ids, pos, -1)
        g = req_group[sl, None]
        ok = (code >= 0) & in_cat[np.maximum(code, 0)]
        ok &= ~_in_sorted(g * vocab + np.maximum(code, 0), excluded)
        row_taken = taken[sl]
        ok &= ~(code[:, :, None] == row_taken[:, None, :]).any(-1)
        # First occurrence only.
        same = code[:, :, None] == code[:, None, :]
        ok &= ~np.tril(same, -1).any(-1)
        rank = np.cumsum(ok, axis=1) - 1
        ok &= rank < c.hard_negatives
        ri, ci = np.nonzero(ok)
        out[lo + ri, rank[ri, ci]] = code[ri, ci]
    return out
