"""Small reference outputs of recipes/paper.yaml (tiny fixture checkpoint) and recipes/classical.yaml
on a tiny synthetic scene, saved once before the issue-12 refactor and compared by
tests/e2e/test_reference_outputs.py.

The input frames are stored inside the npz (so changes to the synthetic-scene renderer cannot move
the reference); the run settings are the constants below. Regenerate ONLY deliberately, when a change
is meant to alter these outputs (say so in the commit message):

    python -m tests.e2e.reference_outputs            # rewrites tests/data/reference_{paper,classical}.npz

Storage dtypes are pinned to float32: if a store option for float16 (or another storage dtype) is
added (the monst3r pair predictor has ``storage_dtype``), add its float32 setting to ``PINNED`` so these runs keep storing float32.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
N_FRAMES, SIZE_HW, SEED = 5, (48, 64), 3
#: Overrides that pin storage dtypes to float32, per run (see the module docstring).
PINNED: dict[str, list[str]] = {"paper": ["stages.pair_predictor.storage_dtype=float32", "storage.float_dtype=float32"],
                                "classical": ["storage.float_dtype=float32"]}
CHECKPOINT = ("fixtures", "monst3r_parity", "tiny_checkpoint.pth")

RUNS: dict[str, dict[str, Any]] = {
    "paper": {
        "recipe": "paper.yaml",
        "overrides": [
            "input.long_edge=64", "stages.flow_estimator.type=opencv_dis", "stages.global_aligner.iterations=10",
            "stages.pose_solver.focal=60", "stages.mask_builder.pose_source=solver",
            # The tiny random network's pointmaps are noise: with the official 5 px threshold RANSAC's winning
            # hypothesis flipped between CPUs (frames 0 and 4 moved by 4 units on an AVX-512 machine). At
            # 1000 px every pixel is an inlier and the pose is SQPnP's fit to all of them, a smooth function
            # of the pointmaps (OpenCV 4.14 and 5.1 agree bit for bit). The classical run keeps 5 px.
            "stages.pose_solver.reprojection_px=1000",
            "stages.global_aligner.threads=1", "stages.exporters=[{type: tum}]",
        ],
    },
    "classical": {
        "recipe": "classical.yaml",
        "overrides": ["input.long_edge=64", "stages.global_aligner.iterations=10", "stages.global_aligner.threads=1",
                      "stages.exporters=[{type: tum}]",
                      # classical.yaml's settings when the reference was written (session 7 moved the recipe to
                      # gauss_newton; this run keeps checking that the Adam path does not change)
                      "stages.global_aligner.solver=adam", "stages.global_aligner.gn_free_depth=solve",
                      "stages.global_aligner.shared_focal=true", "stages.global_aligner.smoothness_mode=motion",
                      "stages.pair_predictor.focal_per_frame=shared"],
    },
}


def write_frames(rgb: np.ndarray, folder: Path) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(rgb):
        cv2.imwrite(str(folder / f"frame_{i:04d}.png"), np.ascontiguousarray(img[..., ::-1]))
    return folder


def run_reference(name: str, rgb: np.ndarray, workdir: Path, checkpoint: Path) -> dict[str, np.ndarray]:
    """Run one reference recipe on ``rgb`` (F, H, W, 3) uint8; returns the arrays that are compared."""
    from monst3r_framework.runner import run_pipeline

    import torch

    # The tiny random checkpoint gives meaningless pointmaps that make the PnP initialisation
    # sensitive to summation order: pin the thread count the references were written with.
    torch.set_num_threads(2)
    spec = RUNS[name]
    overrides = list(spec["overrides"]) + PINNED[name]
    if name == "paper":
        overrides.append(f"stages.pair_predictor.checkpoint={checkpoint}")
    frames = write_frames(rgb, workdir / "frames")
    result = run_pipeline(REPO / "recipes" / spec["recipe"], frames, workdir / "run", overrides=overrides)
    rec = result.reconstruction
    out = {f"recon_{k}": np.asarray(getattr(rec, k)) for k in
           ("world_from_cam", "intrinsics", "depth", "conf", "dynamic")}
    from monst3r_framework.stages import CameraTrajectory, DynamicMasks, PairPredictions
    from monst3r_framework.store import RunStore

    with RunStore(workdir / "run" / "store.zarr", lock=False) as store:
        keys = store.runs()[result.run_id]["keys"]
        preds = store.load("pair_predictor", keys["pair_predictor"], PairPredictions)
        init = store.load("pose_solver", keys["pose_solver"], CameraTrajectory)
        masks = store.load("mask_builder", keys["mask_builder"], DynamicMasks)
        out["pred_pairs"] = np.asarray(preds.pairs)
        # every 4th pixel keeps the file small while covering every pair
        out["pred_pts3d_i"] = np.asarray(preds.pts3d_i)[:, ::4, ::4]
        out["pred_pts3d_j"] = np.asarray(preds.pts3d_j)[:, ::4, ::4]
        out["pred_conf_i"] = np.asarray(preds.conf_i)[:, ::4, ::4]
        out["init_world_from_cam"] = np.asarray(init.world_from_cam)
        out["init_depth"] = np.asarray(init.depth)
        out["masks_dynamic"] = np.asarray(masks.dynamic)
    return out


def main() -> None:
    import tempfile

    from monst3r_fw_eval.synth import make_scene

    checkpoint = REPO.parent / "shared" / Path(*CHECKPOINT)
    rgb = np.asarray(make_scene(n_frames=N_FRAMES, size_hw=SIZE_HW, seed=SEED, n_objects=1).rgb, np.uint8)
    DATA.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[1:] or list(RUNS):
        if (DATA / f"reference_{name}.npz").exists():  # keep the stored frames: the renderer may have changed
            rgb = np.load(DATA / f"reference_{name}.npz")["input_rgb"]
        with tempfile.TemporaryDirectory() as tmp:
            arrays = run_reference(name, rgb, Path(tmp), checkpoint)
        np.savez_compressed(DATA / f"reference_{name}.npz", input_rgb=rgb, **arrays)
        print(f"wrote {DATA / f'reference_{name}.npz'} ({(DATA / f'reference_{name}.npz').stat().st_size} bytes)")


if __name__ == "__main__":
    main()
