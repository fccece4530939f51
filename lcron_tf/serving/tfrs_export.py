"""Export ANY ``tfrs.Model`` cascade for TF Serving: raw features (strings) in, your ids out.

:func:`export_tfrs` needs no ``CascadeSchema`` and no adapter: you give it your own input
signature (``tf.TensorSpec`` per feature, strings included), one scorer per stage, the
query and candidate towers, the quotas, and optionally a candidate corpus. The lookup
vocabularies (``StringLookup`` tables) of your towers and every variable travel in the
SavedModel; clients send strings. It writes ``<base_dir>/<model_name>/<version>/``
atomically (:func:`lcron_tf.serving.versioned.write_version`, as ``export`` does),
verifies the reloaded export against the in-memory model before publishing,
rejects XLA-compiled functions
(serving functions are never ``jit_compile``'d) and uses stock TF ops only (the tests load
it in a process where neither lcron_tf nor tensorflow_recommenders can be imported).

Signatures (``tensorflow/serving/predict``; ``B`` = batch, ``N`` = candidates per request
in ``[1, max_list_size]``, ``S`` = stages, ``K = quotas[-1]``; ``Q...`` / ``C...`` = the
trailing dims of your query / candidate specs):

``serving_default`` - the whole cascade over given candidates.
  Inputs: every query feature ``[B, Q...]``, every candidate feature ``[B, N, C...]`` and
  ``mask`` float32 ``[B, N]`` (1 = real candidate, 0 = padded slot).
  Outputs: ``selected_item_ids`` ``[B, K]`` (your ``item_id`` feature, e.g. titles; ``""``
  / 0 where fewer than K survived), ``selected_indices`` int32 ``[B, K]`` (-1 where empty),
  ``final_scores`` float32 ``[B, K]``, ``num_selected`` int32 ``[B]``, ``stage_scores``
  float32 ``[B, S, N]``, ``survival_mask`` float32 ``[B, S, N]`` (stage ``s`` keeps its quota
  among the survivors of stage ``s - 1``; ties go to the lower index; padding never wins).

``score_<stage>`` - one stage alone: the same inputs -> ``scores`` float32 ``[B, N]``.

``query_embedding`` (with ``query_tower``) - query features -> ``query_embedding`` ``[B, D]``.

``recommend`` (with ``corpus``, ``query_tower`` and ``candidate_tower``) - query features
  only -> ``item_ids`` ``[B, K]`` (your ids), ``scores`` float32 ``[B, K]`` (last-stage
  scores), ``num_selected`` int32 ``[B]``: a TFRS ``BruteForce`` index over the corpus
  embedded by ``candidate_tower`` retrieves the top ``retrieval_k`` (default ``quotas[0]``)
  by ``query_tower`` dot products, every stage scores them (their features gathered from
  the corpus), and the cascade keeps ``quotas``.

Inputs are validated in the graph (``INVALID_ARGUMENT`` with a message naming the input):
rank and static trailing sizes of every feature, one batch size for all, one list size
``N <= max_list_size`` for all candidate features and ``mask``, ``mask`` in ``[0, 1]``.
Unknown strings are not an error: they go to your lookups' OOV bucket, as in training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lcron_tf._keras import tf
from lcron_tf.serving import versioned
from lcron_tf.serving.export import (
    _sanitize,
    _shape_check,
    cascade_select,
    save_module,
)

__all__ = ["TfrsServingModule", "export_tfrs"]

Features = dict[str, tf.Tensor]
StageFn = Callable[[Features, Features], tf.Tensor]


def _resources(objects: Sequence[Any]) -> list[Any]:
    """Every ``TrackableResource`` (e.g. ``StringLookup`` hash tables) under ``objects``."""
    from tensorflow.python.trackable.resource import CapturableResource

    found: dict[int, Any] = {}
    for obj in objects:
        if isinstance(obj, tf.Module):
            for r in obj._flatten(predicate=lambda x: isinstance(x, CapturableResource)):
                found[id(r)] = r
    return list(found.values())


class _Opaque:
    """Hides an object from ``tf.Module`` tracking."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj


def _spec(name: str, spec: Any, min_rank: int) -> tf.TensorSpec:
    if not isinstance(spec, tf.TensorSpec):
        raise ValueError(f"signature of `{name}` must be a tf.TensorSpec. Received: {spec!r}")
    if spec.shape.rank is None or spec.shape.rank < min_rank:
        layout = "[B, ...]" if min_rank == 1 else "[B, N, ...]"
        raise ValueError(
            f"signature of `{name}` must have rank >= {min_rank} ({layout}). "
            f"Received shape {spec.shape}"
        )
    shape = [None] * min_rank + spec.shape.as_list()[min_rank:]
    return tf.TensorSpec(shape, spec.dtype, name=name)


