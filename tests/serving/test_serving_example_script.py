"""examples/serve_tf_serving.py runs end to end: train, export, the stand-in server, gRPC + REST."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "serve_tf_serving.py"


def test_serving_example_trains_exports_and_answers_over_grpc_and_rest(tmp_path):
    spec = importlib.util.spec_from_file_location("serve_tf_serving_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--run-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "sm"),
                       "--set", "data.num_requests=500", "--set", "train.batch_size=100"])
    ids, n = np.asarray(out["selected_item_ids"]), np.asarray(out["num_selected"])
    assert ids.shape[0] == n.shape[0] == 3
    assert np.all(n > 0) and np.all(n <= ids.shape[1])
    assert (tmp_path / "sm" / "lcron" / "1" / "saved_model.pb").is_file()
