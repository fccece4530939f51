"""Config values that cannot be right are rejected at config time, naming the key (exit 2).

NaN / infinite numbers, an `output.model_name` that is not one plain path component,
duplicate YAML keys (in a file and in a `--set` value), and output directories that are
files, lie under a regular file or under /proc.
"""

from __future__ import annotations

import pytest

from lcron_tf.cli.config import ConfigError, load_config
from lcron_tf.cli.main import main


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.learning_rate=.nan", "train.learning_rate"),
        ("train.learning_rate=.inf", "train.learning_rate"),
        ("loss.tau=.inf", "loss.tau"),
        ("loss.tau=-.inf", "loss.tau"),
        ("loss.tau=.nan", "loss.tau"),
        ("data.test_fraction=.nan", "data.test_fraction"),
        ("data.simulator={noise: .nan}", "data.simulator.noise"),
        ("data.simulator={stage_noise: [1.0, .inf, 0.6, 0.8, 0.3]}",
         "data.simulator.stage_noise[1]"),
        ("loss.kwargs={clip: .inf}", "loss.kwargs.clip"),
    ],
)
def test_non_finite_numbers_are_rejected_at_config_time(override, key, capsys):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert info.value.errors == [(key, info.value.errors[0][1])]
    assert "finite" in str(info.value)
    assert main(["config", "--set", override]) == 2
    err = capsys.readouterr().err
    assert key in err and "finite" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["../../evil", "a/b", "/abs", "..", ".", ".hidden", "a b",
                                  "x\\y", "-x", "n" * 129])
def test_model_name_must_be_one_safe_path_component(name, tmp_path):
    with pytest.raises(ConfigError, match="output.model_name") as info:
        load_config(None, [f"output.model_name={name!r}"])
    assert "one plain path component" in str(info.value)
    assert load_config(None, ["output.model_name=lcron_v2.1-b"]).output.model_name


def test_duplicate_yaml_keys_are_an_error_naming_the_key(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 1\n  batch_size: 10\n  epochs: 30\nmodel:\n  emb_dim: 8\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [k for k, _ in info.value.errors] == ["train.epochs"]
    assert "duplicate key" in str(info.value) and "line 2" in str(info.value)
    assert "line 4" in str(info.value) and str(path) in str(info.value)
    path.write_text("train: {epochs: 1}\ntrain: {epochs: 2}\n")
    with pytest.raises(ConfigError, match="duplicate key") as info:
        load_config(path)
    assert [k for k, _ in info.value.errors] == ["train"]
    assert main(["config", "--set", "data.simulator={num_users: 5, num_users: 500}"]) == 2
    err = capsys.readouterr().err
    assert "data.simulator.num_users" in err and "duplicate key" in err
    # Repeating a --set flag is an override, not a duplicate: the last one wins.
    assert load_config(None, ["train.epochs=2", "train.epochs=4"]).train.epochs == 4


def test_output_dirs_that_cannot_be_directories_are_usage_errors(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    cases = [
        (["--run-dir", str(a_file)], "output.run_dir", "is not a directory"),
        (["--run-dir", str(a_file / "run")], "output.run_dir", "is a file"),
        (["--run-dir", "/proc/self/lcron_run"], "output.run_dir", "/proc"),
        (["--run-dir", "/sys/lcron_run"], "output.run_dir", "/sys"),
        (["--run-dir", str(tmp_path / ("x" * 300))], "output.run_dir", "too long"),
        (["--set", f"output.export_dir={a_file / 'x'}"], "output.export_dir", "is a file"),
    ]
    for command in ("train", "evaluate", "export", "config"):
        for args, key, words in cases:
            assert main([command, *args]) == 2, (command, args)
            err = capsys.readouterr().err
            assert key in err and words in err and "Traceback" not in err, err
    assert a_file.read_text() == "mine"
