"""Atomic versioned writes (`lcron_tf.serving.versioned`) survive SIGKILL at every step.

A real subprocess runs `write_version(..., overwrite=True)` and kills itself with SIGKILL
right after one named step; the test then checks what a TF Serving poll would see at that
instant (a complete version directory) and that the next `write_version` removes exactly the
leftovers of the killed one. The subprocess loads `versioned.py` by file path (it imports
neither TensorFlow nor lcron_tf), so each kill costs well under a second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lcron_tf.serving import versioned

MODULE = Path(versioned.__file__)
EXCHANGE_STEPS = ["tmp-created", "written", "exchanged", "old-removed"]
FALLBACK_STEPS = ["tmp-created", "written", "old-moved-aside", "new-renamed", "old-removed"]
# After which step <v> holds the new version (before it: the old one).
SWITCHED = {"exchanged", "new-renamed", "old-removed"}

CHILD = r"""
import importlib.util, os, signal, sys, time
from pathlib import Path
spec = importlib.util.spec_from_file_location("versioned_under_test", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
kill_at, fallback, model_dir, version, content, gate = sys.argv[2:]

def hook(step):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

m._after_step = hook
if fallback == "1":
    def no_exchange(a, b):
        raise NotImplementedError("forced by the test")
    m._exchange = no_exchange

def write(d):
    (d / "saved_model.pb").write_text(content)
    (d / "variables").mkdir()
    (d / "variables" / "variables.index").write_text(content)
    if gate != "-":
        print("writing", flush=True)
        while not Path(gate).exists():
            time.sleep(0.01)

m.write_version(model_dir, write, int(version), overwrite=True)
print("finished", flush=True)
"""


def _child(model_dir: Path, *, kill_at: str = "-", fallback: bool = False, version: int = 1,
           content: str = "new", gate: str = "-", **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(MODULE), kill_at, "1" if fallback else "0",
         str(model_dir), str(version), content, gate],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _make_version(path: Path, content: str) -> None:
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_text(content)
    (path / "variables" / "variables.index").write_text(content)


def _read_version(path: Path) -> str | None:
    """The content of a COMPLETE version directory, None when missing; fails when partial."""
    if not path.exists():
        return None
    pb = (path / "saved_model.pb").read_text()
    index = (path / "variables" / "variables.index").read_text()
    assert pb == index, f"{path} mixes two versions"
    assert sorted(os.listdir(path)) == ["saved_model.pb", "variables"], os.listdir(path)
    return pb


@pytest.mark.parametrize(
    "fallback, step",
    [(False, s) for s in EXCHANGE_STEPS] + [(True, s) for s in FALLBACK_STEPS],
    ids=[f"exchange-{s}" for s in EXCHANGE_STEPS] + [f"two-renames-{s}" for s in FALLBACK_STEPS],
)
def test_overwrite_killed_at_each_step_leaves_a_complete_version(tmp_path, fallback, step):
    model_dir = tmp_path / "lcron"
    _make_version(model_dir / "1", "old")
    _make_version(model_dir / "2", "bystander")
    proc = _child(model_dir, kill_at=step, fallback=fallback)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (out, err)
    assert "finished" not in out

    # What TF Serving would see right after the kill.
    seen = _read_version(model_dir / "1")
    if fallback and step == "old-moved-aside":
        # The one documented gap of the two-rename fallback: the old version sits complete
        # under its owned .old- name until the next call restores it.
        assert seen is None
        assert any(n.startswith(".old-1-") for n in os.listdir(model_dir))
    else:
        assert seen == ("new" if step in SWITCHED else "old")
    assert _read_version(model_dir / "2") == "bystander"

    # The next write (another version, no overwrite) cleans up after the killed one.
    versioned.write_version(model_dir, lambda d: _make_version_into(d, "three"), 3)
    assert sorted(os.listdir(model_dir)) == ["1", "2", "3"]
    assert _read_version(model_dir / "1") == ("new" if step in SWITCHED else "old")
    assert _read_version(model_dir / "3") == "three"


def _make_version_into(d: Path, content: str) -> None:
    (d / "variables").mkdir()
    (d / "saved_model.pb").write_text(content)
    (d / "variables" / "variables.index").write_text(content)


def test_overwrite_has_a_complete_version_after_every_step(tmp_path, monkeypatch):
    """In-process: at every step boundary of an exchange overwrite, <v> is complete."""
    model_dir = tmp_path / "m"
    _make_version(model_dir / "1", "old")
    seen = []
    monkeypatch.setattr(versioned, "_after_step",
                        lambda step: seen.append((step, _read_version(model_dir / "1"))))
    path = versioned.write_version(model_dir, lambda d: _make_version_into(d, "new"), 1,
                                   overwrite=True)
    assert path == model_dir / "1"
    assert seen == [("tmp-created", "old"), ("written", "old"), ("exchanged", "new"),
                    ("old-removed", "new")]
    assert os.listdir(model_dir) == ["1"]


def test_an_error_during_the_write_publishes_nothing_and_leaves_nothing(tmp_path):
    model_dir = tmp_path / "m"
    _make_version(model_dir / "1", "old")

    def failing(d: Path) -> None:
        (d / "saved_model.pb").write_text("partial")
        raise OSError("disk full (injected)")

    with pytest.raises(OSError, match="injected"):
        versioned.write_version(model_dir, failing, 1, overwrite=True)
    assert os.listdir(model_dir) == ["1"] and _read_version(model_dir / "1") == "old"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        versioned.write_version(model_dir, failing, 1)


def test_cleanup_touches_only_its_own_dead_leftovers(tmp_path):
    model_dir = tmp_path / "m"
    _make_version(model_dir / "1", "old")
    # Look-alikes that are not ours: no owner file, a foreign owner file, wrong pattern.
    foreign = [".tmp-1-abcdef012345", ".tmp-2-partial", ".old-1-0123456789ab",
               ".tmp-5-aaaaaaaaaaaa"]
    for name in foreign:
        (model_dir / name).mkdir()
        (model_dir / name / "keep.txt").write_text("mine")
    (model_dir / ".tmp-5-aaaaaaaaaaaa.lcron-export").write_text('{"created_by": "someone else"}')
    (model_dir / "notes.txt").write_text("mine")

    # A live writer (blocked inside `write`) keeps its temporary directory.
    gate = tmp_path / "go"
    live = _child(model_dir, version=4, content="four", gate=str(gate))
    try:
        assert live.stdout.readline().strip() == "writing"
        live_tmp = [n for n in os.listdir(model_dir) if n.startswith(".tmp-4-")
                    and not n.endswith(".lcron-export")]
        assert len(live_tmp) == 1
        assert versioned.clean_leftovers(model_dir) == []
        assert (model_dir / live_tmp[0] / "saved_model.pb").read_text() == "four"
    finally:
        gate.write_text("")
        out, err = live.communicate(timeout=60)
    assert live.returncode == 0 and "finished" in out, err

    # A killed writer's leftovers go; everything else stays, byte for byte.
    killed = _child(model_dir, kill_at="written", version=1)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    removed = versioned.clean_leftovers(model_dir)
    assert len(removed) == 1 and removed[0].startswith(".tmp-1-")
    assert sorted(os.listdir(model_dir)) == sorted(
        ["1", "4", "notes.txt", ".tmp-5-aaaaaaaaaaaa.lcron-export", *foreign])
    for name in foreign:
        assert (model_dir / name / "keep.txt").read_text() == "mine"
    assert _read_version(model_dir / "1") == "old" and _read_version(model_dir / "4") == "four"


def test_model_name_must_be_one_path_component(tmp_path):
    for bad in ("../../evil", "a/b", "/abs", "..", ".", "", ".hidden", "x\\y", "a b"):
        with pytest.raises(ValueError, match="model_name"):
            versioned.model_dir(tmp_path, bad)
    assert versioned.model_dir(tmp_path, "lcron_v2.1-a") == tmp_path / "lcron_v2.1-a"
    assert not list(tmp_path.iterdir())


def test_kill_before_the_first_version_leaves_no_version(tmp_path):
    """A first export killed before its rename publishes nothing; the next one cleans up."""
    model_dir = tmp_path / "m"
    proc = _child(model_dir, kill_at="written", version=1)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    names = os.listdir(model_dir)
    assert "1" not in names and any(n.startswith(".tmp-1-") for n in names)
    versioned.write_version(model_dir, lambda d: _make_version_into(d, "ok"))
    assert os.listdir(model_dir) == ["1"] and _read_version(model_dir / "1") == "ok"
