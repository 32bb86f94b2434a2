"""Issue 13 part 6: every remaining unclear case gets one clear line and a non-zero exit.

Recipe cases run ``monst3r-fw recipe check`` / ``run`` in a subprocess (refused at check time,
before any input is read); checkpoint and precomputed-file cases check the stage-level reader and
then once through the CLI.
"""

from __future__ import annotations

import argparse
import os
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from monst3r_framework.errors import InputError, RecipeError
from monst3r_framework.recipe import check_device, load_raw, parse_override, safe_load_strict
from reliability_harness import REPO_ROOT, bad_situation, run_cli

RECIPES = REPO_ROOT / "monst3r_framework" / "recipes"
PAPER = RECIPES / "paper.yaml"


def _write_recipe(tmp_path: Path, toy_recipe: Path, extra: str, name: str = "r.yaml", drop: str = "") -> Path:
    """The toy recipe (its plugin path fixed) with ``extra`` lines appended and ``drop`` lines removed."""
    lines = [line for line in toy_recipe.read_text().splitlines() if not (drop and line.startswith(drop))]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


# ------------------------------------------------------------------------------- recipe files


def test_recipe_path_that_is_a_directory(tmp_path, tiny_video):
    """Issue: a recipe path that is a directory gave an internal IsADirectoryError."""
    recipes = RECIPES
    bad_situation("recipe", "check", recipes, needles=["recipes: is a folder", "classical.yaml"])
    out = tmp_path / "out"
    bad_situation("run", recipes, tiny_video, "--out", out, keep=[tiny_video.parent],
                  needles=["is a folder, not a recipe file"])
    assert not out.exists()


def test_recipe_that_is_not_utf8_text(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"schema: 1\n\xff\xfe\x00garbage")
    bad_situation("recipe", "check", path, needles=["binary.yaml", "not UTF-8 text", "save it as UTF-8"])


def test_unknown_schema_refused(tmp_path, toy_recipe, monkeypatch):
    """Issue: `schema: 7` was accepted."""
    path = _write_recipe(tmp_path, toy_recipe, "schema: 7\n", drop="schema:")
    bad_situation("recipe", "check", path, needles=["schema: version 7 is not supported", "schema 1",
                                                    "upgrade monst3r-fw"])
    from monst3r_framework.recipe import load_recipe

    monkeypatch.syspath_prepend(str(toy_recipe.parent))
    old = _write_recipe(tmp_path, toy_recipe, "schema: 0\n", name="old.yaml", drop="schema:")
    with pytest.raises(RecipeError, match="schema: version 0 is not supported.*set schema: 1"):
        load_recipe(old)


def test_duplicate_yaml_keys_refused(tmp_path, toy_recipe):
    """Issue: duplicate YAML keys silently took the last value."""
    path = _write_recipe(tmp_path, toy_recipe, "seed: 1\nseed: 2\n")
    n = len(path.read_text().splitlines())
    bad_situation("recipe", "check", path,
                  needles=[f"line {n}, column 1", "duplicate key 'seed' (first written on line", "keep only one"])


def test_duplicate_keys_nested_and_in_overrides():
    with pytest.raises(Exception, match="duplicate key 'iterations'"):
        safe_load_strict("stages:\n  pose_solver: {type: pnp_mst, iterations: 3, iterations: 4}\n")
    with pytest.raises(RecipeError, match="duplicate key 'a'"):
        parse_override("stages.x={a: 1, a: 2}")
    # YAML merge keys may still be overridden: that is not a duplicate
    data = safe_load_strict("base: &b {x: 1, y: 2}\nnode:\n  <<: *b\n  x: 3\n")
    assert data["node"] == {"x": 3, "y": 2}


def test_duplicate_keys_in_an_extended_base(tmp_path, toy_recipe):
    base = tmp_path / "base.yaml"
    base.write_text("seed: 1\ndevice: cpu\nseed: 3\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\n")
    with pytest.raises(RecipeError, match=r"base.yaml:.*duplicate key 'seed'"):
        load_raw(child)


