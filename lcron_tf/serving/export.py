"""Export a cascade model as a TF Serving SavedModel: ``<base_dir>/<model_name>/<version>/``.

:func:`export` wraps the model in a :class:`CascadeServingModule` (a ``tf.Module`` that
tracks only the model's variables, so no Keras auto-traced signature with label inputs is
saved), writes it to a temporary directory next to the destination, optionally reloads it
and checks its outputs, and then publishes it with one ``os.rename``
(:func:`lcron_tf.serving.versioned.write_version`): TF Serving (which only looks at integer
directory names) never sees a partial version.

Signatures (all ``tensorflow/serving/predict``; ``B`` = batch size, dynamic up to
``max_batch_size`` (default 1024); ``N`` = candidates
per request, dynamic in ``[1, max_list_size]`` by default or fixed to ``schema.list_size``;
``U``, ``H``, ``F`` from the schema; ``K`` = the last quota; ``S`` = number of stages):

``serving_default`` - the whole cascade for a request.
  Inputs:
    ``user_id`` int64 ``[B]``, ``user_features`` int64 ``[B, U]``, ``history`` int64 ``[B, H]``,
    ``item_id`` int64 ``[B, N]`` (0 = padded slot), ``item_features`` int64 ``[B, N, F]``,
    ``mask`` float32 ``[B, N]`` (1 = real candidate), and ``history_features`` int64
    ``[B, H, Fh]`` when the schema declares history features (:func:`serving_keys`).
  Outputs:
    ``selected_indices`` int32 ``[B, K]``: indices into the N candidates of the final
    selection, best first (-1 where fewer than K candidates survived);
    ``selected_item_ids`` int64 ``[B, K]`` (0 where empty);
    ``final_scores`` float32 ``[B, K]``: last-stage scores of the selection (0 where empty);
    ``num_selected`` int32 ``[B]``;
    ``stage_scores`` float32 ``[B, S, N]``: every stage's scores of every candidate, first
    stage first (exactly the model's ``call`` output);
    ``survival_mask`` float32 ``[B, S, N]``: 1 where the candidate survived stage ``s``'s
    selection (stage ``s`` keeps its quota among the survivors of stage ``s - 1``).

``score_<stage>`` - one stage alone (same inputs) -> ``scores`` float32 ``[B, N]``.

``query_embedding`` (models with a retrieval tower) - ``user_id`` ``[B]``,
  ``user_features`` ``[B, U]``, ``history`` ``[B, H]`` -> ``query_embedding`` float32 ``[B, D]``.

``retrieve`` (when a candidate corpus is given) - the same user inputs -> ``scores`` float32
  ``[B, k]`` and ``item_ids`` int64 ``[B, k]``: a TFRS ``BruteForce`` index over the corpus
  embedded by the retrieval item tower (``k`` is frozen at export).

Every signature validates its inputs in the graph (``tf.debugging.Assert``): wrong rank or
sizes, inconsistent batch/list sizes, ``B`` or ``N`` beyond the exported maximum, a ``mask``
other than 0/1 and out-of-vocabulary ids fail with ``INVALID_ARGUMENT`` and a message naming
the input (and the export option for a limit), instead of a crash deep
inside the model. Serving functions are never ``jit_compile``'d (an ``_XlaMustCompile``
attribute breaks TF Serving's GPU build), and only stock TF ops are used.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lcron_tf._keras import tf
from lcron_tf.schema import CascadeSchema
from lcron_tf.serving import versioned

__all__ = [
    "DEFAULT_BASE_DIR",
    "DEFAULT_MAX_BATCH_SIZE",
    "SERVING_KEYS",
    "CascadeServingModule",
    "ServableCascade",
    "cascade_select",
    "export",
    "model_schema",
    "model_stages",
    "retrieval_tower",
    "sample_request",
    "serving_keys",
    "validate_inputs",
]

DEFAULT_BASE_DIR = "saved_models"
DEFAULT_MAX_BATCH_SIZE = 1024
"""Default cap on the requests of one call (see :func:`export`, ``max_batch_size``)."""
SERVING_KEYS = ("user_id", "user_features", "history", "item_id", "item_features", "mask")
USER_KEYS = ("user_id", "user_features", "history")
OPTIONAL_KEYS = ("history_features",)
"""Inputs a signature has only when the schema declares them (``history_feature_names``)."""


def serving_keys(schema: CascadeSchema, *, user_only: bool = False) -> tuple[str, ...]:
    """The inputs of ``serving_default`` (``user_only``: of ``query_embedding``) for ``schema``."""
    base = USER_KEYS if user_only else SERVING_KEYS
    return base + (("history_features",) if schema.history_feature_names else ())


METADATA_FILE = "lcron_serving.json"
WARMUP_FILE = "tf_serving_warmup_requests"


class ServableCascade(Protocol):
    """What :func:`export` needs from a model (``lcron_tf.models.CascadeModel`` has it).

    ``model(batch, training=False)`` -> float ``[B, S, N]`` stage scores, first stage first;
    ``quotas``: one serving quota per stage. Discovered when present: the schema
    (``model.schema`` or a stage's ``.schema``), the stages (``stage_models`` or ``stages``:
    Keras models ``stage(batch, training=False) -> [B, N]``) and their names
    (``stage_names`` or each stage's ``name``), and the retrieval tower: the first of the
    model and its stages that has ``query_embedding(batch, training=False) -> [B, D]`` and
    ``candidate_embedding(item_id, item_features, training=False) -> [..., D]``
    (``CascadeModel.default``'s ``DssmRetrieval`` stage). Every one is called with the
    keyword ``training=False``.

    For any other ``tfrs.Model`` (string features, your own towers), use
    :func:`lcron_tf.serving.tfrs_export.export_tfrs` instead.
    """

    quotas: Sequence[int]

    def __call__(self, batch: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor: ...


def model_stages(model: Any) -> tuple[list[Any], list[str]]:
    """``(stages, names)`` of a cascade model (``stage_models``/``stages``, ``stage_names``)."""
    stages = list(getattr(model, "stage_models", None) or getattr(model, "stages", None) or [])
    given = getattr(model, "stage_names", None)
    raw = list(given) if given and len(given) == len(stages) else [
        getattr(st, "name", f"stage_{i}") for i, st in enumerate(stages)
    ]
    names: list[str] = []
    for i, name in enumerate(raw):
        clean = _sanitize(str(name))
        names.append(clean if clean not in names else f"{clean}_{i}")
    return stages, names


def retrieval_tower(model: Any) -> Any | None:
    """The model or first stage with ``query_embedding`` and ``candidate_embedding``."""
    for obj in [model, *model_stages(model)[0]]:
        if callable(getattr(obj, "query_embedding", None)) and callable(
            getattr(obj, "candidate_embedding", None)
        ):
            return obj
    return None


def model_schema(model: Any) -> CascadeSchema | None:
    """``model.schema``, else the first stage's ``.schema``."""
    for obj in [model, *model_stages(model)[0]]:
        schema = getattr(obj, "schema", None)
        if isinstance(schema, CascadeSchema):
            return schema
    return None


class _Opaque:
    """Hides an object from ``tf.Module`` tracking (only its variables are saved)."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj


# ------------------------------------------------------------------------------ cascade math


def cascade_select(
    stage_scores: tf.Tensor, mask: tf.Tensor, quotas: Sequence[int]
) -> dict[str, tf.Tensor]:
    """Hard cascade selection (:class:`lcron_tf.layers.CascadeTopK` semantics), padded to K.

    Stage ``s`` keeps its top ``quotas[s]`` among the survivors of stage ``s - 1``; ties go
    to the lower index and padded candidates are never selected
    (:func:`lcron_tf.ops.ranking_metrics.hard_cascade`). ``N`` may be smaller than a quota:
    the missing slots are reported as empty (-1).

    Args:
      stage_scores: float ``[B, S, N]``.
      mask: 0/1 ``[B, N]``, 1 = real candidate.
      quotas: ``S`` strictly decreasing ints.

    Returns:
      dict with ``selected_indices`` int32 ``[B, K]`` (``K = quotas[-1]``, -1 = empty),
      ``final_scores`` ``[B, K]`` (last-stage scores, 0 where empty), ``num_selected`` int32
      ``[B]`` and ``survival_mask`` float32 ``[B, S, N]``.
    """
    from lcron_tf.layers import CascadeTopK
    from lcron_tf.ops import ranking_metrics

    quotas = [int(q) for q in quotas]
    stages = tf.unstack(stage_scores, axis=1)
    if len(stages) != len(quotas):
        raise ValueError(
            f"the model has {len(stages)} stages but {len(quotas)} quotas ({quotas}); "
            "export needs one quota per stage"
        )
    mask = tf.cast(mask, stage_scores.dtype)
    survival = tf.stack(ranking_metrics.hard_cascade(stages, quotas, mask), axis=1)
    indices, _ = CascadeTopK(quotas, name="cascade_topk")(stages, mask=mask)
    k = quotas[-1]
    indices = tf.cast(indices, tf.int32)
    indices = tf.pad(
        indices, [[0, 0], [0, tf.maximum(k - tf.shape(indices)[1], 0)]], constant_values=-1
    )
    indices = tf.ensure_shape(indices, [None, k])
    valid = indices >= 0
    final = tf.gather(stages[-1], tf.maximum(indices, 0), batch_dims=1)
    return {
        "selected_indices": indices,
        "final_scores": tf.where(valid, final, tf.zeros_like(final)),
        "num_selected": tf.reduce_sum(tf.cast(valid, tf.int32), axis=1),
        "survival_mask": tf.cast(survival, tf.float32),
    }


# ------------------------------------------------------------------------------ validation


def _input_specs(
    schema: CascadeSchema, list_size: int | None, keys: Sequence[str]
) -> dict[str, tf.TensorSpec]:
    specs = schema.feature_specs(None)
    out = {}
    for key in keys:
        shape = specs[key].shape.as_list()
        if key in ("item_id", "item_features", "mask"):
            shape[1] = list_size
        out[key] = tf.TensorSpec(shape, specs[key].dtype, name=key)
    return out


def _shape_check(
    name: str,
    x: tf.Tensor,
    expected: Sequence[int | tf.Tensor],
    description: str,
) -> tf.Operation:
    """Runtime check that ``x`` has exactly ``expected`` dims (rank included).

    The signature's static rank cannot be trusted (TF Serving does not check it, and grappler
    folds ``tf.rank``), so the actual shape is padded with -1 before slicing and the element
    count is compared too.
    """
    rank = len(expected)
    shape = tf.shape(x, out_type=tf.int64)
    padded = tf.concat([shape, tf.fill([rank + 1], tf.constant(-1, tf.int64))], axis=0)
    ok = tf.equal(padded[rank], -1)
    count = tf.constant(1, tf.int64)
    for i, dim in enumerate(expected):
        dim = tf.cast(dim, tf.int64)
        ok = tf.logical_and(ok, tf.equal(padded[i], dim))
        count = count * dim
    ok = tf.logical_and(ok, tf.equal(tf.size(x, out_type=tf.int64), count))
    return tf.debugging.Assert(
        ok,
        [f"serving input `{name}` must have shape {description}; got shape", shape],
        summarize=8,
        name=f"check_{name}_shape",
    )


def _range_check(name: str, x: tf.Tensor, vocab: Sequence[int] | int, what: str) -> tf.Operation:
    """Runtime check ``0 <= x < vocab`` (per last-axis column when ``vocab`` is a list)."""
    limit = tf.constant(vocab, tf.int64)
    ok = tf.logical_and(tf.reduce_all(x >= 0), tf.reduce_all(x < limit))
    return tf.debugging.Assert(
        ok,
        [
            f"serving input `{name}` has ids outside [0, vocab) ({what} vocab = {vocab}); "
            "min/max:",
            tf.reduce_min(x),
            tf.reduce_max(x),
        ],
        name=f"check_{name}_range",
    )


def validate_inputs(
    inputs: Mapping[str, tf.Tensor],
    schema: CascadeSchema,
    *,
    max_list_size: int,
    fixed_list_size: bool,
    max_batch_size: int | None = None,
) -> dict[str, tf.Tensor]:
    """In-graph validation of serving inputs; returns them with static shapes restored.

    Checks (each with a message naming the input): exact rank and trailing sizes, a shared
    batch size ``B = len(user_id)`` with ``B <= max_batch_size`` (no cap when None), a shared
    list size ``N = item_id.shape[1]`` with ``1 <= N <= max_list_size`` (``N ==
    max_list_size`` when fixed), ids within their vocabularies and ``mask`` in ``{0, 1}``.
    """
    u, h, f = schema.num_user_features, schema.history_length, schema.num_item_features
    fh = schema.num_history_features
    present = [k for k in (*SERVING_KEYS, *OPTIONAL_KEYS) if k in inputs]
    b = tf.shape(inputs["user_id"], out_type=tf.int64)[0]
    checks = [_shape_check("user_id", inputs["user_id"], [b], "[B]")]
    if max_batch_size is not None:
        checks.append(batch_size_check(inputs["user_id"], max_batch_size))
    with tf.control_dependencies(checks):
        b = tf.identity(b)
    dims: dict[str, tuple[list[Any], str]] = {
        "user_features": ([b, u], f"[B, U={u}] (B = len(user_id))"),
        "history": ([b, h], f"[B, H={h}] (B = len(user_id))"),
        "history_features": ([b, h, fh], f"[B, H={h}, Fh={fh}] (B = len(user_id))"),
    }
    n = None
    if "item_id" in inputs:
        item_shape = tf.shape(inputs["item_id"], out_type=tf.int64)
        padded = tf.concat([item_shape, tf.constant([-1, -1], tf.int64)], axis=0)
        n = padded[1]
        limit = "exactly" if fixed_list_size else "at most"
        ok_n = tf.logical_and(n >= 1, n <= max_list_size)
        if fixed_list_size:
            ok_n = tf.equal(n, max_list_size)
        checks.append(
            tf.debugging.Assert(
                ok_n,
                [
                    f"serving input `item_id` must have shape [B, N] with N {limit} "
                    f"{max_list_size} candidates (the list size this model was exported "
                    "with: export option max_list_size); got shape",
                    item_shape,
                ],
                summarize=8,
                name="check_list_size",
            )
        )
        n_desc = f"N {limit} {max_list_size}"
        dims["item_id"] = ([b, n], f"[B, N] (B = len(user_id), {n_desc})")
        dims["item_features"] = (
            [b, n, f],
            f"[B, N, F={f}] (B = len(user_id), N = item_id.shape[1], {n_desc})",
        )
        dims["mask"] = ([b, n], "[B, N] (B = len(user_id), N = item_id.shape[1])")
    for key in present:
        if key in dims:
            checks.append(_shape_check(key, inputs[key], dims[key][0], dims[key][1]))
    with tf.control_dependencies(checks):
        # Value checks only after the shape checks passed.
        value_checks = [
            _range_check("user_id", inputs["user_id"], schema.user_vocab, "user"),
            _range_check("history", inputs["history"], schema.item_vocab, "item"),
        ]
        if u:
            value_checks.append(
                _range_check(
                    "user_features", inputs["user_features"], schema.user_feature_vocabs,
                    "per-column user feature",
                )
            )
        if fh and "history_features" in inputs:
            value_checks.append(
                _range_check(
                    "history_features", inputs["history_features"],
                    schema.history_feature_vocabs, "per-column history feature",
                )
            )
        if n is not None:
            value_checks.append(
                _range_check("item_id", inputs["item_id"], schema.item_vocab, "item")
            )
            if f:
                value_checks.append(
                    _range_check(
                        "item_features", inputs["item_features"], schema.item_feature_vocabs,
                        "per-column item feature",
                    )
                )
            mask = inputs["mask"]
            value_checks.append(
                tf.debugging.Assert(
                    # Exactly the schema's rule (lcron_tf.schema.validate_arrays): {0, 1}.
                    tf.reduce_all(tf.logical_or(tf.equal(mask, 0), tf.equal(mask, 1))),
                    ["serving input `mask` must be 0 (padded) or 1 (real candidate); got "
                     "min/max:", tf.reduce_min(mask), tf.reduce_max(mask)],
                    name="check_mask_values",
                )
            )
    static_n = max_list_size if fixed_list_size else None
    static = {
        "user_id": [None],
        "user_features": [None, u],
        "history": [None, h],
        "history_features": [None, h, fh],
        "item_id": [None, static_n],
        "item_features": [None, static_n, f],
        "mask": [None, static_n],
    }
    out = {}
    with tf.control_dependencies(checks + value_checks):
        for key in present:
            out[key] = tf.ensure_shape(tf.identity(inputs[key]), static[key])
    return out


def batch_size_check(x: tf.Tensor, max_batch_size: int, name: str = "user_id") -> tf.Operation:
    """Runtime check ``x.shape[0] <= max_batch_size``: ``INVALID_ARGUMENT`` naming the option.

    One call's memory grows with its batch, so a signature refuses more requests than it was
    exported for (see ``max_batch_size`` of :func:`export`).
    """
    b = tf.shape(x, out_type=tf.int64)[0]
    return tf.debugging.Assert(
        b <= max_batch_size,
        [f"serving input `{name}` carries more requests than the export option "
         f"max_batch_size={max_batch_size} allows (split the call, or export with a larger "
         "max_batch_size); got batch size", b],
        name="check_max_batch_size",
    )


# ------------------------------------------------------------------------------ module


def _sanitize(name: str) -> str:
    clean = re.sub(r"[^0-9a-zA-Z_]+", "_", name).strip("_").lower()
    return clean or "stage"


class CascadeServingModule(tf.Module):
    """``tf.Module`` with the serving functions of a cascade model (see the module docstring).

    It tracks only the model's (and the retrieval index's) variables; the model object is
    used by the traced functions but not serialized, so Keras' own auto-traced functions (and
    any label inputs they may need) never reach the SavedModel.

    Args:
      model: a :class:`ServableCascade` (e.g. ``lcron_tf.models.CascadeModel``).
      schema: defaults to ``model.schema`` or a stage's ``.schema``.
      quotas: defaults to ``model.quotas``.
      max_list_size: the largest N a request may carry (default ``schema.list_size``).
      dynamic_list_size: N dynamic in ``[1, max_list_size]`` (True) or fixed (False).
      max_batch_size: the most requests (B) one call may carry; None = no cap.
      candidates: optional corpus ``{"item_id": int64 [M], "item_features": int64 [M, F]}``
        for the ``retrieve`` signature (needs ``model.candidate_embedding``).
      retrieval_k: ``k`` of the ``retrieve`` signature (capped at M).
    """

    def __init__(
        self,
        model: ServableCascade,
        *,
        schema: CascadeSchema | None = None,
        quotas: Sequence[int] | None = None,
        max_list_size: int | None = None,
        dynamic_list_size: bool = True,
        candidates: Mapping[str, Any] | None = None,
        retrieval_k: int = 100,
        max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
    ) -> None:
        super().__init__(name="lcron_serving")
        schema = schema if schema is not None else model_schema(model)
        if not isinstance(schema, CascadeSchema):
            raise TypeError(
                "export needs a CascadeSchema: pass `schema=` (the model and its stages have "
                "no `.schema`). "
                f"Received: {type(schema).__name__}"
            )
        quotas = tuple(int(q) for q in (quotas if quotas is not None else model.quotas))
        self._model = _Opaque(model)
        self.schema_json = schema.to_json()
        self._schema = _Opaque(schema)
        self._quotas = quotas
        self.max_list_size = int(max_list_size or schema.list_size)
        if self.max_list_size < 1:
            raise ValueError(f"`max_list_size` must be >= 1. Received: {max_list_size}")
        self.dynamic_list_size = bool(dynamic_list_size)
        if max_batch_size is not None and (isinstance(max_batch_size, bool)
                                           or not isinstance(max_batch_size, int | np.integer)
                                           or max_batch_size < 1):
            raise ValueError(f"`max_batch_size` must be an int >= 1 or None. "
                             f"Received: {max_batch_size!r}")
        self.max_batch_size = None if max_batch_size is None else int(max_batch_size)
        self.model_variables = list(getattr(model, "variables", []))
        stages, names = model_stages(model)
        self.stage_names = names
        self._stages = _Opaque(stages)

        list_size = None if self.dynamic_list_size else self.max_list_size
        specs = _input_specs(schema, list_size, serving_keys(schema))
        user_specs = _input_specs(schema, list_size, serving_keys(schema, user_only=True))
        self._signatures: dict[str, Callable[..., Any]] = {}

        self.serve = tf.function(self._serve, input_signature=[specs], jit_compile=False)
        self._signatures["serving_default"] = self.serve
        for i, name in enumerate(names):
            fn = tf.function(self._make_stage_fn(i), input_signature=[specs], jit_compile=False)
            setattr(self, f"score_{name}", fn)
            self._signatures[f"score_{name}"] = fn

        tower = retrieval_tower(model)
        self._tower = _Opaque(tower)
        self.has_query_tower = tower is not None
        if self.has_query_tower:
            self.query_embedding = tf.function(
                self._query_embedding, input_signature=[user_specs], jit_compile=False
            )
            self._signatures["query_embedding"] = self.query_embedding

        self.retrieval_k = 0
        self._index = None
        if candidates is not None:
            if tower is None:
                raise TypeError(
                    "a candidate corpus needs a retrieval tower: the model or one of its "
                    "stages must have `query_embedding(batch)` and "
                    "`candidate_embedding(item_id, item_features)` (e.g. DssmRetrieval)"
                )
            self._build_index(tower, schema, candidates, retrieval_k)
            self.retrieve = tf.function(
                self._retrieve, input_signature=[user_specs], jit_compile=False
            )
            self._signatures["retrieve"] = self.retrieve

    # -- index

    def _build_index(
        self, model: Any, schema: CascadeSchema, candidates: Mapping[str, Any], k: int
    ) -> None:
        import tensorflow_recommenders as tfrs

        missing = {"item_id", "item_features"} - set(candidates)
        if missing:
            raise ValueError(f"`candidates` is missing {sorted(missing)}")
        ids = np.asarray(candidates["item_id"], dtype=np.int64).reshape(-1)
        feats = np.asarray(candidates["item_features"], dtype=np.int64)
        f = schema.num_item_features
        if feats.shape != (ids.shape[0], f):
            raise ValueError(
                f"`candidates['item_features']` must have shape [M, F] = [{ids.shape[0]}, {f}]. "
                f"Received: {feats.shape}"
            )
        if ids.size == 0:
            raise ValueError("`candidates` must hold at least one item")
        if not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"`retrieval_k` must be an int >= 1. Received: {k!r}")
        if ids.min() < 0 or ids.max() >= schema.item_vocab:
            raise ValueError(f"candidate item ids must be in [0, {schema.item_vocab})")
        emb = _candidate_embeddings(model, ids, feats)
        self.retrieval_k = int(min(k, ids.shape[0]))
        index = tfrs.layers.factorized_top_k.BruteForce(k=self.retrieval_k, name="retrieval_index")
        index.index(emb, tf.constant(ids))
        # Call once so it is built before saving (recommenders#640).
        index(tf.zeros([1, emb.shape[-1]], emb.dtype))
        self._index = _Opaque(index)
        self.index_variables = list(index.variables)

    # -- traced bodies

    def _validated(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return validate_inputs(
            inputs,
            self._schema.obj,
            max_list_size=self.max_list_size,
            fixed_list_size=not self.dynamic_list_size,
            max_batch_size=self.max_batch_size,
        )

    def _serve(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        batch = self._validated(inputs)
        stage_scores = tf.cast(self._model.obj(batch, training=False), tf.float32)
        out = cascade_select(stage_scores, batch["mask"], self._quotas)
        safe = tf.maximum(out["selected_indices"], 0)
        ids = tf.gather(batch["item_id"], safe, batch_dims=1)
        out["selected_item_ids"] = tf.where(out["selected_indices"] >= 0, ids, tf.zeros_like(ids))
        out["stage_scores"] = stage_scores
        return out

    def _make_stage_fn(self, i: int) -> Callable[[Mapping[str, tf.Tensor]], dict[str, tf.Tensor]]:
        def score(inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            batch = self._validated(inputs)
            scores = self._stages.obj[i](batch, training=False)
            if scores.shape.rank == 3 and scores.shape[-1] == 1:
                scores = tf.squeeze(scores, axis=-1)
            return {"scores": tf.cast(scores, tf.float32)}

        score.__name__ = f"score_{self.stage_names[i]}"
        return score

    def _query_embedding(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        batch = self._validated(inputs)
        q = self._tower.obj.query_embedding(batch, training=False)
        return {"query_embedding": tf.cast(q, tf.float32)}

    def _retrieve(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        batch = self._validated(inputs)
        q = self._tower.obj.query_embedding(batch, training=False)
        scores, ids = self._index.obj(tf.cast(q, tf.float32))
        return {"scores": tf.cast(scores, tf.float32), "item_ids": ids}

    # -- export helpers

    def signatures(self) -> dict[str, Any]:
        """Signature name -> concrete function, for ``tf.saved_model.save``."""
        return {name: fn.get_concrete_function() for name, fn in self._signatures.items()}

    def metadata(self) -> dict[str, Any]:
        """JSON-able description written to ``assets.extra/lcron_serving.json``."""
        import lcron_tf

        return {
            "lcron_tf_version": lcron_tf.__version__,
            "tensorflow_version": tf.__version__,
            "schema": json.loads(self.schema_json),
            "quotas": list(self._quotas),
            "stage_names": self.stage_names,
            "max_list_size": self.max_list_size,
            "max_batch_size": self.max_batch_size,
            "dynamic_list_size": self.dynamic_list_size,
            "retrieval_k": self.retrieval_k,
            "signatures": sorted(self._signatures),
        }


def _candidate_embeddings(model: Any, ids: np.ndarray, feats: np.ndarray) -> tf.Tensor:
    """Embed the corpus with the item tower, in chunks; tries [M] then [1, M] layouts."""
    chunks = []
    for start in range(0, ids.shape[0], 4096):
        i = tf.constant(ids[start : start + 4096])
        x = tf.constant(feats[start : start + 4096])
        try:
            emb = model.candidate_embedding(i, x, training=False)
        except (ValueError, tf.errors.InvalidArgumentError):
            emb = model.candidate_embedding(i[None], x[None], training=False)
        emb = tf.reshape(tf.cast(emb, tf.float32), [int(i.shape[0]), -1])
        chunks.append(emb)
    return tf.concat(chunks, axis=0)


# ------------------------------------------------------------------------------ requests


def sample_request(
    schema: CascadeSchema,
    batch_size: int = 2,
    *,
    list_size: int | None = None,
    seed: int = 0,
    pad_last: int = 1,
) -> dict[str, np.ndarray]:
    """A random, valid serving request (numpy, canonical dtypes) for tests and warm-up.

    The last ``pad_last`` candidate slots of every request are padding (id 0, mask 0).
    """
    rng = np.random.default_rng(seed)
    n = int(list_size or schema.list_size)
    b = int(batch_size)

    def cols(vocabs: Sequence[int], shape: tuple[int, ...]) -> np.ndarray:
        if not vocabs:
            return np.zeros(shape + (0,), np.int64)
        return np.stack([rng.integers(1, max(v, 2), size=shape) for v in vocabs], -1).astype(
            np.int64
        ) % np.asarray(vocabs, np.int64)

    item_id = rng.integers(1, max(schema.item_vocab, 2), size=(b, n)).astype(np.int64)
    item_id %= schema.item_vocab
    mask = np.ones((b, n), np.float32)
    if 0 < pad_last < n:
        mask[:, n - pad_last :] = 0
        item_id[:, n - pad_last :] = 0
    item_features = cols(schema.item_feature_vocabs, (b, n)) * mask[..., None].astype(np.int64)
    history = rng.integers(0, schema.item_vocab, size=(b, schema.history_length)).astype(np.int64)
    out = {
        "user_id": rng.integers(0, schema.user_vocab, size=(b,)).astype(np.int64),
        "user_features": cols(schema.user_feature_vocabs, (b,)),
        "history": history,
        "item_id": item_id,
        "item_features": item_features,
        "mask": mask,
    }
    if schema.history_feature_names:
        hf = cols(schema.history_feature_vocabs, (b, schema.history_length))
        out["history_features"] = hf * (history > 0)[..., None]
    return out


# ------------------------------------------------------------------------------ export


def _has_xla_attr(path: Path) -> bool:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    for mg in proto.meta_graphs:
        for fn in mg.graph_def.library.function:
            attr = fn.attr.get("_XlaMustCompile")
            if attr is not None and attr.b:
                return True
    return False


def _write_warmup(path: Path, request: Mapping[str, np.ndarray], model_name: str) -> None:
    """TF Serving warm-up file (``assets.extra/tf_serving_warmup_requests``): one Predict."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    req = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default")
    )
    for k, v in request.items():
        req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req))
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())


