"""Evaluate a run against ground truth: read the predictions (from the run store or the
``monst3r_layout`` export), read the ground truth with a dataset reader, and compute the metrics.

Predictions are matched to ground-truth frames through ``FrameSet.frame_index`` (the index of each
processed frame in the original video / sorted image folder) when the run store is readable, and by
position otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from monst3r_framework.errors import InputError
from .datasets import Sequence, read_sequence, tum_poses
from .metrics import evaluate

__all__ = ["RunPredictions", "load_run_predictions", "read_monst3r_layout", "evaluate_predictions",
           "evaluate_reconstruction", "evaluate_run"]


class RunPredictions:
    """world_from_cam (N, 4, 4) float64, depth (N, h, w) float32, frame_index (N,) int64, source str;
    optionally dynamic (N, h, w) bool masks at network resolution with the FrameSet's
    network_from_original (3x3) and original_hw, to score them at the original resolution."""

    def __init__(self, world_from_cam: np.ndarray, depth: Optional[np.ndarray], frame_index: np.ndarray, source: str,
                 dynamic: Optional[np.ndarray] = None, network_from_original: Optional[np.ndarray] = None,
                 original_hw: Optional[tuple[int, int]] = None):
        self.world_from_cam = world_from_cam
        self.depth = depth
        self.frame_index = frame_index
        self.source = source
        self.dynamic = dynamic
        self.network_from_original = network_from_original
        self.original_hw = original_hw


def read_monst3r_layout(folder: str | Path) -> RunPredictions:
    """Read the official MonST3R output layout: ``pred_traj.txt`` (``t x y z qw qx qy qz``) and
    ``frame_XXXX.npy`` depth maps (float32, network resolution)."""
    d = Path(folder)
    traj = d / "pred_traj.txt"
    if not traj.is_file():
        raise InputError(f"{d}: no pred_traj.txt; point at a run folder with a monst3r_layout export")
    rows = np.array([[float(v) for v in line.split()] for line in traj.read_text().splitlines() if line.strip()])
    if rows.ndim != 2 or rows.shape[1] != 8:
        raise InputError(f"{traj}: expected 8 numbers per line (t x y z qw qx qy qz), got shape {rows.shape}")
    _, c2w = tum_poses(rows[:, [0, 1, 2, 3, 5, 6, 7, 4]])  # the file is w-first
    depth_files = sorted(d.glob("frame_*.npy"))
    depth = np.stack([np.load(p).astype(np.float32) for p in depth_files]) if depth_files else None
    if depth is not None and len(depth) != len(c2w):
        raise InputError(f"{d}: {len(depth_files)} frame_*.npy depth maps but {len(c2w)} poses in pred_traj.txt")
    return RunPredictions(c2w, depth, rows[:, 0].astype(np.int64), f"{d} (monst3r_layout)")


def _from_store(run_dir: Path) -> Optional[RunPredictions]:
    """The run's final reconstruction from its Zarr store, or None if the store cannot be read."""
    status = run_dir / "run.json"
    if not status.is_file():
        return None
    try:
        info = json.loads(status.read_text())
        from monst3r_framework.stages import CameraTrajectory, FrameSet, Reconstruction
        from monst3r_framework.store import RunStore

        store = RunStore(info["store"], lock=False)
        try:
            keys = store.runs().get(info["run_id"], {}).get("keys", {})
            aligner = keys.get("global_aligner")
            if aligner and aligner != "disabled":
                rec = store.load("global_aligner", aligner, Reconstruction)
            else:
                rec = store.load("pose_solver", keys["pose_solver"], CameraTrajectory)
            c2w = np.asarray(rec.world_from_cam, np.float64)
            depth = np.asarray(rec.depth, np.float32)
            frame_index = np.arange(len(c2w), dtype=np.int64)
            dynamic = mapping = original_hw = None
            if getattr(rec, "dynamic", None) is not None:
                dynamic = np.asarray(rec.dynamic, bool)
            elif keys.get("mask_builder") and keys["mask_builder"] != "disabled":
                # no aligner (its Reconstruction carries the masks): score the mask builder's own
                from monst3r_framework.stages import DynamicMasks

                dynamic = np.asarray(store.load("mask_builder", keys["mask_builder"], DynamicMasks).dynamic, bool)
            if keys.get("frames"):
                frames = store.load("frames", keys["frames"], FrameSet)
                frame_index = np.asarray(frames.frame_index, np.int64)
                mapping = np.asarray(frames.network_from_original, np.float64)
                original_hw = tuple(int(v) for v in frames.original_hw)
        finally:
            store.close()
        return RunPredictions(c2w, depth, frame_index, f"{info['store']} (run {info['run_id']})", dynamic, mapping,
                              original_hw)
    except (KeyError, ValueError, OSError, TypeError, InputError):
        return None
    except Exception:  # a store written by another version: fall back to the exported files
        return None


