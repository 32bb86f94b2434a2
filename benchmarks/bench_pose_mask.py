"""Time ``pnp_mst`` (pose init) and ``flow_static`` (motion masks) per frame on CPU.

Default: 60 synthetic frames at 512x288 with one moving object, the demo's scene graph
``swinstride-5-noncyclic`` symmetrised (550 directed pairs), ground-truth pointmaps with a random
per-pixel confidence in [1, 6] (so the official ``conf > 3`` PnP masks select about 60% of the pixels)
and ground-truth flow. Prints seconds per frame for each stage, plus the accuracy obtained
(max relative rotation / translation-direction error, IoU of the dynamic mask).

Run:  python benchmarks/bench_pose_mask.py [--frames 60] [--size 288x512] [--workers 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np


def relative_errors(est: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    worst_r = worst_t = 0.0
    for a in range(len(gt)):
        for b in range(a + 1, len(gt)):
            re = np.linalg.inv(est[a]) @ est[b]
            rg = np.linalg.inv(gt[a]) @ gt[b]
            cos_r = (np.trace(re[:3, :3].T @ rg[:3, :3]) - 1) / 2
            te, tg = re[:3, 3] / np.linalg.norm(re[:3, 3]), rg[:3, 3] / np.linalg.norm(rg[:3, 3])
            worst_r = max(worst_r, float(np.degrees(np.arccos(np.clip(cos_r, -1, 1)))))
            worst_t = max(worst_t, float(np.degrees(np.arccos(np.clip(te @ tg, -1, 1)))))
    return worst_r, worst_t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--size", default="288x512", help="HxW")
    ap.add_argument("--workers", type=int, default=0, help="threads for PnP (0 = one per core)")
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--max-pnp-points", type=int, default=None)
    args = ap.parse_args()

    from monst3r_framework.stages import MaskInputs, PoseInputs, RunContext
    from monst3r_fw_eval.synth import make_scene
    from monst3r_fw_reference.mask.flow_static import FlowStaticConfig, FlowStaticMask
    from monst3r_fw_reference.pose import PnPMST, PnPMSTConfig

    try:
        from monst3r_framework.scene_graph import make_pairs
        pairs = make_pairs(args.frames, "swinstride-5-noncyclic", symmetrize=True)
    except ImportError:
        edges = sorted({(i, i + k) for i in range(args.frames) for k in (1, 3, 5, 7, 9) if i + k < args.frames})
        pairs = np.array(edges + [(j, i) for i, j in edges], np.int64)

    h, w = (int(v) for v in args.size.split("x"))
    t0 = time.perf_counter()
    scene = make_scene(n_frames=args.frames, size_hw=(h, w), seed=0, n_objects=1, fps=args.fps, supersample=1)
    pred = scene.pair_predictions(pairs)
    rng = np.random.default_rng(0)
    conf_i = (1.0 + 5.0 * rng.random(pred.conf_i.shape)).astype(np.float32)
    conf_j = (1.0 + 5.0 * rng.random(pred.conf_j.shape)).astype(np.float32)
    pred = dataclasses.replace(pred, conf_i=conf_i, conf_j=conf_j)
    flow = scene.flow_field(pairs)
    frames = scene.frameset()
    print(f"inputs: {args.frames} frames {w}x{h}, {len(pairs)} directed pairs, built in {time.perf_counter() - t0:.1f} s; "
          f"cpu_count={os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}")

    ctx = RunContext()
    pose_cfg = PnPMSTConfig(num_workers=args.workers, max_pnp_points=args.max_pnp_points)
    t = time.perf_counter()
    cams = PnPMST(pose_cfg).run(PoseInputs(frames=frames, predictions=pred), ctx)
    t_pose = time.perf_counter() - t
    rot, tdir = relative_errors(cams.world_from_cam, scene.cam_to_world)

    mask_cfg = FlowStaticConfig(num_workers=args.workers, max_pnp_points=args.max_pnp_points)
    t = time.perf_counter()
    masks = FlowStaticMask(mask_cfg).run(MaskInputs(frames=frames, predictions=pred, flow=flow), ctx)
    t_mask = time.perf_counter() - t
    gt = scene.dynamic_mask
    iou = float((masks.dynamic & gt).sum() / max((masks.dynamic | gt).sum(), 1))

    n = args.frames
    print(f"pnp_mst:     {t_pose:7.2f} s total, {t_pose / n * 1000:7.1f} ms/frame "
          f"(max rel rotation err {rot:.3f} deg, translation dir {tdir:.3f} deg)")
    print(f"flow_static: {t_mask:7.2f} s total, {t_mask / n * 1000:7.1f} ms/frame "
          f"({len(pairs) // 2} two-view PnP pairs; IoU vs GT dynamic mask {iou:.3f})")


if __name__ == "__main__":
    main()