def _verify(module: Any, path: Path, request: Mapping[str, np.ndarray]) -> None:
    """Reload ``path`` and compare every signature of ``module`` (its ``_signatures``) with the
    in-memory one on ``request``: numbers to rtol 1e-5 / atol 1e-6, strings exactly."""
    loaded = tf.saved_model.load(str(path))
    for name, fn in module._signatures.items():
        feed = {k: tf.constant(v) for k, v in request.items() if k in fn.input_signature[0]}
        want = fn(feed)
        got = loaded.signatures[name](**feed)
        if set(want) != set(got):
            raise RuntimeError(f"export check: {name} outputs {sorted(got)} != {sorted(want)}")
        for key in want:
            a, b = want[key].numpy(), got[key].numpy()
            if a.shape != b.shape:
                raise RuntimeError(f"export check: reloaded {name}/{key} has shape {b.shape}, "
                                   f"the in-memory model {a.shape}")
            if a.dtype == object or a.dtype.kind in "SU":
                if not np.all(a == b):
                    raise RuntimeError(f"export check: reloaded {name}/{key} differs from the "
                                       "in-memory model (strings)")
            elif not np.allclose(a, b, rtol=1e-5, atol=1e-6):
                raise RuntimeError(
                    f"export check: reloaded {name}/{key} differs from the in-memory model "
                    f"(max abs diff {np.max(np.abs(a - b))})"
                )


