"""lcron_tf._files: a write replaces the whole file or nothing, and leaves no temporary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lcron_tf._files import read_json, write_atomic, write_json


def test_write_replaces_the_content_and_creates_missing_folders(tmp_path):
    path = tmp_path / "a" / "b" / "state.json"
    write_atomic(path, "old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


@pytest.mark.parametrize("durable", [True, False])
def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, durable):
    path = tmp_path / "history.json"
    write_atomic(path, "old")
    import lcron_tf._files as files

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        write_atomic(path, "new", durable=durable)
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]


def test_write_json_converts_numpy_values_and_read_json_reads_them_back(tmp_path):
    path = tmp_path / "eval.json"
    write_json(path, {"steps": np.int64(8), "recall": np.float32(0.5), "v": np.arange(3)})
    assert json.loads(path.read_text()) == {"steps": 8, "recall": 0.5, "v": [0, 1, 2]}
    assert read_json(path) == {"steps": 8, "recall": 0.5, "v": [0, 1, 2]}
    assert read_json(tmp_path / "missing.json", default=[]) == []


def test_write_json_refuses_an_unknown_type_before_touching_the_file(tmp_path):
    path = tmp_path / "state.json"
    write_atomic(path, "old")
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(path, {"x": object()})
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
