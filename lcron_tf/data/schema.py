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

``U``, ``H``, ``N`` and ``F`` are fixed per dataset and described by a
:class:`CascadeSchema`, which also carries the vocabulary size of every id field
(ids are in ``[0, vocab)``, 0 reserved for padding) so towers can size embeddings.
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

DTYPES = {
    "user_id": tf.int64,
    "user_features": tf.int64,
    "history": tf.int64,
    "item_id": tf.int64,
    "item_features": tf.int64,
    "label": tf.float32,
    "mask": tf.float32,
    "stage_group": tf.int32,
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

    def __post_init__(self) -> None:
        for field in ("list_size", "history_length", "user_vocab", "item_vocab", "gt_num"):
            value = getattr(self, field)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"`{field}` must be an int >= 1. Received: {field}={value!r}")
        object.__setattr__(self, "user_feature_vocabs", tuple(int(v) for v in self.user_feature_vocabs))
        object.__setattr__(self, "item_feature_vocabs", tuple(int(v) for v in self.item_feature_vocabs))
        object.__setattr__(self, "stage_groups", tuple(str(v) for v in self.stage_groups))
        object.__setattr__(self, "quotas", tuple(int(v) for v in self.quotas))
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

    @property
    def num_user_features(self) -> int:
        return len(self.user_feature_vocabs)

    @property
    def num_item_features(self) -> int:
        return len(self.item_feature_vocabs)

    def feature_specs(self, batch_size: int | None = None) -> dict[str, tf.TensorSpec]:
        """``tf.TensorSpec`` of every key of a batch (``batch_size`` None = dynamic)."""
        b, n = batch_size, self.list_size
        return {
            "user_id": tf.TensorSpec([b], tf.int64, "user_id"),
            "user_features": tf.TensorSpec([b, self.num_user_features], tf.int64, "user_features"),
            "history": tf.TensorSpec([b, self.history_length], tf.int64, "history"),
            "item_id": tf.TensorSpec([b, n], tf.int64, "item_id"),
            "item_features": tf.TensorSpec([b, n, self.num_item_features], tf.int64, "item_features"),
            "label": tf.TensorSpec([b, n], tf.float32, "label"),
            "mask": tf.TensorSpec([b, n], tf.float32, "mask"),
            "stage_group": tf.TensorSpec([b, n], tf.int32, "stage_group"),
        }

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
    missing = [k for k in FEATURE_KEYS if k not in batch]
    if missing:
        raise ValueError(f"batch is missing keys {missing}; expected {list(FEATURE_KEYS)}")
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
    """Stack per-request numpy dicts into one batch dict with the canonical dtypes."""
    return {
        k: np.stack([np.asarray(r[k]) for r in requests]).astype(DTYPES[k].as_numpy_dtype)
        for k in FEATURE_KEYS
    }