def export(
    model: ServableCascade,
    base_dir: str | os.PathLike[str] = DEFAULT_BASE_DIR,
    version: int | None = None,
    *,
    model_name: str | None = None,
    schema: CascadeSchema | None = None,
    candidates: Mapping[str, Any] | None = None,
    retrieval_k: int = 100,
    dynamic_list_size: bool = True,
    max_list_size: int | None = None,
    max_batch_size: int | None = DEFAULT_MAX_BATCH_SIZE,
    overwrite: bool = False,
    verify: bool = True,
    warmup: bool = True,
) -> Path:
    """Export ``model`` for TF Serving to ``<base_dir>/<model_name>/<version>/``, atomically.

    Args:
      model: the cascade model (``lcron_tf.models.CascadeModel`` or any
        :class:`ServableCascade`), already built/trained.
      base_dir: export base (``--model_base_path`` is ``<base_dir>/<model_name>``).
      version: integer version; ``None`` = one more than the largest existing version (1 first).
      model_name: default ``model.name`` sanitized, else ``schema.name``.
      schema: defaults to ``model.schema`` or a stage's ``.schema``.
      candidates: optional corpus ``{"item_id": [M], "item_features": [M, F]}`` for the
        ``retrieve`` signature (TFRS ``BruteForce`` over the DSSM item tower).
      retrieval_k: ``k`` of ``retrieve`` (frozen in the SavedModel).
      dynamic_list_size: requests may carry any ``N`` in ``[1, max_list_size]`` (True) or
        exactly ``max_list_size`` (False, for models whose math needs a fixed N).
      max_list_size: the largest ``N`` a request may carry; default ``schema.list_size``.
      max_batch_size: the most requests one call of any signature may carry (checked in the
        graph: ``INVALID_ARGUMENT`` naming ``max_batch_size``); ``None`` = no cap. The
        default, 1024, bounds one call's memory (it grows linearly with ``B * N``: an audit
        measured +3.1 GiB for one unbounded call of 100,000 requests; scaled linearly, not
        measured, about 33 MiB at the cap) while leaving room for TF Serving's server-side
        batching up to 1024; raise it to at least the ``max_batch_size`` of a batching
        parameters file (docs/serving.md).
      overwrite: replace an existing ``<version>`` (otherwise ``FileExistsError``); the swap
        never leaves a moment without a complete ``<version>`` directory
        (:func:`lcron_tf.serving.versioned.write_version`).
      verify: reload the temporary export and compare every signature with the in-memory
        model on a sample request, and reject XLA-compiled functions, before publishing.
      warmup: write ``assets.extra/tf_serving_warmup_requests`` (one sample Predict).

    Returns:
      The published version directory.

    Raises:
      FileExistsError: the version exists and ``overwrite`` is False.
      RuntimeError: the verification failed (nothing is published).
      ValueError: ``model_name`` is not one plain path component.
    """
    module = CascadeServingModule(
        model,
        schema=schema,
        candidates=candidates,
        retrieval_k=retrieval_k,
        dynamic_list_size=dynamic_list_size,
        max_list_size=max_list_size,
        max_batch_size=max_batch_size,
    )
    schema = module._schema.obj
    name = model_name or _sanitize(getattr(model, "name", "") or schema.name)
    model_dir = versioned.model_dir(base_dir, name)
    request = sample_request(schema, 2, list_size=module.max_list_size)

    def write(tmp: Path) -> None:
        save_module(module, tmp, request, name, warmup=warmup, verify=verify)

    # TF Serving only loads integer directories, so the temporary one is invisible to it.
    return versioned.write_version(model_dir, write, version, overwrite=overwrite)


def save_module(
    module: tf.Module,
    tmp: Path,
    request: Mapping[str, Any],
    name: str,
    *,
    warmup: bool,
    verify: bool,
) -> None:
    """Write a serving module to ``tmp``: the SavedModel (``module.signatures()``), its
    ``assets.extra`` metadata, optionally a TF Serving warm-up record of ``request``, and, with
    ``verify``, the XLA-attribute check and a reload compared with the in-memory module.
    Shared by :func:`export` and :func:`lcron_tf.serving.tfrs_export.export_tfrs`."""
    tf.saved_model.save(
        module,
        str(tmp),
        signatures=module.signatures(),
        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
    )
    extra = tmp / "assets.extra"
    extra.mkdir(exist_ok=True)
    (extra / METADATA_FILE).write_text(json.dumps(module.metadata(), indent=2, sort_keys=True))
    if warmup:
        _write_warmup(extra / WARMUP_FILE, request, name)
    if verify:
        if _has_xla_attr(tmp):
            raise RuntimeError(
                "export check: a serving function carries _XlaMustCompile (jit_compile); "
                "TF Serving's GPU build cannot load it"
            )
        _verify(module, tmp, request)
