"""Batches from lcron_tf.data feed CascadeModel directly (one fit step per source)."""

from __future__ import annotations

import pytest
import tensorflow as tf

from lcron_tf.data import (
    SimulatorConfig,
    build_mslr,
    find_data_dir,
    read_tfrecords,
    simulate,
    to_dataset,
    write_tfrecords,
)

models = pytest.importorskip("lcron_tf.models", reason="lcron_tf.models is not available")


def small_model(schema, num_stages):
    m = models.CascadeModel.default(
        schema, num_stages, emb_dim=4, retrieval_units=(8, 4), pre_ranker_units=(8,),
        ranker_units=(8, 4), attention_units=4,
    )
    m.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    return m


def test_cascade_model_trains_on_simulated_tfrecords(tmp_path):
    config = SimulatorConfig(num_requests=64, num_users=50, num_items=600, history_length=5,
                             user_log_length=20, retrieval_size=120, prerank_keep=60,
                             coarse_keep=40)
    schema, arrays = simulate(config)
    write_tfrecords(arrays, schema, tmp_path / "rec", num_shards=2)
    ds = read_tfrecords(tmp_path / "rec", 32, schema=schema, shuffle=True, seed=0)
    history = small_model(schema, 2).fit(ds, epochs=1, verbose=0).history
    assert all(tf.math.is_finite(v[-1]) for v in history.values())


@pytest.mark.slow
def test_cascade_model_trains_on_every_source(tmp_path):
    """3-stage simulator, RecFlow fixture, MovieLens and MSLR (the last two need the data)."""
    from data_recflow_fixture import DAY1, write_fixture

    from lcron_tf.data import MovieLensConfig, build_movielens, build_recflow_day

    sources = [simulate(num_requests=64, num_stages=3, num_users=50, num_items=600)]
    sources.append(build_recflow_day(write_fixture(tmp_path / "recflow"), DAY1, num_stages=3))
    if find_data_dir(None, "movielens_100k") is not None:
        sources.append(build_movielens(None, "test", MovieLensConfig(request_stride=20)))
    if find_data_dir(None, "mslr_web10k_sample") is not None:
        sources.append(build_mslr(None, "train"))
    for schema, arrays in sources:
        stages = len(schema.quotas)
        ds = to_dataset(arrays, min(32, len(arrays["user_id"])), seed=0)
        history = small_model(schema, stages).fit(ds, epochs=1, verbose=0).history
        assert all(tf.math.is_finite(v[-1]) for v in history.values()), schema.name
