"""Built-in stage towers matching the paper's models (lcron_method.md §6).

Each tower is a Keras model that maps a batch dict in the canonical format of
:mod:`lcron_tf.schema` to candidate scores:

  ``user_id`` int64 ``[B]``, ``user_features`` int64 ``[B, U]``, ``history`` int64
  ``[B, H]`` (left-padded with 0), ``item_id`` int64 ``[B, N]`` (0 = padded slot),
  ``item_features`` int64 ``[B, N, F]``  ->  float32 scores ``[B, N]``.

Extra keys (``label``, ``mask``, ...) are ignored. Scores of padded slots are
arbitrary: losses, metrics and selection layers take the mask.

* :class:`DssmRetrieval`: two towers (user, item), each ``[128, 64, 32]`` with ReLU
  between layers and a linear output, score = dot product. The user tower embeds
  ``user_id``, every ``user_features`` column and the masked mean of the history item
  embeddings; the item tower embeds ``item_id`` and every ``item_features`` column. The
  towers are sub-models usable alone (:meth:`DssmRetrieval.query_embedding`,
  :meth:`DssmRetrieval.candidate_embedding`) for serving.
* :class:`MlpPreRanker`: ``[user input ‖ item input] -> 128 -> 64 -> 32 -> 1`` (ReLU).
* :class:`DinRanker`: target attention over the history (attention MLP on
  ``[history item ‖ candidate item]`` -> 80 -> ReLU -> 1, masked softmax over ``H``),
  then ``[user ‖ interest ‖ candidate] -> 128 -> 128 -> 32 -> 1`` (ReLU).

Every model has its own embedding tables (as the official code), embedding dimension
8 by default. ``history_length`` keeps only the most recent ``history_length`` items of
``history`` (default: all ``H``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from lcron_tf._keras import keras, register_serializable
from lcron_tf.ops import attention as attention_ops
from lcron_tf.ops import validation
from lcron_tf.schema import CascadeSchema

Batch = Mapping[str, tf.Tensor]


def _check_units(name: str, units: Sequence[int]) -> tuple[int, ...]:
    if isinstance(units, int) or len(units) == 0:
        raise ValueError(f"`{name}` must be a non-empty sequence of ints. Received: {units!r}")
    return tuple(validation.check_k(f"{name}[{i}]", u, None) for i, u in enumerate(units))


def _schema_from(schema: CascadeSchema | Mapping) -> CascadeSchema:
    if isinstance(schema, CascadeSchema):
        return schema
    if isinstance(schema, Mapping):
        return CascadeSchema(**schema)
    raise ValueError(f"`schema` must be a CascadeSchema. Received: {type(schema).__name__}")


def mlp(
    units: Sequence[int], *, final_activation: str | None = "relu", name: str
) -> keras.Sequential:
    """Dense layers with ReLU between them; the last one uses ``final_activation``."""
    layers = [
        keras.layers.Dense(u, activation="relu" if i < len(units) - 1 else final_activation)
        for i, u in enumerate(units)
    ]
    return keras.Sequential(layers, name=name)


@register_serializable
class MultiFieldEmbedding(keras.layers.Layer):
    """Embeds every column of an int id tensor with its own table, concatenated.

    One fused table with per-column offsets (a single gather, XLA friendly).

    Args:
      vocab_sizes: one vocabulary size per column (ids in ``[0, vocab)``).
      emb_dim: embedding dimension per column.

    Call args:
      ids: int ``[..., num_fields]``.

    Returns:
      float32 ``[..., num_fields * emb_dim]``.
    """

    def __init__(self, vocab_sizes: Sequence[int], emb_dim: int = 8, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.vocab_sizes = tuple(int(v) for v in vocab_sizes)
        self.emb_dim = validation.check_k("emb_dim", emb_dim, None)
        if not self.vocab_sizes:
            raise ValueError("`vocab_sizes` must hold at least one vocabulary size. Received: ()")
        self._offsets = np.concatenate([[0], np.cumsum(self.vocab_sizes)[:-1]]).astype(np.int64)
        self.table = keras.layers.Embedding(int(sum(self.vocab_sizes)), self.emb_dim)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        ids = tf.cast(ids, tf.int64) + tf.constant(self._offsets)
        emb = self.table(ids)  # [..., F, d]
        width = len(self.vocab_sizes) * self.emb_dim
        out = tf.reshape(emb, tf.concat([tf.shape(ids)[:-1], [width]], axis=0))
        out.set_shape(ids.shape[:-1].concatenate([width]))
        return out

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocab_sizes": list(self.vocab_sizes),
            "emb_dim": self.emb_dim,
        }


class _SchemaTower(keras.Model):
    """Shared plumbing: schema, config, user/item/history encoders."""

    def __init__(
        self,
        schema: CascadeSchema | Mapping,
        emb_dim: int = 8,
        history_length: int | None = None,
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

    def _user_encoder(self, name: str) -> MultiFieldEmbedding:
        vocabs = (self.schema.user_vocab, *self.schema.user_feature_vocabs)
        return MultiFieldEmbedding(vocabs, self.emb_dim, name=name)

    def _item_encoder(self, name: str) -> MultiFieldEmbedding:
        vocabs = (self.schema.item_vocab, *self.schema.item_feature_vocabs)
        return MultiFieldEmbedding(vocabs, self.emb_dim, name=name)

    @staticmethod
    def _user_ids(batch: Batch) -> tf.Tensor:
        """int64 ``[B, 1 + U]``: user_id then user_features."""
        uid = tf.cast(batch["user_id"], tf.int64)[:, None]
        return tf.concat([uid, tf.cast(batch["user_features"], tf.int64)], axis=1)

    @staticmethod
    def _item_ids(item_id: tf.Tensor, item_features: tf.Tensor) -> tf.Tensor:
        """int64 ``[..., 1 + F]``: item_id then item_features."""
        return tf.concat(
            [tf.cast(item_id, tf.int64)[..., None], tf.cast(item_features, tf.int64)], axis=-1
        )

    def _history(self, batch: Batch) -> tuple[tf.Tensor, tf.Tensor]:
        """``(ids int64 [B, H'], mask float32 [B, H'])`` of the most recent H' items."""
        hist = tf.cast(batch["history"], tf.int64)
        if self.history_length is not None:
            hist = hist[:, -self.history_length :]
        return hist, tf.cast(hist > 0, tf.float32)

    def get_config(self) -> dict:
        return {
            "schema": dataclasses.asdict(self.schema),
            "emb_dim": self.emb_dim,
            "history_length": self.history_length,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict) -> _SchemaTower:
        return cls(**config)


