"""Typed run configuration of the ``lcron-tf`` command line: YAML -> dataclasses, validated.

A config has five sections (see ``docs/cli.md`` for every key)::

    data:   {source, num_requests, test_fraction, data_dir, path, seed, simulator, ...}
    model:  {preset, num_stages, quotas, emb_dim, retrieval_units, ranker_units, ...}
    loss:   {name, gt_num, stage_k, tau, sort, mode, kwargs}
    train:  {epochs, batch_size, learning_rate, jit_compile, steps_per_checkpoint, seed, ...}
    output: {run_dir, export_dir, model_name, tensorboard}

:func:`load_config` reads a YAML file (or the embedded :data:`DEFAULT_YAML` when no file is
given), applies ``--set a.b=value`` overrides (each value parsed as YAML) and returns a
validated :class:`Config`. Unknown keys, keys repeated in one YAML mapping, wrong types, NaN or
infinite numbers and impossible settings (``k > N``, quotas not strictly decreasing, a missing
data directory, an ``output.model_name`` that is not one plain path component, an output
directory that is a file or lies under ``/proc``) raise :class:`ConfigError`, whose message
names every offending dotted key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lcron_tf._extras import require

yaml = require("yaml", "the lcron-tf command line (YAML configs)")

from lcron_tf.cli.strict_yaml import (  # noqa: E402  (needs yaml, checked above)
    DuplicateKeyError,
    StrictSafeLoader,
    load_yaml,
)

SOURCES = ("simulator", "movielens", "mslr", "recflow", "tfrecord")
#: The loss options that have their own key in the ``loss`` section (others go in kwargs).
LOSS_FIELDS = ("gt_num", "stage_k", "tau", "sort", "mode")

DEFAULT_YAML = """\
# Embedded default of `lcron-tf` (used when --config is omitted):
# a 2-stage cascade (DSSM retrieval -> DIN ranking) on the RecFlow-shaped simulator, XLA on.
data:
  source: simulator
  num_requests: 5000
  test_fraction: 0.2
  seed: 0
  simulator: {num_users: 1000, num_items: 3000}
model:
  preset: paper      # the official models field by field, at demo sizes (~1 min on 2 cores)
  num_stages: 2
  quotas: [30, 20]
  emb_dim: 8
  retrieval_units: [64, 32]
  pre_ranker_units: [64, 32]
  ranker_units: [64, 32]
  attention_units: 32
loss:
  name: lcron        # gt_num / stage_k default to the data's gt_num (10); tau 50, NeuralSort
train:
  epochs: 3
  batch_size: 200
  learning_rate: 0.01
  jit_compile: true
  steps_per_checkpoint: 10
  seed: 0
output:
  run_dir: runs/demo
  export_dir: saved_models
  model_name: lcron
