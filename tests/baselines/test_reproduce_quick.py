"""The reproduction benchmark runs end to end at a toy size and reports every method."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import lcron_tf  # noqa: F401
from lcron_tf.losses import registry

ROOT = Path(__file__).resolve().parents[2]


def _load_reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "benchmarks" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reproduce():
    return _load_reproduce()


def test_toy_benchmark_reports_every_method(reproduce, tmp_path):
    # Without XLA: the harness is under test here, and every loss is tested under XLA in
    # tests/ops/test_loss_contract.py (compiling 8 models would double this test's time).
    argv = ["--quick", "--datasets", "sim", "--stages", "2", "--seeds", "1", "--jit", "off",
            "--train-requests", "100", "--batch-size", "50", "--out", str(tmp_path)]
    out = reproduce.main(argv)
    text = (tmp_path / "results.md").read_text()
    assert text == out["tables"]
    assert "| Method | Runs | Joint R@10@20 | Ranking R@10@20 | Ranking NDCG@10 |" in text
    for name in registry.names():
        # one seed: the row says so and shows no spread (a std of one run is undefined)
        assert f"| {registry.DISPLAY_NAMES[name]} | 1 | " in text, name
    assert " ± " not in text.split("### ")[1]
    assert len(out["runs"]) == len(registry.names())
    for run in out["runs"]:
        for key in reproduce.metric_names(2):
            assert 0.0 <= run["metrics"][key] <= 1.0
        assert run["request_passes"] == 100 and len(run["val_curve"]) == 2
        assert run["versions"]["tensorflow"] and run["date"] and run["jit_compile"] is False
    assert (tmp_path / "joint_recall.png").stat().st_size > 0
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    files = sorted(tmp_path.glob("sim-2stage/*/seed0.json"))
    assert len(files) == len(registry.names())
    # A rerun skips every finished run and rebuilds the same tables from the JSON files.
    again = reproduce.main(argv)
    assert again["runs"] == [] and again["tables"] == out["tables"]
    table_only = reproduce.main(["--table-only", "--out", str(tmp_path)])
    assert table_only["tables"] == out["tables"]


def test_missing_movielens_is_skipped_with_a_reason(reproduce, tmp_path):
    reason = reproduce.load_data("movielens", 2, reproduce.QUICK, str(tmp_path / "nowhere"))
    assert isinstance(reason, str) and "MovieLens" in reason


def test_markdown_table_layout_three_stages(reproduce):
    from lcron_tf.schema import CascadeSchema

    schema = CascadeSchema(
        list_size=50, history_length=5, user_vocab=3, item_vocab=3, user_feature_vocabs=(),
        item_feature_vocabs=(), stage_groups=("a", "b"), gt_num=10, quotas=(40, 30, 20),
    )
    keys = reproduce.metric_names(3)
    rows = {m: {"n": 3, **{k: (0.5 + 0.01 * i, 0.001) for k in keys}}
            for i, m in enumerate(["bce", "lcron"])}
    table = reproduce.markdown_table("sim, 3-stage", 3, schema, rows)
    assert ("| Method | Runs | Joint R@10@20 | Ranking R@10@20 | Ranking NDCG@10 "
            "| Pre-ranking R@10@30 | Pre-ranking NDCG@10 | Retrieval R@10@40 "
            "| Retrieval NDCG@10 |") in table
    assert "| LCRON | 3 | **0.5100 ± 0.0010** |" in table


def test_budget_note_ignores_the_seed_count(reproduce, tmp_path):
    """Runs of one budget made in phases with different --seeds are one budget, not two."""
    base = {"dataset": "sim", "stages": 2, "variant": "lcron", "study": None}
    for seed, seeds in ((0, 1), (1, 3)):
        run = {**base, "seed": seed, "budget": {"epochs": 1, "seeds": seeds}}
        (tmp_path / "sim-2stage" / "lcron").mkdir(parents=True, exist_ok=True)
        (tmp_path / "sim-2stage" / "lcron" / f"seed{seed}.json").write_text(json.dumps(run))
    records = reproduce.load_records(tmp_path)
    assert reproduce.budget_notes(records) == []
    records[1]["budget"]["epochs"] = 2
    assert reproduce.budget_notes(records) == ["- note: 2 different budgets among the sim runs"]


def test_machine_line_names_every_machine_of_the_runs(reproduce):
    records = [{"machine": "Intel Xeon"}] * 2 + [{"machine": "AMD EPYC"}] * 3 + [{}]
    line = reproduce.machines_line(records)
    assert line == "AMD EPYC (3 runs); Intel Xeon (2 runs); unknown (1 run)"
    assert reproduce.machines_line([]) == "n/a"


def test_results_md_block_is_chosen_by_the_results_folder(reproduce, tmp_path):
    """Tables of two budgets live in one file: each --out replaces only its own block."""
    assert reproduce.block_name(reproduce.DEFAULT_OUT) == ""
    assert reproduce.block_name(tmp_path / "long-1m") == "long-1m"
    md = tmp_path / "RESULTS.md"
    md.write_text("a\n<!-- reproduce:begin -->\nold 250k\n<!-- reproduce:end -->\nb\n"
                  "<!-- reproduce:begin long-1m -->\nold 1M\n<!-- reproduce:end long-1m -->\nc\n")
    reproduce.replace_block(md, "new 1M", "long-1m")
    reproduce.replace_block(md, "new 250k")
    assert md.read_text() == ("a\n<!-- reproduce:begin -->\nnew 250k\n<!-- reproduce:end -->\nb\n"
                              "<!-- reproduce:begin long-1m -->\nnew 1M\n"
                              "<!-- reproduce:end long-1m -->\nc\n")
    with pytest.raises(SystemExit, match="long-4m"):
        reproduce.replace_block(md, "x", "long-4m")
    assert "new 1M" in md.read_text()  # a refused replacement leaves the file as it was
