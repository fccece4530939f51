"""The ``paper`` preset: the official kwai/LCRON models, field by field (lcron_method.md §6).

Every tower maps the canonical batch dict (:mod:`lcron_tf.schema`) to float scores
``[B, N]``, as the ``lite`` towers of :mod:`lcron_tf.models.towers`; they differ in what
they embed and how:

* **One set of tables per model** (:class:`FieldEmbedding`): a table per field, shared by
  every place the field appears in that model: the item tables embed the candidates *and*
  the history items; the official code's ``wday``/``hour``/``minute`` tables embed both the
  request time and the upload time (:data:`SHARED_TABLES`, used when the schema names both
  fields). Padding rows (id 0 of every table; more with ``padding_ids``) start at zero and
  never receive a gradient, as ``nn.Embedding(padding_idx=...)``.
* **History items carry the item fields** the schema lists in ``history_feature_names``
  (RecFlow and the simulator: author, category 2, category 1, upload type, next to the
  video id: the official 5-field sequence).
* :class:`PaperDssm`: user input ``[user_id ‖ user_features ‖ mean(history items)]``
  (RecFlow: 13 d = 104), item input ``[item_id ‖ item_features]`` (8 d = 64), both towers
  ``[128, 64, 32]`` (ReLU between, linear output), score = dot product.
* :class:`PaperMlp` (3-stage pre-ranker): ``[DSSM user input ‖ item input]`` (21 d = 168)
  ``-> 128 -> 64 -> 32 -> 1`` (ReLU).
* :class:`PaperDin`: attention MLP on ``[history item ‖ candidate item]`` (the candidate's
  id and history fields; RecFlow 10 d = 80) ``-> 80 -> ReLU -> 1``, masked positions set to
  ``-2**30 + 1`` before the softmax over H (an empty history gives a zero interest: the
  padding rows are zero); main MLP on ``[user ‖ interest ‖ candidate item ‖ other item
  fields]`` (RecFlow 8 + 5 + 5 + 3 = 21 d = 168) ``-> 128 -> 128 -> 32 -> 1`` (ReLU).

On a schema without history fields or field names (MovieLens-100K, MSLR) the same layout
degrades to what the data has: history items are embedded by id only and no table is
shared; see ``docs/models.md``.

Known differences from the official code, on purpose: ids follow this library's encoding
(every field +1, 0 = padding, ``category_level_one`` included), so the padding row of
``category_level_one`` is row 0 like every other field; the official code keeps raw
``category_level_one`` ids with ``padding_idx = 2``, which also freezes the embedding of the
real category 2 (lcron_method.md §9.13; ``padding_ids={"category_level_one": (0, 3)}``
reproduces that under the +1 encoding). Initialisers are Keras' defaults, not PyTorch's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from lcron_tf._keras import keras, register_serializable
from lcron_tf.models.towers import (
    Batch,
    _check_units,
    _masked_mean,
    _schema_from,
    mlp,
    split_attention_logits,
)
from lcron_tf.ops import validation
from lcron_tf.schema import HISTORY_FEATURES, CascadeSchema

SHARED_TABLES = (
    ("request_wday", "upload_wday"),
    ("request_hour", "upload_hour"),
    ("request_minute", "upload_minute"),
)
"""(user field, item field) pairs that share one table, as the official ``wday_emb``,
``hour_emb`` and ``min_emb`` (used when the schema names both fields with equal vocabularies)."""

PADDING_LOGIT = -(2.0**30) + 1.0
"""The official DIN fill value for masked history positions (before the softmax)."""


@dataclasses.dataclass(frozen=True)
class FieldLayout:
    """Which table embeds each input column of a schema.

    Attributes:
      tables: ``{table name: vocabulary size}``, in creation order.
      user: table of each column of ``[user_id, *user_features]``.
      item: table of each column of ``[item_id, *item_features]``.
      history: table of each column of ``[history, *history_features]``.
      compared: indices into ``item`` of the candidate columns DIN compares with the history
        (``item_id`` and the history fields, in history column order).
      other: indices into ``item`` of the remaining candidate columns.
    """

    tables: dict[str, int]
    user: tuple[str, ...]
    item: tuple[str, ...]
    history: tuple[str, ...]
    compared: tuple[int, ...]
    other: tuple[int, ...]


def field_layout(
    schema: CascadeSchema, shared: Sequence[tuple[str, str]] = SHARED_TABLES
) -> FieldLayout:
    """The :class:`FieldLayout` of ``schema``: one table per field, ``shared`` pairs joined.

    Tables are named ``user_id``, ``item_id``, ``user/<name>`` and ``item/<name>``
    (``user/<i>``, ``item/<i>`` for unnamed columns). History fields use their item
    field's table.
    """
    tables: dict[str, int] = {"user_id": schema.user_vocab}
    user = ["user_id"]
    user_names = schema.user_feature_names or tuple(str(i) for i in range(schema.num_user_features))
    for name, vocab in zip(user_names, schema.user_feature_vocabs):
        tables[f"user/{name}"] = vocab
        user.append(f"user/{name}")
    pairs = dict((b, a) for a, b in shared)
    tables["item_id"] = schema.item_vocab
    item = ["item_id"]
    item_names = schema.item_feature_names or tuple(str(i) for i in range(schema.num_item_features))
    by_name: dict[str, str] = {}
    for name, vocab in zip(item_names, schema.item_feature_vocabs):
        partner = pairs.get(name)
        key = f"user/{partner}"
        if partner is None or tables.get(key) != vocab:
            key = f"item/{name}"
            tables[key] = vocab
        item.append(key)
        by_name[name] = key
    history = ["item_id", *(by_name[n] for n in schema.history_feature_names)]
    compared = (0, *(1 + c for c in schema.history_feature_columns))
    other = tuple(i for i in range(len(item)) if i not in compared)
    return FieldLayout(tables, tuple(user), tuple(item), tuple(history), compared, other)


class _ZeroRows(keras.initializers.Initializer):
    """``base`` initializer with the given rows set to zero."""

    def __init__(self, base: keras.initializers.Initializer, rows: Sequence[int]) -> None:
        self.base = keras.initializers.get(base)
        self.rows = [int(r) for r in rows]

    def __call__(self, shape: Sequence[int], dtype: tf.DType | None = None, **kwargs: object):
        value = self.base(shape, dtype=dtype)
        if not self.rows:
            return value
        rows = tf.constant(self.rows, tf.int64)[:, None]
        zeros = tf.zeros([len(self.rows), shape[1]], value.dtype)
        return tf.tensor_scatter_nd_update(value, rows, zeros)

    def get_config(self) -> dict:
        return {"base": keras.initializers.serialize(self.base), "rows": self.rows}


@register_serializable
class FieldEmbedding(keras.layers.Layer):
    """A model's embedding tables, fused in one variable, with frozen zero padding rows.

    Table ``t`` occupies rows ``[offset_t, offset_t + vocab_t)`` of one ``[sum vocab, d]``
    variable (a single gather per input, XLA friendly). The rows ``padding_ids[t]`` (default
    ``(0,)``) are initialised to zero and looked up as constant zeros, so no gradient reaches
    them: like ``torch.nn.Embedding(padding_idx=...)``, they stay exactly zero under any
    optimizer that leaves zero-gradient rows alone (SGD, Adam, Adagrad without decay).

    Args:
      vocab_sizes: ``{table name: vocabulary size}``.
      emb_dim: embedding dimension.
      padding_ids: ``{table name: row ids}`` of the frozen zero rows (default row 0 of every
        table; ``()`` = none).
      embeddings_initializer: initializer of the other rows (Keras' default uniform).
    """

    def __init__(
        self,
        vocab_sizes: Mapping[str, int],
        emb_dim: int = 8,
        padding_ids: Mapping[str, Sequence[int]] | None = None,
        embeddings_initializer: object = "uniform",
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.vocab_sizes = {str(k): int(v) for k, v in vocab_sizes.items()}
        if not self.vocab_sizes or min(self.vocab_sizes.values()) < 1:
            raise ValueError(f"`vocab_sizes` must be non-empty and >= 1. Received: {vocab_sizes}")
        self.emb_dim = validation.check_k("emb_dim", emb_dim, None)
        padding_ids = dict(padding_ids or {})
        unknown = set(padding_ids) - set(self.vocab_sizes)
        if unknown:
            raise ValueError(f"`padding_ids` names unknown tables {sorted(unknown)}")
        self.padding_ids = {
            t: tuple(int(i) for i in padding_ids.get(t, (0,))) for t in self.vocab_sizes
        }
        for t, ids in self.padding_ids.items():
            if any(not 0 <= i < self.vocab_sizes[t] for i in ids):
                raise ValueError(f"`padding_ids[{t!r}]` = {ids} outside [0, {self.vocab_sizes[t]})")
        sizes = list(self.vocab_sizes.values())
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.offsets = dict(zip(self.vocab_sizes, (int(s) for s in starts)))
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        rows = [self.offsets[t] + i for t, ids in self.padding_ids.items() for i in ids]
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=[int(sum(sizes)), self.emb_dim],
            initializer=_ZeroRows(self.embeddings_initializer, rows),
            trainable=True,
        )

    @property
    def frozen_rows(self) -> list[int]:
        """Rows of :attr:`embeddings` that are padding (always zero)."""
        return sorted(self.offsets[t] + i for t, ids in self.padding_ids.items() for i in ids)

    def lookup(self, ids: tf.Tensor, tables: Sequence[str]) -> tf.Tensor:
        """Embed ``ids`` int ``[..., C]`` (column ``c`` in table ``tables[c]``).

        Returns:
          ``[..., C, emb_dim]`` in the layer's compute dtype; padding ids give zeros.
        """
        ids = tf.cast(ids, tf.int64)
        offsets = tf.constant([self.offsets[t] for t in tables], tf.int64)
        emb = tf.gather(self.embeddings, ids + offsets)
        width = max(len(self.padding_ids[t]) for t in tables)
        if width:
            pads = np.full((len(tables), width), -1, np.int64)
            for c, t in enumerate(tables):
                pads[c, : len(self.padding_ids[t])] = self.padding_ids[t]
            frozen = tf.reduce_any(tf.equal(ids[..., None], tf.constant(pads)), axis=-1)
            emb = tf.where(frozen[..., None], tf.zeros([], emb.dtype), emb)
        return tf.cast(emb, self.compute_dtype)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        """``ids`` int ``[..., T]`` with one column per table in order -> ``[..., T, d]``."""
        return self.lookup(ids, list(self.vocab_sizes))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocab_sizes": dict(self.vocab_sizes),
            "emb_dim": self.emb_dim,
            "padding_ids": {t: list(v) for t, v in self.padding_ids.items()},
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }


def _flat(emb: tf.Tensor) -> tf.Tensor:
    """``[..., C, d]`` -> ``[..., C * d]``."""
    width = emb.shape[-2] * emb.shape[-1]
    out = tf.reshape(emb, tf.concat([tf.shape(emb)[:-2], [width]], axis=0))
    out.set_shape(emb.shape[:-2].concatenate([width]))
    return out


class _PaperTower(keras.Model):
    """Shared plumbing: schema, field layout, this model's tables, the input encoders."""

    def __init__(
        self,
        schema: CascadeSchema | Mapping,
        emb_dim: int = 8,
        history_length: int | None = None,
        padding_ids: Mapping[str, Sequence[int]] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.schema = _schema_from(schema)
        self.emb_dim = validation.check_k("emb_dim", emb_dim, None)
        if history_length is not None:
            history_length = validation.check_k(
                "history_length", history_length, self.schema.history_length
            )
        self.history_length = history_length
        self.layout = field_layout(self.schema)
        self.padding_ids = {
            str(k): tuple(int(i) for i in v) for k, v in (padding_ids or {}).items()
        }
        names = self.schema.user_feature_names + self.schema.item_feature_names
        # Padding ids are given by field name (or table name); map them to the tables.
        by_table: dict[str, tuple[int, ...]] = {}
        for key, ids in self.padding_ids.items():
            table = key if key in self.layout.tables else None
            if table is None and key in names:
                cols = dict(zip(("user_id", *self.schema.user_feature_names), self.layout.user))
                cols.update(zip(("item_id", *self.schema.item_feature_names), self.layout.item))
                table = cols[key]
            if table is None:
                raise ValueError(
                    f"`padding_ids` key {key!r} is neither a field of the schema nor a table "
                    f"({sorted(self.layout.tables)})"
                )
            by_table[table] = ids
        self.embedding = FieldEmbedding(
            self.layout.tables, self.emb_dim, by_table, name="embedding"
        )

    def _user(self, batch: Batch) -> tf.Tensor:
        """``[B, (1 + U) d]``: user_id and user_features embedded."""
        uid = tf.cast(batch["user_id"], tf.int64)[:, None]
        ids = tf.concat([uid, tf.cast(batch["user_features"], tf.int64)], axis=1)
        return _flat(self.embedding.lookup(ids, self.layout.user))

    def _item_fields(self, item_id: tf.Tensor, item_features: tf.Tensor) -> tf.Tensor:
        """``[..., 1 + F, d]``: item_id and item_features embedded, per column."""
        ids = tf.concat(
            [tf.cast(item_id, tf.int64)[..., None], tf.cast(item_features, tf.int64)], axis=-1
        )
        return self.embedding.lookup(ids, self.layout.item)

    def _history(self, batch: Batch) -> tuple[tf.Tensor, tf.Tensor]:
        """``(emb [B, H', (1 + Fh) d], mask float [B, H'])`` of the most recent H' items."""
        hist = tf.cast(batch["history"], tf.int64)[..., None]
        if self.schema.history_feature_names:
            hist = tf.concat([hist, tf.cast(batch[HISTORY_FEATURES], tf.int64)], axis=-1)
        if self.history_length is not None:
            hist = hist[:, -self.history_length :]
        emb = _flat(self.embedding.lookup(hist, self.layout.history))
        return emb, tf.cast(hist[..., 0] > 0, emb.dtype)

    def _query_input(self, batch: Batch) -> tf.Tensor:
        """``[B, (1 + U + 1 + Fh) d]``: the DSSM user input (user ‖ mean of the history)."""
        hist, mask = self._history(batch)
        return tf.concat([self._user(batch), _masked_mean(hist, mask)], axis=-1)

    def get_config(self) -> dict:
        return {
            "schema": dataclasses.asdict(self.schema),
            "emb_dim": self.emb_dim,
            "history_length": self.history_length,
            "padding_ids": {k: list(v) for k, v in self.padding_ids.items()},
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict) -> _PaperTower:
        return cls(**config)


@register_serializable
class PaperDssm(_PaperTower):
    """The official DSSM: ``<user_tower(user input), item_tower(item input)>``.

    Args:
      schema: the dataset's :class:`~lcron_tf.schema.CascadeSchema`.
      emb_dim: embedding dimension (paper: 8).
      tower_units: sizes of both towers (paper: ``(128, 64, 32)``).
      history_length: keep only the most recent items of ``history`` (default all).
      padding_ids: extra/other frozen zero rows, ``{field or table name: ids}``.

    Call args:
      batch: the canonical batch dict.

    Returns:
      float ``[batch_size, list_size]`` scores (the towers' compute dtype).
    """

    def __init__(
        self,
        schema: CascadeSchema | Mapping,
        emb_dim: int = 8,
        tower_units: Sequence[int] = (128, 64, 32),
        history_length: int | None = None,
        padding_ids: Mapping[str, Sequence[int]] | None = None,
        name: str = "paper_dssm",
        **kwargs: object,
    ) -> None:
        super().__init__(schema, emb_dim, history_length, padding_ids, name=name, **kwargs)
        self.tower_units = _check_units("tower_units", tower_units)
        self.user_tower = mlp(self.tower_units, final_activation=None, name="user_mlp")
        self.item_tower = mlp(self.tower_units, final_activation=None, name="item_mlp")

    def query_embedding(self, batch: Batch, training: bool = False) -> tf.Tensor:
        """Query embeddings ``[B, tower_units[-1]]`` (reads user_id, user_features, history
        and, when the schema has them, history_features)."""
        return self.user_tower(self._query_input(batch), training=training)

    def candidate_embedding(
        self, item_id: tf.Tensor, item_features: tf.Tensor, training: bool = False
    ) -> tf.Tensor:
        """Candidate embeddings ``[..., tower_units[-1]]`` of item_id int ``[...]`` and
        item_features int ``[..., F]``."""
        return self.item_tower(_flat(self._item_fields(item_id, item_features)), training=training)

    def call(self, batch: Batch, training: bool = False) -> tf.Tensor:
        query = self.query_embedding(batch, training=training)  # [B, D]
        items = self.candidate_embedding(batch["item_id"], batch["item_features"], training)
        return tf.einsum("bd,bnd->bn", query, items)

    def get_config(self) -> dict:
        return {**super().get_config(), "tower_units": list(self.tower_units)}


@register_serializable
class PaperMlp(_PaperTower):
    """The official 3-stage pre-ranker: ``[DSSM user input ‖ item input] -> MLP -> 1``.

    Args:
      schema, emb_dim, history_length, padding_ids: as :class:`PaperDssm`.
      hidden_units: hidden sizes before the scalar output (paper: ``(128, 64, 32)``).

    Returns:
      float ``[batch_size, list_size]`` scores.
    """

    def __init__(
        self,
        schema: CascadeSchema | Mapping,
        emb_dim: int = 8,
        hidden_units: Sequence[int] = (128, 64, 32),
        history_length: int | None = None,
        padding_ids: Mapping[str, Sequence[int]] | None = None,
        name: str = "paper_mlp",
        **kwargs: object,
    ) -> None:
        super().__init__(schema, emb_dim, history_length, padding_ids, name=name, **kwargs)
        self.hidden_units = _check_units("hidden_units", hidden_units)
        self.head = mlp((*self.hidden_units, 1), final_activation=None, name="mlp")

    def call(self, batch: Batch, training: bool = False) -> tf.Tensor:
        items = _flat(self._item_fields(batch["item_id"], batch["item_features"]))  # [B, N, 8d]
        user = self._query_input(batch)  # [B, 13d]
        user = tf.repeat(user[:, None, :], tf.shape(items)[1], axis=1)
        x = tf.concat([user, items], axis=-1)
        return tf.squeeze(self.head(x, training=training), axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_units": list(self.hidden_units)}


@register_serializable
class PaperDin(_PaperTower):
    """The official DIN ranker: target attention over the multi-field history.

    The attention MLP's first layer is evaluated split (exact), see
    :func:`~lcron_tf.models.towers.split_attention_logits`.

    Args:
      schema, emb_dim, history_length, padding_ids: as :class:`PaperDssm`.
      hidden_units: main MLP sizes before the scalar output (paper: ``(128, 128, 32)``).
      attention_units: attention MLP size (paper: 80).

    Returns:
      float ``[batch_size, list_size]`` scores.
    """

    def __init__(
        self,
        schema: CascadeSchema | Mapping,
        emb_dim: int = 8,
        hidden_units: Sequence[int] = (128, 128, 32),
        attention_units: int = 80,
        history_length: int | None = None,
        padding_ids: Mapping[str, Sequence[int]] | None = None,
        name: str = "paper_din",
        **kwargs: object,
    ) -> None:
        super().__init__(schema, emb_dim, history_length, padding_ids, name=name, **kwargs)
        self.hidden_units = _check_units("hidden_units", hidden_units)
        self.attention_units = validation.check_k("attention_units", attention_units, None)
        self.attention = mlp((self.attention_units, 1), final_activation=None, name="attention_mlp")
        width = len(self.layout.history) * self.emb_dim
        self.attention.build(tf.TensorShape([None, 2 * width]))  # read directly, split
        self.head = mlp((*self.hidden_units, 1), final_activation=None, name="mlp")

    def call(self, batch: Batch, training: bool = False) -> tf.Tensor:
        hist, hmask = self._history(batch)  # [B, H, (1+Fh)d], [B, H]
        fields = self._item_fields(batch["item_id"], batch["item_features"])  # [B, N, 1+F, d]
        cand = _flat(tf.gather(fields, self.layout.compared, axis=-2))  # [B, N, (1+Fh)d]
        logits = split_attention_logits(self.attention, hist, cand)  # [B, N, H]
        valid = hmask[:, None, :] > 0
        logits = tf.where(valid, tf.cast(logits, tf.float32), PADDING_LOGIT)
        weights = tf.cast(tf.nn.softmax(logits, axis=-1), hist.dtype)
        interest = tf.einsum("bnh,bhd->bnd", weights, hist)  # [B, N, (1+Fh)d]
        user = self._user(batch)
        parts = [tf.repeat(user[:, None, :], tf.shape(cand)[1], axis=1), interest, cand]
        if self.layout.other:
            parts.append(_flat(tf.gather(fields, self.layout.other, axis=-2)))
        x = tf.concat(parts, axis=-1)
        return tf.squeeze(self.head(x, training=training), axis=-1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "attention_units": self.attention_units,
        }
