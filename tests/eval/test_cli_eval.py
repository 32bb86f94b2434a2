"""CLI: synth, eval (from a monst3r_layout export) and eval-suite (runner stubbed with ground truth)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from monst3r_fw_eval import cli_eval
from monst3r_fw_eval.metrics import matrix_to_quaternion
from monst3r_fw_eval.synth import load_scene


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    cli_eval.register(app)
    return app


def _write_layout(folder, c2w, depth):
    folder.mkdir(parents=True)
    q = matrix_to_quaternion(c2w[:, :3, :3])
    lines = [" ".join(str(float(v)) for v in [i, *p[:3, 3], qq[3], qq[0], qq[1], qq[2]]) + "\n"
             for i, (p, qq) in enumerate(zip(c2w, q))]
    (folder / "pred_traj.txt").write_text("".join(lines))  # w-first quaternions, as the official demo
    for i, d in enumerate(depth):
        np.save(folder / f"frame_{i:04d}.npy", d.astype(np.float32))


def test_synth_and_eval(app, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["synth", str(tmp_path / "scene"), "--frames", "5", "--size", "48x32", "--seed", "4",
                              "--objects", "1"])
    assert res.exit_code == 0, res.output
    scene = load_scene(tmp_path / "scene")
    assert scene.rgb.shape == (5, 32, 48, 3) and (tmp_path / "scene" / "video.mp4").is_file()

    c2w = scene.cam_to_world.copy()
    c2w[:, :3, 3] *= 0.25
    c2w[3, :3, 3] += 0.05  # one bad pose (in predicted units): 0.2 m in GT units
    _write_layout(tmp_path / "run" / "monst3r_layout", c2w, scene.depth * 0.25)
    res = runner.invoke(app, ["eval", str(tmp_path / "run"), "--gt", str(tmp_path / "scene")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("ate", "rpe_trans", "rpe_rot", "abs_rel", "delta_1.25", "pose_alignment", "depth_alignment"):
        assert key in m
    assert m["pose_alignment"] == "sim3" and m["depth_alignment"] == "median"
    assert m["abs_rel"] < 1e-6 and m["delta_1.25"] == 1.0
    assert 0.02 < m["ate"] < 0.2 and m["rpe_trans"] > 0.05

    bad = runner.invoke(app, ["eval", str(tmp_path / "run"), "--gt", str(tmp_path / "scene"), "--pose-align", "sim4"])
    assert bad.exit_code != 0


def test_eval_suite_with_stubbed_runner(app, tmp_path, monkeypatch):
    from monst3r_fw_eval.synth import make_scene

    for k in range(2):
        make_scene(n_frames=4, size_hw=(16, 24), seed=k, n_objects=1, supersample=1).save(tmp_path / "gt" / f"s{k}", video=False)
    calls = []

    def fake_run_pipeline(recipe, input_path, out_dir, overrides=None, **kw):
        calls.append((str(input_path), list(overrides or [])))
        scene = load_scene(tmp_path / "gt" / out_dir.name)
        out_dir.mkdir(parents=True, exist_ok=True)
        rec = SimpleNamespace(world_from_cam=scene.cam_to_world, depth=scene.depth * 2.0)
        return SimpleNamespace(reconstruction=rec, frames=SimpleNamespace(frame_index=np.arange(4)))

    monkeypatch.setattr("monst3r_framework.runner.run_pipeline", fake_run_pipeline)
    res = CliRunner().invoke(app, ["eval-suite", "recipe.yaml", "--dataset", "synthetic", "--gt", str(tmp_path / "gt"),
                                   "--out", str(tmp_path / "out"), "--set", "pairs.window=3"])
    assert res.exit_code == 0, res.output
    assert [c[0].endswith("frames") for c in calls] == [True, True] and calls[0][1] == ["pairs.window=3"]
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [r["sequence"] for r in m["sequences"]] == ["s0", "s1"]
    assert m["average"]["ate"] < 1e-9 and m["average"]["abs_rel"] < 1e-6
    assert (tmp_path / "out" / "s1" / "metrics.json").is_file()


def test_predictions_from_run_store(tmp_path):
    """eval reads the final reconstruction (and frame indices) from the run's Zarr store."""
    from monst3r_fw_eval.evaluate import load_run_predictions
    from monst3r_framework.stages import FrameSet, Reconstruction
    from monst3r_framework.store import RunStore
    from monst3r_fw_eval.synth import make_scene

    scene = make_scene(n_frames=6, size_hw=(16, 24), seed=1, n_objects=1, supersample=1)
    keep = np.array([1, 3, 5])  # the run processed every other frame
    frames = FrameSet(rgb=scene.rgb[keep], frame_index=keep, timestamps=keep / 10.0, original_hw=(16, 24),
                      network_from_original=((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)))
    k = np.repeat(scene.K[None], 3, axis=0)
    rec = Reconstruction(world_from_cam=scene.cam_to_world[keep], intrinsics=k, intrinsics_original=k,
                         depth=scene.depth[keep], conf=np.ones((3, 16, 24), np.float32),
                         pts3d_world=np.zeros((3, 16, 24, 3), np.float32), dynamic=scene.dynamic_mask[keep])
    run = tmp_path / "run"
    with RunStore(run / "store.zarr") as store:
        store.begin("frames", "fkey", {"kind": "frames"})
        store.commit("frames", "fkey", frames, 0.0)
        store.begin("global_aligner", "gkey", {"kind": "global_aligner"})
        store.commit("global_aligner", "gkey", rec, 0.0)
        store.write_run("r1", {"keys": {"frames": "fkey", "global_aligner": "gkey"}})
    (run / "run.json").write_text(json.dumps({"store": str(run / "store.zarr"), "run_id": "r1", "status": "complete"}))
    preds = load_run_predictions(run)
    assert preds.frame_index.tolist() == [1, 3, 5] and np.allclose(preds.world_from_cam, scene.cam_to_world[keep])
    scene.save(tmp_path / "scene", video=False)
    res = CliRunner().invoke(_app(), ["eval", str(run), "--gt", str(tmp_path / "scene")])
    assert res.exit_code == 0, res.output
    m = json.loads((run / "metrics.json").read_text())
    assert m["n_frames"] == 3 and m["ate"] < 1e-9 and m["abs_rel"] < 1e-6


def _app() -> typer.Typer:
    app = typer.Typer()
    cli_eval.register(app)
    return app
