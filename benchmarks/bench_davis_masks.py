"""Run a recipe (default recipes/classical.yaml) on DAVIS-layout clips and report, per clip, the IoU
of its dynamic masks against the ground-truth object masks, the seconds per stage, the store size
and the camera trajectory's largest step relative to its median step.

    python benchmarks/bench_davis_masks.py [--root DIR] [--sequences NAME ...] [--num-frames 40]
        [--long-edge 256] [--recipe recipes/classical.yaml] [--set KEY=VALUE ...] [--compare]
        [--synthetic] [--png DIR] [--json FILE] [--out DIR]

``--root`` is any folder with the DAVIS layout ``JPEGImages/480p/<seq>/*.jpg`` and
``Annotations/480p/<seq>/*.png`` (default ../shared/data/davis); ``--sequences`` defaults to every
sequence in it that has annotations. Each clip is its first ``--num-frames`` frames at
``--long-edge`` (default 40 frames at 256, i.e. 256x144 for 854x480 DAVIS).

IoU is computed at network resolution; the ground-truth PNGs are mapped there by the same
`user_masks` stage users would use (resize + crop through FrameSet.network_from_original).
``--compare`` reruns the mask builder with the official flow_static settings (pose_source pair,
min-max normalisation, threshold 0.35, all pixels); flow / pairs / poses come from the store cache.
``--png DIR`` writes overlays (frame | GT | mask | error) of three frames per sequence.
The masks do not depend on the aligner: pass --set stages.global_aligner.enabled=false for speed
(the trajectory figures are then those of the pose solver).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

from monst3r_framework.runner import run_pipeline
from monst3r_framework.stages import MaskInputs, RunContext

REPO = Path(__file__).resolve().parents[1]
DAVIS = (REPO / ".." / "shared" / "data" / "davis").resolve()
OFFICIAL = ["stages.mask_builder.type=flow_static", "stages.mask_builder.pose_source=pair",
            "stages.mask_builder.valid_pixels=all", "stages.mask_builder.normalisation=minmax",
            "stages.mask_builder.threshold=0.35", "stages.mask_builder.morph_radius=0",
            "stages.mask_builder.background_model=dominant", "stages.mask_builder.pair_weight_power=0",
            "stages.mask_builder.evidence_pixels=valid", "stages.mask_builder.median_floor_px=0",
            "stages.mask_builder.temporal_radius=0", "stages.mask_builder.min_component=0"]


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 1.0


def davis_sequences(root: Path) -> list[str]:
    """Sequences of a DAVIS-layout folder that have both frames and annotations."""
    img, ann = root / "JPEGImages" / "480p", root / "Annotations" / "480p"
    return sorted(p.name for p in img.iterdir() if p.is_dir() and (ann / p.name).is_dir())


def trajectory_steps(world_from_cam: np.ndarray) -> dict:
    """Largest camera-centre step relative to the median step, and where it is."""
    steps = np.linalg.norm(np.diff(np.asarray(world_from_cam)[:, :3, 3], axis=0), axis=1)
    med = float(np.median(steps))
    k = int(np.argmax(steps))
    return {"max_over_median_step": float(steps[k] / med) if med > 0 else float("inf"),
            "max_step_between": [k, k + 1]}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


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
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    result = run_pipeline(recipe, frames_dir, out, overrides=overrides)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    gt_mask = gt_mask_fn(result.frames)
    pred = np.asarray(result.reconstruction.dynamic, bool)
    per_frame = [iou(p, g) for p, g in zip(pred, gt_mask)]
    store = Path(result.store_location)
    used = {f"{r.kind}": dir_bytes(store / "stages" / r.kind / r.key) for r in result.reports
            if (store / "stages" / r.kind / r.key).is_dir()}
    err = None
    for r in result.reports:
        if r.kind == "mask_builder":
            from monst3r_framework.stages import DynamicMasks
            from monst3r_framework.store import RunStore

            err = RunStore(store, lock=False).load("mask_builder", r.key, DynamicMasks).error
    if png:
        overlay(Path(png) / f"{name}.png", np.asarray(result.frames.rgb), gt_mask, pred, err)
    row = {"sequence": name, "frames": result.frames.n_frames, "size_hw": list(result.frames.size_hw),
           "iou_all": iou(pred, gt_mask), "iou_frame_mean": float(np.mean(per_frame)),
           "iou_frame_min": float(np.min(per_frame)), "gt_fraction": float(gt_mask.mean()),
           "pred_fraction": float(pred.mean()), "empty_frames": int((pred.reshape(len(pred), -1).mean(1) < 1e-3).sum()),
           "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "load_avg_1min": round(os.getloadavg()[0], 1),
           "seconds": {r.label: round(r.seconds, 2) for r in result.reports if not r.cached},
           "stage_mb": {k: round(v / 2**20, 1) for k, v in used.items()},
           "store_mb": round(sum(used.values()) / 2**20, 1), "out": str(out)}
    row.update(trajectory_steps(np.asarray(result.reconstruction.world_from_cam)))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "classical.yaml"))
    parser.add_argument("--root", default=str(DAVIS), help="DAVIS-layout folder (JPEGImages/480p, Annotations/480p)")
    parser.add_argument("--out", default="/tmp/davis_runs")
    parser.add_argument("--sequences", nargs="*", default=None, help="default: every annotated sequence in --root")
    parser.add_argument("--num-frames", type=int, default=40)
    parser.add_argument("--long-edge", type=int, default=256)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--compare", action="store_true", help="also run the official flow_static settings")
    parser.add_argument("--synthetic", action="store_true",
                        help="also make_scene(n_frames=20, size_hw=(144, 256), seed=0, n_objects=1) at long_edge 256")
    parser.add_argument("--png", default=None, help="folder for frame/GT/mask/error overlays")
    parser.add_argument("--json", default=None, help="write all rows to this JSON file")
    args = parser.parse_args()
    from monst3r_fw_reference.mask.user_masks import UserMasks, UserMasksConfig

    root = Path(args.root).expanduser().resolve()
    sequences = args.sequences if args.sequences else davis_sequences(root)
    if args.png:
        Path(args.png).mkdir(parents=True, exist_ok=True)
    variants = [("recipe", [])] + ([("official", OFFICIAL)] if args.compare else [])
    size = [f"input.long_edge={args.long_edge}", f"input.num_frames={args.num_frames}"]
    jobs = []
    for seq in sequences:
        def gt_fn(frames, seq=seq):
            return np.asarray(UserMasks(UserMasksConfig(path=str(root / "Annotations" / "480p" / seq))).run(
                MaskInputs(frames=frames), RunContext()).dynamic, bool)
        jobs.append((seq, root / "JPEGImages" / "480p" / seq, size, gt_fn))
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
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"{'sequence':24s} {'IoU':>6s} {'IoU/fr':>6s} {'min':>6s} {'gt%':>5s} {'pred%':>5s} {'empty':>5s} "
          f"{'wall s':>7s} {'cpu s':>7s} {'MB':>6s} {'max/med step':>12s}")
    for r in rows:
        print(f"{r['sequence']:24s} {r['iou_all']:6.3f} {r['iou_frame_mean']:6.3f} {r['iou_frame_min']:6.3f} "
              f"{100 * r['gt_fraction']:5.1f} {100 * r['pred_fraction']:5.1f} {r['empty_frames']:5d} "
              f"{r['wall_seconds']:7.1f} {r['cpu_seconds']:7.1f} {r['store_mb']:6.1f} {r['max_over_median_step']:12.2f}")
    real = [r["iou_all"] for r in rows if not r["sequence"].startswith("synthetic") and r["sequence"].endswith("-recipe")]
    if real:
        print(f"mean IoU over {len(real)} clips: {np.mean(real):.3f}, min {np.min(real):.3f}")


if __name__ == "__main__":
    main()