def test_unknown_device_in_recipe_refused_at_check_time(tmp_path, toy_recipe, monkeypatch):
    """Issue: an unknown device was accepted."""
    path = _write_recipe(tmp_path, toy_recipe, "device: tpu\n", drop="device:")
    bad_situation("recipe", "check", path, needles=["device: unknown device 'tpu'", "cuda:N"])
    from monst3r_framework.recipe import load_recipe

    monkeypatch.syspath_prepend(str(toy_recipe.parent))
    for device in ("gpu", "cuda:x", "CPU0"):
        with pytest.raises(RecipeError, match=f"device: unknown device {device!r}"):
            load_recipe(toy_recipe, overrides=[f"device={device}"])


def test_unknown_device_option_refused_before_any_work(tmp_path, toy_recipe, tiny_video):
    out = tmp_path / "out"
    bad_situation("run", toy_recipe, tiny_video, "--out", out, "--device", "gpu", keep=[tiny_video.parent],
                  needles=["--device: unknown device 'gpu'", "Did you mean 'cpu'"])
    assert not out.exists()  # refused before the output folder or store was made


def test_known_devices_accepted():
    for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"):
        assert check_device(device, "x") == device


# ------------------------------------------------------------------------------- checkpoints


def _official_like(path: Path) -> Path:
    torch.save({"args": argparse.Namespace(model="AsymmetricCroCo3DStereo()"), "model": {"w": torch.zeros(3)}}, path)
    return path


