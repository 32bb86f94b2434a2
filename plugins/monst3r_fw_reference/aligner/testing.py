"""Synthetic aligner inputs with known ground truth (used by tests and benchmarks/bench_aligner.py).

Pair pointmaps are the exact ones of a :mod:`monst3r_fw_eval.synth` scene, perturbed by
multiplicative per-pixel depth noise and one random scale per edge; flow is exact; the
initial trajectory imitates a pose solver (perturbed poses, focal and depth at an arbitrary scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monst3r_framework.geometry import umeyama
from monst3r_framework.stages import AlignerInputs, CameraTrajectory, DynamicMasks, FlowField, PairPredictions


def swinstride_pairs(n_frames: int, window: int = 5, symmetrize: bool = True) -> np.ndarray:
    """(P, 2) int64 directed pairs of MonST3R's ``swinstride-K-noncyclic`` graph (partners i+1, i+3, ...)."""
    edges = [(i, i + d) for d in range(1, 2 * window, 2) for i in range(n_frames - d)]
    if symmetrize:
        edges += [(j, i) for i, j in edges]
    return np.asarray(edges, dtype=np.int64).reshape(-1, 2)


@dataclass
class SyntheticCase:
    inputs: AlignerInputs
    gt_world_from_cam: np.ndarray  # (F, 4, 4)
    gt_depth: np.ndarray  # (F, H, W)
    gt_K: np.ndarray  # (3, 3)


def make_case(scene, pairs: np.ndarray, *, depth_noise: float = 0.02, edge_scale_range: float = 2.0,
              init_rot_deg: float = 1.0, init_trans_frac: float = 0.05, init_focal_err: float = 0.05,
              seed: int = 0, with_flow: bool = True, with_masks: bool = True,
              conf: float | str = 2.0, depth_warp: float = 0.0) -> SyntheticCase:
    """Aligner inputs for a synthetic scene.

    Args:
        scene: a ``monst3r_fw_eval.synth.SyntheticScene``.
        pairs: (P, 2) directed pairs.
        depth_noise: std of the per-pixel multiplicative noise on both pointmaps of every edge.
        edge_scale_range: each edge is scaled by a log-uniform factor in [1/r, r].
        init_rot_deg, init_trans_frac, init_focal_err: perturbations of the initial trajectory
            (rotation std in degrees, translation std as a fraction of the mean camera step, focal error).
        conf: the pair confidence of every pixel (the aligner weighs pixels by log(conf)), or
            ``"calibrated"``: the confidence a network trained with DUSt3R's confidence-aware loss
            would report for this noise (see :func:`calibrated_confidence`).
        depth_warp: amplitude of a smooth per-edge depth error (errors of a real network are
            correlated across the image, so each edge's implied relative pose is off and poses
            jitter): both pointmaps of an edge are multiplied by ``1 + depth_warp * (a x + b y)``,
            x, y in [-1, 1] over the image, a, b ~ N(0, 1) per edge and view.
    """
    rng = np.random.default_rng(seed)
    pred = scene.pair_predictions(pairs, conf=2.0 if isinstance(conf, str) else float(conf))
    p = len(pairs)
    scales = np.exp(rng.uniform(-np.log(edge_scale_range), np.log(edge_scale_range), p)).astype(np.float32)
    shape = pred.pts3d_i.shape[:3]
    n_i = (1 + depth_noise * rng.standard_normal(shape)).astype(np.float32)
    n_j = (1 + depth_noise * rng.standard_normal(shape)).astype(np.float32)
    if depth_warp > 0:
        h, w = shape[1:]
        yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
        for n in (n_i, n_j):
            ab = rng.standard_normal((p, 2))
            n *= (1 + depth_warp * (ab[:, 0, None, None] * xx + ab[:, 1, None, None] * yy)).astype(np.float32)
    pts_i = pred.pts3d_i * (n_i * scales[:, None, None])[..., None]
    pts_j = pred.pts3d_j * (n_j * scales[:, None, None])[..., None]
    conf_i, conf_j = pred.conf_i, pred.conf_j
    if conf == "calibrated":
        conf_i, conf_j = calibrated_confidence(pred.pts3d_i, pred.pts3d_j, depth_noise)
    elif isinstance(conf, str):
        raise ValueError(f"conf={conf!r}: expected a number or 'calibrated'")
    preds = PairPredictions(pairs=pred.pairs, pts3d_i=pts_i, pts3d_j=pts_j, conf_i=conf_i, conf_j=conf_j)
    flow = scene.flow_field(pairs) if with_flow else None
    masks = DynamicMasks(dynamic=scene.dynamic_mask.copy()) if with_masks else None

    gt = np.asarray(scene.cam_to_world, np.float64)
    n = len(gt)
    steps = np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1)
    step = float(steps.mean()) if len(steps) else 1.0
    glob = 0.7  # the pose solver works at its own scale
    init = gt.copy()
    for f in range(n):
        axis = rng.standard_normal(3)
        axis /= np.linalg.norm(axis)
        ang = np.deg2rad(init_rot_deg) * rng.standard_normal()
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rot = np.eye(3) + np.sin(ang) * k + (1 - np.cos(ang)) * k @ k
        init[f, :3, :3] = rot @ gt[f, :3, :3]
        init[f, :3, 3] = gt[f, :3, 3] + init_trans_frac * step * rng.standard_normal(3)
    init[:, :3, 3] *= glob
    k0 = np.repeat(np.asarray(scene.K, np.float64)[None], n, axis=0)
    k0[:, 0, 0] *= 1 + init_focal_err
    k0[:, 1, 1] *= 1 + init_focal_err
    d0 = (scene.depth * glob * (1 + depth_noise * rng.standard_normal(scene.depth.shape))).astype(np.float32)
    init_traj = CameraTrajectory(world_from_cam=init, intrinsics=k0, depth=d0,
                                 conf=np.full(scene.depth.shape, 2.0, np.float32))
    inputs = AlignerInputs(frames=scene.frameset(), predictions=preds, init=init_traj, flow=flow, masks=masks)
    return SyntheticCase(inputs=inputs, gt_world_from_cam=gt, gt_depth=np.asarray(scene.depth), gt_K=np.asarray(scene.K))