"""


class ConfigError(ValueError):
    """An invalid config; ``errors`` lists ``(dotted_key, message)`` pairs."""

    def __init__(self, errors: Sequence[tuple[str, str]], source: str = "config") -> None:
        self.errors = list(errors)
        self.source = source
        lines = [f"invalid {source}:"] + [f"  {key}: {msg}" for key, msg in self.errors]
        super().__init__("\n".join(lines))


# ----------------------------------------------------------------------------- dataclasses


@dataclasses.dataclass
class DataConfig:
    """Where the requests come from.

    Attributes:
      source: ``simulator`` | ``movielens`` | ``mslr`` | ``recflow`` | ``tfrecord``.
      num_requests: simulator requests (train + test).
      test_fraction: simulator test share (MovieLens and MSLR have their own splits).
      data_dir: real-data folder (default ``$LCRON_DATA_DIR``, then ``../shared/data``).
      path: ``tfrecord``/``recflow``: a folder holding ``train/`` and ``test/`` record dirs.
      seed: data seed (simulation and train/test split).
      max_train_requests: keep only the first requests of the training split.
      max_test_requests: keep only the first requests of the test split.
      simulator: overrides of ``lcron_tf.data.simulator.SimulatorConfig`` fields.
      in_memory: ``tfrecord``/``recflow``: load every record into memory and shuffle by
        full permutations (as the in-memory sources); default: stream from the files.
      shuffle_buffer: streamed records: the shuffle buffer (records, all read streams
        together; 0 = no shuffle, files and records in order).
      read_streams: streamed records: independent read streams whose micro-batches of
        ``batch_size / read_streams`` make up every batch. The batches depend on it, not on
        the number of workers; a multiple of the workers gives each worker its own files.
    """

    source: str = "simulator"
    num_requests: int = 5000
    test_fraction: float = 0.2
    data_dir: str | None = None
    path: str | None = None
    seed: int = 0
    max_train_requests: int | None = None
    max_test_requests: int | None = None
    simulator: dict[str, Any] = dataclasses.field(default_factory=dict)
    in_memory: bool = False
    shuffle_buffer: int = 10_000
    read_streams: int = 1


@dataclasses.dataclass
class ModelConfig:
    """``CascadeModel.default`` options (DSSM -> [MLP ->] DIN).

    Attributes:
      preset: ``paper`` (the official models field by field) or ``lite`` (history by item
        id only); see ``docs/models.md``.
      num_stages: 2 or 3.
      quotas: serving quotas, strictly decreasing, one per stage (None = the data's schema).
      emb_dim: embedding size of every tower.
      retrieval_units, pre_ranker_units, ranker_units: hidden sizes of the towers.
      attention_units: DIN attention MLP size.
      history_length: use only the most recent history items (None = all).
      mixed_precision: ``mixed_bfloat16`` | ``mixed_float16``: the towers compute in that
        precision (loss and metrics in float32); None = float32.
    """

    preset: str = "paper"
    num_stages: int = 2
    quotas: list[int] | None = None
    emb_dim: int = 8
    retrieval_units: list[int] = dataclasses.field(default_factory=lambda: [128, 64, 32])
    pre_ranker_units: list[int] = dataclasses.field(default_factory=lambda: [128, 64, 32])
    ranker_units: list[int] = dataclasses.field(default_factory=lambda: [128, 128, 32])
    attention_units: int = 80
    history_length: int | None = None
    mixed_precision: str | None = None


@dataclasses.dataclass
class LossConfig:
    """A loss of ``lcron_tf.losses.registry`` and its constructor arguments.

    Attributes:
      name: ``lcron`` | ``bce`` | ``icc`` | ``rankflow`` | ``fs_ranknet`` | ``fs_lambdaloss`` |
        ``arf`` | ``arf_v2``.
      gt_num: ground-truth size (None = the schema's ``gt_num``).
      stage_k: LCRON's per-stage k (int or one per stage; None = gt_num).
      tau: relaxed-sort temperature (LCRON: 50).
      sort: ``neural`` | ``soft``.
      mode: ``masked`` | ``reference``.
      kwargs: further constructor arguments of the loss class.
    """

    name: str = "lcron"
    gt_num: int | None = None
    stage_k: int | list[int] | None = None
    tau: float | None = None
    sort: str | None = None
    mode: str | None = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TrainConfig:
    """Optimisation and checkpointing.

    Attributes:
      epochs: passes over the training split.
      batch_size: requests per step (the last partial batch is dropped: one XLA compile).
      learning_rate: Adam learning rate.
      jit_compile: compile the train step with XLA.
      steps_per_checkpoint: back up the training state every this many optimizer steps.
      seed: seed of the initialisation and of the per-epoch shuffles.
      validate: evaluate the test split after every epoch (``val_*`` metrics).
      verbose: Keras progress output: 0 silent, 1 progress bar (one line per epoch when
        stdout is not a terminal), 2 one line per epoch.
    """

    epochs: int = 3
    batch_size: int = 256
    learning_rate: float = 0.01
    jit_compile: bool = True
    steps_per_checkpoint: int = 50
    seed: int = 0
    validate: bool = True
    verbose: int = 1


@dataclasses.dataclass
class OutputConfig:
    """Where results go.

    Attributes:
      run_dir: the run folder (config, checkpoints, history, TensorBoard logs, report).
      export_dir: SavedModel base (``<export_dir>/<model_name>/<version>/``).
      model_name: served model name.
      tensorboard: write TensorBoard logs to ``<run_dir>/tb``.
    """

    run_dir: str = "runs/default"
    export_dir: str = "saved_models"
    model_name: str = "lcron"
    tensorboard: bool = True


@dataclasses.dataclass
class Config:
    """A whole ``lcron-tf`` run configuration."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML-serialisable)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The config as YAML (section order kept)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)


# ----------------------------------------------------------------------------- coercion


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` converted to ``tp``; raises ``ConfigError`` naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError([(key, f"must be a finite number, got {value!r}")])
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError([(key, f"expected {_type_name(tp)}, got {value!r}")])
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError([(key, f"must be a finite number, got {value!r}")])
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, list | tuple):
            (item,) = typing.get_args(tp)
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            bad = _non_finite(value, key)
            if bad:
                raise ConfigError(bad)
            return dict(value)
    else:  # pragma: no cover - only the types above are used
        raise TypeError(f"unsupported config type {tp!r}")
    raise ConfigError([(key, f"expected {_type_name(tp)}, got {value!r}")])


def _non_finite(value: Any, key: str) -> list[tuple[str, str]]:
    """``(key, message)`` for every NaN / infinite float nested in ``value`` (no number of a
    config is meaningful as NaN or infinity: rates, temperatures, weights, fractions)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(key, f"must be a finite number, got {value!r}")]
    if isinstance(value, Mapping):
        return [e for k, v in value.items() for e in _non_finite(v, f"{key}.{k}")]
    if isinstance(value, list | tuple):
        return [e for i, v in enumerate(value) for e in _non_finite(v, f"{key}[{i}]")]
    return []


def _build(cls: type, raw: Any, prefix: str, errors: list[tuple[str, str]]) -> Any:
    """Instantiate dataclass ``cls`` from mapping ``raw``, collecting errors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        errors.append((prefix or "<top level>", f"expected a mapping, got {raw!r}"))
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            errors.append((key, f"unknown key (known: {', '.join(fields)}){hint}"))
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key, errors)
            continue
        try:
            kwargs[name] = _coerce(value, tp, key)
        except ConfigError as err:
            errors.extend(err.errors)
    return cls(**kwargs)


# ----------------------------------------------------------------------------- validation


def _positive(errors: list, key: str, value: int | float | None, minimum: float = 1) -> None:
    if value is not None and value < minimum:
        errors.append((key, f"must be >= {minimum}, got {value!r}"))


def _simulator_config(cfg: Config) -> Any:
    from lcron_tf.data.simulator import SimulatorConfig

    return SimulatorConfig(
        **{
            "num_requests": cfg.data.num_requests,
            "num_stages": cfg.model.num_stages,
            "seed": cfg.data.seed,
            **cfg.data.simulator,
        }
    )


def static_schema(cfg: Config) -> Any | None:
    """The data's ``CascadeSchema`` when it is known without loading data (simulator only)."""
    if cfg.data.source != "simulator":
        return None
    from lcron_tf.data.simulator import simulator_schema

    return simulator_schema(_simulator_config(cfg))


def _check_sections(cfg: Config, errors: list[tuple[str, str]]) -> None:
    d, m, lo, t = cfg.data, cfg.model, cfg.loss, cfg.train
    if d.source not in SOURCES:
        errors.append(("data.source", f"must be one of {', '.join(SOURCES)}; got {d.source!r}"))
    _positive(errors, "data.num_requests", d.num_requests, 2)
    if not 0.0 < d.test_fraction < 1.0:
        errors.append(("data.test_fraction", f"must be in (0, 1), got {d.test_fraction!r}"))
    _positive(errors, "data.max_train_requests", d.max_train_requests)
    _positive(errors, "data.max_test_requests", d.max_test_requests)
    _positive(errors, "data.shuffle_buffer", d.shuffle_buffer, 0)
    _positive(errors, "data.read_streams", d.read_streams)
    streamed = d.source in ("tfrecord", "recflow") and not d.in_memory
    if streamed and d.read_streams >= 1 and t.batch_size >= 1 and t.batch_size % d.read_streams:
        errors.append(("data.read_streams", f"train.batch_size={t.batch_size} must be a "
                       f"multiple of data.read_streams={d.read_streams}"))
    if d.source == "simulator":
        from lcron_tf.data.simulator import SimulatorConfig

        known = {f.name for f in dataclasses.fields(SimulatorConfig)}
        for k in d.simulator:
            if k in ("num_requests", "num_stages", "seed"):
                errors.append((f"data.simulator.{k}", f"set data.{k} / model.num_stages instead"
                               if k != "num_stages" else "set model.num_stages instead"))
            elif k not in known:
                errors.append((f"data.simulator.{k}", "unknown SimulatorConfig field (known: "
                               f"{', '.join(sorted(known))})"))
    if d.source in ("movielens", "mslr"):
        from lcron_tf.data import paths

        subdir = "movielens_100k" if d.source == "movielens" else "mslr_web10k_sample"
        if paths.find_data_dir(d.data_dir, subdir) is None:
            base, origin = paths.candidate_data_dir(d.data_dir)
            where = base / subdir if subdir else base
            errors.append(("data.data_dir", f"data directory {str(where)!r} does not exist "
                           f"(from {origin}); set data.data_dir or ${paths.DATA_DIR_ENV}"))
    if d.source in ("tfrecord", "recflow"):
        if not d.path:
            errors.append(("data.path", f"required for data.source={d.source} (a folder with "
                           "train/ and test/ record directories)"))
        else:
            for split in ("train", "test"):
                if not (Path(d.path) / split).is_dir():
                    errors.append(("data.path", f"{str(Path(d.path) / split)!r} does not exist"))

    from lcron_tf.models.presets import MIXED_PRECISION, PRESETS

    if m.preset not in PRESETS:
        errors.append(("model.preset", f"must be one of {', '.join(PRESETS)}; got {m.preset!r}"))
    if m.mixed_precision is not None and m.mixed_precision not in MIXED_PRECISION:
        errors.append(("model.mixed_precision", f"must be one of {', '.join(MIXED_PRECISION)} "
                       f"or null; got {m.mixed_precision!r}"))
    if m.num_stages not in (2, 3):
        errors.append(("model.num_stages", f"must be 2 or 3, got {m.num_stages!r}"))
    if m.quotas is not None:
        if len(m.quotas) != m.num_stages:
            errors.append(("model.quotas", f"needs one quota per stage (model.num_stages="
                           f"{m.num_stages}), got {m.quotas}"))
        if any(q < 1 for q in m.quotas):
            errors.append(("model.quotas", f"every quota must be >= 1, got {m.quotas}"))
        if any(a <= b for a, b in zip(m.quotas, m.quotas[1:])):
            errors.append(("model.quotas", f"must be strictly decreasing, got {m.quotas}"))
    _positive(errors, "model.emb_dim", m.emb_dim)
    _positive(errors, "model.attention_units", m.attention_units)
    _positive(errors, "model.history_length", m.history_length)
    for name in ("retrieval_units", "pre_ranker_units", "ranker_units"):
        units = getattr(m, name)
        if not units or any(u < 1 for u in units):
            errors.append((f"model.{name}", f"must be a non-empty list of ints >= 1, got {units}"))

    from lcron_tf.losses import registry

    if registry._key(lo.name) not in registry.LOSSES:
        errors.append(("loss.name",
                       f"unknown loss {lo.name!r}; known: {', '.join(registry.names())}"))
    _positive(errors, "loss.gt_num", lo.gt_num)
    if lo.stage_k is not None:
        ks = [lo.stage_k] if isinstance(lo.stage_k, int) else lo.stage_k
        if any(k < 1 for k in ks):
            errors.append(("loss.stage_k", f"must be >= 1, got {lo.stage_k!r}"))
        if isinstance(lo.stage_k, list) and len(lo.stage_k) != m.num_stages:
            errors.append(("loss.stage_k", f"needs one k per stage (model.num_stages="
                           f"{m.num_stages}), got {lo.stage_k}"))
    if lo.tau is not None and lo.tau <= 0:
        errors.append(("loss.tau", f"must be > 0, got {lo.tau!r}"))
    from lcron_tf.ops import validation as ops_validation

    for key, value, choices in (("loss.sort", lo.sort, ops_validation.SORT_CHOICES),
                                ("loss.mode", lo.mode, ops_validation.MODE_CHOICES)):
        if value is not None and value not in choices:
            errors.append((key, f"must be one of {', '.join(choices)}; got {value!r}"))

    _positive(errors, "train.epochs", t.epochs)
    _positive(errors, "train.batch_size", t.batch_size)
    _positive(errors, "train.steps_per_checkpoint", t.steps_per_checkpoint)
    if t.learning_rate <= 0:
        errors.append(("train.learning_rate", f"must be > 0, got {t.learning_rate!r}"))
    if t.verbose not in (0, 1, 2):
        errors.append(("train.verbose", f"must be 0, 1 or 2, got {t.verbose!r}"))
    for name in ("run_dir", "export_dir", "model_name"):
        if not getattr(cfg.output, name):
            errors.append((f"output.{name}", "must be a non-empty string"))
    name = cfg.output.model_name
    if name and not _MODEL_NAME.fullmatch(name):
        errors.append(("output.model_name", f"must be one plain path component (letters, digits, "
                       f"'_', '-', '.'; starting with a letter or digit; at most 128 characters) "
                       f"because it names <export_dir>/<model_name>; got {name!r}"))
    for name in ("run_dir", "export_dir"):
        value = getattr(cfg.output, name)
        problem = value and output_dir_problem(value)
        if problem:
            errors.append((f"output.{name}", problem))


_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# Kernel file systems: nothing there is storage, a run dir or an export cannot live there.
_VIRTUAL_ROOTS = (Path("/proc"), Path("/sys"))


def output_dir_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be an output directory (or None): it exists and is not a directory,
    one of its parents is a regular file, or it lies under ``/proc`` or ``/sys``.

    Static checks only (nothing is created); whether the directory can be created and written
    is checked when a command writes it.
    """
    p = Path(path).expanduser()
    try:
        if p.exists() and not p.is_dir():
            return f"{str(p)!r} exists and is not a directory"
        for parent in p.parents:
            if parent.exists():
                if not parent.is_dir():
                    return f"{str(parent)!r} (a parent of {str(p)!r}) is a file, not a directory"
                break
        resolved = p.resolve()
    except OSError as err:
        return f"cannot inspect {str(p)!r}: {err.strerror or err}"
    for root in _VIRTUAL_ROOTS:
        if resolved == root or root in resolved.parents:
            return f"{str(p)!r} is on the kernel's virtual file system {str(root)!r}"
    return None


def loss_overrides(cfg: Config) -> dict[str, Any]:
    """The loss options the config sets explicitly (``loss.*`` keys and ``loss.kwargs``)."""
    lo = cfg.loss
    out = {f: getattr(lo, f) for f in LOSS_FIELDS if getattr(lo, f) is not None}
    out.update(lo.kwargs)
    return out


def loss_kwargs(cfg: Config, schema: Any) -> dict[str, Any]:
    """Every option of the configured loss for ``schema``: the loss's own dataset defaults
    (declared by its options dataclass: ``gt_num`` and LCRON's ``stage_k`` from the schema,
    the model's quotas, BCE's official sample selection on RecFlow-shaped groups), then the
    config's explicit settings (:func:`loss_overrides`).

    Raises:
      ValueError: an option the loss does not accept.
    """
    from lcron_tf.losses import registry

    return registry.resolve_options(
        cfg.loss.name, schema=schema, quotas=cfg.model.quotas, **loss_overrides(cfg)
    )


def check_against_schema(cfg: Config, schema: Any) -> None:
    """Reject settings impossible for the data's schema (``k > N``, quota / stage mismatch).

    Raises:
      ConfigError: naming the dotted key (``model.quotas``, ``loss.gt_num``, ...).
    """
    errors: list[tuple[str, str]] = []
    n = schema.list_size
    m, lo = cfg.model, cfg.loss
    quotas = list(m.quotas) if m.quotas is not None else list(schema.quotas)
    qkey = "model.quotas" if m.quotas is not None else f"model.quotas (schema {schema.name!r})"
    if len(quotas) != m.num_stages:
        errors.append((qkey, f"{quotas} has {len(quotas)} quotas but model.num_stages="
                       f"{m.num_stages}; set model.quotas"))
    if quotas and quotas[0] > n:
        errors.append((qkey, f"first quota {quotas[0]} > N={n} candidates per request"))
    gt = lo.gt_num if lo.gt_num is not None else schema.gt_num
    if lo.gt_num is not None and lo.gt_num > n:
        errors.append(("loss.gt_num", f"k={lo.gt_num} > N={n} candidates per request"))
    if quotas and gt > quotas[-1]:
        errors.append(("loss.gt_num" if lo.gt_num is not None else qkey,
                       f"gt_num={gt} > last quota {quotas[-1]}"))
    if lo.stage_k is not None:
        ks = [lo.stage_k] if isinstance(lo.stage_k, int) else lo.stage_k
        if any(k > n for k in ks):
            errors.append(("loss.stage_k", f"k={lo.stage_k} > N={n} candidates per request"))
    from lcron_tf.losses import registry

    if registry._key(lo.name) in registry.LOSSES:
        accepted = registry.option_names(lo.name)
        for name in loss_overrides(cfg):
            if name not in accepted:
                where = f"loss.{name}" if name in LOSS_FIELDS else f"loss.kwargs.{name}"
                errors.append((where, f"not an argument of loss {lo.name!r} "
                               f"(accepted: {', '.join(sorted(accepted))})"))
        if not errors:
            try:  # every option value, checked once by the loss's own options dataclass
                registry.loss_class(lo.name).spec.options(**loss_kwargs(cfg, schema))
            except ValueError as err:
                errors.append(("loss", str(err)))
    if errors:
        raise ConfigError(errors)


def validate(cfg: Config) -> Config:
    """Check ``cfg`` (types were checked when it was built); returns it.

    Raises:
      ConfigError: every problem found, each naming its dotted key.
    """
    errors: list[tuple[str, str]] = []
    _check_sections(cfg, errors)
    if not errors and cfg.data.source == "simulator":
        try:
            schema = static_schema(cfg)
        except ValueError as err:
            errors.append(("data.simulator", str(err)))
        else:
            try:
                check_against_schema(cfg, schema)
            except ConfigError as err:
                errors.extend(err.errors)
            n_train = int(round(cfg.data.num_requests * (1 - cfg.data.test_fraction)))
            if cfg.data.max_train_requests is not None:
                n_train = min(n_train, cfg.data.max_train_requests)
            if cfg.train.batch_size > n_train:
                errors.append(("train.batch_size", f"{cfg.train.batch_size} > {n_train} "
                               "training requests: not even one step per epoch"))
    if errors:
        raise ConfigError(errors)
    return cfg


# ----------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> ``(["a", "b"], yaml.safe_load("value"))``.

    Raises:
      ConfigError: no ``=`` or an empty key.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError([(key or text, f"--set expects KEY=VALUE with a dotted KEY such as "
                            f"train.epochs=2; got {text!r}")], source="--set")
    try:
        parsed = load_yaml(value) if value.strip() else None
    except DuplicateKeyError as err:
        raise ConfigError([(f"{key}.{err.path}", str(err))], source="--set") from None
    except yaml.YAMLError as err:
        raise ConfigError([(key, f"cannot parse value {value!r} as YAML: {err}")],
                          source="--set") from err
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set`` strings to a raw config dict (in place; returns it)."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError([(".".join(path[: i + 1]), f"is not a mapping, cannot set "
                                    f"{'.'.join(path)}")], source="--set")
            node = child
        node[path[-1]] = value
    return raw


def read_yaml(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The raw mapping of a YAML config file (``None``: the embedded default)."""
    if path is None:
        text, source = DEFAULT_YAML, "embedded default config"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError([("--config", f"no such file: {str(p)!r}")])
        text, source = p.read_text(), str(p)
    try:
        raw = load_yaml(text)
    except DuplicateKeyError as err:
        raise ConfigError([(err.path, str(err))], source=source) from None
    except yaml.YAMLError as err:
        raise ConfigError([("<yaml>", str(err))], source=source) from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([("<top level>", f"expected a mapping of sections, got {raw!r}")],
                          source=source)
    return raw


def from_dict(raw: Mapping[str, Any], source: str = "config") -> Config:
    """Build and validate a :class:`Config` from a raw mapping.

    Raises:
      ConfigError: unknown keys, wrong types, impossible settings (all of them, by dotted key).
    """
    errors: list[tuple[str, str]] = []
    cfg = _build(Config, raw, "", errors)
    if errors:
        raise ConfigError(errors, source=source)
    try:
        return validate(cfg)
    except ConfigError as err:
        raise ConfigError(err.errors, source=source) from None


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> Config:
    """Read ``path`` (or the embedded default), apply ``--set`` overrides, validate.

    Args:
      path: a YAML file; ``None`` = :data:`DEFAULT_YAML`.
      overrides: ``"section.key=value"`` strings (values parsed with ``yaml.safe_load``).

    Returns:
      The validated :class:`Config`.

    Raises:
      ConfigError: naming every offending dotted key.
    """
    raw = apply_overrides(read_yaml(path), overrides)
    source = "embedded default config" if path is None else str(path)
    if overrides:
        source += " with --set " + " ".join(overrides)
    return from_dict(raw, source=source)


__all__ = [
    "DEFAULT_YAML",
    "SOURCES",
    "StrictSafeLoader",
    "Config",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OutputConfig",
    "TrainConfig",
    "apply_overrides",
    "check_against_schema",
    "from_dict",
    "load_config",
    "load_yaml",
    "loss_kwargs",
    "loss_overrides",
    "output_dir_problem",
    "parse_override",
    "read_yaml",
    "static_schema",
    "validate",
]