def split_attention_logits(
    attention: keras.Sequential, hist_emb: tf.Tensor, cand_emb: tf.Tensor
) -> tf.Tensor:
    """``attention([hist_emb_bh ‖ cand_emb_bn])`` for every (candidate, history) pair, split.

    ``attention`` is a built two-layer MLP ``Dense(U, relu) -> Dense(1)`` on ``2 D`` inputs.
    With its first kernel ``[W_h; W_c]`` the pre-activation is ``A_bh + C_bn`` (``A = hist
    W_h``, ``C = cand W_c + bias``), so the ``[B, N, H, 2D]`` pair tensor and its matmul are
    never formed (exact: the same weights, equal to float rounding). With a ReLU first layer
    (always, in :func:`mlp`), the ``[B, N, H, U]`` hidden layer is not formed either:
    :func:`lcron_tf.ops.attention.hinge_logits` loops over ``U`` with its own gradient.

    Args:
      attention: the attention MLP (its layers' weights are read directly).
      hist_emb: float ``[B, H, D]`` history item embeddings.
      cand_emb: float ``[B, N, D]`` candidate embeddings.

    Returns:
      ``[B, N, H]`` attention logits (before masking and softmax), in the inputs' dtype.
    """
    first, last = attention.layers
    d = hist_emb.shape[-1]
    kernel = tf.cast(first.kernel, hist_emb.dtype)  # [2D, U]: history rows, then candidate
    a = tf.einsum("bhd,du->bhu", hist_emb, kernel[:d])  # [B, H, U]
    c = tf.einsum("bnd,du->bnu", cand_emb, kernel[d:]) + tf.cast(first.bias, cand_emb.dtype)
    w = tf.cast(last.kernel[:, 0], a.dtype)
    bias = tf.cast(last.bias[0], a.dtype)
    if first.activation is keras.activations.relu:
        # Loop over U with a hand-written gradient: no [B, N, H, U] tensor (ops/attention.py).
        return attention_ops.hinge_logits(a, c, w) + bias
    hidden = first.activation(c[:, :, None, :] + a[:, None, :, :])  # [B, N, H, U]
    return tf.einsum("bnhu,u->bnh", hidden, w) + bias


