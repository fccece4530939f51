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
(temporary file + rename, :mod:`lcron_tf._files`). ``train`` killed at any point and started
again with the same command resumes from the last checkpoint and ends with the same number of
optimizer steps as an uninterrupted run (:mod:`lcron_tf.cli.training`, ``docs/cli.md``).

This module holds the commands and their parser; what a config builds is
:mod:`lcron_tf.cli.build`, the training loop :mod:`lcron_tf.cli.training`, the test metrics
:mod:`lcron_tf.cli.evaluation`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lcron_tf._files import read_json, write_json
from lcron_tf.cli import config as cfgmod
from lcron_tf.cli import rundir
from lcron_tf.cli.build import load_trained_model, open_data
from lcron_tf.cli.config import Config, ConfigError
from lcron_tf.cli.console import PROG, CliError, log
from lcron_tf.cli.evaluation import results_table, run_evaluation

EPILOG = (
    "Config keys are documented in docs/cli.md; `lcron-tf config` prints the resolved config. "
    "Override any key with --set section.key=value (the value is parsed as YAML, e.g. "
    "--set model.quotas=[40,20] --set train.jit_compile=false)."
)


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


# ----------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    """``lcron-tf train`` (one process, a launcher of local workers, or one worker)."""
    from lcron_tf.cli import training, workers

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
    return training.train(cfg, run_dir, state, cluster, trust_files=trust_files)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``lcron-tf evaluate``."""
    cfg = resolve_config(args, prefer_run_dir=True)
    result = run_evaluation(cfg)
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
        run_evaluation(cfg)
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
