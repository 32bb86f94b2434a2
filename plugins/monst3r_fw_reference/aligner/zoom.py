"""Zoom check: does the static background change scale between adjacent frames the way a zoom does?

A shared focal (``shared_focal: true``, the official setting) cannot model a zoom: the aligner can only
explain the contraction or expansion of the image as camera motion along the optical axis, which shows
as a burst of large steps in the trajectory (DAVIS dance-twirl frames 14-19: 5-6 % contraction per frame,
13x the median step). This check is ground-truth free and reads only the flow of adjacent frames:

per adjacent pair (f, f+1), on static pixels (not in the dynamic mask, away from the border,
forward-backward consistent to ``fb_px``), two models of the flow are fitted by robust least squares
with the aligner's focal and principal point:

* rotation only: ``x' ~ K R K^-1 x`` (3 parameters), what a distant or pure-rotation background does;
* rotation + zoom: ``x' ~ K diag(s, s, 1) R K^-1 x`` (4 parameters; s = f_{f+1} / f_f).

A pair is flagged when the zoom model moves the scale by more than ``threshold`` and explains the flow
much better (its median error at most half the rotation-only error and at least ``min_gain_px`` lower).
Motion along the optical axis towards or away from a single plane is indistinguishable from a zoom in
one pair's flow, so the notice says "zoom or motion along the optical axis"; a background with depth
(ground and something behind it) that still fits rotation + zoom to a fraction of a pixel is a zoom.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .data import FlowLookup, read_flow


def _project(params: np.ndarray, pts: np.ndarray, focal: float, pp: tuple[float, float]) -> np.ndarray:
    """Pixels ``pts`` (N, 2) mapped by ``K diag(s, s, 1) R K^-1``; params = rotation vector (3) [+ log s]."""
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_rotvec(params[:3]).as_matrix()
    s = float(np.exp(params[3])) if len(params) > 3 else 1.0
    rays = np.stack([(pts[:, 0] - pp[0]) / focal, (pts[:, 1] - pp[1]) / focal, np.ones(len(pts))], 1) @ rot.T
    z = np.where(np.abs(rays[:, 2]) > 1e-9, rays[:, 2], 1e-9)
    return np.stack([s * focal * rays[:, 0] / z + pp[0], s * focal * rays[:, 1] / z + pp[1]], 1)


def fit_zoom(src: np.ndarray, dst: np.ndarray, focal: float, pp: tuple[float, float]) -> tuple[float, float, float]:
    """Fit both models to correspondences src -> dst ((N, 2) pixels). Returns (s, median error of the
    rotation-only fit, median error of the rotation + zoom fit), errors in pixels."""
    from scipy.optimize import least_squares

    def res(p):
        return (_project(p, src, focal, pp) - dst).ravel()

    rot = least_squares(res, np.zeros(3), loss="soft_l1", f_scale=1.0)
    zoom = least_squares(res, np.r_[rot.x, 0.0], loss="soft_l1", f_scale=1.0)
    err = lambda p: float(np.median(np.linalg.norm(_project(p, src, focal, pp) - dst, axis=1)))  # noqa: E731
    return float(np.exp(zoom.x[3])), err(rot.x), err(zoom.x)


def adjacent_zoom(flow, masks, n_frames: int, focal: np.ndarray, pp: np.ndarray, *, max_points: int = 1500,
                  border: float = 0.05, fb_px: float = 1.0) -> np.ndarray:
    """(F-1, 3) float64 per adjacent pair (f, f+1): zoom factor s, median error (px) of the rotation-only
    and of the rotation + zoom fit of the static flow; NaN rows where the flow has no such pair or
    fewer than 50 usable pixels. ``focal`` (F,), ``pp`` (F, 2) at network resolution."""
    import cv2

    out = np.full((max(n_frames - 1, 0), 3), np.nan)
    lookup = FlowLookup(np.asarray(flow.pairs))
    have = {tuple(p) for p in lookup.flow_pairs.tolist()}
    h, w = flow.flow_ij.shape[1:3]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    m = int(round(border * min(h, w)))
    inner = np.zeros((h, w), bool)
    inner[m:h - m, m:w - m] = True
    for f in range(n_frames - 1):
        if (f, f + 1) not in have and (f + 1, f) not in have:
            continue
        fwd = read_flow(flow, lookup, np.array([f]), np.array([f + 1]))[0]
        bwd = read_flow(flow, lookup, np.array([f + 1]), np.array([f]))[0]
        x2, y2 = xs + fwd[..., 0], ys + fwd[..., 1]
        back = cv2.remap(bwd, x2, y2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=1e6)
        ok = inner & (np.hypot(fwd[..., 0] + back[..., 0], fwd[..., 1] + back[..., 1]) < fb_px)
        ok &= (x2 >= 0) & (x2 <= w - 1) & (y2 >= 0) & (y2 <= h - 1)
        if masks is not None:
            ok &= ~np.asarray(masks.dynamic[f], bool)
        idx = np.flatnonzero(ok.ravel())
        if len(idx) < 50:
            continue
        idx = idx[np.linspace(0, len(idx) - 1, min(max_points, len(idx))).astype(np.int64)]
        src = np.stack([xs.ravel()[idx], ys.ravel()[idx]], 1).astype(np.float64)
        dst = np.stack([x2.ravel()[idx], y2.ravel()[idx]], 1).astype(np.float64)
        out[f] = fit_zoom(src, dst, float(focal[f]), (float(pp[f, 0]), float(pp[f, 1])))
    return out


def zoom_flags(fits: np.ndarray, threshold: float, min_gain_px: float = 0.5) -> np.ndarray:
    """(F-1,) bool: the adjacent pairs of :func:`adjacent_zoom`'s fits whose flow is a zoom, i.e. the zoom
    model changes the scale by more than ``threshold`` and its median error is at most half the
    rotation-only one and at least ``min_gain_px`` lower (NaN rows: False)."""
    s, e_rot, e_zoom = fits[:, 0], fits[:, 1], fits[:, 2]
    with np.errstate(invalid="ignore"):
        flagged = (np.abs(np.log(s)) > np.log1p(threshold)) & (e_zoom <= 0.5 * e_rot) & (e_rot - e_zoom >= min_gain_px)
    return np.nan_to_num(flagged, nan=0).astype(bool)


def zoom_report(fits: np.ndarray, world_from_cam: np.ndarray, threshold: float, min_gain_px: float = 0.5,
                ) -> tuple[dict[str, Any], Optional[str]]:
    """Summary entry and (when some pair is flagged) one notice line from :func:`adjacent_zoom`'s fits."""
    s, e_rot, e_zoom = fits[:, 0], fits[:, 1], fits[:, 2]
    flagged = zoom_flags(fits, threshold, min_gain_px)
    centres = np.asarray(world_from_cam, np.float64)[:, :3, 3]
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    med = float(np.median(steps)) if len(steps) else 0.0
    entry: dict[str, Any] = {"threshold": threshold, "flagged_pairs": [], "max_scale_change": None}
    finite = np.isfinite(s)
    if finite.any():
        entry["max_scale_change"] = round(float(np.max(np.abs(s[finite] - 1))), 4)
    if not flagged.any():
        return entry, None
    rows = np.flatnonzero(flagged)
    entry["flagged_pairs"] = [{"frames": [int(f), int(f) + 1], "scale": round(float(s[f]), 4),
                               "rotation_error_px": round(float(e_rot[f]), 3), "zoom_error_px": round(float(e_zoom[f]), 3),
                               "step_over_median": round(float(steps[f] / med), 2) if med > 0 else None} for f in rows]
    worst = rows[np.argmax(np.abs(np.log(s[rows])))]
    step_note = ""
    if med > 0:
        step_note = f"; camera steps there up to {float(steps[rows].max() / med):.1f}x the median step"
    line = (f"global_aligner: the static background scales like a zoom between frames {int(rows[0])}-{int(rows[-1]) + 1} "
            f"({len(rows)} adjacent pairs, up to {100 * abs(float(s[worst]) - 1):.1f}% per frame at {int(worst)}-{int(worst) + 1}: "
            f"rotation + zoom fits the flow to {float(e_zoom[worst]):.2f} px, rotation alone to {float(e_rot[worst]):.2f} px)"
            f"{step_note}. A shared focal turns a zoom into camera motion along the optical axis, so steps there may "
            "be the zoom, not the camera; shared_focal: false alone does not remove them when the pair pointmaps were "
            "made with one focal (flow_triangulation: focal_per_frame: zoom with shared_focal: auto gives each frame "
            "its own; docs/global-aligner.md, zoom check)")
    return entry, line
