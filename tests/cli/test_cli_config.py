"""Config loading and validation of the lcron-tf command line (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lcron_tf.cli import config as cfgmod
from lcron_tf.cli.config import ConfigError, load_config
from lcron_tf.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "examples" / "configs").glob("*.yaml"))


def _error(overrides, path=None):
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value


def test_embedded_default_is_valid_2stage_simulator_xla():
    cfg = load_config(None)
    assert cfg.data.source == "simulator"
    assert cfg.model.num_stages == 2
    assert cfg.train.jit_compile is True
    assert yaml.safe_load(cfg.to_yaml()) == cfg.to_dict()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_parse(path, tmp_path, monkeypatch):
    raw = cfgmod.read_yaml(path)
    if raw["data"]["source"] == "movielens":
        (tmp_path / "movielens_100k").mkdir()
        monkeypatch.setenv("LCRON_DATA_DIR", str(tmp_path))
    cfg = cfgmod.from_dict(raw)
    assert cfg.model.num_stages in (2, 3)


def test_shipped_configs_exist():
    assert {p.name for p in CONFIGS} >= {
        "sim_2stage.yaml", "sim_3stage.yaml", "movielens_2stage.yaml"}


def test_set_overrides_are_yaml_values():
    cfg = load_config(None, ["train.epochs=5", "model.quotas=[35, 15]", "train.jit_compile=false",
                             "output.run_dir=/tmp/x y"])
    assert cfg.train.epochs == 5
    assert cfg.model.quotas == [35, 15]
    assert cfg.train.jit_compile is False
    assert cfg.output.run_dir == "/tmp/x y"


@pytest.mark.parametrize(
    "overrides, key, words",
    [
        (["model.quotaz=[30, 20]"], "model.quotaz", "did you mean 'quotas'"),
        (["bogus.x=1"], "bogus", "unknown key"),
        (["train.epochs=two"], "train.epochs", "expected int"),
        (["train.jit_compile=3"], "train.jit_compile", "expected bool"),
        (["train.learning_rate=[1]"], "train.learning_rate", "expected float"),
        (["model.quotas=[20, 30]"], "model.quotas", "strictly decreasing"),
        (["model.quotas=[30, 30]"], "model.quotas", "strictly decreasing"),
        (["model.quotas=[50, 20]"], "model.quotas", "N=40"),
        (["model.quotas=[30, 20, 10]"], "model.quotas", "one quota per stage"),
        (["loss.gt_num=45"], "loss.gt_num", "N=40"),
        (["loss.stage_k=41"], "loss.stage_k", "N=40"),
        (["loss.name=nope"], "loss.name", "unknown loss"),
        (["loss.sort=hard"], "loss.sort", "neural"),
        (["loss.name=bce", "loss.tau=2.0"], "loss.tau", "not an argument"),
        (["data.source=movielens", "data.data_dir=/no/such/dir"], "data.data_dir",
         "does not exist"),
        (["data.source=tfrecord"], "data.path", "required"),
        (["data.test_fraction=1.5"], "data.test_fraction", "(0, 1)"),
        (["data.simulator.num_userz=3"], "data.simulator.num_userz", "unknown"),
        (["train.batch_size=100000"], "train.batch_size", "training requests"),
        (["train.steps_per_checkpoint=0"], "train.steps_per_checkpoint", ">= 1"),
    ],
)
def test_errors_name_the_key(overrides, key, words):
    err = _error(overrides)
    keys = [k for k, _ in err.errors]
    assert any(k.startswith(key) for k in keys), str(err)
    assert words in str(err)
    assert key in str(err)


def test_bad_set_syntax():
    err = _error(["train.epochs"])
    assert "KEY=VALUE" in str(err)


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  num_stages: 2\n  hidden: [1]\ntrain:\n  epochs: 1\n")
    err = _error([], path)
    assert "model.hidden" in str(err) and str(path) in str(err)


def test_missing_config_file():
    err = _error([], "/no/such/config.yaml")
    assert "--config" in str(err)


def test_cli_reports_config_errors_with_exit_2(capsys):
    assert main(["train", "--set", "model.quotas=[20,30]"]) == 2
    err = capsys.readouterr().err
    assert "model.quotas" in err and "strictly decreasing" in err


def test_cli_config_command_prints_resolved_yaml(capsys):
    assert main(["config", "--set", "train.epochs=7"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["train"]["epochs"] == 7


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "predict", "report", "config"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--set" in out


def test_bench_help_is_the_benchmark_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "--help"])
    assert info.value.code == 0
    assert "--quick" in capsys.readouterr().out