def _masked_mean(emb: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """``[B, H, d]``, ``[B, H]`` -> ``[B, d]`` mean over valid positions (0 if none)."""
    total = tf.reduce_sum(emb * mask[..., None], axis=1)
    return total / tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)


class UserTower(keras.Model):
    """DSSM user tower: ``[user_id ‖ user_features ‖ mean(history)] -> MLP -> [B, D]``.

    Args:
      user_encoder: embeds ``[B, 1 + U]`` ids.
      history_embedding: embeds history item ids (``[B, H] -> [B, H, d]``).
      units: MLP sizes; ReLU between layers, linear output of size ``units[-1]``.
      history_length: keep only the most recent ``history_length`` history items.

    Call args:
      batch: dict with ``user_id`` ``[B]``, ``user_features`` ``[B, U]``, ``history`` ``[B, H]``.

    Returns:
      float32 ``[batch_size, units[-1]]`` query embeddings.
    """

    def __init__(
        self,
        user_encoder: keras.layers.Layer,
        history_embedding: keras.layers.Layer,
        units: Sequence[int] = (128, 64, 32),
        history_length: int | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.user_encoder = user_encoder
        self.history_embedding = history_embedding
        self.history_length = history_length
        self.tower = mlp(units, final_activation=None, name="user_mlp")

    def call(self, batch: Batch, training: bool = False) -> tf.Tensor:
        ids = _SchemaTower._user_ids(batch)
        hist = tf.cast(batch["history"], tf.int64)
        if self.history_length is not None:
            hist = hist[:, -self.history_length :]
        pooled = _masked_mean(self.history_embedding(hist), tf.cast(hist > 0, tf.float32))
        x = tf.concat([self.user_encoder(ids), pooled], axis=-1)
        return self.tower(x, training=training)


class ItemTower(keras.Model):
    """DSSM item tower: ``[item_id ‖ item_features] -> MLP -> [..., D]``.

    Call args:
      batch: dict with ``item_id`` int ``[...]`` and ``item_features`` int ``[..., F]``
        (e.g. ``[B, N]`` / ``[B, N, F]`` for a request batch, ``[M]`` / ``[M, F]`` for a
        candidate corpus).

    Returns:
      float32 ``[..., units[-1]]`` candidate embeddings.
    """

    def __init__(
        self,
        item_encoder: keras.layers.Layer,
        units: Sequence[int] = (128, 64, 32),
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.item_encoder = item_encoder
        self.tower = mlp(units, final_activation=None, name="item_mlp")

    def call(self, batch: Batch, training: bool = False) -> tf.Tensor:
        ids = _SchemaTower._item_ids(batch["item_id"], batch["item_features"])
        return self.tower(self.item_encoder(ids), training=training)


@register_serializable
class DssmRetrieval(_SchemaTower):
    """Two-tower retrieval model (DSSM): ``score = <user_tower(batch), item_tower(items)>``.

    Args:
      schema: the dataset's :class:`~lcron_tf.schema.CascadeSchema` (vocabularies).
      emb_dim: embedding dimension (paper: 8).
      tower_units: sizes of both towers' MLPs (paper: ``(128, 64, 32)``).
      history_length: keep only the most recent items of ``history`` (default all).

    Call args:
      batch: the canonical batch dict (see module docstring).

    Returns:
      float32 ``[batch_size, list_size]`` scores.
    """

    def __init__(
        self,
        schema: CascadeSchema | Mapping,
        emb_dim: int = 8,
        tower_units: Sequence[int] = (128, 64, 32),
        history_length: int | None = None,
        name: str = "dssm_retrieval",
        **kwargs: object,
    ) -> None:
        super().__init__(schema, emb_dim, history_length, name=name, **kwargs)
        self.tower_units = _check_units("tower_units", tower_units)
        item_encoder = self._item_encoder("item_embedding")
        history_embedding = keras.layers.Embedding(
            self.schema.item_vocab, self.emb_dim, name="history_embedding"
        )
        self.user_tower = UserTower(
            self._user_encoder("user_embedding"), history_embedding, self.tower_units,
            history_length, name="user_tower",
        )
        self.item_tower = ItemTower(item_encoder, self.tower_units, name="item_tower")

    def query_embedding(self, batch: Batch, training: bool = False) -> tf.Tensor:
        """Query embeddings, float32 ``[batch_size, tower_units[-1]]``.

        Reads ``user_id`` ``[B]``, ``user_features`` ``[B, U]`` and ``history`` ``[B, H]``.
        """
        return self.user_tower(batch, training=training)

    def candidate_embedding(
        self, item_id: tf.Tensor, item_features: tf.Tensor, training: bool = False
    ) -> tf.Tensor:
        """Candidate embeddings, float32 ``[..., tower_units[-1]]``.

        Args:
          item_id: int ``[...]`` (e.g. ``[B, N]`` or ``[M]``).
          item_features: int ``[..., F]``.
          training: Keras training flag.
        """
        return self.item_tower(
            {"item_id": item_id, "item_features": item_features}, training=training
        )

    def call(self, batch: Batch, training: bool = False) -> tf.Tensor:
        query = self.query_embedding(batch, training=training)  # [B, D]
        items = self.candidate_embedding(
            batch["item_id"], batch["item_features"], training=training
        )  # [B, N, D]
        return tf.einsum("bd,bnd->bn", query, items)

    def get_config(self) -> dict:
        return {**super().get_config(), "tower_units": list(self.tower_units)}


@register_serializable
class MlpPreRanker(_SchemaTower):
    """MLP pre-ranker: ``[user ‖ mean(history) ‖ item] -> 128 -> 64 -> 32 -> 1`` (ReLU).

    Args:
      schema: the dataset's :class:`~lcron_tf.schema.CascadeSchema`.
      emb_dim: embedding dimension (paper: 8).
      hidden_units: hidden layer sizes before the scalar output (paper: ``(128, 64, 32)``).
      history_length: keep only the most recent items of ``history`` (default all).

    Call args:
      batch: the canonical batch dict.

    Returns:
      float32 ``[batch_size, list_size]`` scores.
    """

    def __init__(
        self,
        schema: CascadeSchema | Mapping,
        emb_dim: int = 8,
        hidden_units: Sequence[int] = (128, 64, 32),
        history_length: int | None = None,
        name: str = "mlp_pre_ranker",
        **kwargs: object,
    ) -> None:
        super().__init__(schema, emb_dim, history_length, name=name, **kwargs)
        self.hidden_units = _check_units("hidden_units", hidden_units)
        self.user_encoder = self._user_encoder("user_embedding")
        self.item_encoder = self._item_encoder("item_embedding")
        self.history_embedding = keras.layers.Embedding(
            self.schema.item_vocab, self.emb_dim, name="history_embedding"
        )
        self.head = mlp((*self.hidden_units, 1), final_activation=None, name="mlp")

    def call(self, batch: Batch, training: bool = False) -> tf.Tensor:
        hist, hmask = self._history(batch)
        user = tf.concat(
            [self.user_encoder(self._user_ids(batch)),
             _masked_mean(self.history_embedding(hist), hmask)], axis=-1,
        )  # [B, Du]
        items = self.item_encoder(self._item_ids(batch["item_id"], batch["item_features"]))
        n = tf.shape(items)[1]
        user = tf.repeat(user[:, None, :], n, axis=1)  # [B, N, Du]
        x = tf.concat([user, items], axis=-1)
        return tf.squeeze(self.head(x, training=training), axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_units": list(self.hidden_units)}


@register_serializable
class DinRanker(_SchemaTower):
    """DIN ranker: target attention of each candidate over the user's history.

    ``a_bnh = MLP_att([hist_emb_bh ‖ cand_emb_bn])`` (``2d -> attention_units -> ReLU ->
    1``), softmax over the valid history positions (padded positions get weight 0; an
    empty history gives a zero interest vector), ``interest_bn = sum_h a_bnh hist_emb_bh``,
    then ``[user ‖ interest ‖ candidate] -> 128 -> 128 -> 32 -> 1`` (ReLU). History items
    and candidates share the item-id embedding table, so attention compares like with like.

    The attention MLP's first layer is evaluated split (exact, same weights): with its
    kernel ``[W_h; W_c]``, ``W_h h + W_c c + bias`` is ``A_bh + C_bn`` with ``A = hist W_h``
    (``[B, H, U]``) and ``C = cand W_c + bias`` (``[B, N, U]``), so the ``[B, N, H, 2d]``
    pair tensor and its ``B N H × 2d × U`` matmul are never formed, and the ReLU hidden layer
    ``[B, N, H, U]`` is summed over ``U`` slice by slice with its own gradient
    (:func:`lcron_tf.ops.attention.hinge_logits`; benchmarks/RESULTS.md, section B).

    Args:
      schema: the dataset's :class:`~lcron_tf.schema.CascadeSchema`.
      emb_dim: embedding dimension (paper: 8).
      hidden_units: main MLP hidden sizes before the scalar output (paper: ``(128, 128, 32)``).
      attention_units: hidden size of the attention MLP (paper: 80).
      history_length: keep only the most recent items of ``history`` (default all).

    Call args:
      batch: the canonical batch dict.

    Returns:
      float32 ``[batch_size, list_size]`` scores.
    """

    def __init__(
        self,
        schema: CascadeSchema | Mapping,
        emb_dim: int = 8,
        hidden_units: Sequence[int] = (128, 128, 32),
        attention_units: int = 80,
        history_length: int | None = None,
        name: str = "din_ranker",
        **kwargs: object,
    ) -> None:
        super().__init__(schema, emb_dim, history_length, name=name, **kwargs)
        self.hidden_units = _check_units("hidden_units", hidden_units)
        self.attention_units = validation.check_k("attention_units", attention_units, None)
        self.user_encoder = self._user_encoder("user_embedding")
        self.item_id_embedding = keras.layers.Embedding(
            self.schema.item_vocab, self.emb_dim, name="item_id_embedding"
        )
        self.item_feature_encoder = (
            MultiFieldEmbedding(
                self.schema.item_feature_vocabs, self.emb_dim, name="item_feature_embedding"
            )
            if self.schema.item_feature_vocabs
            else None
        )
        self.attention = mlp(
            (self.attention_units, 1), final_activation=None, name="attention_mlp"
        )
        # Built now: attention_logits reads the layers' weights directly.
        self.attention.build(tf.TensorShape([None, 2 * self.emb_dim]))
        self.head = mlp((*self.hidden_units, 1), final_activation=None, name="mlp")

    def attention_logits(self, hist_emb: tf.Tensor, cand_emb: tf.Tensor) -> tf.Tensor:
        """``MLP_att([hist_emb_bh ‖ cand_emb_bn])`` for every (candidate, history) pair.

        Equal (to float rounding) to applying ``self.attention`` to the concatenated
        ``[B, N, H, 2d]`` pairs, evaluated split as described in the class docstring.

        Args:
          hist_emb: float32 ``[B, H, d]`` history item embeddings.
          cand_emb: float32 ``[B, N, d]`` candidate embeddings.

        Returns:
          float32 ``[B, N, H]`` attention logits (before masking and softmax).
        """
        return split_attention_logits(self.attention, hist_emb, cand_emb)

    def call(self, batch: Batch, training: bool = False) -> tf.Tensor:
        hist, hmask = self._history(batch)  # [B, H]
        hist_emb = self.item_id_embedding(hist)  # [B, H, d]
        cand_emb = self.item_id_embedding(tf.cast(batch["item_id"], tf.int64))  # [B, N, d]
        n = tf.shape(cand_emb)[1]
        logits = self.attention_logits(hist_emb, cand_emb)  # [B, N, H]
        valid = hmask[:, None, :] > 0
        logits = tf.where(valid, logits, tf.constant(-1e9, logits.dtype))
        weights = tf.nn.softmax(logits, axis=-1) * tf.cast(valid, logits.dtype)
        interest = tf.einsum("bnh,bhd->bnd", weights, hist_emb)  # [B, N, d]
        user = self.user_encoder(self._user_ids(batch))  # [B, Du]
        parts = [tf.repeat(user[:, None, :], n, axis=1), interest, cand_emb]
        if self.item_feature_encoder is not None:
            parts.append(self.item_feature_encoder(tf.cast(batch["item_features"], tf.int64)))
        x = tf.concat(parts, axis=-1)
        return tf.squeeze(self.head(x, training=training), axis=-1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "attention_units": self.attention_units,
        }
