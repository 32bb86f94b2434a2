"""Video depth and camera pose metrics, following MonST3R's evaluation protocol.

Depth (``depth_metrics``): one alignment for the whole sequence (all frames jointly), then Abs Rel,
Sq Rel, RMSE, log RMSE and the δ < 1.25^k accuracies on valid ground-truth pixels, as MonST3R's
``depth_evaluation``:

* valid pixels: ``0 < gt < max_depth`` (strict; ``max_depth=None`` keeps every ``gt > 0``), and the
  optional ``mask``, which (as in the official code) restricts the metrics but not the alignment;
* ``pre_clip_*`` clamps the prediction before alignment, ``post_clip_*`` after it;
* alignments: ``"median"`` (scale = median(gt) / median(pred); medians are *lower* medians, like
  ``torch.median``, so results match the official code for even pixel counts), ``"scale_shift"``
  (least-squares scale and shift), ``"scale_shift_l1"`` (exact least-absolute-deviation scale and
  shift, by iteratively reweighted least squares), ``"monst3r_lad"`` (the official notebook's
  procedure: Adam on the L1 loss from the median scale, lr 1e-4, up to 1000 steps; approximate by
  design, kept to reproduce published numbers), ``"none"``.
* the prediction is clamped to >= 1e-5 before the log and ratio metrics.

MonST3R evaluates Sintel with ``max_depth=70, post_clip_max=70``, Bonn with ``max_depth=70`` and
KITTI with ``max_depth=None`` (see :data:`DEPTH_EVAL_PRESETS`), and averages sequences weighted by
their valid pixel counts (:func:`average_depth_metrics`).

Poses: absolute trajectory error (ATE, translation part) after no / SE(3) / Sim(3) Umeyama
alignment of the estimate onto the reference, and relative pose error (RPE, translation and
rotation angle in degrees) between consecutive matched poses, with the same conventions as evo
(``E = inv(inv(Q_i) Q_j) inv(P_i) P_j``, Q reference, P estimate). MonST3R reports Sim(3) ATE and the
RPE of the Sim(3)-aligned estimate (:func:`evaluate_poses`). Timestamped trajectories are matched
with :func:`associate_timestamps` (evo's nearest-stamp matching, or the TUM benchmark's unique greedy
matching). :func:`tum_benchmark_ate` / :func:`tum_benchmark_rpe` reproduce the TUM RGB-D benchmark
scripts (``evaluate_ate.py`` / ``evaluate_rpe.py --fixed_delta``), whose RPE convention differs.

Poses are camera-to-world ``(N, 4, 4)`` float64 matrices (``world_from_cam``), any camera axes
convention as long as estimate and reference agree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Optional, Sequence

import numpy as np

from monst3r_framework.geometry import inv_rigid as _inv_rigid
from monst3r_framework.geometry import umeyama

from monst3r_framework.errors import InputError

__all__ = [
    "ErrorStats", "error_stats", "umeyama_alignment", "align_trajectory", "associate_timestamps",
    "absolute_trajectory_error", "relative_pose_error", "trajectory_metric_table", "evaluate_poses", "tum_benchmark_ate",
    "tum_benchmark_rpe", "depth_metrics", "average_depth_metrics", "evaluate", "DEPTH_EVAL_PRESETS",
    "quaternion_to_matrix", "matrix_to_quaternion", "rotation_angle",
]

Alignment = Literal["none", "se3", "sim3", "scale"]
DepthAlignment = Literal["median", "scale_shift", "scale_shift_l1", "monst3r_lad", "none"]

#: MonST3R's per-dataset ``depth_evaluation`` settings (official depth_metric notebook).
DEPTH_EVAL_PRESETS: dict[str, dict[str, Optional[float]]] = {
    "sintel": {"max_depth": 70.0, "post_clip_max": 70.0},
    "bonn": {"max_depth": 70.0, "post_clip_max": None},
    "kitti": {"max_depth": None, "post_clip_max": None},
    "tum": {"max_depth": 70.0, "post_clip_max": None},
    "scannet": {"max_depth": 70.0, "post_clip_max": None},
    "synthetic": {"max_depth": None, "post_clip_max": None},
    "davis": {"max_depth": None, "post_clip_max": None},
}


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorStats:
    """Summary of a vector of non-negative errors (evo's statistics; std is the population std)."""

    rmse: float
    mean: float
    median: float
    std: float
    min: float
    max: float
    sse: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def error_stats(errors: np.ndarray) -> ErrorStats:
    """(M,) errors -> :class:`ErrorStats` (median is the usual average-of-middles median)."""
    e = np.asarray(errors, np.float64).ravel()
    if e.size == 0:
        raise InputError("error_stats: no errors to summarise (0 matched poses); check the association")
    sse = float(np.dot(e, e))
    return ErrorStats(rmse=math.sqrt(sse / e.size), mean=float(e.mean()), median=float(np.median(e)),
                      std=float(e.std()), min=float(e.min()), max=float(e.max()), sse=sse, n=int(e.size))


# --------------------------------------------------------------------------------------------
# Rotations
# --------------------------------------------------------------------------------------------


def quaternion_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (x, y, z, w), any norm -> (..., 3, 3) rotation matrices (scipy ``Rotation``).

    Quaternions are normalised first (as evo and the TUM tools do); a zero quaternion gives identity.
    """
    from scipy.spatial.transform import Rotation

    q = np.asarray(q_xyzw, np.float64)
    flat = q.reshape(-1, 4).copy()
    zero = (flat * flat).sum(axis=-1) <= 1e-16
    flat[zero] = (0.0, 0.0, 0.0, 1.0)
    return Rotation.from_quat(flat).as_matrix().reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (x, y, z, w) with w >= 0 (scipy ``Rotation``)."""
    from scipy.spatial.transform import Rotation

    r = np.asarray(rot, np.float64)
    q = Rotation.from_matrix(r.reshape(-1, 3, 3)).as_quat()
    q = np.where(q[:, 3:4] < 0, -q, q)
    return q.reshape(r.shape[:-2] + (4,))


def rotation_angle(rot: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (...) rotation angles in radians, in [0, pi].

    SciPy's ``Rotation.magnitude`` (evo's angle; from the quaternion, so accurate for small angles,
    unlike arccos of the trace).
    """
    from scipy.spatial.transform import Rotation

    r = np.asarray(rot, np.float64)
    return Rotation.from_matrix(r.reshape(-1, 3, 3)).magnitude().reshape(r.shape[:-2])


def _check_poses(name: str, poses: np.ndarray) -> np.ndarray:
    p = np.asarray(poses, np.float64)
    if p.ndim != 3 or p.shape[1:] not in ((4, 4), (3, 4)):
        raise InputError(f"{name}: expected (N, 4, 4) camera-to-world matrices, got shape {p.shape}; "
                         "stack the per-frame poses")
    if p.shape[1] == 3:
        p = np.concatenate([p, np.broadcast_to([0.0, 0.0, 0.0, 1.0], (len(p), 1, 4))], axis=1)
    if not np.isfinite(p).all():
        raise InputError(f"{name}: poses contain NaN or inf; drop or repair those frames first")
    return p


# --------------------------------------------------------------------------------------------
# Alignment and association
# --------------------------------------------------------------------------------------------


def umeyama_alignment(src: np.ndarray, dst: np.ndarray, with_scale: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares similarity (Umeyama 1991) mapping src points onto dst: ``dst ≈ s R src + t``.

    Args:
        src: (N, 3) points (e.g. estimated camera centres).
        dst: (N, 3) corresponding points (e.g. reference camera centres).
        with_scale: estimate s (Sim(3)); otherwise s = 1 (SE(3), Horn/Kabsch).
    Returns:
        R (3, 3), t (3,), s.
    """
    x = np.asarray(src, np.float64)
    y = np.asarray(dst, np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 3 or len(x) < 2:
        raise InputError(f"umeyama_alignment: need two (N, 3) point sets with N >= 2, got {x.shape} and {y.shape}")
    if with_scale and not ((x - x.mean(axis=0)) ** 2).sum() > 0:
        raise InputError("umeyama_alignment: the estimated positions are all identical; Sim(3) scale undefined")
    return umeyama(x, y, with_scale=with_scale)


def align_trajectory(est: np.ndarray, ref: np.ndarray, mode: Alignment = "sim3") -> tuple[np.ndarray, dict]:
    """Align estimated camera-to-world poses onto the reference by their camera centres.

    Args:
        est, ref: (N, 4, 4) camera-to-world poses, matched by index.
        mode: "none", "se3" (rotation + translation), "sim3" (+ scale) or "scale" (scale only,
            about the origin, least squares).
    Returns:
        aligned (N, 4, 4) estimate (``t' = s R t + t0``, ``R' = R R_est``) and the alignment
        ``{"mode", "rotation" (3x3 list), "translation" (3), "scale"}``.
    """
    est = _check_poses("align_trajectory est", est)
    ref = _check_poses("align_trajectory ref", ref)
    if len(est) != len(ref):
        raise InputError(f"align_trajectory: {len(est)} estimated vs {len(ref)} reference poses; associate them first")
    rot, trans, scale = np.eye(3), np.zeros(3), 1.0
    if mode in ("se3", "sim3"):
        rot, trans, scale = umeyama_alignment(est[:, :3, 3], ref[:, :3, 3], with_scale=mode == "sim3")
    elif mode == "scale":
        pe, pr = est[:, :3, 3], ref[:, :3, 3]
        scale = float((pe * pr).sum() / max((pe * pe).sum(), 1e-300))
    elif mode != "none":
        raise InputError(f"align_trajectory: unknown alignment {mode!r}; use none, se3, sim3 or scale")
    out = est.copy()
    out[:, :3, 3] = (scale * est[:, :3, 3]) @ rot.T + trans
    out[:, :3, :3] = rot @ est[:, :3, :3]
    return out, {"mode": mode, "rotation": rot.tolist(), "translation": trans.tolist(), "scale": scale}


def associate_timestamps(stamps_ref: np.ndarray, stamps_est: np.ndarray, max_diff: float = 0.01,
                         offset: float = 0.0, method: Literal["evo", "tum"] = "evo") -> tuple[np.ndarray, np.ndarray]:
    """Match two lists of timestamps (seconds).

    Args:
        stamps_ref: (N,) reference timestamps.
        stamps_est: (M,) estimate timestamps; ``offset`` is added to them before matching.
        max_diff: largest accepted |difference| in seconds.
        method: "evo": every stamp of the shorter list takes its nearest stamp of the longer list if
            within ``max_diff`` (inclusive; ties go to the earlier stamp; a stamp of the longer list
            may be used twice), as ``evo.core.sync.associate_trajectories``. "tum": the TUM benchmark's
            ``associate.py``: candidate pairs with difference < ``max_diff`` (strict) taken greedily in
            order of increasing difference, each stamp used at most once, result sorted by time.
    Returns:
        (K,) indices into stamps_ref and (K,) indices into stamps_est, int64.
    """
    a = np.asarray(stamps_ref, np.float64).ravel()
    b = np.asarray(stamps_est, np.float64).ravel() + offset
    if len(a) == 0 or len(b) == 0:
        raise InputError("associate_timestamps: an empty timestamp list; check the trajectory files")
    if method == "evo":
        swap = len(b) < len(a)  # iterate over the shorter list, as evo does
        short, long_ = (b, a) if swap else (a, b)
        order = np.argsort(long_, kind="stable")
        ls = long_[order]
        pos = np.searchsorted(ls, short, side="right")
        up = np.clip(pos, 0, len(ls) - 1)
        lo = np.clip(pos - 1, 0, len(ls) - 1)
        d_up = np.abs(ls[up] - short)
        d_lo = np.where(pos > 0, np.abs(short - ls[lo]), np.inf)
        take_up = d_up < d_lo
        best = np.where(take_up, up, lo)
        diff = np.where(take_up, d_up, d_lo)
        ok = diff <= max_diff
        i_short = np.flatnonzero(ok)
        i_long = order[best[ok]]
        ia, ib = (i_long, i_short) if swap else (i_short, i_long)
        return ia.astype(np.int64), ib.astype(np.int64)
    if method != "tum":
        raise InputError(f"associate_timestamps: unknown method {method!r}; use 'evo' or 'tum'")
    # Candidate pairs within the window (a sorted sweep, not all N x M pairs).
    ob = np.argsort(b, kind="stable")
    bs = b[ob]
    lo = np.searchsorted(bs, a - max_diff, side="left")
    hi = np.searchsorted(bs, a + max_diff, side="right")
    counts = hi - lo
    ia = np.repeat(np.arange(len(a)), counts)
    ib_sorted = np.concatenate([np.arange(l, h) for l, h in zip(lo, hi)]) if counts.sum() else np.zeros(0, np.int64)
    ib = ob[ib_sorted.astype(np.int64)]
    diff = np.abs(a[ia] - b[ib])
    keep = diff < max_diff
    ia, ib, diff = ia[keep], ib[keep], diff[keep]
    # associate.py sorts (diff, stamp_a, stamp_b) tuples; stamps are unique keys there.
    order = np.lexsort((b[ib], a[ia], diff))
    used_a = np.zeros(len(a), bool)
    used_b = np.zeros(len(b), bool)
    out_a, out_b = [], []
    for k in order:  # greedy over candidate pairs (a few per stamp), not over pixels
        i, j = ia[k], ib[k]
        if not used_a[i] and not used_b[j]:
            used_a[i] = used_b[j] = True
            out_a.append(i)
            out_b.append(j)
    out_a_arr = np.asarray(out_a, np.int64)
    out_b_arr = np.asarray(out_b, np.int64)
    srt = np.lexsort((b[out_b_arr], a[out_a_arr]))
    return out_a_arr[srt], out_b_arr[srt]


# --------------------------------------------------------------------------------------------
# ATE / RPE
# --------------------------------------------------------------------------------------------


def absolute_trajectory_error(est: np.ndarray, ref: np.ndarray, align: Alignment = "sim3") -> dict:
    """ATE (translation part): distances between aligned estimated and reference camera centres.

    Args:
        est, ref: (N, 4, 4) camera-to-world poses, matched by index.
        align: alignment of the estimate onto the reference before measuring.
    Returns:
        ``{"stats": ErrorStats, "errors": (N,) float64, "alignment": {...}, "aligned": (N, 4, 4)}``.
    """
    ref = _check_poses("ATE reference", ref)
    aligned, info = align_trajectory(est, ref, align)
    errors = np.linalg.norm(aligned[:, :3, 3] - ref[:, :3, 3], axis=1)
    return {"stats": error_stats(errors), "errors": errors, "alignment": info, "aligned": aligned}


def relative_pose_error(est: np.ndarray, ref: np.ndarray, delta: int = 1) -> dict:
    """RPE between poses ``delta`` frames apart, evo's convention.

    ``E_i = inv(inv(Q_i) Q_{i+delta}) @ inv(P_i) P_{i+delta}`` with Q the reference and P the
    estimate; translation error ``|E_i[:3, 3]|`` (in the estimate's units: align the scale first
    for a scale-free estimate) and rotation error = angle of ``E_i[:3, :3]`` in degrees.

    Returns:
        ``{"trans": ErrorStats, "rot_deg": ErrorStats, "trans_errors": (M,), "rot_errors_deg": (M,)}``.
    """
    est = _check_poses("RPE estimate", est)
    ref = _check_poses("RPE reference", ref)
    if len(est) != len(ref):
        raise InputError(f"relative_pose_error: {len(est)} estimated vs {len(ref)} reference poses; associate them first")
    if delta < 1 or len(est) <= delta:
        raise InputError(f"relative_pose_error: need more than delta={delta} poses, got {len(est)}")
    q_rel = _inv_rigid(ref[:-delta]) @ ref[delta:]
    p_rel = _inv_rigid(est[:-delta]) @ est[delta:]
    err = _inv_rigid(q_rel) @ p_rel
    trans = np.linalg.norm(err[:, :3, 3], axis=1)
    rot = np.degrees(rotation_angle(err[:, :3, :3]))
    return {"trans": error_stats(trans), "rot_deg": error_stats(rot), "trans_errors": trans, "rot_errors_deg": rot}


def trajectory_metric_table(est: np.ndarray, ref: np.ndarray) -> tuple[float, dict[str, ErrorStats]]:
    """The ATE / RPE figures evo reports for one matched trajectory pair, under the key names of
    ``shared/data/trajectories/reference_metrics_evo.json``: (Sim(3) scale, {name: ErrorStats})."""
    sim3 = absolute_trajectory_error(est, ref, "sim3")
    rpe = relative_pose_error(est, ref)
    return float(sim3["alignment"]["scale"]), {
        "ate_trans_no_align": absolute_trajectory_error(est, ref, "none")["stats"],
        "ate_trans_se3": absolute_trajectory_error(est, ref, "se3")["stats"],
        "ate_trans_sim3": sim3["stats"],
        "rpe_trans_delta1frame": rpe["trans"],
        "rpe_rot_deg_delta1frame": rpe["rot_deg"],
        "rpe_trans_delta1frame_after_sim3": relative_pose_error(sim3["aligned"], ref)["trans"],
    }


def evaluate_poses(est: np.ndarray, ref: np.ndarray, align: Alignment = "sim3",
                   stamps_est: Optional[np.ndarray] = None, stamps_ref: Optional[np.ndarray] = None,
                   max_diff: float = 0.01, offset: float = 0.0) -> dict:
    """MonST3R's pose evaluation: ATE after ``align`` and RPE (delta 1 frame) of the same aligned estimate.

    With timestamps, poses are first matched with :func:`associate_timestamps` (evo method);
    without, estimate and reference must have the same length and are matched by index.

    Returns:
        ``{"ate", "rpe_trans", "rpe_rot"}`` RMSEs (metres or reference units, degrees) plus
        ``"ate_stats"``, ``"rpe_trans_stats"``, ``"rpe_rot_stats"`` (dicts), ``"alignment"`` and
        ``"n_matched"``.
    """
    est = _check_poses("estimate", est)
    ref = _check_poses("reference", ref)
    if stamps_est is not None and stamps_ref is not None:
        ir, ie = associate_timestamps(stamps_ref, stamps_est, max_diff=max_diff, offset=offset)
        if len(ir) < 2:
            raise InputError(f"evaluate_poses: only {len(ir)} poses matched within {max_diff} s; "
                             "check the timestamps or raise max_diff")
        est, ref = est[ie], ref[ir]
    elif len(est) != len(ref):
        raise InputError(f"evaluate_poses: {len(est)} estimated vs {len(ref)} reference poses and no "
                         "timestamps; pass stamps_est/stamps_ref or trim to matching frames")
    ate = absolute_trajectory_error(est, ref, align)
    rpe = relative_pose_error(ate["aligned"], ref, delta=1)
    return {
        "ate": ate["stats"].rmse, "rpe_trans": rpe["trans"].rmse, "rpe_rot": rpe["rot_deg"].rmse,
        "ate_stats": ate["stats"].to_dict(), "rpe_trans_stats": rpe["trans"].to_dict(),
        "rpe_rot_stats": rpe["rot_deg"].to_dict(), "alignment": ate["alignment"], "n_matched": int(len(est)),
    }


def tum_benchmark_ate(stamps_ref: np.ndarray, ref_xyz: np.ndarray, stamps_est: np.ndarray, est_xyz: np.ndarray,
                      max_diff: float = 0.02, offset: float = 0.0, scale: float = 1.0) -> dict:
    """ATE as the TUM benchmark's ``evaluate_ate.py``: unique greedy association, rigid alignment.

    Args:
        stamps_ref, ref_xyz: (N,), (N, 3) reference timestamps and positions.
        stamps_est, est_xyz: (M,), (M, 3) estimate; ``scale`` multiplies its positions.
    Returns:
        ``{"stats": ErrorStats, "n_matched": K, "alignment": {...}}``.
    """
    ia, ib = associate_timestamps(stamps_ref, stamps_est, max_diff=max_diff, offset=offset, method="tum")
    if len(ia) < 2:
        raise InputError("tum_benchmark_ate: fewer than 2 matched stamps; check the files and max_diff")
    model = np.asarray(est_xyz, np.float64)[ib] * scale
    data = np.asarray(ref_xyz, np.float64)[ia]
    rot, trans, _ = umeyama_alignment(model, data, with_scale=False)
    errors = np.linalg.norm(model @ rot.T + trans - data, axis=1)
    return {"stats": error_stats(errors), "n_matched": int(len(ia)),
            "alignment": {"mode": "se3", "rotation": rot.tolist(), "translation": trans.tolist(), "scale": 1.0}}


def tum_benchmark_rpe(stamps_ref: np.ndarray, ref: np.ndarray, stamps_est: np.ndarray, est: np.ndarray,
                      delta: int = 1, offset: float = 0.0) -> dict:
    """RPE as the TUM benchmark's ``evaluate_rpe.py --fixed_delta --delta N --delta_unit f``.

    Pairs are *estimated* poses (i, i + delta) in time order, except pairs ending on the last
    estimated pose (the script skips those); each pose takes the reference pose
    nearest in time; pairs whose nearest reference stamp is more than twice the median reference
    interval away are skipped. Error ``E = inv(inv(P_j) P_i) inv(Q_j) Q_i`` (P estimate, Q reference),
    rotation angle by arccos of the trace (the script's formula). Both trajectories are (N, 4, 4)
    camera-to-world; stamps need not be sorted (they are sorted here, like the script's dict keys).

    Returns:
        ``{"trans": ErrorStats, "rot_deg": ErrorStats, "n_pairs": K}``.
    """
    tr = np.asarray(stamps_ref, np.float64)
    te = np.asarray(stamps_est, np.float64)
    ref = _check_poses("TUM RPE reference", ref)[np.argsort(tr, kind="stable")]
    est = _check_poses("TUM RPE estimate", est)[np.argsort(te, kind="stable")]
    tr, te = np.sort(tr), np.sort(te)
    if len(te) <= delta + 1:
        raise InputError(f"tum_benchmark_rpe: need more than delta={delta} estimated poses, got {len(te)}")

    def nearest(t: np.ndarray) -> np.ndarray:
        pos = np.clip(np.searchsorted(tr, t), 1, len(tr) - 1) if len(tr) > 1 else np.zeros(len(t), np.int64)
        if len(tr) == 1:
            return pos
        left_better = np.abs(tr[pos - 1] - t) <= np.abs(tr[pos] - t)
        return np.where(left_better, pos - 1, pos)

    # The script pairs i with the estimate nearest to i + delta and drops every pair whose second
    # pose is the *last* estimate, so with frame units the last valid pair is (N-2-delta, N-2).
    i0 = np.arange(max(len(te) - 1 - delta, 0))
    i1 = i0 + delta
    g0, g1 = nearest(te[i0] + offset), nearest(te[i1] + offset)
    max_gap = 2.0 * float(np.median(np.diff(tr)))
    ok = (np.abs(tr[g0] - (te[i0] + offset)) <= max_gap) & (np.abs(tr[g1] - (te[i1] + offset)) <= max_gap)
    i0, i1, g0, g1 = i0[ok], i1[ok], g0[ok], g1[ok]
    if len(i0) == 0:
        raise InputError("tum_benchmark_rpe: no pose pair has reference poses close in time; check the files")
    est_rel = np.linalg.inv(np.linalg.inv(est[i1]) @ est[i0])
    ref_rel = np.linalg.inv(ref[g1]) @ ref[g0]
    err = est_rel @ ref_rel
    trans = np.linalg.norm(err[:, :3, 3], axis=1)
    cos = np.clip((np.trace(err[:, :3, :3], axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    rot = np.degrees(np.arccos(cos))
    return {"trans": error_stats(trans), "rot_deg": error_stats(rot), "n_pairs": int(len(i0))}


# --------------------------------------------------------------------------------------------
# Depth
# --------------------------------------------------------------------------------------------


def _lower_median(x: np.ndarray) -> float:
    """The lower of the two middle values for even sizes (torch.median semantics)."""
    k = (x.size - 1) // 2
    return float(np.partition(x, k)[k])


def _lad_scale_shift(p: np.ndarray, g: np.ndarray, iters: int = 100) -> tuple[float, float]:
    """Exact-ish argmin_{s,t} sum |s p + t - g| by iteratively reweighted least squares."""
    a = np.stack([p, np.ones_like(p)], axis=1)
    sol, *_ = np.linalg.lstsq(a, g, rcond=None)
    for _ in range(iters):
        w = 1.0 / np.maximum(np.abs(a @ sol - g), 1e-9)
        aw = a * w[:, None]
        new = np.linalg.solve(a.T @ aw, aw.T @ g)
        if np.allclose(new, sol, rtol=1e-12, atol=1e-12):
            sol = new
            break
        sol = new
    return float(sol[0]), float(sol[1])


def _monst3r_lad(p: np.ndarray, g: np.ndarray, s_init: float, lr: float = 1e-4, max_iters: int = 1000,
                 tol: float = 1e-6) -> tuple[float, float]:
    """The official notebook's L1 scale/shift: Adam (betas 0.9/0.999, eps 1e-8, as torch's defaults)
    on ``sum |s p + t - g|`` from (s_init, 0); stops once the loss changes by less than ``tol``."""
    params = np.array([s_init, 0.0])
    m = np.zeros(2)
    v = np.zeros(2)
    b1, b2, eps = 0.9, 0.999, 1e-8
    prev = None
    for step in range(1, max_iters + 1):
        r = params[0] * p + params[1] - g
        loss = float(np.abs(r).sum())
        sign = np.sign(r)
        grad = np.array([float(sign @ p), float(sign.sum())])
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        params = params - lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + eps)
        if prev is not None and abs(prev - loss) < tol:
            break
        prev = loss
    return float(params[0]), float(params[1])


def depth_metrics(pred: np.ndarray, gt: np.ndarray, align: DepthAlignment = "median",
                  max_depth: Optional[float] = None, mask: Optional[np.ndarray] = None,
                  pre_clip_min: Optional[float] = None, pre_clip_max: Optional[float] = None,
                  post_clip_min: Optional[float] = None, post_clip_max: Optional[float] = None) -> dict:
    """Video depth metrics with one alignment for the whole sequence (MonST3R's ``depth_evaluation``).

    Args:
        pred: (N, H, W) or (H, W) predicted depth, already at the ground truth's resolution.
        gt: same shape, ground-truth depth; pixels <= 0 (or >= max_depth) are invalid.
        align: see the module docstring.
        max_depth: exclusive upper bound on valid ground truth (None: no bound).
        mask: optional bool, same shape; restricts the metrics (not the alignment) to True pixels.
        pre_clip_*, post_clip_*: clamp the prediction before / after alignment.
    Returns:
        dict with ``abs_rel``, ``sq_rel``, ``rmse``, ``log_rmse``, ``delta_1.25``, ``delta_1.25^2``,
        ``delta_1.25^3``, ``valid_pixels``, ``scale``, ``shift``, ``alignment``, ``max_depth``.
    """
    p_all = np.asarray(pred, np.float64)
    g_all = np.asarray(gt, np.float64)
    if p_all.shape != g_all.shape:
        raise InputError(f"depth_metrics: prediction shape {p_all.shape} != ground truth shape {g_all.shape}; "
                         "resize the prediction to the ground truth (e.g. cv2.INTER_CUBIC, as MonST3R) first")
    valid = g_all > 0
    if max_depth is not None:
        valid &= g_all < max_depth
    valid &= np.isfinite(g_all) & np.isfinite(p_all)
    p = p_all[valid]
    g = g_all[valid]
    if g.size == 0:
        raise InputError("depth_metrics: no valid ground-truth pixels (gt > 0 and < max_depth); check units and max_depth")
    if pre_clip_min is not None or pre_clip_max is not None:
        p = np.clip(p, pre_clip_min, pre_clip_max)
    scale, shift = 1.0, 0.0
    if align == "median":
        scale = _lower_median(g) / _lower_median(p)
    elif align == "scale_shift":
        a = np.stack([p, np.ones_like(p)], axis=1)
        sol, *_ = np.linalg.lstsq(a, g, rcond=None)
        scale, shift = float(sol[0]), float(sol[1])
    elif align == "scale_shift_l1":
        scale, shift = _lad_scale_shift(p, g)
    elif align == "monst3r_lad":
        scale, shift = _monst3r_lad(p, g, _lower_median(g) / _lower_median(p))
    elif align != "none":
        raise InputError(f"depth_metrics: unknown alignment {align!r}; use median, scale_shift, scale_shift_l1, "
                         "monst3r_lad or none")
    p = scale * p + shift
    if post_clip_min is not None or post_clip_max is not None:
        p = np.clip(p, post_clip_min, post_clip_max)
    if mask is not None:
        m = np.asarray(mask, bool)
        if m.shape != g_all.shape:
            raise InputError(f"depth_metrics: mask shape {m.shape} != depth shape {g_all.shape}")
        inner = m[valid]
        p, g = p[inner], g[inner]
    n = int(g.size)
    if n == 0:
        nan = float("nan")
        return {"abs_rel": nan, "sq_rel": nan, "rmse": nan, "log_rmse": nan, "delta_1.25": nan,
                "delta_1.25^2": nan, "delta_1.25^3": nan, "valid_pixels": 0, "scale": scale, "shift": shift,
                "alignment": align, "max_depth": max_depth}
    diff = p - g
    out = {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
    }
    pc = np.maximum(p, 1e-5)
    out["log_rmse"] = float(np.sqrt(np.mean((np.log(pc) - np.log(g)) ** 2)))
    ratio = np.maximum(pc / g, g / pc)
    for k, name in ((1, "delta_1.25"), (2, "delta_1.25^2"), (3, "delta_1.25^3")):
        out[name] = float(np.mean(ratio < 1.25**k))
    out.update({"valid_pixels": n, "scale": float(scale), "shift": float(shift), "alignment": align,
                "max_depth": max_depth})
    return out


def average_depth_metrics(per_sequence: Sequence[dict]) -> dict:
    """Average per-sequence depth metrics weighted by ``valid_pixels`` (the official protocol)."""
    rows = [r for r in per_sequence if r.get("valid_pixels", 0) > 0]
    if not rows:
        raise InputError("average_depth_metrics: no sequence with valid pixels")
    w = np.array([r["valid_pixels"] for r in rows], np.float64)
    keys = ("abs_rel", "sq_rel", "rmse", "log_rmse", "delta_1.25", "delta_1.25^2", "delta_1.25^3")
    out = {k: float(np.average([r[k] for r in rows], weights=w)) for k in keys}
    out["valid_pixels"] = int(w.sum())
    return out


# --------------------------------------------------------------------------------------------
# Everything at once (the CLI's `eval` and the runner feed this)
# --------------------------------------------------------------------------------------------


def evaluate(pred_c2w: Optional[np.ndarray], pred_depth: Optional[np.ndarray], gt, *,
             pose_align: Alignment = "sim3", depth_align: Sequence[DepthAlignment] = ("median", "scale_shift"),
             max_depth: Optional[float] = None, post_clip_max: Optional[float] = None,
             frame_ids: Optional[Sequence[int]] = None) -> dict:
    """Pose and depth metrics of one predicted sequence against ground truth.

    Args:
        pred_c2w: (N, 4, 4) predicted camera-to-world poses, or None to skip pose metrics.
        pred_depth: (N, h, w) predicted z-depth (any resolution: resized to the GT's with bicubic
            interpolation, as MonST3R), or None to skip depth metrics.
        gt: an object with ``cam_to_world`` (N, 4, 4) or None and ``depth`` (N, H, W) or None, and
            optionally ``timestamps``: a :class:`~monst3r_fw_eval.datasets.Sequence`, a
            :class:`~monst3r_fw_eval.synth.SyntheticScene`, or a dict with those keys.
        pose_align: alignment for ATE and RPE ("sim3" like MonST3R).
        depth_align: depth alignments to report; the first one fills the top-level ``abs_rel`` and
            ``delta_1.25``.
        max_depth, post_clip_max: depth validity bound and clamp (see :data:`DEPTH_EVAL_PRESETS`).
        frame_ids: which GT frames the N predictions correspond to (default: the first N).
    Returns:
        dict with ``ate``, ``rpe_trans``, ``rpe_rot`` (degrees), ``ate_percent_of_path`` (ATE over the
        ground-truth path length, %), ``abs_rel``, ``delta_1.25``, ``pose_alignment``,
        ``depth_alignment``, and per-alignment details under ``"depth"`` and ``"pose"``.
    """
    def get(name: str):
        if isinstance(gt, dict):
            return gt.get(name)
        return getattr(gt, name, None)

    out: dict = {}
    gt_c2w = get("cam_to_world")
    gt_depth = get("depth")
    if pred_c2w is not None and gt_c2w is not None:
        pred_c2w = _check_poses("predicted poses", pred_c2w)
        gt_c2w = _check_poses("ground-truth poses", gt_c2w)
        ids = np.asarray(frame_ids if frame_ids is not None else np.arange(len(pred_c2w)), np.int64)
        if ids.max(initial=-1) >= len(gt_c2w) or len(ids) != len(pred_c2w):
            raise InputError(f"evaluate: {len(pred_c2w)} predicted poses but ground truth has {len(gt_c2w)}; "
                             "pass frame_ids naming the GT frame of each prediction")
        pose = evaluate_poses(pred_c2w, gt_c2w[ids], align=pose_align)
        path = float(np.linalg.norm(np.diff(gt_c2w[ids][:, :3, 3], axis=0), axis=1).sum())
        out.update({"ate": pose["ate"], "rpe_trans": pose["rpe_trans"], "rpe_rot": pose["rpe_rot"],
                    "ate_percent_of_path": 100.0 * pose["ate"] / path if path > 0 else float("nan"),
                    "pose_alignment": pose_align, "pose": pose})
    if pred_depth is not None and gt_depth is not None:
        pd = np.asarray(pred_depth, np.float32)
        gd = np.asarray(gt_depth)
        ids = np.asarray(frame_ids if frame_ids is not None else np.arange(len(pd)), np.int64)
        if ids.max(initial=-1) >= len(gd) or len(ids) != len(pd):
            raise InputError(f"evaluate: {len(pd)} predicted depth maps but ground truth has {len(gd)}; "
                             "pass frame_ids naming the GT frame of each prediction")
        gd = gd[ids]
        if pd.shape[1:] != gd.shape[1:]:
            import cv2

            h, w = gd.shape[1:]
            pd = np.stack([cv2.resize(d, (w, h), interpolation=cv2.INTER_CUBIC) for d in pd])
        depth = {a: depth_metrics(pd, gd, align=a, max_depth=max_depth, post_clip_max=post_clip_max)
                 for a in depth_align}
        first = depth[depth_align[0]]
        out.update({"abs_rel": first["abs_rel"], "delta_1.25": first["delta_1.25"],
                    "depth_alignment": depth_align[0], "depth": depth})
    return out
