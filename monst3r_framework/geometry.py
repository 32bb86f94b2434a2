"""Small numpy geometry helpers shared by the core, exporters and tests (conventions: see stages.py)."""

from __future__ import annotations

import numpy as np


def pixel_grid(h: int, w: int) -> np.ndarray:
    """(H, W, 2) float64 pixel centres (x, y)."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs, ys], axis=-1).astype(np.float64)


def depth_to_cam_points(depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Back-project z-depth to camera points.

    Args:
        depth: (F, H, W) z-depth.
        intrinsics: (F, 3, 3) pixel intrinsics.
    Returns:
        (F, H, W, 3) float32 points in each camera frame.
    """
    depth = np.asarray(depth, np.float64)
    k = np.asarray(intrinsics, np.float64)
    f, h, w = depth.shape
    grid = pixel_grid(h, w)
    fx, fy = k[:, 0, 0, None, None], k[:, 1, 1, None, None]
    cx, cy = k[:, 0, 2, None, None], k[:, 1, 2, None, None]
    x = (grid[None, ..., 0] - cx) / fx * depth
    y = (grid[None, ..., 1] - cy) / fy * depth
    return np.stack([x, y, depth], axis=-1).astype(np.float32)


def transform_points(world_from_cam: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply (F, 4, 4) transforms to (F, ..., 3) points."""
    t = np.asarray(world_from_cam, np.float64)
    p = np.asarray(pts, np.float64)
    shape = p.shape
    flat = p.reshape(shape[0], -1, 3)
    out = flat @ np.swapaxes(t[:, :3, :3], 1, 2) + t[:, None, :3, 3]
    return out.reshape(shape)


def depth_to_world_points(depth: np.ndarray, intrinsics: np.ndarray, world_from_cam: np.ndarray) -> np.ndarray:
    """(F, H, W) depth + (F, 3, 3) K + (F, 4, 4) cam-to-world -> (F, H, W, 3) float32 world points."""
    return transform_points(world_from_cam, depth_to_cam_points(depth, intrinsics)).astype(np.float32)


def inv_rigid(t: np.ndarray) -> np.ndarray:
    """Inverse of (..., 4, 4) rigid transforms via the rotation transpose (exact for rotations, as evo does)."""
    out = np.zeros_like(t)
    rt = np.swapaxes(t[..., :3, :3], -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -(rt @ t[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares similarity (Umeyama 1991) mapping ``src`` onto ``dst``: ``dst ~ s R src + t``.

    Unweighted and in numpy, as evo computes it (the evaluation's parity with the TUM/evo tools
    depends on it); stages that need per-point weights use ``roma.rigid_points_registration``.

    Args:
        src, dst: (N, 3) corresponding points, N >= 2.
        with_scale: estimate s (Sim(3)); otherwise s = 1 (SE(3), Kabsch).
    Returns:
        R (3, 3) float64, t (3,) float64, s. ``s`` is inf when all ``src`` points coincide.
    """
    x = np.asarray(src, np.float64)
    y = np.asarray(dst, np.float64)
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    n = len(x)
    u, d, vt = np.linalg.svd(yc.T @ xc / n)
    s_fix = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s_fix[2] = -1.0
    rot = u @ np.diag(s_fix) @ vt
    scale = 1.0
    if with_scale:
        var_x = (xc * xc).sum() / n
        scale = float((d * s_fix).sum() / var_x) if var_x > 0 else float("inf")
    return rot, my - scale * rot @ mx, scale