#: alpha of DUSt3R's confidence-aware regression loss ``C * l - alpha * log(C)`` (DUSt3R and MonST3R train with 0.2).
CONF_LOSS_ALPHA = 0.2


def calibrated_confidence(pts_i: np.ndarray, pts_j: np.ndarray, depth_noise: float,
                          max_conf: float = 1e4) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel confidence of a network trained with DUSt3R's confidence-aware loss, for this noise.

    Training minimises ``C * l - alpha * log(C)`` where ``l`` is the distance between predicted and
    ground-truth points after both are divided by the pair's mean distance to the origin
    (``norm_mode='avg_dis'``); its minimiser is ``C = alpha / E[l]``. Multiplicative depth noise
    ``n ~ N(0, s^2)`` moves a point by ``|n| |X|``, so ``E[l] = s sqrt(2/pi) |X| / mean|X|``:
    ``C = alpha mean|X| / (s sqrt(2/pi) |X|)``, clipped to ``[1, max_conf]`` (MonST3R's ``1 + exp``
    confidence is never below 1). For s = 2% that is ~12.5 at the mean distance.

    Args:
        pts_i, pts_j: (P, H, W, 3) noise-free pair pointmaps in camera i.
        depth_noise: s, the std of the multiplicative depth noise (0 gives ``max_conf``).
    Returns:
        conf_i, conf_j: (P, H, W) float32.
    """
    dist_i = np.linalg.norm(pts_i, axis=-1)
    dist_j = np.linalg.norm(pts_j, axis=-1)
    mean = 0.5 * (dist_i.mean(axis=(1, 2)) + dist_j.mean(axis=(1, 2)))[:, None, None]
    err = max(depth_noise, 1e-12) * np.sqrt(2.0 / np.pi)
    out = [np.clip(CONF_LOSS_ALPHA * mean / (err * np.maximum(d, 1e-12)), 1.0, max_conf).astype(np.float32)
           for d in (dist_i, dist_j)]
    return out[0], out[1]


def ate_percent(est_world_from_cam: np.ndarray, gt_world_from_cam: np.ndarray) -> float:
    """RMS camera-centre error after Sim(3) Umeyama alignment, in % of the GT path length."""
    src, dst = est_world_from_cam[:, :3, 3], gt_world_from_cam[:, :3, 3]
    rot, t, s = umeyama(src, dst, with_scale=True)
    aligned = s * src @ rot.T + t
    rmse = float(np.sqrt(((aligned - dst) ** 2).sum(1).mean()))
    path = float(np.linalg.norm(np.diff(dst, axis=0), axis=1).sum())
    return 100.0 * rmse / path


def depth_abs_rel(est: np.ndarray, gt: np.ndarray) -> float:
    """Per-frame median-scaled Abs Rel, averaged over frames."""
    vals = []
    for e, g in zip(np.asarray(est, np.float64), np.asarray(gt, np.float64)):
        ok = (g > 0) & np.isfinite(e) & (e > 0)
        s = np.median(g[ok]) / np.median(e[ok])
        vals.append(np.mean(np.abs(e[ok] * s - g[ok]) / g[ok]))
    return float(np.mean(vals))
