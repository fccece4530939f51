"""Scale benchmarks: streamed vs in-memory peak RSS, a RecFlow-sized dry run, table sizes.

Commands (from the repository root; every figure of RESULTS.md's "Scale" section)::

    # 1. Peak RSS of `lcron-tf train` (one epoch) at 20k and 200k training requests,
    #    streamed from TFRecords vs loaded into memory (data.in_memory=true, the old path).
    .venv/bin/python benchmarks/bench_scale.py rss --work /tmp/lcron_scale

    # 2. RecFlow-sized dry run: the simulator writes 1M requests as sharded TFRecords
    #    (chunk by chunk, never all in memory), then one streamed epoch over a subset
    #    with the paper-size model; --keep leaves the records on disk.
    .venv/bin/python benchmarks/bench_scale.py dryrun --work /tmp/lcron_scale \\
        --requests 1000000 --train-subset 250000

    # 3. The streamed reader alone (parse + shuffle + batch, no training): the speed at
    #    which a resumed run skips the batches of the interrupted epoch (uses rss's data).
    .venv/bin/python benchmarks/bench_scale.py read --work /tmp/lcron_scale

    # 4. Embedding tables at RecFlow's vocabulary sizes: bytes per table (+ Adam slots),
    #    process RSS and the time of a training step (batch 1024; the first step includes
    #    tracing), with Adam (what train uses) or Adagrad (updates only the batch's rows).
    .venv/bin/python benchmarks/bench_scale.py tables [--optimizer adagrad]

Peak RSS is the child process's ``ru_maxrss`` (``os.wait4``): every figure comes from a fresh
process. ``--json FILE`` saves the results. The machine's CPU model and load average are
printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARD_REQUESTS = 10_000


def machine() -> dict:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "loadavg": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


# ----------------------------------------------------------------------------- writing


def write_simulated(out: Path, requests: int, test_requests: int, *, shard_requests: int,
                    **sim: object) -> dict:
    """Simulate ``requests`` requests chunk by chunk into ``out/train`` + ``out/test``.

    The last ``test_requests`` requests form the test split. Shards hold
    ``shard_requests`` requests (``part-00000.tfrecord``, ...). Only one chunk of the
    simulator (1024 requests) is in memory at a time.
    """
    import lcron_tf  # noqa: F401
    from lcron_tf.data import simulator
    from lcron_tf.data.tfrecord import CascadeRecordWriter

    config = simulator.SimulatorConfig(num_requests=requests, **sim)
    world = simulator.make_world(config)
    schema = simulator.simulator_schema(config)
    n_train = requests - test_requests
    t0 = time.perf_counter()
    chunk_size = simulator._CHUNK  # the simulator's own chunking (request i is fixed by it)
    with CascadeRecordWriter(out / "train", schema) as train, \
            CascadeRecordWriter(out / "test", schema) as test:
        for chunk, lo in enumerate(range(0, requests, chunk_size)):
            arrays, _ = simulator._simulate_chunk(world, config, chunk, chunk_size)
            hi = min(lo + chunk_size, requests)
            # Split the chunk at the shard boundaries and at the train/test boundary.
            inner = [b for b in range(0, n_train, shard_requests) if lo < b < hi]
            cuts = sorted({lo, hi, *inner, *([n_train] if lo < n_train < hi else [])})
            for a, b in zip(cuts, cuts[1:]):
                part = {k: v[a - lo:b - lo] for k, v in arrays.items()}
                if a < n_train:
                    train.write(part, shard=f"part-{a // shard_requests:05d}")
                else:
                    test.write(part, shard="part-00000")
            if chunk % 50 == 0:
                rate = hi / (time.perf_counter() - t0)
                print(f"  simulated {hi}/{requests} requests ({rate:.0f}/s)", flush=True)
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.rglob("*.tfrecord"))
    return {"requests": requests, "train": n_train, "test": test_requests,
            "shard_requests": shard_requests, "seconds": round(seconds, 1),
            "bytes": size, "simulator": {k: v for k, v in sim.items()}}


# ----------------------------------------------------------------------------- runs


def run_train(run_dir: Path, sets: list[str], *, extra: tuple[str, ...] = ()) -> dict:
    """``lcron-tf train`` in a fresh process: its peak RSS, wall time and state.json."""
    cmd = [sys.executable, "-m", "lcron_tf.cli", "train", "--run-dir", str(run_dir), "--fresh",
           *[x for s in sets for x in ("--set", s)], *extra]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"train failed ({proc.returncode}):\n{out[-4000:]}")
    state = json.loads((run_dir / "state.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    return {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 1),
            "train_wall_s": state["wall_seconds_last_session"],
            "steps": state["optimizer_steps"], "steps_per_epoch": state["steps_per_epoch"],
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "loss": history[-1]["loss"], "command": " ".join(cmd[1:])}


def cmd_rss(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    data = work / "rss_records"
    sizes = sorted(args.sizes)
    if not (data / "train" / "schema.json").is_file():
        print(f"writing {max(sizes)} + 2000 simulated requests to {data}", flush=True)
        write_simulated(data, max(sizes) + 2000, 2000, shard_requests=SHARD_REQUESTS)
    base = ["data.source=tfrecord", f"data.path={data}", "train.epochs=1",
            f"train.batch_size={args.batch}", "train.validate=false", "train.verbose=0",
            "output.tensorboard=false", "data.max_test_requests=1000",
            f"train.steps_per_checkpoint={args.checkpoint_every}"]
    results = []
    for rnd in range(args.rounds):
        for size in sizes:
            for mode in ("stream", "memory"):
                sets = [*base, f"data.max_train_requests={size}",
                        f"data.in_memory={'true' if mode == 'memory' else 'false'}"]
                r = run_train(work / f"rss_run_{mode}_{size}", sets)
                r.update(mode=mode, train_requests=size, round=rnd)
                results.append(r)
                print(f"  {mode:6s} {size:7d} requests: peak RSS {r['peak_rss_mib']:8.1f} MiB, "
                      f"{r['steps']} steps in {r['train_wall_s']} s", flush=True)
    out = {"machine": machine(), "runs": results}
    for mode in ("stream", "memory"):
        peak = {s: max(r["peak_rss_mib"] for r in results
                       if r["mode"] == mode and r["train_requests"] == s) for s in sizes}
        out[f"{mode}_ratio"] = round(peak[sizes[-1]] / peak[sizes[0]], 3)
        print(f"{mode}: peak RSS {peak} -> ratio {out[f'{mode}_ratio']}x")
    return out


def cmd_dryrun(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    data = work / "dryrun_records"
    result: dict = {"machine": machine()}
    sim = {"history_length": args.history_length, "num_users": args.num_users,
           "num_items": args.num_items}
    if not (data / "train" / "schema.json").is_file():
        usage = shutil.disk_usage(work if work.exists() else work.parent)
        print(f"free disk {usage.free / 2**30:.1f} GiB; writing {args.requests} requests",
              flush=True)
        result["write"] = write_simulated(data, args.requests, args.test_requests,
                                          shard_requests=args.shard_requests, **sim)
        print(f"wrote {result['write']}", flush=True)
    sets = ["data.source=tfrecord", f"data.path={data}", "train.epochs=1",
            f"train.batch_size={args.batch}", "train.verbose=0", "output.tensorboard=false",
            f"data.max_train_requests={args.train_subset}", "data.max_test_requests=4096",
            f"data.read_streams={args.read_streams}", "train.steps_per_checkpoint=100",
            # The paper's towers (lcron_method.md §6).
            "model.emb_dim=8", "model.retrieval_units=[128,64,32]",
            "model.ranker_units=[128,128,32]", "model.attention_units=80",
            f"train.jit_compile={'true' if args.jit else 'false'}"]
    r = run_train(work / "dryrun_run", sets)
    r["requests_per_s"] = round(r["steps"] * args.batch / r["train_wall_s"], 1)
    r["train_subset"] = args.train_subset
    result["train"] = r
    result["machine_end"] = machine()
    print(json.dumps(r, indent=1))
    if not args.keep:
        shutil.rmtree(data)
        print(f"removed {data}")
    return result


def cmd_read(args: argparse.Namespace) -> dict:
    """Reader alone: requests/s of one streamed epoch (what a resumed run skips at)."""
    import lcron_tf  # noqa: F401
    from lcron_tf.data.pipeline import RecordData
    from lcron_tf.data.tfrecord import read_schema

    data_dir = Path(args.work) / "rss_records"
    schema = read_schema(data_dir / "train")
    out: dict = {"machine": machine(), "runs": []}
    for streams in args.streams:
        data = RecordData(schema, data_dir / "train", data_dir / "test",
                          read_streams=streams, max_train=args.requests)
        t0 = time.perf_counter()
        ds = data.train_dataset(args.batch, 1, seed=0)
        built = time.perf_counter() - t0
        n = sum(int(b["label"].shape[0]) for b in ds)
        seconds = time.perf_counter() - t0
        r = {"read_streams": streams, "requests": n, "build_s": round(built, 2),
             "seconds": round(seconds, 1), "requests_per_s": round(n / seconds)}
        out["runs"].append(r)
        print(r, flush=True)
    return out


# ----------------------------------------------------------------------------- tables


# RecFlow 2-stage id counts used for the table sizes (upper bounds where the exact count is
# not published; docs/scale.md gives the source of each).
RECFLOW_ID_CNT = {
    "user_id": 38_193,        # LCRON paper Table 1: 38,193 users (2-stage training data)
    "device_id": 38_193,      # assumed <= 1 device per user (not published)
    "age": 8, "gender": 3, "province": 40,   # small categorical fields
    "video_id": 9_000_000,    # RecFlow abstract: "nearly 9M items" (whole data set)
    "author_id": 9_000_000,   # upper bound: at most one author per video (not published)
    "category_level_one": 50, "category_level_two": 500, "upload_type": 10,
}


def cmd_tables(args: argparse.Namespace) -> dict:
    import numpy as np
    import tensorflow as tf

    import lcron_tf  # noqa: F401
    from lcron_tf._keras import keras
    from lcron_tf.data.recflow import recflow_schema
    from lcron_tf.models import CascadeModel

    id_cnt = dict(RECFLOW_ID_CNT)
    if args.item_vocab:
        id_cnt["video_id"] = id_cnt["author_id"] = args.item_vocab
    schema = recflow_schema(id_cnt, 2)
    keras.utils.set_random_seed(0)
    model = CascadeModel.default(schema, 2, preset=args.preset)
    b = args.batch
    rng = np.random.default_rng(0)
    n, h = schema.list_size, schema.history_length
    batch = {
        "user_id": rng.integers(1, schema.user_vocab, b),
        "user_features": np.stack([rng.integers(1, v, b) for v in schema.user_feature_vocabs], 1),
        "history": rng.integers(1, schema.item_vocab, (b, h)),
        "item_id": rng.integers(1, schema.item_vocab, (b, n)),
        "item_features": np.stack([rng.integers(1, v, (b, n))
                                   for v in schema.item_feature_vocabs], -1),
        "label": np.tile(np.r_[30 - np.arange(10), [7] * 10, [6] * 10, [5] * 10], (b, 1)),
        "mask": np.ones((b, n), np.float32),
        "stage_group": np.tile(np.repeat(np.arange(4), 10), (b, 1)).astype(np.int32),
    }
    if schema.num_history_features:  # the paper preset's multi-field history items
        batch["history_features"] = np.stack(
            [rng.integers(1, v, (b, h)) for v in schema.history_feature_vocabs], -1)
    batch = {k: tf.constant(v) for k, v in lcron_tf.schema.cast_arrays(batch).items()}
    model(batch, training=False)
    tables = []
    for v in model.trainable_weights:
        if "embedding" in v.name or "table" in v.name:
            tables.append({"name": v.name, "shape": list(v.shape),
                           "mib": round(v.shape.num_elements() * 4 / 2**20, 1)})
    dense = sum(v.shape.num_elements() for v in model.trainable_weights) * 4 / 2**20
    optimizer = {"adam": keras.optimizers.Adam, "adagrad": keras.optimizers.Adagrad}
    model.compile(optimizer=optimizer[args.optimizer](0.01), jit_compile=False)
    times: list[float] = []

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.t0)

    ds = tf.data.Dataset.from_tensors(batch).repeat()
    model.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0, callbacks=[StepTimer()])
    import resource

    out = {
        "machine": machine(), "id_cnt": id_cnt, "batch": b, "tables": tables,
        "optimizer": args.optimizer, "preset": args.preset,
        "weights_mib": round(dense, 1), "weights_plus_adam_mib": round(3 * dense, 1),
        "step_s": [round(t, 2) for t in times],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("rss", help="peak RSS, streamed vs in memory, 20k vs 200k requests")
    r.add_argument("--work", default="/tmp/lcron_scale")
    r.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    r.add_argument("--batch", type=int, default=256)
    r.add_argument("--rounds", type=int, default=1)
    r.add_argument("--checkpoint-every", type=int, default=200)
    d = sub.add_parser("dryrun", help="1M simulated requests -> TFRecords -> one streamed epoch")
    d.add_argument("--work", default="/tmp/lcron_scale")
    d.add_argument("--requests", type=int, default=1_000_000)
    d.add_argument("--test-requests", type=int, default=10_000)
    d.add_argument("--shard-requests", type=int, default=62_500)
    d.add_argument("--train-subset", type=int, default=250_000)
    d.add_argument("--batch", type=int, default=1024)
    d.add_argument("--read-streams", type=int, default=4)
    d.add_argument("--history-length", type=int, default=50)
    d.add_argument("--num-users", type=int, default=2_000)
    d.add_argument("--num-items", type=int, default=5_000)
    d.add_argument("--jit", action="store_true", help="train.jit_compile=true")
    d.add_argument("--keep", action="store_true", help="keep the written records")
    q = sub.add_parser("read", help="the streamed reader alone (the skip speed of a resume)")
    q.add_argument("--work", default="/tmp/lcron_scale")
    q.add_argument("--requests", type=int, default=200_000)
    q.add_argument("--batch", type=int, default=256)
    q.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    t = sub.add_parser("tables", help="embedding tables at RecFlow's vocabulary sizes")
    t.add_argument("--batch", type=int, default=1024)
    t.add_argument("--steps", type=int, default=4)
    t.add_argument("--item-vocab", type=int, default=None)
    t.add_argument("--preset", choices=("paper", "lite"), default="paper",
                   help="CascadeModel.default preset")
    t.add_argument("--optimizer", choices=("adam", "adagrad"), default="adam",
                   help="adam (what lcron-tf train uses) or adagrad (sparse row updates)")
    for s in (r, d, q, t):
        s.add_argument("--json", default=None, help="save the results to this file")
    args = p.parse_args(argv)
    result = {"rss": cmd_rss, "dryrun": cmd_dryrun, "read": cmd_read,
              "tables": cmd_tables}[args.what](args)
    result["command"] = " ".join(["benchmarks/bench_scale.py", *(argv or sys.argv[1:])])
    print(json.dumps(result["machine"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