def _bad_checkpoints(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, text the refusal must contain)."""
    rng = np.random.default_rng(13)
    random = tmp_path / "random.pth"
    random.write_bytes(rng.bytes(4096))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    good = _official_like(tmp_path / "good.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good[: len(good) // 2])
    zip_garbage = tmp_path / "zip_garbage.pth"
    zip_garbage.write_bytes(b"PK\x03\x04" + rng.bytes(2048))
    pickle_garbage = tmp_path / "pickle_garbage.pth"
    pickle_garbage.write_bytes(b"\x80\x02" + rng.bytes(512))
    return {
        "random": (random, "not a torch checkpoint (neither a zip archive"),
        "empty": (empty, "the file is empty (0 bytes)"),
        "truncated": (cut, "the zip archive is damaged or truncated"),
        "zip_garbage": (zip_garbage, "the zip archive is damaged or truncated"),
        # garbage after a pickle header is either refused (an opcode outside plain data) or damaged
        "pickle_garbage": (pickle_garbage, "refusing to load it|the pickle is damaged or truncated"),
    }


def test_bad_checkpoint_files_get_a_message_saying_what_they_are(tmp_path):
    """Issue: a random-bytes checkpoint was described as "a pickled object"."""
    from monst3r_fw_reference.network.checkpoint import read_checkpoint
    from monst3r_fw_reference.searaft.checkpoint import CheckpointError, read_state_dict

    for name, (path, expected) in _bad_checkpoints(tmp_path).items():
        with pytest.raises(InputError) as err:
            read_checkpoint(path)
        msg = str(err.value)
        assert any(e in msg for e in expected.split("|")) and str(path) in msg and "\n" not in msg, (name, msg)
        assert "a pickled object" not in msg and "weights_only` set to `False`" not in msg, (name, msg)
        with pytest.raises(CheckpointError) as err:
            read_state_dict(path)
        msg = str(err.value)
        assert any(e in msg for e in expected.split("|")) and "SEA-RAFT checkpoint" in msg and "\n" not in msg, (name, msg)
        # never the advice torch gives: re-running with weights_only=False could run code
        assert "weights_only` set to `False`" not in msg, (name, msg)


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_malicious_checkpoints_still_refused(tmp_path):
    from monst3r_fw_reference.network.checkpoint import read_checkpoint
    from monst3r_fw_reference.searaft.checkpoint import read_state_dict

    marker = tmp_path / "pwned.txt"
    zipped = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _RunsCode(str(marker))}, zipped)
    legacy = tmp_path / "evil_legacy.pth"
    torch.save({"w": _RunsCode(str(marker))}, legacy, _use_new_zipfile_serialization=False)
    for path in (zipped, legacy):
        for reader in (read_checkpoint, read_state_dict):
            with pytest.raises(InputError, match=r"refusing to load it: it contains the pickled global (builtins\.)?exec"):
                reader(path)
    assert not marker.exists()


def test_random_checkpoint_through_the_cli(tmp_path, tiny_video):
    random = tmp_path / "weights.pth"
    random.write_bytes(np.random.default_rng(1).bytes(4096))
    out = tmp_path / "out"
    bad_situation("run", PAPER, tiny_video, "--out", out, "--checkpoint", random,
                  "--set", "stages.flow_estimator.type=opencv_dis", "--set", "input.long_edge=224",
                  keep=[tiny_video.parent, random],
                  needles=["weights.pth", "not a torch checkpoint", "--checkpoint"])


# ------------------------------------------------------------------------------- precomputed files


def _precomputed_inputs(n_frames: int = 3, size_hw=(4, 6)):
    pairs = np.array([[0, 1], [1, 0], [1, 2], [2, 1]], np.int64)
    frames = types.SimpleNamespace(size_hw=size_hw, n_frames=n_frames)
    return types.SimpleNamespace(frames=frames, pairs=pairs, flow=None)


def _pairs_file(path: Path, pairs: np.ndarray, size_hw=(4, 6)) -> Path:
    p = len(pairs)
    rng = np.random.default_rng(0)
    np.savez(path, pairs=pairs, pts3d_i=rng.normal(size=(p, *size_hw, 3)).astype(np.float32),
             pts3d_j=rng.normal(size=(p, *size_hw, 3)).astype(np.float32),
             conf_i=np.ones((p, *size_hw), np.float32), conf_j=np.ones((p, *size_hw), np.float32))
    return path


def test_float_pair_indices_refused_not_truncated(tmp_path):
    """Issue: float pair indices in a precomputed file were truncated (2.7 -> 2) and paired the wrong frames."""
    from monst3r_framework.stages import RunContext
    from monst3r_fw_reference.precomputed import (
        PrecomputedFlowConfig, PrecomputedFlowEstimator, PrecomputedPairPredictor, PrecomputedPairsConfig,
        write_pairs_npz,
    )

    inputs = _precomputed_inputs()
    floats = np.array([[0, 1], [1, 0], [1, 2.7], [2, 1]], np.float64)
    path = _pairs_file(tmp_path / "pairs.npz", floats)
    stage = PrecomputedPairPredictor(PrecomputedPairsConfig(path=str(path)))
    with pytest.raises(InputError, match=r"'pairs' holds float64 frame indices that are not whole numbers "
                                         r"\(e\.g\. 2\.7 at pairs\[2, 1\]\).*np\.int64"):
        stage.run(inputs, RunContext())
    # integral floats are exact: accepted, and the rows are the right ones
    exact = _pairs_file(tmp_path / "exact.npz", floats.round().clip(0, 2) * 1.0)
    out = PrecomputedPairPredictor(PrecomputedPairsConfig(path=str(exact))).run(inputs, RunContext())
    np.testing.assert_array_equal(out.pairs, inputs.pairs)
    # the writer refuses too
    with pytest.raises(InputError, match="not whole numbers"):
        write_pairs_npz(tmp_path / "w.npz", floats, *np.load(path)["pts3d_i"][None].repeat(2, 0),
                        np.ones((4, 4, 6)), np.ones((4, 4, 6)))
    # and the flow reader
    flow = tmp_path / "flow.npz"
    np.savez(flow, pairs=floats, flow=np.zeros((4, 4, 6, 2), np.float32))
    with pytest.raises(InputError, match="not whole numbers"):
        PrecomputedFlowEstimator(PrecomputedFlowConfig(path=str(flow))).run(inputs, None)
    strings = tmp_path / "strings.npz"
    np.savez(strings, pairs=np.array([["0", "1"]] * 4), flow=np.zeros((4, 4, 6, 2), np.float32))
    with pytest.raises(InputError, match="has dtype <U1; frame indices must be integers"):
        PrecomputedFlowEstimator(PrecomputedFlowConfig(path=str(strings))).run(inputs, None)