class TfrsServingModule(tf.Module):
    """The serving functions of :func:`export_tfrs` (see the module docstring).

    It tracks the variables and lookup tables of ``model`` (and of the retrieval index),
    not the Keras objects, so no Keras auto-traced function with label inputs is saved.
    """

    def __init__(
        self,
        model: tf.Module,
        *,
        query_signature: Mapping[str, tf.TensorSpec],
        candidate_signature: Mapping[str, tf.TensorSpec],
        stages: Mapping[str, StageFn] | Sequence[tuple[str, StageFn]],
        quotas: Sequence[int],
        item_id: str,
        query_tower: Callable[[Features], tf.Tensor] | None = None,
        candidate_tower: Callable[[Features], tf.Tensor] | None = None,
        corpus: Mapping[str, Any] | None = None,
        retrieval_k: int | None = None,
        max_list_size: int = 1000,
    ) -> None:
        super().__init__(name="tfrs_cascade_serving")
        from lcron_tf.ops.ranking_metrics import check_quotas

        stage_list = list(stages.items()) if isinstance(stages, Mapping) else list(stages)
        if not stage_list:
            raise ValueError("`stages` must hold at least one (name, scorer) pair")
        names = [_sanitize(str(n)) for n, _ in stage_list]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique after sanitising: {names}")
        for n, fn in stage_list:
            if not callable(fn):
                raise ValueError(f"stage {n!r}: the scorer must be callable. Received {fn!r}")
        self._quotas = check_quotas(quotas)
        if len(self._quotas) != len(stage_list):
            raise ValueError(
                f"one quota per stage: {len(stage_list)} stages, quotas={self._quotas}"
            )
        if not query_signature or not candidate_signature:
            raise ValueError("`query_signature` and `candidate_signature` must not be empty")
        self.query_specs = {k: _spec(k, v, 1) for k, v in query_signature.items()}
        self.candidate_specs = {k: _spec(k, v, 2) for k, v in candidate_signature.items()}
        clash = set(self.query_specs) & set(self.candidate_specs) | (
            {"mask"} & (set(self.query_specs) | set(self.candidate_specs))
        )
        if clash:
            raise ValueError(f"feature names must be unique and not `mask`: {sorted(clash)}")
        if item_id not in self.candidate_specs:
            raise ValueError(
                f"`item_id`={item_id!r} must be one of the candidate features "
                f"{sorted(self.candidate_specs)}"
            )
        if not isinstance(max_list_size, int) or max_list_size < 1:
            raise ValueError(f"`max_list_size` must be an int >= 1. Received {max_list_size!r}")
        self.item_id = item_id
        self.max_list_size = max_list_size
        self.stage_names = names
        self._stages = _Opaque([fn for _, fn in stage_list])
        self._query_tower = _Opaque(query_tower)
        self.model_variables = list(model.variables)
        self.model_resources = _resources([model])
        self.retrieval_k = None
        self._signatures: dict[str, Any] = {}

        cand_in = {**self.query_specs, **self.candidate_specs,
                   "mask": tf.TensorSpec([None, None], tf.float32, name="mask")}
        self.serve = tf.function(self._serve, input_signature=[cand_in], jit_compile=False)
        self._signatures["serving_default"] = self.serve
        for i, n in enumerate(names):
            fn = tf.function(self._stage_fn(i), input_signature=[cand_in], jit_compile=False)
            setattr(self, f"score_{n}", fn)
            self._signatures[f"score_{n}"] = fn
        if query_tower is not None:
            self.query_embedding = tf.function(
                self._query_embedding, input_signature=[dict(self.query_specs)], jit_compile=False
            )
            self._signatures["query_embedding"] = self.query_embedding
        if corpus is not None:
            if query_tower is None or candidate_tower is None:
                raise ValueError("`recommend` (a corpus) needs `query_tower` and `candidate_tower`")
            self._build_index(corpus, candidate_tower, retrieval_k)
            self.recommend = tf.function(
                self._recommend, input_signature=[dict(self.query_specs)], jit_compile=False
            )
            self._signatures["recommend"] = self.recommend

    # -- index

    def _build_index(
        self, corpus: Mapping[str, Any], candidate_tower: Callable, retrieval_k: int | None
    ) -> None:
        import tensorflow_recommenders as tfrs

        missing = sorted(set(self.candidate_specs) - set(corpus))
        if missing:
            raise ValueError(f"`corpus` is missing the candidate feature(s) {missing}")
        values = {}
        m = None
        for key, spec in self.candidate_specs.items():
            v = tf.convert_to_tensor(np.asarray(corpus[key]) if not tf.is_tensor(corpus[key])
                                     else corpus[key])
            if v.dtype != spec.dtype:
                raise ValueError(f"`corpus[{key!r}]` has dtype {v.dtype.name}, the signature "
                                 f"{spec.dtype.name}")
            want = [None] + spec.shape.as_list()[2:]
            if not tf.TensorShape(want).is_compatible_with(v.shape):
                raise ValueError(f"`corpus[{key!r}]` must have shape {want}. Received {v.shape}")
            if m is not None and v.shape[0] != m:
                raise ValueError("every `corpus` feature must have the same length")
            m = v.shape[0]
            values[key] = v
        if not m:
            raise ValueError("`corpus` must hold at least one item")
        k = self._quotas[0] if retrieval_k is None else retrieval_k
        if not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"`retrieval_k` must be an int >= 1. Received {retrieval_k!r}")
        self.retrieval_k = int(min(k, m))
        chunks = []
        for lo in range(0, m, 8192):
            emb = candidate_tower({kk: vv[lo : lo + 8192] for kk, vv in values.items()})
            chunks.append(tf.reshape(tf.cast(emb, tf.float32), [min(8192, m - lo), -1]))
        emb = tf.concat(chunks, axis=0)
        index = tfrs.layers.factorized_top_k.BruteForce(k=self.retrieval_k, name="corpus_index")
        index.index(emb, tf.range(m, dtype=tf.int32))
        index(tf.zeros([1, emb.shape[-1]], tf.float32))  # built before saving (recommenders#640)
        self._index = _Opaque(index)
        self.index_variables = list(index.variables)
        # Corpus features as (non-trainable) variables: no size limit of the graph proto.
        self.corpus = {key: tf.Variable(v, trainable=False, name=f"corpus_{key}")
                       for key, v in values.items()}

    # -- validation

    def _validated(self, inputs: Mapping[str, tf.Tensor], with_candidates: bool) -> Features:
        first = next(iter(self.query_specs))
        b = tf.shape(inputs[first], out_type=tf.int64)[0]
        checks = []
        for key, spec in self.query_specs.items():
            trail = spec.shape.as_list()[1:]
            dims = [b] + [tf.shape(inputs[key], out_type=tf.int64)[i + 1] if d is None else d
                          for i, d in enumerate(trail)]
            desc = f"[B{''.join(f', {d}' for d in trail)}] (B = len({first}))"
            checks.append(_shape_check(key, inputs[key], dims, desc))
        n = None
        if with_candidates:
            n = tf.shape(inputs["mask"], out_type=tf.int64)[1] if inputs["mask"].shape.rank == 2 \
                else tf.constant(-1, tf.int64)
            for key, spec in {**self.candidate_specs,
                              "mask": tf.TensorSpec([None, None], tf.float32)}.items():
                trail = spec.shape.as_list()[2:]
                dims = [b, n] + [
                    tf.shape(inputs[key], out_type=tf.int64)[i + 2] if d is None else d
                    for i, d in enumerate(trail)
                ]
                desc = (f"[B, N{''.join(f', {d}' for d in trail)}] (B = len({first}), "
                        f"N = mask.shape[1] <= {self.max_list_size})")
                checks.append(_shape_check(key, inputs[key], dims, desc))
            checks.append(tf.debugging.Assert(
                tf.logical_and(n >= 1, n <= self.max_list_size),
                [f"serving input `mask` must have 1 <= N <= {self.max_list_size} candidates "
                 "(the maximum this model was exported with); got N =", n],
                name="check_list_size",
            ))
            with tf.control_dependencies(checks):
                mask = inputs["mask"]
                checks.append(tf.debugging.Assert(
                    tf.logical_and(tf.reduce_all(mask >= 0), tf.reduce_all(mask <= 1)),
                    ["serving input `mask` must be 0 (padded) or 1 (real candidate)"],
                    name="check_mask_range",
                ))
        out = {}
        with tf.control_dependencies(checks):
            for key in inputs:
                out[key] = tf.identity(inputs[key])
        return out

    def _split(self, batch: Features) -> tuple[Features, Features]:
        return ({k: batch[k] for k in self.query_specs},
                {k: batch[k] for k in self.candidate_specs})

    def _stage_scores(self, query: Features, cands: Features) -> tf.Tensor:
        scores = []
        for i, fn in enumerate(self._stages.obj):
            s = fn(query, cands)
            if s.shape.rank == 3 and s.shape[-1] == 1:
                s = tf.squeeze(s, -1)
            if s.shape.rank != 2:
                raise ValueError(
                    f"stage {self.stage_names[i]!r} must return scores [B, N]; got {s.shape}"
                )
            scores.append(tf.cast(s, tf.float32))
        return tf.stack(scores, axis=1)

    def _selected_ids(self, cands: Features, indices: tf.Tensor) -> tf.Tensor:
        ids = tf.gather(cands[self.item_id], tf.maximum(indices, 0), batch_dims=1)
        empty = tf.zeros_like(ids) if ids.dtype != tf.string else tf.fill(tf.shape(ids), "")
        valid = indices >= 0
        while valid.shape.rank < ids.shape.rank:
            valid = valid[..., None]
        return tf.where(tf.broadcast_to(valid, tf.shape(ids)), ids, empty)

    # -- traced bodies

    def _serve(self, inputs: Features) -> Features:
        batch = self._validated(inputs, True)
        query, cands = self._split(batch)
        stage_scores = self._stage_scores(query, cands)
        out = cascade_select(stage_scores, batch["mask"], self._quotas)
        out["selected_item_ids"] = self._selected_ids(cands, out["selected_indices"])
        out["stage_scores"] = stage_scores
        return out

    def _stage_fn(self, i: int) -> Callable[[Features], Features]:
        def score(inputs: Features) -> Features:
            batch = self._validated(inputs, True)
            query, cands = self._split(batch)
            s = self._stages.obj[i](query, cands)
            if s.shape.rank == 3 and s.shape[-1] == 1:
                s = tf.squeeze(s, -1)
            return {"scores": tf.cast(s, tf.float32)}

        score.__name__ = f"score_{self.stage_names[i]}"
        return score

    def _query_embedding(self, inputs: Features) -> Features:
        query = self._validated(inputs, False)
        return {"query_embedding": tf.cast(self._query_tower.obj(query), tf.float32)}

    def _recommend(self, inputs: Features) -> Features:
        query = self._validated(inputs, False)
        q = tf.cast(self._query_tower.obj(query), tf.float32)
        _, idx = self._index.obj(q)  # [B, k] corpus rows
        cands = {key: tf.gather(var, idx) for key, var in self.corpus.items()}
        mask = tf.ones(tf.shape(idx), tf.float32)
        stage_scores = self._stage_scores(query, cands)
        out = cascade_select(stage_scores, mask, self._quotas)
        return {
            "item_ids": self._selected_ids(cands, out["selected_indices"]),
            "scores": out["final_scores"],
            "num_selected": out["num_selected"],
        }

    # -- export helpers

    def signatures(self) -> dict[str, Any]:
        return {name: fn.get_concrete_function() for name, fn in self._signatures.items()}

    def sample_request(self, list_size: int = 3, batch_size: int = 2) -> dict[str, np.ndarray]:
        """A valid request for verification and warm-up: empty / zero query features and
        the first corpus items as candidates (empty / zero without a corpus)."""
        n = int(min(list_size, self.max_list_size))
        out: dict[str, np.ndarray] = {}
        for key, spec in self.query_specs.items():
            shape = [batch_size] + [d or 1 for d in spec.shape.as_list()[1:]]
            out[key] = _blank(spec.dtype, shape)
        corpus = getattr(self, "corpus", None)
        for key, spec in self.candidate_specs.items():
            shape = [batch_size, n] + [d or 1 for d in spec.shape.as_list()[2:]]
            if corpus is not None:
                v = corpus[key].numpy()
                take = v[np.arange(batch_size * n) % v.shape[0]]
                out[key] = take.reshape(shape)
            else:
                out[key] = _blank(spec.dtype, shape)
        mask = np.ones((batch_size, n), np.float32)
        if n > 1:
            mask[:, -1] = 0.0
        out["mask"] = mask
        return out

    def metadata(self) -> dict[str, Any]:
        import lcron_tf

        def spec(s: tf.TensorSpec) -> dict[str, Any]:
            return {"dtype": s.dtype.name, "shape": s.shape.as_list()}

        return {
            "lcron_tf_version": lcron_tf.__version__,
            "tensorflow_version": tf.__version__,
            "exporter": "tfrs_export",
            "query_features": {k: spec(v) for k, v in self.query_specs.items()},
            "candidate_features": {k: spec(v) for k, v in self.candidate_specs.items()},
            "item_id": self.item_id,
            "quotas": list(self._quotas),
            "stage_names": self.stage_names,
            "max_list_size": self.max_list_size,
            "retrieval_k": self.retrieval_k,
            "signatures": sorted(self._signatures),
        }


