"""recipes/paper.yaml end to end on a short synthetic video with the tiny fixture checkpoint and DIS
flow swapped in by an override: the numbers mean nothing, but every stage, the store and every
exporter run and produce well-formed outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monst3r_framework.runner import run_pipeline
from monst3r_framework.stages import Reconstruction
from monst3r_framework.store import RunStore
from monst3r_fw_eval.synth import make_scene

from tests.conftest import shared_path

REPO = Path(__file__).resolve().parents[2]
ALL_EXPORTERS = ["monst3r_layout", "glb", "tum", "ply", "colmap", "nerfstudio", "depth_png16", "mask_png", "summary"]


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scene")
    make_scene(n_frames=6, size_hw=(64, 96), seed=3, n_objects=1).save(out)
    return out


def test_paper_recipe_runs_every_stage_and_exporter(scene_dir, tmp_path):
    ckpt = shared_path("fixtures", "monst3r_parity", "tiny_checkpoint.pth")
    exporters = "[" + ", ".join("{type: %s}" % name for name in ALL_EXPORTERS) + "]"
    overrides = [
        f"stages.pair_predictor.checkpoint={ckpt}", "input.long_edge=96",
        "stages.flow_estimator.type=opencv_dis", "stages.global_aligner.iterations=15",
        # random tiny weights give pointmaps with negative depths: a known focal keeps PnP defined
        "stages.pose_solver.focal=80", "stages.mask_builder.pose_source=solver", "stages.global_aligner.threads=1",
        f"stages.exporters={exporters}",
    ]
    out = tmp_path / "run"
    result = run_pipeline(REPO / "recipes" / "paper.yaml", scene_dir / "frames", out, overrides=overrides)
    kinds = [r.kind for r in result.reports]
    assert kinds == ["frames", "flow_estimator", "pair_predictor", "pose_solver", "mask_builder",
                     "global_aligner"] + ["exporter"] * len(ALL_EXPORTERS)
    assert json.loads((out / "run.json").read_text())["status"] == "complete"

    rec = result.reconstruction
    assert np.asarray(rec.depth).shape == (6, 64, 96)
    assert np.isfinite(np.asarray(rec.pts3d_world)).all()
    c2w = np.asarray(rec.world_from_cam)
    np.testing.assert_allclose(c2w[:, :3, :3] @ np.swapaxes(c2w[:, :3, :3], 1, 2), np.tile(np.eye(3), (6, 1, 1)), atol=1e-5)

    store = RunStore(out / "store.zarr", lock=False)
    key = store.runs()[result.run_id]["keys"]["global_aligner"]
    stored = store.load("global_aligner", key, Reconstruction)
    np.testing.assert_array_equal(np.asarray(stored.depth), np.asarray(rec.depth))
    for name in ALL_EXPORTERS:
        folder = out / name
        assert (folder / ".monst3r_fw_export.json").exists(), name
    traj = (out / "monst3r_layout" / "pred_traj.txt").read_text().strip().splitlines()
    assert len(traj) == 6 and len(traj[0].split()) == 8
    assert len(list((out / "monst3r_layout").glob("frame_*.npy"))) == 6

    again = run_pipeline(REPO / "recipes" / "paper.yaml", scene_dir / "frames", out, overrides=overrides)
    assert all(r.cached for r in again.reports)
