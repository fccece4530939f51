"""The training loop of ``lcron-tf train``: ``model.fit`` with checkpoints that resume.

:func:`train` runs in one process or as one worker of a ``MultiWorkerMirroredStrategy``
cluster (:mod:`lcron_tf.cli.workers`); only the chief writes the run directory.
BackupAndRestore checkpoints every ``train.steps_per_checkpoint`` steps; a run killed at any
point and started again resumes from the last one and ends with the same number of optimizer
steps as an uninterrupted run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lcron_tf._files import read_json, write_atomic, write_json
from lcron_tf.cli import rundir
from lcron_tf.cli.build import build_model, open_data
from lcron_tf.cli.config import Config, ConfigError
from lcron_tf.cli.console import CliError, log


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


def train(cfg: Config, run_dir: Path, state: dict, cluster: Any, *,
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


__all__ = ["checkpoint_mismatch", "restored_step", "train"]
