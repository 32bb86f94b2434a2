"""Exporters never replace what the project did not write, never touch the input (issue 13 part 1);
cache keys cover the content of every file a stage reads by path (part 2); a full disk is one
line and leaves no temporary files (part 5)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from monst3r_framework.errors import DiskFullError, InputError
from monst3r_framework.fingerprint import Fingerprints, InputFile, input_file_fields
from monst3r_framework.runner import run_pipeline
from monst3r_framework.store import RunStore, stage_key
from monst3r_framework.video import write_test_video
from reliability_harness import TOY_DIR, TOY_RECIPE, assert_unchanged, run_cli, snapshot


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.syspath_prepend(str(TOY_DIR))
    monkeypatch.delenv("TOY_DELAY", raising=False)
    monkeypatch.delenv("TOY_CALLS_FILE", raising=False)


@pytest.fixture
def clip(tmp_path) -> Path:
    return write_test_video(tmp_path / "clip.mp4", 5, (48, 64), fps=10)


# ----------------------------------------------------------------------------- exporter folders
def test_exporter_refuses_a_foreign_folder_and_the_input_inside_it_survives(tmp_path, clip):
    out = tmp_path / "out"
    frames = out / "toy_export" / "frames"  # the input lives where an exporter would write
    frames.mkdir(parents=True)
    shutil.copy(clip, frames / "clip.mp4")
    before = snapshot(out)
    result = run_cli("run", TOY_RECIPE, frames / "clip.mp4", "--out", out)
    result.assert_user_error("toy_export", "choose another --out")
    assert_unchanged(before)

    foreign = tmp_path / "out2"
    (foreign / "toy_export").mkdir(parents=True)
    (foreign / "toy_export" / "notes.txt").write_text("mine")
    before = snapshot(foreign)
    result = run_cli("run", TOY_RECIPE, clip, "--out", foreign)
    result.assert_user_error("toy_export", "did not write", "move them away")
    assert_unchanged(before)
    assert not (foreign / "store.zarr" / "frames").exists()  # refused before any work


def test_owned_folders_are_replaced_and_empty_ones_used(toy, tmp_path, clip):
    out = tmp_path / "out"
    (out / "toy_export").mkdir(parents=True)  # empty: nothing to lose
    run_pipeline(TOY_RECIPE, clip, out)
    marker = json.loads((out / "toy_export" / ".monst3r_fw_export.json").read_text())
    run_pipeline(TOY_RECIPE, clip, out, overrides=["stages.global_aligner.offset=2.0"])
    assert json.loads((out / "toy_export" / ".monst3r_fw_export.json").read_text())["key"] != marker["key"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.is_dir()) == []


# ----------------------------------------------------------------------------- content keys
def _pairs_file(path: Path, clip: Path, scale: float, tmp: Path) -> Path:
    """A precomputed pairs file for the toy graph (from a toy run), pointmaps scaled by ``scale``."""
    from monst3r_fw_reference.precomputed import write_pairs_npz

    out = tmp / "src"
    result = run_pipeline(TOY_RECIPE, clip, out)
    store = RunStore(out / "store.zarr", lock=False)
    from monst3r_framework.stages import PairPredictions

    preds = store.load("pair_predictor", store.runs()[result.run_id]["keys"]["pair_predictor"], PairPredictions)
    return write_pairs_npz(path, np.asarray(preds.pairs), scale * np.asarray(preds.pts3d_i),
                           scale * np.asarray(preds.pts3d_j), np.asarray(preds.conf_i), np.asarray(preds.conf_j))


def test_swapping_a_precomputed_file_recomputes_it_and_dependants_only(toy, tmp_path, clip, monkeypatch):
    import monst3r_framework.fingerprint as fp

    npz = _pairs_file(tmp_path / "pairs.npz", clip, 1.0, tmp_path)
    over = ["stages.pair_predictor.type=precomputed", f"stages.pair_predictor.path={npz}"]
    out = tmp_path / "out"
    first = run_pipeline(TOY_RECIPE, clip, out, overrides=over)
    key = {r.kind: r.key for r in first.reports}["pair_predictor"]
    attrs = RunStore(out / "store.zarr", lock=False).stage_attrs("pair_predictor", key)
    assert attrs["files"]["path"]["path"] == str(npz.resolve()) and len(attrs["files"]["path"]["sha256"]) == 64

    hashed = []
    real = fp._hash_file
    monkeypatch.setattr(fp, "_hash_file", lambda p, d: hashed.append(p) or real(p, d))
    same = run_pipeline(TOY_RECIPE, clip, out, overrides=over)
    assert all(r.cached for r in same.reports)
    assert hashed == []  # size and mtime unchanged: no full re-hash

    depth_before = np.load(out / "toy_export" / "depth.npy")
    st = npz.stat()
    _pairs_file(npz, clip, 2.0, tmp_path / "again")  # same path, new content
    os.utime(npz, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    swapped = run_pipeline(TOY_RECIPE, clip, out, overrides=over)
    computed = [r.kind for r in swapped.reports if not r.cached]
    assert computed == ["pair_predictor", "pose_solver", "global_aligner", "exporter"]
    assert [Path(p).name for p in hashed] == ["pairs.npz"]
    np.testing.assert_allclose(np.load(out / "toy_export" / "depth.npy"), 2 * (depth_before - 0.5) + 0.5, rtol=1e-5)


def test_env_var_selected_checkpoint_enters_the_key(tmp_path, monkeypatch):
    """$MONST3R_CHECKPOINT counts as the file it selects: other content, other key; same content, same key."""
    from monst3r_fw_reference.pair_predictor import Monst3rPairConfig, MonST3RPairPredictor

    assert input_file_fields(Monst3rPairConfig()) == {"checkpoint": InputFile(env="MONST3R_CHECKPOINT")}
    a, b, c = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "c.pth"
    a.write_bytes(b"weights-1")
    b.write_bytes(b"weights-2")
    c.write_bytes(b"weights-1")
    fps = Fingerprints()

    def key(path: Path) -> str:
        monkeypatch.setenv("MONST3R_CHECKPOINT", str(path))
        cfg = Monst3rPairConfig()
        return stage_key(MonST3RPairPredictor, cfg, {"frames": "f", "pairs": "p"}, fps.of_config(cfg))

    assert key(a) != key(b)
    assert key(a) == key(c)
    a.write_bytes(b"weights-3")
    assert key(a) != key(c)


# ----------------------------------------------------------------------------- disk full
def test_disk_full_in_a_stage_is_one_error_and_removes_its_workspace(toy, tmp_path, clip, monkeypatch):
    import toy_plugin

    def full(self, inputs, ctx):
        scratch = ctx.output("pts3d_i", (len(inputs.pairs), 8, 8, 3), np.float32)
        scratch[0] = np.ones((8, 8, 3), np.float32)
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "store.zarr" / "x"))

    monkeypatch.setattr(toy_plugin.ToyPairs, "run", full)
    out = tmp_path / "out"
    with pytest.raises(DiskFullError, match=r"disk full writing .*store.zarr/x: pair_predictor needs about .* GiB free"):
        run_pipeline(TOY_RECIPE, clip, out)
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    assert not [p for p in (out / "store.zarr" / "stages" / "pair_predictor").glob("*") if p.is_dir()]  # workspace removed


def test_disk_full_on_a_real_small_filesystem(tmp_path, clip):
    """A 1 MiB tmpfs as --store (needs permission to mount; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        result = run_cli("run", TOY_RECIPE, clip, "--out", tmp_path / "out", "--store", mnt / "store.zarr")
        line = result.assert_user_error("disk full", "free space")
        assert "asyncio" not in result.stderr and "Task exception" not in result.stderr
        assert str(mnt) in line
        leftovers = [p for p in mnt.rglob("*") if "partial" in p.name or ".tmp-" in p.name]
        assert leftovers == []
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
