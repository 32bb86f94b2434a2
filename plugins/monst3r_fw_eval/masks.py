"""Dynamic-mask metrics as DAVIS defines them: region similarity J (Jaccard / IoU) and boundary
F-measure (precision / recall of mask boundaries matched within a tolerance of 0.008 of the image
diagonal), per frame, at the original video resolution.

Follows the DAVIS benchmark's definitions (``db_eval_iou``, ``db_eval_boundary`` with ``seg2bmap``
and a disk dilation of ``ceil(0.008 * diagonal)`` pixels); written here, not copied.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["jaccard", "boundary_map", "boundary_f", "mask_to_original", "mask_metrics"]


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two (H, W) bool masks; 1.0 when both are empty (DAVIS convention)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool one-pixel-wide boundary of a mask (DAVIS ``seg2bmap`` at the mask's own size):
    a pixel is on the boundary when it differs from its east, south or south-east neighbour."""
    seg = np.asarray(mask, bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> tuple[float, float, float]:
    """(F, precision, recall) of the boundaries of two (H, W) bool masks.

    A boundary pixel matches when the other mask's boundary lies within ``ceil(bound_th * diagonal)``
    pixels (a disk). Empty boundaries: both empty -> (1, 1, 1); one empty -> that side's precision
    or recall is 1 and the other 0.
    """
    import cv2

    h, w = np.asarray(gt).shape
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(h, w))
    fg_b, gt_b = boundary_map(pred), boundary_map(gt)
    disk = _disk(int(radius))
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), disk) > 0
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), disk) > 0
    n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
    if n_fg == 0 and n_gt == 0:
        return 1.0, 1.0, 1.0
    if n_fg == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = float((fg_b & gt_dil).sum() / n_fg)
        recall = float((gt_b & fg_dil).sum() / n_gt)
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return f, precision, recall


def mask_to_original(mask: np.ndarray, network_from_original: np.ndarray, original_hw: tuple[int, int]) -> np.ndarray:
    """(F, h, w) network-resolution masks -> (F, H, W) at the original resolution.

    Each original pixel centre is mapped through the recorded resize + crop (``network_from_original``,
    3x3) and takes the value of the nearest network pixel; original pixels the crop removed are static.
    """
    mask = np.asarray(mask, bool)
    n, h, w = mask.shape
    oh, ow = original_hw
    ys, xs = np.mgrid[0:oh, 0:ow]
    src = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3).astype(np.float64) @ np.asarray(
        network_from_original, np.float64).T
    nx, ny = np.rint(src[:, 0]).astype(np.int64), np.rint(src[:, 1]).astype(np.int64)
    inside = (nx >= 0) & (nx < w) & (ny >= 0) & (ny < h)
    flat = np.where(inside, ny.clip(0, h - 1) * w + nx.clip(0, w - 1), 0)
    out = mask.reshape(n, -1)[:, flat] & inside[None]
    return out.reshape(n, oh, ow)


def mask_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    """Per-frame and mean J (IoU) and F of (F, H, W) bool masks at one resolution."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask_metrics: predicted masks {pred.shape} and ground truth {gt.shape} differ in shape")
    j = [jaccard(p, g) for p, g in zip(pred, gt)]
    f = [boundary_f(p, g)[0] for p, g in zip(pred, gt)]
    return {"J_mean": float(np.mean(j)), "F_mean": float(np.mean(f)), "JF_mean": float((np.mean(j) + np.mean(f)) / 2),
            "iou_all": jaccard(pred, gt), "J_per_frame": [float(v) for v in j], "F_per_frame": [float(v) for v in f]}
