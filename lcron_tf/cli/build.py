"""What a config builds: its data (in memory or streamed) and its cascade model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lcron_tf.cli import config as cfgmod
from lcron_tf.cli.config import Config, ConfigError
from lcron_tf.cli.console import PROG, CliError

_DATA_CHECK = "config (checked against the loaded data)"


def _load_arrays(cfg: Config) -> tuple[Any, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(schema, train_arrays, test_arrays)`` of the configured source, in memory."""
    from lcron_tf.schema import split_requests

    d = cfg.data
    if d.source == "simulator":
        from lcron_tf.data.simulator import simulate

        schema, arrays = simulate(cfgmod._simulator_config(cfg))
        train, test = split_requests(arrays, d.test_fraction, seed=d.seed)
    elif d.source == "movielens":
        from lcron_tf.data.movielens import MovieLensConfig, build_movielens

        mc = MovieLensConfig(seed=d.seed)
        schema, train = build_movielens(d.data_dir, "train", mc)
        _, test = build_movielens(d.data_dir, "test", mc)
    elif d.source in ("tfrecord", "recflow"):
        from lcron_tf.data.tfrecord import dataset_to_arrays, read_schema, read_tfrecords

        base = Path(str(d.path))
        schema = read_schema(base / "train")
        parts = []
        for split, limit in (("train", d.max_train_requests), ("test", d.max_test_requests)):
            ds = read_tfrecords(base / split, 1024, schema=schema, drop_remainder=False,
                                max_records=limit)
            parts.append(dataset_to_arrays(ds))
        train, test = parts
    elif d.source == "mslr":
        from lcron_tf.data.mslr import MslrConfig, build_mslr

        mc = MslrConfig(seed=d.seed)
        schema, train = build_mslr(d.data_dir, "train", mc)
        _, test = build_mslr(d.data_dir, "test", mc)
    else:  # pragma: no cover - validated
        raise CliError(f"unknown data.source {d.source!r}")
    if d.max_train_requests is not None:
        train = {k: v[: d.max_train_requests] for k, v in train.items()}
    if d.max_test_requests is not None:
        test = {k: v[: d.max_test_requests] for k, v in test.items()}
    return schema, train, test


def _check_data(cfg: Config, data: Any) -> None:
    """Settings that the loaded data makes impossible (``ConfigError`` naming the key)."""
    try:
        cfgmod.check_against_schema(cfg, data.schema)
    except ConfigError as err:
        raise ConfigError(err.errors, source=_DATA_CHECK) from None
    b = cfg.train.batch_size
    if b > data.num_train:
        raise ConfigError([("train.batch_size", f"{b} > {data.num_train} training "
                            "requests: not even one step per epoch")], source=_DATA_CHECK)
    if data.steps_per_epoch(b) < 1:
        raise ConfigError([("data.read_streams", f"a read stream has fewer than batch_size / "
                            f"read_streams = {b // cfg.data.read_streams} records "
                            f"({data.describe(b)}): not even one step per epoch")],
                          source=_DATA_CHECK)
    if data.num_test == 0:
        raise ConfigError([("data", "the test split is empty")], source=_DATA_CHECK)


def open_data(cfg: Config) -> Any:
    """The configured data as an ``InMemoryData`` or (streamed records) ``RecordData``.

    ``tfrecord``/``recflow`` sources stream from their record files (``data.read_streams``,
    ``data.shuffle_buffer``) unless ``data.in_memory``; the other sources are in memory.
    See :mod:`lcron_tf.data.pipeline` for the order of the batches.
    """
    from lcron_tf.data.pipeline import InMemoryData, RecordData

    d = cfg.data
    if d.source in ("tfrecord", "recflow") and not d.in_memory:
        from lcron_tf.data.tfrecord import read_schema

        base = Path(str(d.path))
        schema = read_schema(base / "train")
        test_schema = read_schema(base / "test")
        if test_schema != schema:
            raise ConfigError([("data.path", f"{base / 'test'} has another schema than "
                                f"{base / 'train'}")], source=_DATA_CHECK)
        data = RecordData(schema, base / "train", base / "test", shuffle_buffer=d.shuffle_buffer,
                          read_streams=d.read_streams, max_train=d.max_train_requests,
                          max_test=d.max_test_requests)
    else:
        data = InMemoryData(*_load_arrays(cfg))
    _check_data(cfg, data)
    return data


def load_data(cfg: Config) -> tuple[Any, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(schema, train_arrays, test_arrays)`` of the configured source (deterministic).

    Holds every request in memory, record sources included; ``train`` streams those
    instead (:func:`open_data`).
    """
    from lcron_tf.data.pipeline import InMemoryData

    data = InMemoryData(*_load_arrays(cfg))
    _check_data(cfg, data)
    return data.schema, data.train, data.test


def build_model(cfg: Config, schema: Any) -> Any:
    """``CascadeModel.default`` for the config (not compiled, not built)."""
    from lcron_tf.losses import registry
    from lcron_tf.models import CascadeModel

    m = cfg.model
    loss = registry.get(cfg.loss.name, schema=schema, quotas=cfg.model.quotas,
                        **cfgmod.loss_overrides(cfg))
    return CascadeModel.default(
        schema,
        m.num_stages,
        quotas=m.quotas,
        loss=loss,
        preset=m.preset,
        mixed_precision=m.mixed_precision,
        emb_dim=m.emb_dim,
        retrieval_units=m.retrieval_units,
        pre_ranker_units=m.pre_ranker_units,
        ranker_units=m.ranker_units,
        attention_units=m.attention_units,
        history_length=m.history_length,
        name=cfg.output.model_name,
    )


def first_batch(arrays: Mapping[str, np.ndarray], n: int) -> dict[str, Any]:
    """The first ``n`` requests of ``arrays``, cast to the model's input dtypes."""
    from lcron_tf.schema import cast_arrays

    return {k: v[:n] for k, v in cast_arrays(arrays).items()}


def load_trained_model(cfg: Config, schema: Any, sample: Mapping[str, np.ndarray]) -> Any:
    """Rebuild the configured model and load ``<run_dir>/model/weights``."""
    weights = Path(cfg.output.run_dir) / "model" / "weights"
    if not Path(str(weights) + ".index").is_file():
        raise CliError(f"no trained model in {cfg.output.run_dir!r} (missing {weights}.index); "
                       f"run `{PROG} train` with the same config first")
    model = build_model(cfg, schema)
    model(first_batch(sample, 2), training=False)
    model.load_weights(str(weights)).expect_partial()
    return model
