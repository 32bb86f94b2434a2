"""CLI: synth, eval (from a monst3r_layout export) and eval-suite on the batch machinery (runner stubbed
with perturbed ground truth)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from monst3r_fw_eval import cli_eval
from monst3r_fw_eval.metrics import matrix_to_quaternion
from monst3r_fw_eval.synth import load_scene

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "classical.yaml")


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


def test_eval_suite_on_the_batch_machinery(app, tmp_path, monkeypatch):
    """eval-suite runs every sequence through run_batch (the runner stubbed with perturbed ground
    truth): each row equals `evaluate_run` on the same run, the average is their mean, a failing
    sequence is listed with its error and the exit code is 3 (partial), as `monst3r-fw batch`."""
    from monst3r_framework.errors import StageError
    from monst3r_fw_eval.evaluate import evaluate_run
    from monst3r_fw_eval.synth import make_scene

    for k in range(3):
        make_scene(n_frames=4, size_hw=(16, 24), seed=k, n_objects=1, supersample=1).save(tmp_path / "gt" / f"s{k}", video=False)
    calls = []

    def fake_run_pipeline(recipe, input_path, out_dir, overrides=None, **kw):
        calls.append((str(input_path), list(overrides or [])))
        if out_dir.name == "s2":
            raise StageError("global_aligner: diverged at iteration 7 (stubbed)")
        k = int(out_dir.name[1:])
        scene = load_scene(tmp_path / "gt" / out_dir.name)
        c2w = scene.cam_to_world.copy()
        c2w[:, :3, 3] *= 0.5
        c2w[2, :3, 3] += 0.03 * (k + 1)  # one bad pose per sequence, a different error each
        depth = scene.depth * 2.0
        depth[1] *= 1.1 + 0.1 * k        # one frame's depth off in scale
        dynamic = scene.dynamic_mask.copy()
        dynamic[:, :, : 4 + 2 * k] = True  # over-segmented on the left edge
        _write_layout(out_dir / "monst3r_layout", c2w, depth)
        rec = SimpleNamespace(world_from_cam=c2w, depth=depth, dynamic=dynamic)
        frames = SimpleNamespace(frame_index=np.arange(4), n_frames=4, original_hw=(16, 24),
                                 network_from_original=np.eye(3))
        return SimpleNamespace(reconstruction=rec, frames=frames, reports=[], computed=["global_aligner"],
                               out_dir=out_dir)

    monkeypatch.setattr("monst3r_framework.runner.run_pipeline", fake_run_pipeline)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["eval-suite", RECIPE, "--dataset", "synthetic", "--gt", str(tmp_path / "gt"),
                                   "--out", str(out), "--set", "input.long_edge=64"])
    assert res.exit_code == 3, res.output
    assert [c[0].endswith("frames") for c in calls] == [True] * 3 and calls[0][1] == ["input.long_edge=64"]
    m = json.loads((out / "metrics.json").read_text())
    assert [r["sequence"] for r in m["sequences"]] == ["s0", "s1"]
    assert m["failed"] == [{"sequence": "s2", "error": "global_aligner: diverged at iteration 7 (stubbed)"}]
    assert "failed s2: global_aligner: diverged" in res.output and "s1" in res.output
    for row in m["sequences"]:
        name = row["sequence"]
        direct = evaluate_run(out / name, tmp_path / "gt" / name)  # reads the run's monst3r_layout export
        assert row["ate"] > 0.01 and row["depth"]["median"]["abs_rel"] > 0.01  # the perturbations show
        for key in ("ate", "rpe_trans", "rpe_rot"):
            assert row[key] == pytest.approx(direct[key], rel=1e-6), key
        for align in ("median", "scale_shift"):
            for key in ("abs_rel", "delta_1.25"):
                assert row["depth"][align][key] == pytest.approx(direct["depth"][align][key], rel=1e-6)
        gt_mask = load_scene(tmp_path / "gt" / name).dynamic_mask
        pred = gt_mask.copy()
        pred[:, :, : 4 + 2 * int(name[1:])] = True
        iou = np.logical_and(pred, gt_mask).sum() / np.logical_or(pred, gt_mask).sum()
        assert row["mask_iou"] == pytest.approx(iou) and row["masks"]["iou_all"] == pytest.approx(iou) and iou < 0.95
        assert json.loads((out / name / "metrics.json").read_text())["ate"] == row["ate"]
    assert m["average"]["ate"] == pytest.approx(np.mean([r["ate"] for r in m["sequences"]]))
    assert m["sequences"][0]["ate"] != pytest.approx(m["sequences"][1]["ate"])
    batch = json.loads((out / "batch.json").read_text())
    assert batch["status"] == "partial" and batch["counts"] == {"complete": 2, "failed": 1, "running": 0, "pending": 0}


def test_registering_the_verbs_makes_evaluate_item_the_batch_evaluator(monkeypatch):
    """The core names no evaluator; the eval package's CLI registration sets it for `monst3r-fw batch`."""
    import monst3r_framework.batch as batch
    from monst3r_fw_eval import cli as eval_cli
    from monst3r_fw_eval.batch import evaluate_item

    monkeypatch.setattr(batch, "_DEFAULT_EVALUATOR", [])
    assert batch.default_evaluator() is None
    eval_cli.register(typer.Typer())
    module, _, name = batch.default_evaluator().partition(":")
    import importlib

    assert getattr(importlib.import_module(module), name) is evaluate_item


def test_eval_suite_refuses_bad_arguments_before_running(app, tmp_path, monkeypatch):
    from monst3r_framework.errors import Monst3rFWError
    from monst3r_fw_eval.synth import make_scene

    make_scene(n_frames=3, size_hw=(16, 24), seed=0, n_objects=1, supersample=1).save(tmp_path / "gt" / "s0", video=False)
    monkeypatch.setattr("monst3r_framework.runner.run_pipeline", lambda *a, **k: pytest.fail("ran a sequence"))
    base = ["eval-suite", RECIPE, "--dataset", "synthetic", "--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "o")]
    for extra in (["--set", "stages.no_such_stage.x=1"], ["--backend", "slurm"], ["--pose-align", "sim4"]):
        res = CliRunner().invoke(app, base + extra)
        assert res.exit_code != 0 and isinstance(res.exception, Monst3rFWError), (extra, res.exception)
    assert not (tmp_path / "o" / "batch.json").exists()


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