def load_run_predictions(run_dir: str | Path) -> RunPredictions:
    """Predictions of a run folder: its store if readable, else ``RUN_DIR/monst3r_layout`` (or RUN_DIR
    itself when it holds ``pred_traj.txt``)."""
    d = Path(run_dir)
    if not d.exists():
        raise InputError(f"run folder {d} does not exist; pass the OUT folder of `monst3r-fw run`")
    preds = _from_store(d)
    if preds is not None:
        return preds
    for cand in (d / "monst3r_layout", d):
        if (cand / "pred_traj.txt").is_file():
            return read_monst3r_layout(cand)
    raise InputError(f"{d}: neither a readable run store (run.json) nor a monst3r_layout export (pred_traj.txt); "
                     "run with the monst3r_layout exporter or point at the run's OUT folder")


def evaluate_predictions(preds: RunPredictions, gt: Sequence, *, pose_align: str = "sim3",
                         depth_align: tuple[str, ...] = ("median", "scale_shift")) -> dict[str, Any]:
    """Metrics of predictions against one ground-truth sequence, with the dataset's depth settings."""
    ids = np.asarray(preds.frame_index, np.int64)
    n_gt = gt.n_frames
    if len(ids) and (ids.min() < 0 or ids.max() >= n_gt):
        if len(preds.world_from_cam) <= n_gt:
            ids = np.arange(len(preds.world_from_cam))
        else:
            raise InputError(f"{gt.dataset}/{gt.name}: run has {len(preds.world_from_cam)} frames, ground truth "
                             f"{n_gt}; evaluate the run against the sequence it was made from")
    poses = preds.world_from_cam if gt.cam_to_world is not None else None
    depth = preds.depth if gt.depth is not None else None
    masks = _mask_scores(preds, gt, ids)
    if poses is None and depth is None and masks is None:
        raise InputError(f"{gt.dataset}/{gt.name}: the dataset has neither ground-truth poses, depth nor masks to "
                         "evaluate (or the run has no dynamic masks)")
    if poses is not None and len(ids) < 3:
        poses = None  # Sim(3) alignment and RPE need at least 3 poses
    out: dict[str, Any] = {}
    if poses is not None or depth is not None:
        out = evaluate(poses, depth, gt, pose_align=pose_align, depth_align=depth_align,  # type: ignore[arg-type]
                       max_depth=gt.depth_eval.get("max_depth"), post_clip_max=gt.depth_eval.get("post_clip_max"),
                       frame_ids=ids)
    if masks is not None:
        out["masks"] = masks
    out.update({"dataset": gt.dataset, "sequence": gt.name, "n_frames": int(len(ids)), "predictions": preds.source})
    return out


def _mask_scores(preds: RunPredictions, gt: Sequence, ids: np.ndarray) -> Optional[dict[str, Any]]:
    """DAVIS J and F of the run's dynamic masks at the ground truth's (original) resolution, or None."""
    from .masks import mask_metrics, mask_to_original

    if gt.dynamic_mask is None or preds.dynamic is None:
        return None
    gt_masks = np.asarray(gt.dynamic_mask, bool)[ids]
    oh, ow = gt_masks.shape[1:]
    if preds.network_from_original is not None and preds.original_hw is not None:
        if tuple(preds.original_hw) != (oh, ow):
            raise InputError(f"{gt.dataset}/{gt.name}: the run's frames were {preds.original_hw[1]}x{preds.original_hw[0]}, "
                             f"the ground-truth masks {ow}x{oh}; evaluate against the resolution the run read")
        pred = mask_to_original(preds.dynamic, preds.network_from_original, (oh, ow))
    else:  # no recorded mapping: plain nearest resize
        h, w = preds.dynamic.shape[1:]
        ys = np.clip(((np.arange(oh) + 0.5) * h / oh).astype(np.int64), 0, h - 1)
        xs = np.clip(((np.arange(ow) + 0.5) * w / ow).astype(np.int64), 0, w - 1)
        pred = preds.dynamic[:, ys][:, :, xs]
    return mask_metrics(pred, gt_masks)


def evaluate_reconstruction(reconstruction: Any, frames: Any, gt_path: str | Path, dataset: str = "synthetic",
                            seq: Optional[str] = None, **kwargs: Any) -> dict[str, Any]:
    """Metrics of an in-memory :class:`~monst3r_framework.stages.Reconstruction` (with its FrameSet)."""
    preds = RunPredictions(np.asarray(reconstruction.world_from_cam, np.float64),
                           np.asarray(reconstruction.depth, np.float32),
                           np.asarray(frames.frame_index, np.int64), "in-memory reconstruction")
    return evaluate_predictions(preds, read_sequence(dataset, gt_path, seq), **kwargs)


def evaluate_run(run_dir: str | Path, gt_path: str | Path, dataset: str = "synthetic", seq: Optional[str] = None,
                 **kwargs: Any) -> dict[str, Any]:
    """Metrics of a finished run folder against a ground-truth sequence."""
    return evaluate_predictions(load_run_predictions(run_dir), read_sequence(dataset, gt_path, seq), **kwargs)
