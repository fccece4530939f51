"""``lcron-tf``: train, evaluate, export, predict, report and benchmark LCRON cascades.

Every command reads one YAML config (``--config FILE``; the embedded 2-stage simulator
default when omitted) plus ``--set section.key=value`` overrides, and works in the config's
run directory (``output.run_dir``, or ``--run-dir``)::

    <run_dir>/.lcron-tf-run    marker: train created or adopted this directory (see rundir)
    <run_dir>/config.yaml      the resolved config of the run (train writes it)
    <run_dir>/schema.json      the data's CascadeSchema
    <run_dir>/backup/          BackupAndRestore checkpoints (every train.steps_per_checkpoint)
    <run_dir>/progress.json    last finished optimizer step (updated every step)
    <run_dir>/history.json     per-epoch metrics (loss terms, sigma, recalls, val_*)
    <run_dir>/state.json       status, optimizer steps, resumes
    <run_dir>/model/           final weights (TF checkpoint)
    <run_dir>/tb/              TensorBoard logs
    <run_dir>/eval.json, survival.npz, export.json, report/

``train`` uses only a new or empty directory or one with the marker, and ``--fresh`` deletes
only the entries above (:mod:`lcron_tf.cli.rundir`). Every file is written atomically
(temporary file + rename). ``train`` killed at any point and
started again with the same command resumes from the last checkpoint and ends with the same
number of optimizer steps as an uninterrupted run (see ``docs/cli.md``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lcron_tf.cli import config as cfgmod
from lcron_tf.cli import rundir
from lcron_tf.cli.config import Config, ConfigError

PROG = "lcron-tf"
EPILOG = (
    "Config keys are documented in docs/cli.md; `lcron-tf config` prints the resolved config. "
    "Override any key with --set section.key=value (the value is parsed as YAML, e.g. "
    "--set model.quotas=[40,20] --set train.jit_compile=false)."
)


_DATA_CHECK = "config (checked against the loaded data)"


class CliError(RuntimeError):
    """A user-facing error: printed without a traceback, exit status 2."""


def log(message: str) -> None:
    """Print a CLI status line (flushed, so logs and progress interleave correctly)."""
    print(f"[{PROG}] {message}", flush=True)


# ----------------------------------------------------------------------------- files


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder + ``os.replace``.

    ``durable=False`` skips the ``fsync`` (for the per-step progress file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], obj: Any, *, durable: bool = True) -> None:
    """Atomically write ``obj`` as indented JSON."""
    text = json.dumps(obj, indent=1, sort_keys=False, default=_jsonable) + "\n"
    write_atomic(path, text, durable=durable)


def read_json(path: str | os.PathLike[str], default: Any = None) -> Any:
    """``json.load`` of ``path``, or ``default`` when it does not exist."""
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else default


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


# ----------------------------------------------------------------------------- config


def resolve_config(args: argparse.Namespace, *, prefer_run_dir: bool) -> Config:
    """The command's config: ``--config`` (or the default) + ``--set`` + ``--run-dir``.

    With ``prefer_run_dir`` (evaluate / export / predict / report) and no ``--config``, the
    config recorded by ``train`` in ``<run_dir>/config.yaml`` is used when it exists.
    """
    overrides = list(args.set or [])
    if args.run_dir:
        overrides.append(f"output.run_dir={json.dumps(str(args.run_dir))}")
    if prefer_run_dir and args.config is None:
        run_dir = args.run_dir or cfgmod.load_config(None, overrides).output.run_dir
        problem = cfgmod.output_dir_problem(run_dir)
        if problem:  # checked before anything in it is read
            raise ConfigError([("output.run_dir", problem)], source="--run-dir")
        recorded = Path(run_dir) / "config.yaml"
        if recorded.is_file():
            return cfgmod.load_config(recorded, overrides)
    return cfgmod.load_config(args.config, overrides)


# ----------------------------------------------------------------------------- data / model


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


def _first_batch(arrays: Mapping[str, np.ndarray], n: int) -> dict[str, Any]:
    from lcron_tf.schema import cast_arrays

    return {k: v[:n] for k, v in cast_arrays(arrays).items()}


def load_trained_model(cfg: Config, schema: Any, sample: Mapping[str, np.ndarray]) -> Any:
    """Rebuild the configured model and load ``<run_dir>/model/weights``."""
    weights = Path(cfg.output.run_dir) / "model" / "weights"
    if not Path(str(weights) + ".index").is_file():
        raise CliError(f"no trained model in {cfg.output.run_dir!r} (missing {weights}.index); "
                       f"run `{PROG} train` with the same config first")
    model = build_model(cfg, schema)
    model(_first_batch(sample, 2), training=False)
    model.load_weights(str(weights)).expect_partial()
    return model


def restored_step(backup_dir: Path) -> tuple[int, int, int] | None:
    """``(optimizer_step, epoch, batch)`` of the latest BackupAndRestore checkpoint, or None."""
    import tensorflow as tf

    for d in (backup_dir / "chief", backup_dir):
        ckpt = tf.train.latest_checkpoint(str(d)) if d.is_dir() else None
        if ckpt is None:
            continue
        reader = tf.train.load_checkpoint(ckpt)
        names = reader.get_variable_to_shape_map()
        step = epoch = batch = None
        for name in names:
            if name.startswith("ckpt_saved_epoch"):
                epoch = int(reader.get_tensor(name))
            elif name.startswith("ckpt_saved_batch"):
                batch = int(reader.get_tensor(name))
            elif "optimizer" in name and "iter" in name and "ATTRIBUTES" in name \
                    and name.split("/")[-3] in ("iter", "iterations", "_iterations"):
                step = int(reader.get_tensor(name))
        if step is not None:
            return step, -1 if epoch is None else epoch, -1 if batch is None else batch
    return None


def checkpoint_mismatch(model: Any, backup_dir: Path) -> str | None:
    """Why the latest BackupAndRestore checkpoint cannot be restored into ``model``, or None.

    A trial read of the checkpoint into the (built) model: a variable of another shape, or a
    model variable the checkpoint lacks, is reported here, before training claims to resume,
    instead of as a crash inside ``fit``. (BackupAndRestore restores the same values again.)
    """
    import tensorflow as tf

    for d in (backup_dir / "chief", backup_dir):
        ckpt = tf.train.latest_checkpoint(str(d)) if d.is_dir() else None
        if ckpt is None:
            continue
        try:
            status = tf.train.Checkpoint(model=model).read(ckpt)
            status.expect_partial()
            status.assert_existing_objects_matched()
        except (ValueError, AssertionError, tf.errors.OpError) as err:
            text = " ".join(str(err).split())
            return text[:300] + (" ..." if len(text) > 300 else "")
        return None
    return None


# ----------------------------------------------------------------------------- callbacks


def _make_recorder(run_dir: Path, steps_per_epoch: int, start_step: int) -> Any:
    from lcron_tf._keras import keras

    class RunRecorder(keras.callbacks.Callback):
        """Writes progress.json every step and history.json every epoch (atomically)."""

        def __init__(self) -> None:
            super().__init__()
            self.step = start_step
            self.resumed_epoch = start_step // steps_per_epoch if start_step else None

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.step += 1
            write_json(run_dir / "progress.json",
                       {"step": self.step, "epoch": (self.step - 1) // steps_per_epoch,
                        "time": time.time()}, durable=False)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            history = read_json(run_dir / "history.json", [])
            entry = {"epoch": epoch + 1, "step": self.step,
                     **{k: float(v) for k, v in (logs or {}).items()}}
            if epoch == self.resumed_epoch:
                entry["resumed_mid_epoch"] = True
            history = [h for h in history if h.get("epoch") != epoch + 1] + [entry]
            write_json(run_dir / "history.json", sorted(history, key=lambda h: h["epoch"]))

    return RunRecorder()


# ----------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    """``lcron-tf train`` (one process, a launcher of local workers, or one worker)."""
    from lcron_tf.cli import workers

    try:
        cluster = workers.resolve(args.num_workers)
        if cluster == workers.LAUNCH:
            return workers.launch(args.argv, args.num_workers, max_restarts=args.max_restarts,
                                  network=args.worker_network)
    except workers.ClusterError as err:
        raise CliError(str(err)) from None
    # Only the chief writes the run directory. A restarted worker group resumes: --fresh
    # applies to the launcher's first start only.
    chief = cluster is None or cluster.is_chief
    fresh = args.fresh and workers.launch_attempt() == 0
    cfg = resolve_config(args, prefer_run_dir=False)
    run_dir = Path(cfg.output.run_dir)
    recorded = run_dir / "config.yaml"
    rundir.check(run_dir, fresh=fresh)  # lcron-tf's own (marked) or new/empty only
    if fresh and chief and rundir.is_owned(run_dir):
        log(f"--fresh: removing lcron-tf's files from {run_dir}")
        kept = rundir.clear(run_dir)
        if kept:
            log(f"--fresh: kept {len(kept)} entries lcron-tf did not write: {', '.join(kept)}")
    # A non-chief worker started with --fresh must not look at files the chief is removing.
    trust_files = chief or not fresh
    if trust_files and recorded.is_file() and recorded.read_text() != cfg.to_yaml():
        raise CliError(f"{run_dir} holds a run with a different config ({recorded}); use "
                       "another output.run_dir (--run-dir) or pass --fresh to start over")
    if trust_files and (run_dir / "backup").exists() and not recorded.is_file():
        raise CliError(f"{run_dir} holds a training checkpoint ({run_dir / 'backup'}) but no "
                       "config.yaml, so nothing says which model it belongs to; pass --fresh "
                       "to start over, or restore the run's config.yaml")
    state = read_json(run_dir / "state.json", {}) if trust_files else {}
    if state.get("status") == "complete":
        log(f"run in {run_dir} is already complete ({state['optimizer_steps']} optimizer "
            "steps); nothing to do (pass --fresh to train again)")
        return 0
    return _train(cfg, run_dir, state, cluster, trust_files=trust_files)


def _datasets(data: Any, t: Any, start: int, strategy: Any) -> tuple[Any, Any, int | None]:
    """``(train, validation, validation_steps)`` inputs of ``fit`` (distributed with a strategy).

    Every worker feeds its rows of the same global batches (``lcron_tf.data.pipeline``).
    """
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync

    def train_fn(ctx: Any = None) -> Any:
        return data.train_dataset(t.batch_size, t.epochs, t.seed, start, ctx)

    vb = min(t.batch_size, data.num_test)
    vb -= vb % replicas
    val_steps = data.num_test // vb if t.validate and vb > 0 else None

    def val_fn(ctx: Any = None) -> Any:
        return data.test_dataset(vb, drop_remainder=True, input_context=ctx)

    if strategy is None:
        return train_fn(), val_fn() if val_steps else None, val_steps
    train_ds = strategy.distribute_datasets_from_function(train_fn)
    val_ds = strategy.distribute_datasets_from_function(val_fn) if val_steps else None
    return train_ds, val_ds, val_steps


def _save_weights(model: Any, run_dir: Path, chief: bool) -> Path:
    """The final weights -> ``<run_dir>/model/`` (atomic rename); non-chief: a temp dir."""
    if not chief:  # every worker takes part in the save; only the chief's copy is kept
        tmp = Path(tempfile.mkdtemp(prefix="lcron-tf-worker-weights-"))
        try:
            model.save_weights(str(tmp / "weights"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return tmp
    weights_dir = run_dir / "model"
    for stale in run_dir.glob(".model-*"):  # left by a crash while saving weights
        if rundir.is_owned_entry(stale.name) and stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=run_dir))
    model.save_weights(str(tmp / "weights"))
    old = run_dir / f".model-old-{os.getpid()}"
    if weights_dir.exists():
        os.rename(weights_dir, old)
    os.rename(tmp, weights_dir)
    shutil.rmtree(old, ignore_errors=True)
    return weights_dir


def _train(cfg: Config, run_dir: Path, state: dict, cluster: Any, *,
           trust_files: bool = True) -> int:
    """The training loop of ``train`` (``cluster``: None, or this worker's ``Cluster``).

    ``trust_files``: the run directory's files belong to this run (False on a non-chief
    worker started with ``--fresh``, while the chief may be clearing them).
    """
    import contextlib

    from lcron_tf.cli import workers

    t = cfg.train
    if cluster is not None and t.batch_size % cluster.num_workers:
        raise ConfigError([("train.batch_size", f"{t.batch_size} is not a multiple of the "
                            f"{cluster.num_workers} workers")])
    # MultiWorkerMirroredStrategy must exist before TensorFlow runs its first op.
    strategy = workers.make_strategy() if cluster is not None else None
    chief = cluster is None or cluster.is_chief
    say = log if chief else (lambda message: None)

    import lcron_tf  # noqa: F401  (binds tf.keras to Keras 2)
    from lcron_tf._keras import keras

    t0 = time.perf_counter()
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    if t.batch_size % replicas:
        raise ConfigError([("train.batch_size", f"{t.batch_size} is not a multiple of the "
                            f"{replicas} replicas of the {cluster.num_workers} workers")])
    data = open_data(cfg)
    schema = data.schema
    stored_schema = run_dir / "schema.json"
    if trust_files and (run_dir / "backup").exists() and stored_schema.is_file() \
            and stored_schema.read_text() != schema.to_json():
        raise CliError(f"{run_dir} holds a checkpoint of a run on other data ({stored_schema} "
                       "differs from the data's schema); pass --fresh to start over")
    if chief:
        rundir.claim(run_dir)
        write_atomic(run_dir / "config.yaml", cfg.to_yaml())
        write_atomic(run_dir / "schema.json", schema.to_json())
    spe = data.steps_per_epoch(t.batch_size)
    total = spe * t.epochs
    quotas = tuple(cfg.model.quotas or schema.quotas)
    say(f"data: {cfg.data.source}, {data.num_train} train / {data.num_test} test requests, "
        f"N={schema.list_size}, gt={schema.gt_num}, quotas={quotas} "
        f"({time.perf_counter() - t0:.1f} s); {data.describe(t.batch_size)}")
    if cluster is not None:
        say(f"{cluster.num_workers} workers (MultiWorkerMirroredStrategy, {replicas} replicas), "
            f"global batch {t.batch_size} = {t.batch_size // replicas} per replica")
    if getattr(data, "by_file", True) is False and data.read_streams > 1:
        say(f"note: data.read_streams={data.read_streams} exceeds the record files: every "
            "read stream reads every file (set read_streams <= the number of files)")

    keras.utils.set_random_seed(t.seed)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = build_model(cfg, schema)
        model.compile(optimizer=keras.optimizers.Adam(t.learning_rate),
                      jit_compile=t.jit_compile)
        model(data.sample(t.batch_size // replicas), training=False)  # build before restoring
    backup = run_dir / "backup"
    restored = restored_step(backup)
    start = 0
    if restored is not None:
        mismatch = checkpoint_mismatch(model, backup)
        if mismatch:
            raise CliError(f"the checkpoint in {backup} does not fit the configured model "
                           f"({mismatch}); pass --fresh to start over")
        start = restored[0]
        say(f"resumed from step {start} (checkpoint at epoch {restored[1] + 1}, "
            f"batch {restored[2] + 1}) in {backup}")
        state.setdefault("resumes", []).append(start)
    else:
        say("starting a new run (no checkpoint)")
    if chief:
        write_json(run_dir / "state.json", {**state, "status": "running",
                                            "optimizer_steps": start, "planned_steps": total})
    say(f"model: {cfg.model.num_stages}-stage {model.stage_names}, loss {cfg.loss.name}, "
        f"jit_compile={t.jit_compile}; {spe} steps/epoch x {t.epochs} epochs = {total} steps, "
        f"checkpoint every {t.steps_per_checkpoint} steps")

    # start == total (killed after the last checkpoint, before the run was marked complete):
    # fit still runs, to restore the checkpoint in on_train_begin, but trains no step.
    train_ds, val_ds, val_steps = _datasets(data, t, start, strategy)
    if restored is None and val_ds is not None:
        # The untrained cascade on the test set, so the log shows "before" next to "after".
        before = model.evaluate(val_ds, steps=val_steps, verbose=0, return_dict=True)
        shown = {k: v for k, v in before.items() if "recall" in k}
        say("before training (untrained model, test set): "
            + ", ".join(f"{k} {float(v):.4f}" for k, v in shown.items()))
    callbacks: list[Any] = [
        keras.callbacks.BackupAndRestore(str(backup), save_freq=t.steps_per_checkpoint,
                                         delete_checkpoint=False),
    ]
    if chief:
        callbacks.append(_make_recorder(run_dir, spe, start))
    if chief and cfg.output.tensorboard:
        if importlib.util.find_spec("tensorboard") is None:
            log("TensorBoard logs disabled: the `tensorboard` package is not installed "
                "(pip install tensorboard); history.json still records every metric")
        else:
            callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tb"), profile_batch=0))
    # A progress bar redrawn with \r is unreadable in a log file: one line per epoch there.
    verbose = 2 if t.verbose == 1 and not sys.stdout.isatty() else t.verbose
    model.fit(train_ds, epochs=t.epochs, steps_per_epoch=spe, validation_data=val_ds,
              validation_steps=val_steps, callbacks=callbacks, verbose=verbose if chief else 0)
    steps = int(model.optimizer.iterations.numpy())
    weights_dir = _save_weights(model, run_dir, chief)
    if not chief:
        return 0
    history = read_json(run_dir / "history.json", [])
    final = {"status": "complete", "optimizer_steps": steps, "planned_steps": total,
             "epochs": t.epochs, "steps_per_epoch": spe, "resumes": state.get("resumes", []),
             "final_metrics": history[-1] if history else {},
             "wall_seconds_last_session": round(time.perf_counter() - t0, 1)}
    if cluster is not None:
        final["num_workers"] = cluster.num_workers
    write_json(run_dir / "state.json", final)
    shutil.rmtree(backup, ignore_errors=True)
    log(f"done: {steps} optimizer steps (planned {total}) in {time.perf_counter() - t0:.1f} s; "
        f"weights {weights_dir}/weights, history {run_dir}/history.json")
    return 0


def evaluate_model(cfg: Config, model: Any, schema: Any, test: Any,
                   chunk: int = 500, survival_requests: int = 2000) -> tuple[dict, dict]:
    """Test metrics (official definitions) and relaxed survival probabilities.

    ``test``: request arrays, or a finite ``tf.data.Dataset`` of batch dicts (streamed).

    Returns:
      ``(metrics, survival)``: metric name -> float; ``survival`` has ``prob`` float32
      ``[R, N]`` (``CascadeSelection(ks=quotas, tau)``), ``is_gt`` bool and ``mask``.
    """
    from lcron_tf.data.tfrecord import to_dataset
    from lcron_tf.layers import CascadeSelection
    from lcron_tf.metrics import NDCG, JointRecall, StageRecall
    from lcron_tf.ops import ranking, validation

    quotas = tuple(model.quotas)
    gt = cfg.loss.gt_num or schema.gt_num
    metrics = [JointRecall(k=gt, quotas=quotas, name=f"joint_recall_at_{gt}_at_{quotas[-1]}")]
    for s, (name, q) in enumerate(zip(model.stage_names, quotas)):
        metrics.append(StageRecall(k=gt, m=q, stage=s, name=f"{name}_recall_at_{gt}_at_{q}"))
        metrics.append(NDCG(k=min(10, schema.list_size), stage=s, name=f"{name}_ndcg_at_10"))
    select = CascadeSelection(ks=quotas, tau=cfg.loss.tau or 50.0, sort=cfg.loss.sort or "neural",
                              mode=cfg.loss.mode or validation.DEFAULT_MODE)
    probs, gts, masks = [], [], []
    seen = 0
    import tensorflow as tf

    batches = test if isinstance(test, tf.data.Dataset) else to_dataset(
        test, chunk, shuffle=False, drop_remainder=False)
    for batch in batches:
        scores = model(batch, training=False)
        y_true = {"labels": batch["label"], "mask": batch["mask"]}
        for m in metrics:
            m.update_state(y_true, scores)
        if seen < survival_requests:
            probs.append(select(scores, mask=batch["mask"]).numpy())
            msk = batch["mask"].numpy()
            gts.append(ranking.ground_truth_mask(batch["label"], gt, batch["mask"]).numpy() > 0)
            masks.append(msk)
            seen += len(msk)
    out = {m.name: float(m.result()) for m in metrics}
    survival = {"prob": np.concatenate(probs).astype(np.float32), "is_gt": np.concatenate(gts),
                "mask": np.concatenate(masks).astype(np.float32)}
    return out, survival


def results_table(metrics: Mapping[str, float], title: str = "results") -> str:
    """A small markdown table of metric -> value."""
    width = max(len(k) for k in metrics) if metrics else 6
    lines = [f"| {'metric':<{width}} | value  |", f"|{'-' * (width + 2)}|--------|"]
    lines += [f"| {k:<{width}} | {v:.4f} |" for k, v in metrics.items()]
    return f"{title}\n" + "\n".join(lines)


def _run_evaluation(cfg: Config) -> dict:
    import lcron_tf  # noqa: F401

    data = open_data(cfg)
    model = load_trained_model(cfg, data.schema, data.sample(2))
    test = data.test_dataset(500, drop_remainder=False) if data.streaming else data.test
    metrics, survival = evaluate_model(cfg, model, data.schema, test)
    run_dir = Path(cfg.output.run_dir)
    state = read_json(run_dir / "state.json", {})
    result = {"split": "test", "requests": data.num_test,
              "optimizer_steps": state.get("optimizer_steps"), "metrics": metrics}
    write_json(run_dir / "eval.json", result)
    fd, tmp = tempfile.mkstemp(prefix=".survival.", suffix=".npz", dir=run_dir)
    os.close(fd)
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **survival)
    os.replace(tmp, run_dir / "survival.npz")
    return result


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``lcron-tf evaluate``."""
    cfg = resolve_config(args, prefer_run_dir=True)
    result = _run_evaluation(cfg)
    log(f"evaluated {result['requests']} test requests after {result['optimizer_steps']} "
        f"optimizer steps -> {cfg.output.run_dir}/eval.json")
    print(results_table(result["metrics"], f"{cfg.output.run_dir} (test split)"), flush=True)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``lcron-tf export``."""
    cfg = resolve_config(args, prefer_run_dir=True)
    import lcron_tf  # noqa: F401
    from lcron_tf import serving

    schema_file = Path(cfg.output.run_dir) / "schema.json"
    if schema_file.is_file():  # no need to rebuild the data set just for its schema
        from lcron_tf.schema import CascadeSchema

        schema = CascadeSchema.from_json(schema_file.read_text())
        sample = {**serving.sample_request(schema, 2),
                  "label": np.zeros((2, schema.list_size), np.float32),
                  "stage_group": np.zeros((2, schema.list_size), np.int32)}
    else:
        data = open_data(cfg)
        schema, sample = data.schema, data.sample(2)
    model = load_trained_model(cfg, schema, sample)
    base = args.export_dir or cfg.output.export_dir
    path = serving.export(model, base, args.version, model_name=cfg.output.model_name,
                          schema=schema, overwrite=args.overwrite,
                          max_batch_size=(serving.DEFAULT_MAX_BATCH_SIZE
                                          if args.max_batch_size is None
                                          else args.max_batch_size or None),
                          max_list_size=args.max_list_size or None)
    write_json(Path(cfg.output.run_dir) / "export.json",
               {"path": str(path), "version": int(path.name), "model_name": cfg.output.model_name,
                "base_dir": str(base)})
    log(f"exported {cfg.output.model_name!r} version {path.name} to {path} "
        f"(TF Serving: --model_base_path={Path(base).resolve() / cfg.output.model_name})")
    return 0


def _latest_version(path: Path) -> Path:
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted((int(p.name), p) for p in path.glob("*") if p.name.isdigit() and p.is_dir())
    if not versions:
        raise CliError(f"no SavedModel version under {str(path)!r}; run `{PROG} export` first")
    return versions[-1][1]


def _load_requests(path: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise CliError(f"--input {path!r} does not exist")
    if p.suffix == ".npz":
        with np.load(p) as data:
            return {k: data[k] for k in data.files}
    return {k: np.asarray(v) for k, v in json.loads(p.read_text()).items()}


def cmd_predict(args: argparse.Namespace) -> int:
    """``lcron-tf predict``."""
    cfg = resolve_config(args, prefer_run_dir=True)
    import tensorflow as tf

    import lcron_tf  # noqa: F401
    from lcron_tf.schema import cast_arrays
    from lcron_tf.serving.export import OPTIONAL_KEYS, SERVING_KEYS

    if args.input:
        requests = _load_requests(args.input)
    else:
        requests = cast_arrays(open_data(cfg).sample(args.num_requests, "test"))
    missing = [k for k in SERVING_KEYS if k not in requests]
    if missing:
        raise CliError(f"requests lack the serving inputs {missing} (need {list(SERVING_KEYS)})")
    keys = [*SERVING_KEYS, *(k for k in OPTIONAL_KEYS if k in requests)]
    dtypes = {"mask": np.float32}
    feed = {k: np.asarray(requests[k]).astype(dtypes.get(k, np.int64)) for k in keys}
    if args.target:
        from lcron_tf.serving import Client

        with Client(args.target, cfg.output.model_name, protocol=args.protocol) as client:
            out = client.predict(feed)
        source = f"{args.protocol}://{args.target} model {cfg.output.model_name!r}"
    else:
        base = Path(args.saved_model) if args.saved_model else (
            Path(cfg.output.export_dir) / cfg.output.model_name)
        path = _latest_version(base)
        fn = tf.saved_model.load(str(path)).signatures["serving_default"]
        out = {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in feed.items()}).items()}
        source = str(path)
    log(f"predicted {len(feed['user_id'])} requests with {source}")
    ids, scores = out["selected_item_ids"], out["final_scores"]
    for i in range(len(ids)):
        n = int(out["num_selected"][i])
        shown = ", ".join(f"{int(j)}:{float(s):.2f}" for j, s in zip(ids[i][:5], scores[i][:5]))
        print(f"request {i}: user {int(feed['user_id'][i])}, {n} selected, top item:score "
              f"{shown}, ...", flush=True)
    if args.output:
        write_json(args.output, {k: np.asarray(v).tolist() for k, v in out.items()})
        log(f"wrote all outputs to {args.output}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``lcron-tf report``."""
    cfg = resolve_config(args, prefer_run_dir=True)
    from lcron_tf.cli import report

    run_dir = Path(cfg.output.run_dir)
    if not (run_dir / "history.json").is_file():
        raise CliError(f"no history.json in {str(run_dir)!r}; run `{PROG} train` first")
    if not (run_dir / "eval.json").is_file() or not (run_dir / "survival.npz").is_file():
        log("no eval.json / survival.npz yet: evaluating first")
        _run_evaluation(cfg)
    out = Path(args.out) if args.out else run_dir / "report"
    files = report.write_report(run_dir, out)
    for f in files:
        log(f"wrote {f}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """``lcron-tf config``: print the resolved, validated config."""
    cfg = resolve_config(args, prefer_run_dir=False)
    sys.stdout.write(cfg.to_yaml())
    return 0


def find_benchmark() -> Path:
    """``benchmarks/reproduce.py`` of the source tree (next to the package, or in the cwd)."""
    here = Path(__file__).resolve().parents[2] / "benchmarks" / "reproduce.py"
    for p in (here, Path.cwd() / "benchmarks" / "reproduce.py"):
        if p.is_file():
            return p
    raise CliError("benchmarks/reproduce.py not found: `lcron-tf bench` runs the reproduction "
                   "benchmark of a source checkout (run it from the repository root)")


def cmd_bench(argv: Sequence[str]) -> int:
    """``lcron-tf bench [ARGS]``: ``benchmarks/reproduce.py`` with ``ARGS``."""
    path = find_benchmark()
    spec = importlib.util.spec_from_file_location("lcron_reproduce", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    assert spec is not None and spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    old = sys.argv[0]
    sys.argv[0] = f"{PROG} bench"
    try:
        module.main(list(argv))
    finally:
        sys.argv[0] = old
    return 0


# ----------------------------------------------------------------------------- parser


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", default=None,
                   help="YAML config (default: the embedded 2-stage simulator config; for "
                   "evaluate/export/predict/report: <run_dir>/config.yaml when it exists)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override a config key, e.g. --set train.epochs=2 (repeatable; the "
                   "value is parsed as YAML)")
    p.add_argument("--run-dir", metavar="DIR", default=None,
                   help="shortcut for --set output.run_dir=DIR")


def build_parser() -> argparse.ArgumentParser:
    """The ``lcron-tf`` argument parser."""
    from lcron_tf import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train, evaluate, export and serve LCRON cascade-ranking models "
        "(TensorFlow / tf_keras / TFRS).",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a cascade (resumes from the last checkpoint)",
                       description="Train the configured cascade with model.fit: Keras progress "
                       "bar, TensorBoard logs in <run_dir>/tb, BackupAndRestore checkpoints "
                       "every train.steps_per_checkpoint steps. Run the same command again "
                       "after a crash to resume; a finished run is not retrained.",
                       epilog=EPILOG)
    _common(p)
    p.add_argument("--fresh", action="store_true",
                   help="delete the files lcron-tf wrote in the run directory first and start "
                   f"from step 0 (only in a directory train created: one with {rundir.MARKER})")
    p.add_argument("--num-workers", type=int, default=None, metavar="N",
                   help="train on N workers (MultiWorkerMirroredStrategy). Without TF_CONFIG: "
                   "start N local worker processes on 127.0.0.1 and supervise them; with "
                   "TF_CONFIG (a real cluster): run as that worker, N must match the cluster. "
                   "Default: 1, or the TF_CONFIG cluster (docs/scale.md)")
    p.add_argument("--max-restarts", type=int, default=0, metavar="K",
                   help="local workers: when one fails, restart the whole group up to K times "
                   "(each restart resumes from the last checkpoint; default 0)")
    p.add_argument("--worker-network", choices=("auto", "private", "host"), default="auto",
                   help="local workers: run them in a private loopback-only network namespace "
                   "(private; auto = when possible) or on the host network (host: TensorFlow's "
                   "gRPC servers then listen on all interfaces)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test metrics of the trained model -> eval.json",
                       description="Evaluate <run_dir>/model on the test split: JointRecall, "
                       "per-stage Recall and NDCG@10 (official definitions); writes "
                       "eval.json and survival.npz (relaxed survival probabilities) and prints "
                       "a results table.", epilog=EPILOG)
    _common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="export a TF Serving SavedModel",
                       description="Export <run_dir>/model to <export_dir>/<model_name>/"
                       "<version>/ (atomic; verified by reloading).", epilog=EPILOG)
    _common(p)
    p.add_argument("--export-dir", default=None, help="base directory (default output.export_dir)")
    p.add_argument("--version", type=int, default=None,
                   help="version number (default: one more than the latest)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing version (atomically swapped: a complete version "
                   "directory exists at every moment)")
    p.add_argument("--max-batch-size", type=_non_negative, default=None, metavar="B",
                   help="most requests one call may carry, checked in the graph (default 1024; "
                   "0 = no cap); at least TF Serving's batching max_batch_size")
    p.add_argument("--max-list-size", type=_non_negative, default=None, metavar="N",
                   help="most candidates per request (default: the data's list size)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="run the exported cascade on requests",
                       description="Run the exported SavedModel's serving_default signature "
                       "(or a TF Serving server with --target) on requests: the first "
                       "--num-requests test requests, or --input FILE (.npz or .json with "
                       "user_id, user_features, history, item_id, item_features, mask).",
                       epilog=EPILOG)
    _common(p)
    p.add_argument("--saved-model", metavar="DIR", default=None,
                   help="a version directory or <export_dir>/<model_name> (latest version); "
                   "default <output.export_dir>/<output.model_name>")
    p.add_argument("--input", metavar="FILE", default=None, help=".npz or .json requests")
    p.add_argument("--num-requests", type=int, default=3,
                   help="test requests to score when --input is not given (default 3)")
    p.add_argument("--target", metavar="HOST:PORT", default=None,
                   help="query a running TF Serving (or the stand-in) instead of loading "
                   "the SavedModel")
    p.add_argument("--protocol", choices=("grpc", "rest"), default="grpc",
                   help="protocol for --target (default grpc)")
    p.add_argument("--output", metavar="FILE", default=None, help="write all outputs as JSON")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("report", help="PNG plots + markdown summary of a run",
                       description="Write training curves, JointRecall / per-stage recall by "
                       "epoch, the distribution of relaxed survival probabilities (ground "
                       "truth vs other candidates) and report.md to <run_dir>/report "
                       "(evaluates first when eval.json is missing).", epilog=EPILOG)
    _common(p)
    p.add_argument("--out", metavar="DIR", default=None, help="default <run_dir>/report")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("config", help="print the resolved, validated config",
                       description="Load --config (or the embedded default), apply --set, "
                       "validate, and print the result as YAML.", epilog=EPILOG)
    _common(p)
    p.set_defaults(func=cmd_config)

    sub.add_parser("bench", help="run the reproduction benchmark (benchmarks/reproduce.py)",
                   description="All arguments are passed to benchmarks/reproduce.py; see "
                   f"`{PROG} bench --help`.", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "bench":
            return cmd_bench(argv[1:])
        args = build_parser().parse_args(argv)
        args.argv = argv  # the local worker launcher re-runs the same command line
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except (CliError, rundir.RunDirError, FileNotFoundError, FileExistsError,
            NotADirectoryError, IsADirectoryError, PermissionError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
