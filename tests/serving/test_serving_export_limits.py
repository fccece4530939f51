"""Export safety: leftovers of a killed export are cleaned, batch caps and the mask rule hold.

* a real export subprocess killed (SIGKILL) inside `tf.saved_model.save` leaves a partial
  `.tmp-<v>-*` directory; the next export removes it and nothing else;
* `max_batch_size` is checked in the graph with `INVALID_ARGUMENT` naming the option;
* the mask check accepts exactly what its message says: 0 or 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import MODEL_NAME, SCHEMA

from lcron_tf._keras import tf
from lcron_tf.serving.export import METADATA_FILE, export, sample_request

REPO = Path(__file__).resolve().parents[2]

KILLED_EXPORT = r"""
import os, signal, sys
from pathlib import Path
from serving_helpers import MODEL_NAME, build_model
from lcron_tf._keras import tf
from lcron_tf.serving.export import export

def save_then_die(obj, export_dir, *args, **kwargs):
    Path(export_dir, "saved_model.pb").write_bytes(b"partial")
    (Path(export_dir) / "variables").mkdir()
    print("killing", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

tf.saved_model.save = save_then_die
export(build_model(), sys.argv[1], 2, model_name=MODEL_NAME, warmup=False)
"""


def _feed(batch):
    return {k: tf.constant(v) for k, v in batch.items()}


@pytest.mark.slow  # an export subprocess (TF import + model) and two exports
def test_next_export_removes_what_a_killed_export_left(toy_model, tmp_path):
    base = tmp_path / "saved_models"
    first = export(toy_model, base, model_name=MODEL_NAME, verify=False, warmup=False)
    model_dir = first.parent
    foreign = model_dir / ".tmp-2-someone_elses"  # a look-alike without an owner file
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests" / "serving")])}
    proc = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(base)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr[-3000:]
    assert "killing" in proc.stdout
    left = [n for n in os.listdir(model_dir) if n.startswith(".tmp-2-") and n != foreign.name]
    assert left, os.listdir(model_dir)  # the partial SavedModel of the killed export
    partial = next(n for n in left if (model_dir / n).is_dir())
    assert (model_dir / partial / "saved_model.pb").read_bytes() == b"partial"

    path = export(toy_model, base, model_name=MODEL_NAME, verify=False, warmup=False)
    assert path == model_dir / "2"
    assert sorted(os.listdir(model_dir)) == sorted(["1", "2", foreign.name])
    assert (foreign / "keep.txt").read_text() == "mine"
    assert tf.saved_model.load(str(path)).signatures["serving_default"] is not None


def test_max_batch_size_is_checked_in_the_graph_naming_the_option(toy_model, tmp_path):
    path = export(toy_model, tmp_path, model_name="capped", max_batch_size=3, verify=False,
                  warmup=False)
    meta = json.loads((path / "assets.extra" / METADATA_FILE).read_text())
    assert meta["max_batch_size"] == 3 and meta["max_list_size"] == SCHEMA.list_size
    loaded = tf.saved_model.load(str(path))
    ok = loaded.signatures["serving_default"](**_feed(sample_request(SCHEMA, 3)))
    assert ok["selected_indices"].shape[0] == 3
    for signature in ("serving_default", "score_ranking", "query_embedding"):
        fn = loaded.signatures[signature]
        names = fn.structured_input_signature[1]
        batch = {k: v for k, v in sample_request(SCHEMA, 4).items() if k in names}
        with pytest.raises(tf.errors.InvalidArgumentError, match="max_batch_size=3"):
            fn(**_feed(batch))
    with pytest.raises(ValueError, match="max_batch_size"):
        export(toy_model, tmp_path, model_name="bad", max_batch_size=0, verify=False)


def test_default_export_caps_the_batch(exported: Path, loaded):
    meta = json.loads((exported / "assets.extra" / METADATA_FILE).read_text())
    assert meta["max_batch_size"] == 1024
    big = sample_request(SCHEMA, 1025, list_size=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_batch_size=1024"):
        loaded.signatures["serving_default"](**_feed(big))


@pytest.mark.parametrize("value", [0.5, -0.0001, 1.0001, float("nan")])
def test_mask_check_accepts_exactly_what_its_message_says(loaded, request_batch, value):
    batch = {k: np.array(v) for k, v in request_batch.items()}
    batch["mask"][0, 0] = value
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"`mask` must be 0 \(padded\) or 1 \(real candidate\)"):
        loaded.signatures["serving_default"](**_feed(batch))
    good = loaded.signatures["serving_default"](**_feed(request_batch))
    assert good["num_selected"].shape == (3,)
