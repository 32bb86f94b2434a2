"""Two-view geometry from optical flow: relative pose of one edge, no learned weights.

Correspondences are sampled from forward-backward consistent flow; the essential matrix comes from
OpenCV's RANSAC (``cv2.findEssentialMat``), hypotheses are refined by robust least squares of the
Sampson distance and a cheirality test picks ``cam_b_from_cam_a`` with a unit-norm translation.
:func:`translation_given_rotation` re-estimates the translation of an edge whose rotation is fixed
(by :mod:`.rotation_averaging`). Used by the ``flow_triangulation`` pair predictor
(:mod:`.triangulation`); OpenCV and SciPy are imported inside the functions that need them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Floor of the estimated flow noise (pixels), so exact flow does not make the robust loss singular.
MIN_NOISE_PX = 1e-3
#: Correspondences used by the robust refinement (a random subset of those sampled for RANSAC).
REFINE_POINTS = 1000

__all__ = ["EdgeGeometry", "sampson_distance", "refine_pose", "pose_from_essential", "translation_given_rotation",
           "sample_correspondences", "relative_pose_from_flow"]


@dataclass(frozen=True)
class EdgeGeometry:
    """Relative pose of one edge (a, b).

    cam_b_from_cam_a: (4, 4) float64, rigid, translation of unit norm (identity when degenerate).
    inliers: number of RANSAC inliers.
    degenerate: True when the edge produced no usable geometry.
    reason: why it is degenerate ("" otherwise).
    """

    cam_b_from_cam_a: np.ndarray
    inliers: int
    degenerate: bool
    reason: str = ""


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def _skew_batch(v: np.ndarray) -> np.ndarray:
    """(P, 3, 3) cross-product matrices of (P, 3) vectors."""
    out = np.zeros(v.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2], out[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    out[..., 1, 0], out[..., 2, 0], out[..., 2, 1] = v[..., 2], -v[..., 1], v[..., 0]
    return out


class _Sampson:
    """Sampson distances of one fixed set of correspondences for a batch of poses.

    The refinement evaluates thousands of poses on the same correspondences; building the
    homogeneous coordinates and ``K^-1`` once and evaluating all the poses of a finite-difference
    Jacobian in one batched product is what keeps it cheap (profiled: per-call set-up was half of
    the flow_triangulation stage's cost).

    p1, p2: (N, 2) float64 pixels in frames a and b; k: (3, 3) float64 intrinsics.
    """

    def __init__(self, p1: np.ndarray, p2: np.ndarray, k: np.ndarray) -> None:
        self.k_inv = np.linalg.inv(k)
        self.x1 = np.concatenate([p1, np.ones((len(p1), 1))], 1)
        self.x2 = np.concatenate([p2, np.ones((len(p2), 1))], 1)

    def __call__(self, cam_b_from_cam_a: np.ndarray) -> np.ndarray:
        """(P, 4, 4) poses -> (P, N) signed Sampson distances in pixels ((4, 4) -> (N,))."""
        poses = np.asarray(cam_b_from_cam_a, np.float64)
        single = poses.ndim == 2
        poses = poses.reshape(-1, 4, 4)
        fund = self.k_inv.T @ _skew_batch(poses[:, :3, 3]) @ poses[:, :3, :3] @ self.k_inv  # (P, 3, 3)
        fx1 = self.x1 @ np.transpose(fund, (0, 2, 1))  # (P, N, 3): F x_a
        ftx2 = self.x2 @ fund  # (P, N, 3): F^T x_b
        num = (self.x2 * fx1).sum(-1)
        denom = np.sqrt(fx1[..., 0] ** 2 + fx1[..., 1] ** 2 + ftx2[..., 0] ** 2 + ftx2[..., 1] ** 2 + 1e-30)
        out = num / denom
        return out[0] if single else out


def sampson_distance(cam_b_from_cam_a: np.ndarray, p1: np.ndarray, p2: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(N,) float64 signed Sampson distance in pixels of correspondences p1 (frame a) -> p2 (frame b), (N, 2)."""
    return _Sampson(p1, p2, k)(cam_b_from_cam_a)


def _poses_from_params(rot: np.ndarray, t0: np.ndarray, tangent: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(P, 4, 4) poses with rotation exp(x[:3]) @ rot and unit translation normalise(t0 + tangent @ x[3:])
    for each row x of xs (P, 5); rows sharing a rotation vector share one Rodrigues call."""
    import cv2

    out = np.tile(np.eye(4), (len(xs), 1, 1))
    cache: dict[bytes, np.ndarray] = {}
    for n, x in enumerate(xs):
        key = x[:3].tobytes()
        if key not in cache:
            cache[key] = cv2.Rodrigues(np.ascontiguousarray(x[:3], np.float64))[0] @ rot
        out[n, :3, :3] = cache[key]
    t = t0 + xs[:, 3:] @ tangent.T
    out[:, :3, 3] = t / np.linalg.norm(t, axis=1, keepdims=True)
    return out


def _pose_from_params(rot: np.ndarray, t0: np.ndarray, tangent: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(4, 4) pose with rotation exp(x[:3]) @ rot and unit translation normalise(t0 + tangent @ x[3:])."""
    return _poses_from_params(rot, t0, tangent, x[None])[0]


def _cauchy_cost(d: np.ndarray, scale: float) -> float:
    return float(np.sum(np.log1p((d / scale) ** 2)))


def refine_pose(pose: np.ndarray, p1: np.ndarray, p2: np.ndarray, k: np.ndarray, scales: list[float],
                iterations: int = 8, fix_rotation: bool = False) -> np.ndarray:
    """Robust refinement of (R, unit t) minimising the Cauchy loss of the Sampson distance.

    Iteratively reweighted Gauss-Newton (forward-difference Jacobian over 5 parameters: a rotation
    increment and a step of t in the plane orthogonal to it, all columns evaluated as one batch),
    run at each scale of ``scales`` in turn (coarse to fine: graduated non-convexity, so a rough
    start is pulled in before the loss becomes narrow).

    Args:
        pose: (4, 4) float64 initial cam_b_from_cam_a.
        p1, p2: (N, 2) float64 corresponding pixels in frames a and b.
        k: (3, 3) float64 intrinsics.
        scales: Cauchy scales in pixels, coarse to fine.
        fix_rotation: keep the rotation and refine only the direction of t (2 parameters).
    Returns:
        (4, 4) float64 refined pose with unit translation.
    """
    sampson = _Sampson(p1, p2, k)
    free = np.arange(3, 5) if fix_rotation else np.arange(5)
    eps = 1e-7
    probes = eps * np.eye(5)[free]  # (len(free), 5) forward-difference offsets
    for scale in scales:
        rot, t0 = pose[:3, :3], pose[:3, 3] / max(np.linalg.norm(pose[:3, 3]), 1e-12)
        tangent = np.linalg.svd(t0[None])[2][1:].T  # (3, 2) orthonormal basis of t0's complement
        x = np.zeros(5)
        res = sampson(pose)
        for _ in range(iterations):
            jac = ((sampson(_poses_from_params(rot, t0, tangent, x + probes)) - res) / eps).T  # (N, len(free))
            wgt = 1.0 / (1.0 + (res / scale) ** 2)
            lhs = (jac * wgt[:, None]).T @ jac
            step = np.zeros(5)
            step[free] = np.linalg.solve(lhs + 1e-9 * np.trace(lhs) * np.eye(len(free)), -(jac * wgt[:, None]).T @ res)
            cost = _cauchy_cost(res, scale)
            accepted = False
            for _ in range(6):  # halve the step until the robust cost does not rise
                cand = sampson(_pose_from_params(rot, t0, tangent, x + step))
                if _cauchy_cost(cand, scale) <= cost:
                    x, res, accepted = x + step, cand, True
                    break
                step = 0.5 * step
            if not accepted or np.abs(step).max() < 1e-10:
                break
        pose = _pose_from_params(rot, t0, tangent, x)
    return pose


def pose_from_essential(e: np.ndarray, p1: np.ndarray, p2: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The (R, unit t) of an essential matrix that puts most points in front of both cameras.

    Like ``cv2.recoverPose`` but without its distance cut-off (which, in baseline units, rejects
    every point of a small-baseline pair) and vectorised over the four decompositions.

    Args:
        e: (3, 3) essential matrix (x_b^T E x_a = 0 in normalised coordinates).
        p1, p2: (N, 2) float64 pixels in frames a and b.
        k: (3, 3) float64 intrinsics.
    Returns:
        (4, 4) float64 cam_b_from_cam_a.
    """
    import cv2

    r1, r2, t = cv2.decomposeEssentialMat(e)
    k_inv = np.linalg.inv(k)
    a = np.concatenate([p1, np.ones((len(p1), 1))], 1) @ k_inv.T  # rays in camera a, z = 1
    b = np.concatenate([p2, np.ones((len(p2), 1))], 1) @ k_inv.T
    best, best_count = np.eye(4), -1
    for rot in (r1, r2):
        for trans in (t.reshape(3), -t.reshape(3)):
            r = a @ rot.T
            c1, c2 = b[:, 0] * r[:, 2] - r[:, 0], b[:, 1] * r[:, 2] - r[:, 1]
            depth = (c1 * (trans[0] - b[:, 0] * trans[2]) + c2 * (trans[1] - b[:, 1] * trans[2])) / np.maximum(
                c1 * c1 + c2 * c2, 1e-18)
            count = int(np.sum((depth > 0) & (depth * r[:, 2] + trans[2] > 0)))
            if count > best_count:
                best_count = count
                best = np.eye(4)
                best[:3, :3], best[:3, 3] = rot, trans / max(np.linalg.norm(trans), 1e-12)
    return best


def _count_in_front(rot: np.ndarray, trans: np.ndarray, a: np.ndarray, b: np.ndarray) -> int:
    """Correspondences (rays ``a`` in camera a, ``b`` in camera b, (N, 3) with z = 1) triangulating in
    front of both cameras for the pose (rot, trans) = cam_b_from_cam_a."""
    r = a @ rot.T
    c1, c2 = b[:, 0] * r[:, 2] - r[:, 0], b[:, 1] * r[:, 2] - r[:, 1]
    depth = (c1 * (trans[0] - b[:, 0] * trans[2]) + c2 * (trans[1] - b[:, 1] * trans[2])) / np.maximum(
        c1 * c1 + c2 * c2, 1e-18)
    return int(np.sum((depth > 0) & (depth * r[:, 2] + trans[2] > 0)))


def translation_given_rotation(rot: np.ndarray, p1: np.ndarray, p2: np.ndarray, k: np.ndarray, *,
                               starts: tuple[np.ndarray, ...] = (), ransac_threshold_px: float = 1.0,
                               hypotheses: int = 256, seed: int = 0) -> np.ndarray:
    """Unit translation of cam_b_from_cam_a for a known rotation, robust to outliers.

    With R fixed the epipolar constraint is linear in t: ``t . (R x_a  x  x_b) = 0`` for normalised
    rays x, so two correspondences give a hypothesis ``t = n_1 x n_2``. Starts: the best of
    ``hypotheses`` random ones by least median of Sampson distances, and the directions in ``starts``; each is refined with :func:`refine_pose` (rotation fixed) down to
    the robust residual level and the lowest Cauchy cost wins. A cheirality test fixes the sign.

    Args:
        rot: (3, 3) float64 rotation of cam_b_from_cam_a.
        p1, p2: (N, 2) float64 corresponding pixels in frames a and b.
        k: (3, 3) float64 intrinsics.
        starts: extra (3,) initial directions (e.g. the edge's own two-view estimate).
    Returns:
        (4, 4) float64 cam_b_from_cam_a with ``rot`` and unit translation.
    """
    k_inv = np.linalg.inv(k)
    xa = np.concatenate([p1, np.ones((len(p1), 1))], 1) @ k_inv.T
    xb = np.concatenate([p2, np.ones((len(p2), 1))], 1) @ k_inv.T
    normals = np.cross(xa @ rot.T, xb)  # (N, 3): t . normal = 0

    def pose(t: np.ndarray) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3], out[:3, 3] = rot, t / max(np.linalg.norm(t), 1e-12)
        return out

    # Least median of squares over 2-point hypotheses t = n_1 x n_2 (vectorised Sampson distances:
    # F x_a = K^-T (t x R x_a) and F^T x_b = -K^-T R^T (t x x_b), both linear in t).
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(p1), (hypotheses, 2))
    hyp = np.cross(normals[pick[:, 0]], normals[pick[:, 1]])
    hyp = hyp[np.linalg.norm(hyp, axis=1) > 1e-12]
    if len(hyp) == 0:
        hyp = np.linalg.eigh(normals.T @ normals)[1][:, :1].T
    hyp /= np.linalg.norm(hyp, axis=1, keepdims=True)
    # Both epipolar lines are linear in t: their first two components are hyp @ (3, N) matrices
    # (four small matrix products instead of (H, N, 3) cross products: profiled as the costliest
    # part of this function).
    ra = xa @ rot.T
    zero = np.zeros(len(ra))
    cross_ra = [np.stack([zero, ra[:, 2], -ra[:, 1]]), np.stack([-ra[:, 2], zero, ra[:, 0]])]  # (t x ra)_0, _1
    cross_xb = [np.stack([zero, xb[:, 2], -xb[:, 1]]), np.stack([-xb[:, 2], zero, xb[:, 0]]),
                np.stack([xb[:, 1], -xb[:, 0], zero])]  # (t x x_b)_0, _1, _2 as t @ (3, N)
    line_a = [-sum(cross_xb[m] * rot[m, c] for m in range(3)) for c in range(2)]  # (R^T (t x x_b))_c . -1
    fx, fy = k[0, 0], k[1, 1]
    lb0, lb1, la0, la1 = hyp @ cross_ra[0], hyp @ cross_ra[1], hyp @ line_a[0], hyp @ line_a[1]  # (H, N) each
    denom = np.sqrt((lb0 / fx) ** 2 + (lb1 / fy) ** 2 + (la0 / fx) ** 2 + (la1 / fy) ** 2 + 1e-30)
    lmeds = np.median(np.abs(hyp @ normals.T) / denom, axis=1)
    t = hyp[int(np.argmin(lmeds))]
    candidates = [pose(t)] + [pose(np.asarray(s, np.float64)) for s in starts]
    spreads = [1.4826 * float(np.median(np.abs(sampson_distance(c, p1, p2, k)))) for c in candidates]
    sigma = max(MIN_NOISE_PX, min(spreads))
    sub = slice(None, REFINE_POINTS)
    # Graduated from each start's own residual level (as in relative_pose_from_flow).
    candidates = [refine_pose(c, p1[sub], p2[sub], k, [s for s in (ransac_threshold_px, 0.3 * ransac_threshold_px,
                                                                   0.1 * ransac_threshold_px)
                                                       if sigma < s <= 3.0 * spread] + [sigma], fix_rotation=True)
                  for c, spread in zip(candidates, spreads)]
    best = candidates[int(np.argmin([_cauchy_cost(sampson_distance(c, p1, p2, k), sigma) for c in candidates]))]
    a = np.concatenate([p1, np.ones((len(p1), 1))], 1) @ k_inv.T
    b = np.concatenate([p2, np.ones((len(p2), 1))], 1) @ k_inv.T
    inlier = np.abs(sampson_distance(best, p1, p2, k)) < max(3.0 * sigma, 0.1 * ransac_threshold_px)
    t = best[:3, 3]
    if _count_in_front(rot, -t, a[inlier], b[inlier]) > _count_in_front(rot, t, a[inlier], b[inlier]):
        t = -t
    return pose(t)


def sample_correspondences(flow_ab: np.ndarray, fb_error: np.ndarray, *, max_correspondences: int = 2000,
                           fb_threshold_px: float = 1.0, border_px: float = 0.0,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random subset of the forward-backward consistent flow correspondences of one edge.

    Args:
        flow_ab: (H, W, 2) float flow from frame a to frame b, pixels (dx, dy).
        fb_error: (H, W) float forward-backward error of ``flow_ab`` in pixels.
        border_px: pixels whose source or target lies closer than this to the image border are
            left out (flow is least accurate there: patches and smoothing are cut by the border).
    Returns:
        p1, p2: (N, 2) float64 pixels in frames a and b, N <= max_correspondences, in random order.
    """
    h, w = flow_ab.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    src = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float64)
    dst = src + flow_ab.reshape(-1, 2).astype(np.float64)
    lo = border_px - 0.5
    ok = fb_error.reshape(-1) < fb_threshold_px
    for pts in (src, dst):
        ok &= (pts[:, 0] > lo) & (pts[:, 0] < w - 1 - lo) & (pts[:, 1] > lo) & (pts[:, 1] < h - 1 - lo)
    idx = np.flatnonzero(ok)
    if len(idx) > max_correspondences:
        idx = np.random.default_rng(seed).choice(idx, max_correspondences, replace=False)
    return src[idx], dst[idx]


def relative_pose_from_flow(flow_ab: np.ndarray, fb_error: np.ndarray, k: np.ndarray, *,
                            max_correspondences: int = 2000, fb_threshold_px: float = 1.0,
                            ransac_threshold_px: float = 1.0, ransac_confidence: float = 0.999,
                            min_inliers: int = 30, seed: int = 0, border_px: float = 0.0) -> EdgeGeometry:
    """Relative pose of frame b w.r.t. frame a from a dense flow field.

    Hypotheses: essential matrices by RANSAC at ``ransac_threshold_px`` and at a tenth of it, and
    by least median of squares (no threshold; it wins when the flow is not much larger than the
    threshold, where a loose RANSAC happily fits part of a moving object). The flow noise ``sigma``
    is the robust spread of the Sampson distances of the best hypothesis; each hypothesis is
    refined (:func:`refine_pose`, scales shrinking to ``sigma``) and the lowest Cauchy cost at
    ``sigma`` wins. A cheirality test on its inliers (:func:`pose_from_essential`) fixes the sign
    of t.

    Args:
        flow_ab: (H, W, 2) float32 flow from frame a to frame b, pixels (dx, dy).
        fb_error: (H, W) float32 forward-backward error of ``flow_ab`` in pixels.
        k: (3, 3) float64 pixel intrinsics shared by both frames.
    Returns:
        the edge geometry; ``degenerate`` is set instead of raising when OpenCV finds no model.
    """
    import cv2

    eye = np.eye(4)
    p1, p2 = sample_correspondences(flow_ab, fb_error, max_correspondences=max_correspondences,
                                    fb_threshold_px=fb_threshold_px, border_px=border_px, seed=seed)
    if len(p1) < max(8, min_inliers):
        return EdgeGeometry(eye, 0, True, f"only {len(p1)} consistent correspondences")
    hypotheses: list[np.ndarray] = []
    try:
        cv2.setRNGSeed(int(seed) % (2**31))
        for method, thr in ((cv2.RANSAC, ransac_threshold_px), (cv2.RANSAC, 0.1 * ransac_threshold_px),
                            (cv2.LMEDS, ransac_threshold_px)):
            e, _ = cv2.findEssentialMat(p1, p2, k, method=method, prob=ransac_confidence, threshold=thr)
            if e is None or e.shape[0] < 3:
                continue
            # OpenCV may stack several solutions; the first is its best.
            hyp = pose_from_essential(e[:3], p1, p2, k)
            if not any(np.abs(hyp - other).max() < 1e-9 for other in hypotheses):
                hypotheses.append(hyp)
        if not hypotheses:
            return EdgeGeometry(eye, 0, True, "no essential matrix found")
        # Noise level: robust spread of the best hypothesis' residuals (most pixels are static).
        spreads = [1.4826 * float(np.median(np.abs(sampson_distance(hyp, p1, p2, k)))) for hyp in hypotheses]
        sigma = max(MIN_NOISE_PX, min(spreads))
        candidates = list(hypotheses)
        sub = slice(None, REFINE_POINTS)  # p1, p2 are already in random order
        for hyp, spread in zip(hypotheses, spreads):
            # Shrink the loss from the hypothesis' own residual level (starting wider than that can
            # pull an exact hypothesis towards a broad optimum that half-fits a moving object).
            scales = [s for s in (ransac_threshold_px, 0.3 * ransac_threshold_px, 0.1 * ransac_threshold_px)
                      if sigma < s <= 3.0 * spread] + [sigma]
            candidates.append(refine_pose(hyp, p1[sub], p2[sub], k, scales))
        costs = [_cauchy_cost(sampson_distance(hyp, p1, p2, k), sigma) for hyp in candidates]
        pose = candidates[int(np.argmin(costs))]
        inlier = np.abs(sampson_distance(pose, p1, p2, k)) < max(3.0 * sigma, 0.1 * ransac_threshold_px)
        n_in = int(inlier.sum())
        if n_in < min_inliers:
            return EdgeGeometry(eye, n_in, True, f"{n_in} inliers < min_inliers={min_inliers}")
        out = pose_from_essential(_skew(pose[:3, 3]) @ pose[:3, :3], p1[inlier], p2[inlier], k)
    except cv2.error as exc:
        return EdgeGeometry(eye, 0, True, f"OpenCV failed: {str(exc).splitlines()[-1][:80]}")
    return EdgeGeometry(out, n_in, False)
