"""Run a recipe (default recipes/classical.yaml) on the real DAVIS clips in ../shared/data/davis and
report the IoU of its dynamic masks against the ground-truth object masks, plus stage timings.

    python benchmarks/bench_davis_masks.py [--recipe recipes/classical.yaml] [--set KEY=VALUE ...]

IoU is computed at network resolution; the ground-truth PNGs are mapped there by the same
`user_masks` stage users would use (resize + crop through FrameSet.network_from_original).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from monst3r_framework.runner import run_pipeline
from monst3r_framework.stages import MaskInputs, RunContext

REPO = Path(__file__).resolve().parents[1]
DAVIS = (REPO / ".." / "shared" / "data" / "davis").resolve()


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "classical.yaml"))
    parser.add_argument("--out", default="/tmp/davis_runs")
    parser.add_argument("--sequences", nargs="*", default=["car-shadow", "blackswan"])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    from monst3r_fw_reference.mask import UserMasks, UserMasksConfig

    rows = []
    for seq in args.sequences:
        frames_dir = DAVIS / "JPEGImages" / "480p" / seq
        out = Path(args.out) / seq
        result = run_pipeline(args.recipe, frames_dir, out, overrides=args.overrides)
        gt = UserMasks(UserMasksConfig(path=str(DAVIS / "Annotations" / "480p" / seq))).run(
            MaskInputs(frames=result.frames), RunContext())
        pred = np.asarray(result.reconstruction.dynamic, bool)
        gt_mask = np.asarray(gt.dynamic, bool)
        per_frame = [iou(p, g) for p, g in zip(pred, gt_mask)]
        row = {"sequence": seq, "frames": result.frames.n_frames, "size_hw": list(result.frames.size_hw),
               "iou_all": iou(pred, gt_mask), "iou_frame_mean": float(np.mean(per_frame)),
               "iou_frame_min": float(np.min(per_frame)), "gt_fraction": float(gt_mask.mean()),
               "pred_fraction": float(pred.mean()),
               "seconds": {r.label: round(r.seconds, 2) for r in result.reports}, "out": str(out)}
        rows.append(row)
        print(json.dumps(row, indent=1))
    print(f"{'sequence':12s} {'frames':>6s} {'IoU':>6s} {'IoU/frame':>9s} {'min':>6s} {'gt%':>6s} {'pred%':>6s}")
    for r in rows:
        print(f"{r['sequence']:12s} {r['frames']:6d} {r['iou_all']:6.3f} {r['iou_frame_mean']:9.3f} "
              f"{r['iou_frame_min']:6.3f} {100 * r['gt_fraction']:6.1f} {100 * r['pred_fraction']:6.1f}")


if __name__ == "__main__":
    main()
