"""Metrics of one batch video against its ground truth (the ``batch`` evaluator).

``evaluate_item(result, item)`` is what ``monst3r-fw batch`` calls in the worker for a manifest row
with ``gt``: ATE / RPE (Sim(3)-aligned, as MonST3R), depth Abs Rel and δ<1.25 (median-aligned
first, then scale & shift), and the IoU of the dynamic mask over all frames.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from monst3r_framework.errors import InputError


def mask_iou(pred: np.ndarray, gt: np.ndarray, network_from_original: Any) -> float:
    """IoU over a whole sequence of the predicted dynamic masks against ground truth.

    Args:
        pred: (F, H, W) bool, network resolution.
        gt: (F, h, w) bool, original resolution; mapped to network pixels with the same affine
            resize/crop the frames went through (nearest neighbour), so IoU is at network resolution.
        network_from_original: 3x3 (or 2x3) affine, original pixel (x, y, 1) -> network pixel.
    Returns:
        |pred ∧ gt| / |pred ∨ gt| summed over all frames; 1.0 when both are empty everywhere.
    """
    import cv2

    pred = np.asarray(pred, bool)
    gt = np.asarray(gt, bool)
    if len(pred) != len(gt):
        raise InputError(f"mask IoU: {len(pred)} predicted masks against {len(gt)} ground-truth masks")
    h, w = pred.shape[1:]
    if gt.shape[1:] != (h, w):
        affine = np.asarray(network_from_original, np.float64)[:2]
        gt = np.stack([cv2.warpAffine(g.astype(np.uint8), affine, (w, h), flags=cv2.INTER_NEAREST) > 0 for g in gt])
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def evaluate_item(result: Any, item: Any, *, pose_align: str = "sim3",
                  depth_align: Sequence[str] = ("median", "scale_shift"), full: bool = False) -> dict[str, Any]:
    """Metrics of a finished batch video (``RunResult``) against ``item.gt`` (read by ``item.dataset``).

    Returns ATE, RPE, ATE % of path, Abs Rel and δ<1.25 (first depth alignment) and ``mask_iou``
    where the ground truth has dynamic masks; ``full=True`` keeps every detail of
    ``evaluate_predictions`` (per-alignment depth metrics, pose details, the masks' J and F at the
    original resolution: what ``monst3r-fw eval`` gives for the run, and what ``eval-suite`` tabulates).
    """
    from .datasets import read_sequence
    from .evaluate import RunPredictions, evaluate_predictions

    sequence = read_sequence(item.dataset, item.gt, item.seq)
    rec, frames = result.reconstruction, result.frames
    dynamic = getattr(rec, "dynamic", None)
    masks: dict[str, Any] = {}
    if full and dynamic is not None:  # the masks' J and F at the original resolution, as `monst3r-fw eval`
        masks = {"dynamic": np.asarray(dynamic, bool),
                 "network_from_original": np.asarray(frames.network_from_original, np.float64),
                 "original_hw": tuple(int(v) for v in frames.original_hw)}
    preds = RunPredictions(np.asarray(rec.world_from_cam, np.float64), np.asarray(rec.depth, np.float32),
                           np.asarray(frames.frame_index, np.int64), str(result.out_dir), **masks)
    res = evaluate_predictions(preds, sequence, pose_align=pose_align, depth_align=tuple(depth_align))
    out = dict(res) if full else {k: res.get(k) for k in ("ate", "rpe_trans", "rpe_rot", "ate_percent_of_path",
                                                            "abs_rel", "delta_1.25") if res.get(k) is not None}
    if sequence.dynamic_mask is not None and dynamic is not None:
        ids = np.asarray(frames.frame_index, np.int64)
        if ids.max(initial=-1) < len(sequence.dynamic_mask):
            out["mask_iou"] = mask_iou(np.asarray(rec.dynamic), sequence.dynamic_mask[ids], frames.network_from_original)
    return out
