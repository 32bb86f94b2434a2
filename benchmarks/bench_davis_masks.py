"""Run a recipe (default recipes/classical.yaml) on the real DAVIS clips in ../shared/data/davis (and
optionally a synthetic scene) and report the IoU of its dynamic masks against the ground-truth
object masks, plus stage timings; with --compare also for the official flow_static settings.

    python benchmarks/bench_davis_masks.py [--recipe recipes/classical.yaml] [--set KEY=VALUE ...]
        [--compare] [--synthetic] [--png DIR]

IoU is computed at network resolution; the ground-truth PNGs are mapped there by the same
`user_masks` stage users would use (resize + crop through FrameSet.network_from_original).
``--compare`` reruns the mask builder with the official flow_static settings (pose_source pair,
min-max normalisation, threshold 0.35, all pixels); flow / pairs / poses come from the store cache.
``--png DIR`` writes overlays (frame | GT | mask | error) of three frames per sequence.
The masks do not depend on the aligner: pass --set stages.global_aligner.enabled=false for speed.
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
OFFICIAL = ["stages.mask_builder.pose_source=pair", "stages.mask_builder.valid_pixels=all",
            "stages.mask_builder.normalisation=minmax", "stages.mask_builder.threshold=0.35",
            "stages.mask_builder.morph_radius=0"]


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 1.0


def overlay(path: Path, rgb: np.ndarray, gt: np.ndarray, pred: np.ndarray, err) -> None:
    """Write (3 frames) x (frame | GT | predicted mask over the frame | error) as one PNG."""
    from PIL import Image

    rows = []
    for k in (2, len(rgb) // 2, len(rgb) - 3):
        tint = rgb[k].astype(np.float32)
        tint[pred[k]] = 0.5 * tint[pred[k]] + 0.5 * np.array([255, 0, 0])
        e = np.zeros(gt[k].shape) if err is None else np.asarray(err[k])
        grey = lambda m: np.repeat((np.clip(m, 0, 1) * 255).astype(np.uint8)[..., None], 3, -1)  # noqa: E731
        rows.append(np.concatenate([rgb[k], grey(gt[k].astype(float)), tint.astype(np.uint8), grey(e)], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def evaluate(name: str, recipe: str, frames_dir: Path, out: Path, overrides: list[str], gt_mask_fn, png):
    result = run_pipeline(recipe, frames_dir, out, overrides=overrides)
    gt_mask = gt_mask_fn(result.frames)
    pred = np.asarray(result.reconstruction.dynamic, bool)
    per_frame = [iou(p, g) for p, g in zip(pred, gt_mask)]
    if png:
        from monst3r_framework.stages import DynamicMasks
        from monst3r_framework.store import RunStore

        err = None
        for r in result.reports:
            if r.kind == "mask_builder":
                err = RunStore(out / "store.zarr", lock=False).load("mask_builder", r.key, DynamicMasks).error
        overlay(Path(png) / f"{name}.png", np.asarray(result.frames.rgb), gt_mask, pred, err)
    return {"sequence": name, "frames": result.frames.n_frames, "size_hw": list(result.frames.size_hw),
            "iou_all": iou(pred, gt_mask), "iou_frame_mean": float(np.mean(per_frame)),
            "iou_frame_min": float(np.min(per_frame)), "gt_fraction": float(gt_mask.mean()),
            "pred_fraction": float(pred.mean()),
            "seconds": {r.label: round(r.seconds, 2) for r in result.reports}, "out": str(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "classical.yaml"))
    parser.add_argument("--out", default="/tmp/davis_runs")
    parser.add_argument("--sequences", nargs="*", default=["car-shadow", "blackswan"])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--compare", action="store_true", help="also run the official flow_static settings")
    parser.add_argument("--synthetic", action="store_true",
                        help="also make_scene(n_frames=20, size_hw=(144, 256), seed=0, n_objects=1) at long_edge 256")
    parser.add_argument("--png", default=None, help="folder for frame/GT/mask/error overlays")
    args = parser.parse_args()
    from monst3r_fw_reference.mask.user_masks import UserMasks, UserMasksConfig

    if args.png:
        Path(args.png).mkdir(parents=True, exist_ok=True)
    variants = [("recipe", [])] + ([("official", OFFICIAL)] if args.compare else [])
    jobs = []
    for seq in args.sequences:
        def gt_fn(frames, seq=seq):
            return np.asarray(UserMasks(UserMasksConfig(path=str(DAVIS / "Annotations" / "480p" / seq))).run(
                MaskInputs(frames=frames), RunContext()).dynamic, bool)
        jobs.append((seq, DAVIS / "JPEGImages" / "480p" / seq, [], gt_fn))
    if args.synthetic:
        from monst3r_fw_eval.synth import make_scene

        scene = make_scene(n_frames=20, size_hw=(144, 256), seed=0, n_objects=1)
        synth_dir = Path(args.out) / "synthetic_scene"
        if not (synth_dir / "frames").is_dir():
            scene.save(synth_dir)
        jobs.append(("synthetic", synth_dir / "frames", ["input.long_edge=256"], lambda frames: scene.dynamic_mask))
    rows = []
    for name, frames_dir, extra, gt_fn in jobs:
        for variant, settings in variants:
            row = evaluate(f"{name}-{variant}", args.recipe, frames_dir, Path(args.out) / name,
                           args.overrides + extra + settings, gt_fn, args.png)
            rows.append(row)
            print(json.dumps(row, indent=1))
    print(f"{'sequence':22s} {'frames':>6s} {'IoU':>6s} {'IoU/frame':>9s} {'min':>6s} {'gt%':>6s} {'pred%':>6s}")
    for r in rows:
        print(f"{r['sequence']:22s} {r['frames']:6d} {r['iou_all']:6.3f} {r['iou_frame_mean']:9.3f} "
              f"{r['iou_frame_min']:6.3f} {100 * r['gt_fraction']:6.1f} {100 * r['pred_fraction']:6.1f}")


if __name__ == "__main__":
    main()
