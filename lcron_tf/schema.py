"""The canonical cascade request format shared by every data source and the models.

One example = one request: a user (with context and history) and ``list_size`` (N)
candidates, padded to a fixed N so XLA compiles once. A batch is a dict of dense
tensors (``B`` = batch size):

=================  =========  ==================  ==========================================
key                dtype      shape               meaning
=================  =========  ==================  ==========================================
``user_id``        int64      ``[B]``             user id, 0 = unknown/padding
``user_features``  int64      ``[B, U]``          categorical user/context fields (0 = pad)
``history``        int64      ``[B, H]``          item ids the user interacted with, most
                                                  recent last, left-padded with 0
``item_id``        int64      ``[B, N]``          candidate item ids (0 = padded slot)
``item_features``  int64      ``[B, N, F]``       categorical candidate fields (0 = pad)
``label``          float32    ``[B, N]``          higher = better (0 for padded slots)
``mask``           float32    ``[B, N]``          1 = real candidate, 0 = padded slot
``stage_group``    int32      ``[B, N]``          index into ``CascadeSchema.stage_groups``
                                                  of the logged stage group (-1 = padded)
=================  =========  ==================  ==========================================

One optional key, present exactly when the schema declares ``history_feature_names``:

========================  =====  =============  ===========================================
``history_features``      int64  ``[B, H, Fh]``  categorical fields of the history items
                                                 (0 where ``history`` is 0); column ``j`` is
                                                 the item feature named
                                                 ``history_feature_names[j]``
========================  =====  =============  ===========================================

``U``, ``H``, ``N``, ``F`` and ``Fh`` are fixed per dataset and described by a
:class:`CascadeSchema`, which also carries the vocabulary size of every id field
(ids are in ``[0, vocab)``, 0 reserved for padding) so towers can size embeddings, and
optionally a name per feature column (``user_feature_names``, ``item_feature_names``), which
the ``paper`` model preset uses to find the official fields. Schemas and records written
before these optional fields existed load unchanged (the fields default to empty).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

FEATURE_KEYS = (
    "user_id",
    "user_features",
    "history",
    "item_id",
    "item_features",
    "label",
    "mask",
    "stage_group",
)

HISTORY_FEATURES = "history_features"
"""The optional key (see the module docstring); :attr:`CascadeSchema.feature_keys` lists it."""

ALL_KEYS = (*FEATURE_KEYS, HISTORY_FEATURES)

DTYPES = {
    "user_id": tf.int64,
    "user_features": tf.int64,
    "history": tf.int64,
    "item_id": tf.int64,
    "item_features": tf.int64,
    "label": tf.float32,
    "mask": tf.float32,
    "stage_group": tf.int32,
    HISTORY_FEATURES: tf.int64,
}


@dataclasses.dataclass(frozen=True)
class CascadeSchema:
    """Static description of a cascade dataset (sizes and vocabularies).

    Attributes:
      list_size: N, candidates per request (fixed, padded).
      history_length: H, history items per request (fixed, left-padded).
      user_vocab: vocabulary size of ``user_id``.
      item_vocab: vocabulary size of ``item_id`` and ``history``.
      user_feature_vocabs: one vocabulary size per column of ``user_features`` (U = len).
      item_feature_vocabs: one vocabulary size per column of ``item_features`` (F = len).
      stage_groups: names of the logged stage groups, best first (e.g.
        ``("rank_pos", "rank_neg", "coarse_neg", "prerank_neg")``).
      gt_num: size of the ground-truth set per request.
      quotas: serving quotas of the cascade, first stage first (e.g. ``(30, 20)``).
      name: dataset name, for logs.
      user_feature_names: optional name of every ``user_features`` column (``()`` = unnamed),
        e.g. ``("request_wday", ..., "province")``.
      item_feature_names: optional name of every ``item_features`` column.
      history_feature_names: item feature names whose values the history items also carry,
        in the column order of the ``history_features`` key (``()`` = no such key). Each must
        be in ``item_feature_names``; it shares that column's vocabulary.
    """

    list_size: int
    history_length: int
    user_vocab: int
    item_vocab: int
    user_feature_vocabs: tuple[int, ...]
    item_feature_vocabs: tuple[int, ...]
    stage_groups: tuple[str, ...]
    gt_num: int = 10
    quotas: tuple[int, ...] = (30, 20)
    name: str = "cascade"
    user_feature_names: tuple[str, ...] = ()
    item_feature_names: tuple[str, ...] = ()
    history_feature_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field in ("list_size", "history_length", "user_vocab", "item_vocab", "gt_num"):
            value = getattr(self, field)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"`{field}` must be an int >= 1. Received: {field}={value!r}")
        for field in ("user_feature_vocabs", "item_feature_vocabs"):
            object.__setattr__(self, field, tuple(int(v) for v in getattr(self, field)))
        object.__setattr__(self, "stage_groups", tuple(str(v) for v in self.stage_groups))
        object.__setattr__(self, "quotas", tuple(int(v) for v in self.quotas))
        self._check_names()
        if self.gt_num > self.list_size:
            raise ValueError(
                f"`gt_num` must be <= list_size={self.list_size}. Received: gt_num={self.gt_num}"
            )
        q = self.quotas
        if any(a <= b for a, b in zip(q, q[1:])) or (q and q[0] > self.list_size):
            raise ValueError(
                "`quotas` must be strictly decreasing and at most list_size="
                f"{self.list_size}. Received: quotas={q}"
            )
        if q and q[-1] < self.gt_num:
            raise ValueError(
                f"the last quota must be >= gt_num={self.gt_num}. Received: quotas={q}"
            )

    def _check_names(self) -> None:
        for field, vocabs in (("user_feature_names", self.user_feature_vocabs),
                              ("item_feature_names", self.item_feature_vocabs),
                              ("history_feature_names", None)):
            names = getattr(self, field)
            if isinstance(names, str):
                raise ValueError(f"`{field}` must be a sequence of names. Received: {names!r}")
            names = tuple(str(v) for v in names)
            object.__setattr__(self, field, names)
            if vocabs is not None and names and len(names) != len(vocabs):
                raise ValueError(
                    f"`{field}` must name every column ({len(vocabs)}) or be empty. "
                    f"Received: {names}"
                )
            if len(set(names)) != len(names):
                raise ValueError(f"`{field}` must be unique. Received: {names}")
        unknown = [n for n in self.history_feature_names if n not in self.item_feature_names]
        if unknown:
            raise ValueError(
                f"`history_feature_names` {unknown} are not in item_feature_names="
                f"{self.item_feature_names}"
            )

    @property
    def num_user_features(self) -> int:
        return len(self.user_feature_vocabs)

    @property
    def num_item_features(self) -> int:
        return len(self.item_feature_vocabs)

    @property
    def num_history_features(self) -> int:
        """Fh, columns of the optional ``history_features`` key (0 = no such key)."""
        return len(self.history_feature_names)

    @property
    def history_feature_columns(self) -> tuple[int, ...]:
        """Index into ``item_features`` of every ``history_features`` column."""
        return tuple(self.item_feature_names.index(n) for n in self.history_feature_names)

    @property
    def history_feature_vocabs(self) -> tuple[int, ...]:
        """Vocabulary size of every ``history_features`` column (its item feature's)."""
        return tuple(self.item_feature_vocabs[c] for c in self.history_feature_columns)

    @property
    def feature_keys(self) -> tuple[str, ...]:
        """The keys of a batch of this schema: :data:`FEATURE_KEYS` (+ ``history_features``)."""
        return FEATURE_KEYS + ((HISTORY_FEATURES,) if self.history_feature_names else ())

    def feature_specs(self, batch_size: int | None = None) -> dict[str, tf.TensorSpec]:
        """``tf.TensorSpec`` of every :attr:`feature_keys` key (``batch_size`` None = dynamic)."""
        b, n = batch_size, self.list_size
        specs = {
            "user_id": tf.TensorSpec([b], tf.int64, "user_id"),
            "user_features": tf.TensorSpec([b, self.num_user_features], tf.int64, "user_features"),
            "history": tf.TensorSpec([b, self.history_length], tf.int64, "history"),
            "item_id": tf.TensorSpec([b, n], tf.int64, "item_id"),
            "item_features": tf.TensorSpec(
                [b, n, self.num_item_features], tf.int64, "item_features"
            ),
            "label": tf.TensorSpec([b, n], tf.float32, "label"),
            "mask": tf.TensorSpec([b, n], tf.float32, "mask"),
            "stage_group": tf.TensorSpec([b, n], tf.int32, "stage_group"),
        }
        if self.history_feature_names:
            specs[HISTORY_FEATURES] = tf.TensorSpec(
                [b, self.history_length, self.num_history_features], tf.int64, HISTORY_FEATURES
            )
        return specs

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CascadeSchema:
        d = json.loads(text)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown CascadeSchema fields: {sorted(unknown)}")
        return cls(**d)


def validate_batch(batch: Mapping[str, np.ndarray | tf.Tensor], schema: CascadeSchema) -> None:
    """Raise ``ValueError`` naming the key if a batch does not match ``schema`` (static shapes)."""
    specs = schema.feature_specs()
    keys = schema.feature_keys
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(f"batch is missing keys {missing}; expected {list(keys)}")
    for key, spec in specs.items():
        shape = tuple(np.shape(batch[key]))
        if len(shape) != len(spec.shape) or any(
            s is not None and s != d for s, d in zip(spec.shape.as_list(), shape)
        ):
            raise ValueError(
                f"batch[{key!r}] has shape {shape}; expected {spec.shape.as_list()} "
                f"(schema {schema.name!r})"
            )


def stack_requests(requests: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-request numpy dicts into one batch dict with the canonical dtypes.

    Keys: :data:`FEATURE_KEYS`, plus ``history_features`` when the requests have it.
    """
    keys = present_keys(requests[0]) if requests else FEATURE_KEYS
    return {
        k: np.stack([np.asarray(r[k]) for r in requests]).astype(DTYPES[k].as_numpy_dtype)
        for k in keys
    }


def present_keys(arrays: Mapping[str, object]) -> tuple[str, ...]:
    """:data:`FEATURE_KEYS` plus the optional keys that ``arrays`` holds, in canonical order."""
    return FEATURE_KEYS + tuple(k for k in ALL_KEYS[len(FEATURE_KEYS):] if k in arrays)


# ---------------------------------------------------------------------------------------------
# Helpers for numpy request arrays (additions; the canonical keys/dtypes/shapes above are fixed).
# ---------------------------------------------------------------------------------------------

TWO_STAGE_GROUPS = ("rank_pos", "rank_neg", "coarse_neg", "prerank_neg")
"""RecFlow 2-stage stage groups, best first (N = 40 = 10 per group)."""

THREE_STAGE_GROUPS = ("rerank_pos", "rerank_neg", "rank_neg", "coarse_neg", "prerank_neg")
"""RecFlow 3-stage stage groups, best first (N = 50 = 10 per group)."""


def _feature_shapes(schema: CascadeSchema) -> dict[str, tuple[int, ...]]:
    """Per-request shape of every key (without the leading request axis)."""
    n = schema.list_size
    return {
        "user_id": (),
        "user_features": (schema.num_user_features,),
        "history": (schema.history_length,),
        "item_id": (n,),
        "item_features": (n, schema.num_item_features),
        "label": (n,),
        "mask": (n,),
        "stage_group": (n,),
        **({HISTORY_FEATURES: (schema.history_length, schema.num_history_features)}
           if schema.history_feature_names else {}),
    }


def num_requests(arrays: Mapping[str, np.ndarray]) -> int:
    """Number of requests (first-axis length) of a dict of request arrays."""
    return int(np.shape(arrays["user_id"])[0])


def cast_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The canonical keys of ``arrays`` (:func:`present_keys`) with the canonical dtypes."""
    return {
        k: np.asarray(arrays[k]).astype(DTYPES[k].as_numpy_dtype, copy=False)
        for k in present_keys(arrays)
    }


def _first_bad(bad: np.ndarray) -> int:
    """Index of the first request (axis 0) where ``bad`` is true anywhere."""
    return int(np.argmax(_per_request(bad)))


def _per_request(bad: np.ndarray) -> np.ndarray:
    return bad.reshape(bad.shape[0], -1).any(axis=1)


def _check_structure(
    arrays: Mapping[str, np.ndarray], schema: CascadeSchema, source: str
) -> dict[str, np.ndarray]:
    keys = schema.feature_keys
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ValueError(f"{source}: missing keys {missing}; expected {list(keys)}")
    a = {k: np.asarray(arrays[k]) for k in keys}
    r = a["user_id"].shape[0] if a["user_id"].ndim == 1 else None
    for key, shape in _feature_shapes(schema).items():
        if r is None or a[key].shape != (r, *shape):
            raise ValueError(
                f"{source}: {key!r} has shape {a[key].shape}; expected {('R', *shape)} with the "
                f"same R for every key (schema {schema.name!r})"
            )
        if key not in ("label", "mask") and not np.issubdtype(a[key].dtype, np.integer):
            raise ValueError(f"{source}: {key!r} must be an integer array. Received {a[key].dtype}")
    return a


def _violations(
    a: Mapping[str, np.ndarray], schema: CascadeSchema
) -> list[tuple[str, str, np.ndarray]]:
    """``(key, what, bad)`` for every value check; ``bad`` is bool, first axis = requests."""
    uv = np.asarray(schema.user_feature_vocabs, np.int64)
    iv = np.asarray(schema.item_feature_vocabs, np.int64)
    g = len(schema.stage_groups)
    mask = a["mask"]
    real = mask == 1
    checks = [
        ("user_id", f"out of range [0, user_vocab={schema.user_vocab})",
         (a["user_id"] < 0) | (a["user_id"] >= schema.user_vocab)),
        ("history", f"out of range [0, item_vocab={schema.item_vocab})",
         (a["history"] < 0) | (a["history"] >= schema.item_vocab)),
        ("item_id", f"out of range [0, item_vocab={schema.item_vocab})",
         (a["item_id"] < 0) | (a["item_id"] >= schema.item_vocab)),
        ("user_features", f"out of range [0, user_feature_vocabs={schema.user_feature_vocabs})",
         (a["user_features"] < 0) | (a["user_features"] >= uv)),
        ("item_features", f"out of range [0, item_feature_vocabs={schema.item_feature_vocabs})",
         (a["item_features"] < 0) | (a["item_features"] >= iv)),
        ("mask", "must be 0 or 1", (mask != 0) & (mask != 1)),
        ("stage_group", f"out of range [-1, {g}) for stage_groups={schema.stage_groups}",
         (a["stage_group"] < -1) | (a["stage_group"] >= g)),
        ("label", "is not finite", ~np.isfinite(a["label"])),
        ("item_id", "is 0 (padding) where mask == 1", real & (a["item_id"] == 0)),
        ("item_id", "is not 0 where mask == 0 (padded slot)", ~real & (a["item_id"] != 0)),
        ("stage_group", "is -1 where mask == 1", real & (a["stage_group"] < 0)),
        ("stage_group", "is not -1 where mask == 0", ~real & (a["stage_group"] != -1)),
        ("item_features", "is not 0 where mask == 0 (padded slot)",
         ~real[..., None] & (a["item_features"] != 0)),
    ]
    if schema.history_feature_names:
        hf = a[HISTORY_FEATURES]
        hv = np.asarray(schema.history_feature_vocabs, np.int64)
        checks += [
            (HISTORY_FEATURES, f"out of range [0, history_feature_vocabs="
             f"{schema.history_feature_vocabs})", (hf < 0) | (hf >= hv)),
            (HISTORY_FEATURES, "is not 0 where history == 0 (padded position)",
             (a["history"] == 0)[..., None] & (hf != 0)),
        ]
    return checks


def validate_arrays(
    arrays: Mapping[str, np.ndarray], schema: CascadeSchema, *, source: str = "arrays"
) -> None:
    """Check a dict of request arrays (first axis = requests) against ``schema``.

    Checks keys (:attr:`CascadeSchema.feature_keys`), shapes, integer dtypes of id fields,
    id ranges (``0 <= id < vocab``), ``mask`` in {0, 1}, ``stage_group`` in
    ``[-1, len(stage_groups))``, finite labels, and the padding convention (``mask == 0``
    <=> ``item_id == 0`` <=> ``stage_group == -1``; padded slots have all-zero
    ``item_features``; padded history positions have all-zero ``history_features``). Labels
    of padded slots are *not* checked: the RecFlow reader keeps the official code's padding
    labels (see ``docs/data.md``).

    Args:
      arrays: dict with the schema's keys, e.g. ``item_id`` int ``[R, N]``.
      schema: the dataset schema.
      source: a name for error messages (a file name, a builder name).

    Raises:
      ValueError: naming ``source``, the key and the first offending request index.
    """
    a = _check_structure(arrays, schema, source)
    if a["user_id"].shape[0] == 0:
        return
    for key, what, bad in _violations(a, schema):
        if bad.any():
            raise ValueError(
                f"{source}: request {_first_bad(bad)}: {key!r} {what} (schema {schema.name!r})"
            )


def invalid_requests(arrays: Mapping[str, np.ndarray], schema: CascadeSchema) -> np.ndarray:
    """bool ``[R]``: requests that break a value check of :func:`validate_arrays`.

    Raises ``ValueError`` for structural problems (missing keys, shapes, dtypes), which are
    not per-request.
    """
    a = _check_structure(arrays, schema, "arrays")
    bad = np.zeros(a["user_id"].shape[0], bool)
    for _, _, b in _violations(a, schema):
        if b.size:
            bad |= _per_request(b)
    return bad


@dataclasses.dataclass
class BuildReport:
    """What a builder skipped (``skip_bad_records=True``) or dropped by design, and why.

    Attributes:
      skipped: number of bad input records skipped.
      dropped: number of records left out by a documented rule (e.g. too short lists).
      messages: the first problems, each naming the file and the record.
    """

    skipped: int = 0
    dropped: int = 0
    messages: list[str] = dataclasses.field(default_factory=list)
    max_messages: int = 20

    def skip(self, message: str) -> None:
        self.skipped += 1
        if len(self.messages) < self.max_messages:
            self.messages.append(message)


def select_requests(
    arrays: Mapping[str, np.ndarray], index: np.ndarray | slice
) -> dict[str, np.ndarray]:
    """The requests ``index`` (an index array, boolean mask or slice) of every key."""
    return {k: np.asarray(v)[index] for k, v in arrays.items()}


def concat_requests(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate dicts of request arrays along the request axis (same keys in every part)."""
    if not parts:
        raise ValueError("`parts` must hold at least one dict of request arrays")
    return {k: np.concatenate([np.asarray(p[k]) for p in parts], axis=0) for k in parts[0]}


def split_requests(
    arrays: Mapping[str, np.ndarray], test_fraction: float, *, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Random request-level ``(train, test)`` split; deterministic by ``seed``.

    Both parts keep the original request order. Use it for sources without a natural time
    split (the simulator); RecFlow and MovieLens have their own time-based splits.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"`test_fraction` must be in (0, 1). Received: test_fraction={test_fraction}"
        )
    r = num_requests(arrays)
    is_test = np.zeros(r, bool)
    is_test[np.random.default_rng(seed).permutation(r)[: int(round(r * test_fraction))]] = True
    return select_requests(arrays, ~is_test), select_requests(arrays, is_test)