def _blank(dtype: tf.DType, shape: list[int]) -> np.ndarray:
    if dtype == tf.string:
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype.as_numpy_dtype)


def export_tfrs(
    model: tf.Module,
    base_dir: str | Path = "saved_models",
    version: int | None = None,
    *,
    model_name: str,
    query_signature: Mapping[str, tf.TensorSpec],
    candidate_signature: Mapping[str, tf.TensorSpec],
    stages: Mapping[str, StageFn] | Sequence[tuple[str, StageFn]],
    quotas: Sequence[int],
    item_id: str,
    query_tower: Callable[[Features], tf.Tensor] | None = None,
    candidate_tower: Callable[[Features], tf.Tensor] | None = None,
    corpus: Mapping[str, Any] | None = None,
    retrieval_k: int | None = None,
    max_list_size: int = 1000,
    sample_request: Mapping[str, np.ndarray] | None = None,
    overwrite: bool = False,
    verify: bool = True,
    warmup: bool = True,
) -> Path:
    """Export a ``tfrs.Model`` cascade to ``<base_dir>/<model_name>/<version>/``, atomically.

    Args:
      model: your trained model (a ``tf.Module``: its variables and lookup tables are saved).
      base_dir: export base (TF Serving's ``--model_base_path`` is ``<base_dir>/<model_name>``).
      version: integer version; ``None`` = one more than the largest existing one.
      model_name: the TF Serving model name (sanitised to ``[0-9a-z_]``).
      query_signature: ``{name: tf.TensorSpec([None, ...], dtype)}`` of the per-query
        features, e.g. ``{"user_id": tf.TensorSpec([None], tf.string)}``.
      candidate_signature: ``{name: tf.TensorSpec([None, None, ...], dtype)}`` of the
        per-candidate features, e.g. ``{"movie_title": tf.TensorSpec([None, None], tf.string)}``.
      stages: ``{name: scorer}`` (first stage first) or ``[(name, scorer), ...]``; a scorer
        maps ``(query_features {k: [B, ...]}, candidate_features {k: [B, N, ...]})`` to
        float scores ``[B, N]`` and must call your layers with ``training=False``.
      quotas: one serving quota per stage, strictly decreasing.
      item_id: the candidate feature returned as the selected ids (e.g. ``"movie_title"``).
      query_tower: ``query_features -> [B, D]`` (``query_embedding`` and ``recommend``).
      candidate_tower: ``candidate_features {k: [M, ...]} -> [M, D]`` (``recommend``).
      corpus: ``{candidate feature: array [M, ...]}``: the items ``recommend`` retrieves from.
      retrieval_k: how many items ``recommend`` retrieves (default ``quotas[0]``).
      max_list_size: the largest ``N`` of ``serving_default`` / ``score_<stage>``.
      sample_request: a request (numpy, every input of ``serving_default``) for the
        verification and the warm-up file; default :meth:`TfrsServingModule.sample_request`.
      overwrite: replace an existing version (otherwise ``FileExistsError``).
      verify: reload the temporary export, compare every signature with the in-memory model
        and reject XLA-compiled functions before publishing.
      warmup: write ``assets.extra/tf_serving_warmup_requests`` (one ``serving_default`` call).

    Returns:
      The published version directory.
    """
    module = TfrsServingModule(
        model, query_signature=query_signature, candidate_signature=candidate_signature,
        stages=stages, quotas=quotas, item_id=item_id, query_tower=query_tower,
        candidate_tower=candidate_tower, corpus=corpus, retrieval_k=retrieval_k,
        max_list_size=max_list_size,
    )
    name = _sanitize(model_name)
    request = dict(sample_request) if sample_request is not None else module.sample_request()

    def write(tmp: Path) -> None:
        save_module(module, tmp, request, name, warmup=warmup, verify=verify)

    return versioned.write_version(
        versioned.model_dir(base_dir, name), write, version, overwrite=overwrite
    )
