"""Run folders written straight from a synthetic scene, without running the pipeline (tests and
``benchmarks/bench_viewer.py``): the store holds the scene's exact cameras, depth and masks as the
pose solver's, mask builder's and global aligner's outputs, in the layout the runner writes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def write_synthetic_run(out_dir: Path, scene: Any, *, stages: Sequence[str] = ("pose_solver", "mask_builder", "global_aligner"),
                        status: str = "complete", run_id: str = "synthetic-run", seed: int = 0) -> Path:
    """Write ``out_dir/run.json`` and ``out_dir/store.zarr`` for a :class:`~monst3r_fw_eval.synth.SyntheticScene`.

    Confidence is uniform in [1, 5) per pixel (seeded), so thresholds select known fractions.
    ``stages`` lists the stage kinds to store (leave out "global_aligner" for a run whose aligner
    has not finished); ``status`` is written to run.json ("complete" lists every stored stage).
    """
    from monst3r_framework.geometry import depth_to_world_points
    from monst3r_framework.geometry import inv_rigid, transform_points
    from monst3r_framework.stages import CameraTrajectory, DynamicMasks, FrameSet, PairPredictions, Reconstruction
    from monst3r_framework.store import RunStore, digest

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n, (h, w) = scene.n_frames, scene.size_hw
    rng = np.random.default_rng(seed)
    conf = rng.uniform(1.0, 5.0, (n, h, w)).astype(np.float32)
    k = np.repeat(np.asarray(scene.K, np.float64)[None], n, axis=0)
    c2w = np.asarray(scene.cam_to_world, np.float64)
    depth = np.asarray(scene.depth, np.float32)
    frames = FrameSet(rgb=scene.rgb, frame_index=np.arange(n, dtype=np.int64),
                      timestamps=np.asarray(scene.timestamps, np.float64), original_hw=(h, w),
                      network_from_original=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), source=str(out_dir))
    world = depth_to_world_points(depth, k, c2w)
    # pairs (0, j) for every j, both pointmaps in camera 0 (DUSt3R convention), same confidence
    pairs = np.array([[0, j] for j in range(1, n)], np.int64)
    cam0_from_world = np.repeat(inv_rigid(c2w[:1]), len(pairs), axis=0)
    records: dict[str, Any] = {
        "pair_predictor": PairPredictions(
            pairs=pairs, pts3d_i=transform_points(cam0_from_world, np.repeat(world[:1], len(pairs), 0)).astype(np.float32),
            pts3d_j=transform_points(cam0_from_world, world[1:]).astype(np.float32),
            conf_i=np.repeat(conf[:1], len(pairs), 0), conf_j=conf[1:]),
        "pose_solver": CameraTrajectory(world_from_cam=c2w, intrinsics=k, depth=depth, conf=conf),
        "mask_builder": DynamicMasks(dynamic=scene.dynamic_mask, source="synthetic"),
        "global_aligner": Reconstruction(world_from_cam=c2w, intrinsics=k, intrinsics_original=k, depth=depth,
                                         conf=conf, pts3d_world=world,
                                         dynamic=scene.dynamic_mask,
                                         loss_history=np.linspace([3.0, 1.0], [1.0, 0.1], 50).astype(np.float32),
                                         loss_names=("alignment", "flow")),
    }
    types = {"pair_predictor": "synthetic_gt", "pose_solver": "synthetic_gt", "mask_builder": "synthetic_gt", "global_aligner": "synthetic_gt"}
    store_path = out_dir / "store.zarr"
    keys = {"frames": digest({"synthetic": run_id, "n": n, "hw": [h, w]})}
    reports = []
    with RunStore(store_path) as store:
        store.begin("frames", keys["frames"], {"kind": "frames"})
        store.commit("frames", keys["frames"], frames, 0.01)
        reports.append({"kind": "frames", "type": "loader", "key": keys["frames"], "cached": False, "seconds": 0.01,
                        "label": "frames", "resumed": False})
        for kind in ("pair_predictor", "pose_solver", "mask_builder", "global_aligner"):
            if kind not in stages:
                continue
            upstream = {u: keys[u] for u in ("frames", "pair_predictor", "pose_solver", "mask_builder") if u in keys}
            keys[kind] = digest({"kind": kind, "upstream": upstream})
            store.begin(kind, keys[kind], {"kind": kind, "type": types[kind], "run_id": run_id, "upstream": upstream,
                                           "config": {}})
            store.commit(kind, keys[kind], records[kind], 0.1)
            reports.append({"kind": kind, "type": types[kind], "key": keys[kind], "cached": False, "seconds": 0.1,
                            "label": f"{kind} ({types[kind]})", "resumed": False})
        base = {"run_id": run_id, "input": str(out_dir), "store": str(store_path), "recipe": "synthetic",
                "device": "cpu", "started": time.time()}
        if status == "complete":
            store.write_run(run_id, {**base, "status": "complete", "stages": reports, "keys": keys})
            payload = {**base, "status": "complete", "finished": time.time(), "seconds": 1.0, "stages": reports}
        else:
            store.write_run(run_id, {**base, "status": status})
            payload = {**base, "status": status}
    (out_dir / "run.json").write_text(json.dumps(payload, indent=2))
    return out_dir
