"""Model presets of :meth:`CascadeModel.default <lcron_tf.models.CascadeModel.default>`.

* ``paper`` (the default): the official kwai/LCRON models field by field
  (:mod:`lcron_tf.models.paper`): :class:`~lcron_tf.models.paper.PaperDssm` ->
  [:class:`~lcron_tf.models.paper.PaperMlp` ->] :class:`~lcron_tf.models.paper.PaperDin`.
* ``lite``: the towers of :mod:`lcron_tf.models.towers` (history items by id only, one
  table per role, no frozen padding rows): :class:`~lcron_tf.models.towers.DssmRetrieval` ->
  [:class:`~lcron_tf.models.towers.MlpPreRanker` ->]
  :class:`~lcron_tf.models.towers.DinRanker`.

Both take the paper's layer sizes by default (``docs/models.md`` lists them layer by layer).
``mixed_precision`` builds the towers under a Keras mixed-precision policy (variables in
float32, compute in bfloat16 or float16); the loss and metrics, built outside, stay float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

from lcron_tf._keras import keras
from lcron_tf.models.paper import PaperDin, PaperDssm, PaperMlp
from lcron_tf.models.towers import DinRanker, DssmRetrieval, MlpPreRanker
from lcron_tf.ops import validation
from lcron_tf.schema import CascadeSchema

PRESETS = ("paper", "lite")
DEFAULT_PRESET = "paper"
MIXED_PRECISION = ("mixed_bfloat16", "mixed_float16")

PAPER_SIZES = {
    "emb_dim": 8,
    "retrieval_units": (128, 64, 32),
    "pre_ranker_units": (128, 64, 32),
    "ranker_units": (128, 128, 32),
    "attention_units": 80,
}
"""The official layer sizes (lcron_method.md §6), the default of both presets."""


@contextlib.contextmanager
def tower_policy(policy: str | None) -> Iterator[None]:
    """Build Keras layers under the dtype policy ``policy`` (None = leave it as it is).

    Layers read the global policy when they are created, so layers created inside this
    block keep ``policy``; the global policy is restored on exit.
    """
    if policy is None:
        yield
        return
    validation.check_choice("mixed_precision", policy, MIXED_PRECISION)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_stages(
    schema: CascadeSchema,
    num_stages: int,
    preset: str = DEFAULT_PRESET,
    *,
    emb_dim: int = 8,
    retrieval_units: Sequence[int] = PAPER_SIZES["retrieval_units"],
    pre_ranker_units: Sequence[int] = PAPER_SIZES["pre_ranker_units"],
    ranker_units: Sequence[int] = PAPER_SIZES["ranker_units"],
    attention_units: int = 80,
    history_length: int | None = None,
    padding_ids: Mapping[str, Sequence[int]] | None = None,
    mixed_precision: str | None = None,
) -> list[keras.Model]:
    """The stage towers of ``preset``, first stage first (named ``retrieval``,
    ``pre_ranking`` (3 stages), ``ranking``).

    Args:
      schema: the dataset's schema.
      num_stages: 2 (retrieval, ranking) or 3 (retrieval, pre-ranking, ranking).
      preset: ``paper`` or ``lite``.
      emb_dim, retrieval_units, pre_ranker_units, ranker_units, attention_units: sizes.
      history_length: use only the most recent history items (None = all).
      padding_ids: ``paper`` only: frozen zero rows ``{field or table: ids}`` besides id 0.
      mixed_precision: ``mixed_bfloat16`` | ``mixed_float16`` | None (float32).
    """
    validation.check_choice("preset", preset, PRESETS)
    if num_stages not in (2, 3):
        raise ValueError(f"`num_stages` must be 2 or 3. Received: num_stages={num_stages!r}")
    if padding_ids and preset != "paper":
        raise ValueError("`padding_ids` applies to preset='paper' only")
    common: dict = {"emb_dim": emb_dim, "history_length": history_length}
    if preset == "paper":
        common["padding_ids"] = padding_ids
        dssm, pre, din = PaperDssm, PaperMlp, PaperDin
    else:
        dssm, pre, din = DssmRetrieval, MlpPreRanker, DinRanker
    with tower_policy(mixed_precision):
        stages = [dssm(schema, tower_units=retrieval_units, name="retrieval", **common)]
        if num_stages == 3:
            stages.append(pre(schema, hidden_units=pre_ranker_units, name="pre_ranking", **common))
        stages.append(din(schema, hidden_units=ranker_units, attention_units=attention_units,
                          name="ranking", **common))
    return stages
