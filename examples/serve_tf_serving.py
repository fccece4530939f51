"""Serve a trained cascade with TF Serving and query it with ``lcron_tf.serving.Client``.

Steps (each is also a CLI command):

1. train (``lcron-tf train``), or reuse the run in ``--run-dir`` if it is already trained;
2. export the SavedModel to ``<export_dir>/<model_name>/<version>/`` (``lcron-tf export``);
3. serve it. With Docker and the real TF Serving image, the standard command is::

       docker run --rm -p 8500:8500 -p 8501:8501 \\
         -v "$PWD/saved_models/lcron:/models/lcron" -e MODEL_NAME=lcron \\
         tensorflow/serving:2.21.0

   (``--model_base_path=/models/lcron`` is implied by ``MODEL_NAME``; gRPC on 8500, REST on
   8501). Then ``python examples/serve_tf_serving.py --target localhost:8500`` queries it, or
   ``lcron-tf predict --target localhost:8500``. This Docker command was NOT run here (no
   Docker engine on the development machines); see docs/serving.md for what was verified.

   Without ``--target`` this script starts ``lcron_tf.testing.serving_standin.ServingStandIn``, an
   in-process STAND-IN for TF Serving (same gRPC/REST request formats; a test double, not
   TF Serving itself), on free local ports;
4. query the ``serving_default`` signature over gRPC and REST with the same test requests
   and check both protocols agree.

    python examples/serve_tf_serving.py                    # toy training + stand-in server
    python examples/serve_tf_serving.py --target localhost:8500   # a real TF Serving
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import numpy as np

import lcron_tf  # noqa: F401  (binds tf.keras to Keras 2 before anything else)
from lcron_tf.cli.build import load_data
from lcron_tf.cli.config import load_config
from lcron_tf.cli.main import main as lcron_tf_cli
from lcron_tf.schema import cast_arrays
from lcron_tf.serving import Client
from lcron_tf.serving.export import serving_keys
from lcron_tf.testing.serving_standin import ServingStandIn

TOY = ["data.num_requests=2000", "train.epochs=1", "train.batch_size=200",
       "train.jit_compile=false", "train.verbose=2"]


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
    """Train, export, serve and query; returns the gRPC outputs of the 3 requests."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs/serve_example")
    p.add_argument("--export-dir", default="saved_models")
    p.add_argument("--target", default=None,
                   help="gRPC host:port of a running TF Serving (default: start the stand-in)")
    p.add_argument("--rest-target", default=None, help="REST host:port of that server")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the toy training, e.g. data.num_requests=400")
    args = p.parse_args(argv)
    sets = [x for s in [*TOY, *args.set] for x in ("--set", s)]
    common = ["--run-dir", args.run_dir, "--set", f"output.export_dir={args.export_dir}"]

    # 1-2. Train (skipped when the run is complete) and export a new version.
    for command in (["train", *sets], ["export"]):
        status = lcron_tf_cli([*command, *common])
        if status:
            raise SystemExit(status)
    cfg = load_config(Path(args.run_dir) / "config.yaml")
    schema, _, test = load_data(cfg)
    inputs = serving_keys(schema)  # the signature's inputs (history_features when declared)
    requests = {k: v[:3] for k, v in cast_arrays(test).items() if k in inputs}

    # 3. A real TF Serving (--target), or the in-process stand-in.
    server = contextlib.nullcontext()
    grpc_target, rest_target = args.target, args.rest_target
    if grpc_target is None:
        base = Path(args.export_dir) / cfg.output.model_name
        server = ServingStandIn({cfg.output.model_name: base})
    with server as srv:
        if srv is not None:
            grpc_target, rest_target = srv.grpc_target, srv.rest_url
            print(f"stand-in TF Serving (NOT TF Serving): gRPC {grpc_target}, REST {rest_target}")
        # 4. Query over gRPC (and REST when available).
        with Client(grpc_target, cfg.output.model_name, protocol="grpc") as client:
            print("signatures:", sorted(client.signatures()))
            out = client.predict(requests)
        for i, (ids, n) in enumerate(zip(out["selected_item_ids"], out["num_selected"])):
            print(f"request {i}: {int(n)} selected, first item ids {ids[:8].tolist()}")
        if rest_target is not None:
            with Client(rest_target, cfg.output.model_name, protocol="rest") as rest:
                out_rest = rest.predict(requests)
            same = np.array_equal(out["selected_item_ids"], out_rest["selected_item_ids"])
            print(f"REST returns the same selection as gRPC: {same}")
            if not same:
                raise SystemExit("REST and gRPC disagree")
    return out


if __name__ == "__main__":
    main()
