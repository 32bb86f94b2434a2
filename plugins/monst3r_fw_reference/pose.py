"""Pose solver ``pnp_mst``: MonST3R's ``init='mst'`` initialisation (maximum-confidence spanning tree + PnP-RANSAC).

Official semantics (``dust3r/cloud_opt/init_im_poses.py``, ``minimum_spanning_tree``), restated:

1. **Edge score** of a directed pair (i, j): ``mean(conf_i) * mean(conf_j)`` (``compute_edge_scores``).
2. **Tree**: scipy's ``minimum_spanning_tree`` of the negated scores (undirected; of the two
   directions of an edge the better one wins), i.e. a maximum-confidence spanning tree.
3. **Traversal**: start from the strongest tree edge (i, j): the world frame is camera i,
   ``pts3d[i] = pts3d_i``, ``pts3d[j] = pts3d_j`` and ``world_from_cam[i] = I``. Then repeatedly take
   the strongest remaining tree edge with one end already placed (others wait): a weighted
   similarity Procrustes (``roma.rigid_points_registration``, weights = that view's confidence)
   aligns the placed view's pair pointmap to its world pointmap; the same transform places the
   other view (``pts3d[new] = s R X + T``). The Procrustes rotation/translation is the pose of the
   pair's first camera i when that is not set yet. Scales therefore propagate along the tree.
4. **Focals**: Weiszfeld estimate (10 IRLS steps, pp ``(W/2, H/2)``) on a view-i pointmap of the frame.
5. **PnP**: every frame still without a pose gets one from ``cv2.solvePnPRansac`` (SQPnP,
   ``iterations`` = the official ``niter_PnP`` = 10, reprojection threshold 5 px) on its world
   pointmap and its pixel grid, using the pixels with ``im_conf > min_conf_thr`` (3).
6. **Depth** of frame i = z of its world pointmap in its own camera; **conf** = ``im_conf``, the
   per-pixel maximum confidence of the frame over all pairs (MonST3R's ``init_conf_maps``).

Deviations (each documented at the config field or below): the official loop estimates a new
frame's focal from the *previous* tree edge's pointmap (a stale variable); here it is the current
edge's view-i pointmap. When fewer than ``min_pnp_points`` pixels pass the confidence threshold
(e.g. constant confidence 2 < 3) the PnP uses the more confident half of the pixels instead of
giving up (the official code falls back to an identity pose). The official code then rescales
everything by the pairwise-scale normalisation of its optimiser (``base_scale`` 0.5); that belongs
to the aligner and is not applied here. PnP runs in a thread pool (OpenCV releases the GIL).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Sequence

import numpy as np
from pydantic import Field, field_validator

from monst3r_framework.errors import InputError, StageError
from monst3r_framework.fingerprint import InputFile
from monst3r_framework.stages import (
    CameraTrajectory, PairPredictions, PoseInputs, PoseSolver, RunContext, StageConfig, read_rows,
)

from .threads import torch_threads


__all__ = [
    "PnPMSTConfig", "PnPMST", "edge_scores", "image_confidence", "weighted_procrustes", "pnp_world_from_cam",
    "pnp_unknown_focal",
    "principal_point", "load_known_poses", "align_pose_sets", "STAGES",
]


# --------------------------------------------------------------------------------------------
# Building blocks (also used by the mask builder)
# --------------------------------------------------------------------------------------------


def principal_point(h: int, w: int, convention: str = "center") -> tuple[float, float]:
    """``(W/2, H/2)`` for "center" (MonST3R's optimiser/PnP) or ``((W-1)/2, (H-1)/2)`` for "pixel_center"."""
    if convention == "center":
        return w / 2.0, h / 2.0
    return (w - 1) / 2.0, (h - 1) / 2.0


def edge_scores(predictions: PairPredictions, chunk: int = 32) -> np.ndarray:
    """(P,) float64 ``mean(conf_i) * mean(conf_j)`` per directed pair (official ``edge_conf``)."""
    p = len(predictions.pairs)
    out = np.empty(p, np.float64)
    for s in range(0, p, chunk):
        ci = np.asarray(predictions.conf_i[s:s + chunk], np.float64).reshape(min(chunk, p - s), -1).mean(1)
        cj = np.asarray(predictions.conf_j[s:s + chunk], np.float64).reshape(min(chunk, p - s), -1).mean(1)
        out[s:s + chunk] = ci * cj
    return out


def image_confidence(predictions: PairPredictions, n_frames: int, out: Optional[Any] = None,
                     block: int = 32) -> Any:
    """(F, H, W) float32 per-pixel maximum confidence of each frame over every pair it appears in.

    MonST3R's ``im_conf`` / ``init_conf_maps``: view i of pair (i, j) contributes ``conf_i``, view j
    contributes ``conf_j``. Frames in no pair stay 0. Computed ``block`` frames at a time into
    ``out`` (a ``ctx.output`` array or None: numpy), so memory holds one block, and each stored
    confidence map is read once.
    """
    pairs = np.asarray(predictions.pairs, np.int64)
    h, w = predictions.conf_i.shape[1:3]
    if out is None:
        out = np.zeros((n_frames, h, w), np.float32)
    for f0 in range(0, n_frames, block):
        f1 = min(n_frames, f0 + block)
        acc = np.zeros((f1 - f0, h, w), np.float32)
        for view, arr in ((0, predictions.conf_i), (1, predictions.conf_j)):
            rows = np.flatnonzero((pairs[:, view] >= f0) & (pairs[:, view] < f1))
            if not len(rows):
                continue
            confs = np.asarray(arr[rows], np.float32)  # one read per run of consecutive pairs
            for k, conf in zip(rows, confs):
                f = int(pairs[k, view]) - f0
                np.maximum(acc[f], conf, out=acc[f])
        out[f0:f1] = acc
    return out


class _WorldPointmaps:
    """The traversal's world pointmaps ((H, W, 3) float64 per frame, placed in spanning-tree order),
    kept in a ``ctx.output`` scratch array: the store workspace under the runner (dropped at commit),
    so the pose solver's memory does not grow with the number of frames; numpy outside it."""

    def __init__(self, ctx: RunContext, n: int, h: int, w: int) -> None:
        self._arr = ctx.output("scratch_world_pointmaps", (n, h, w, 3), np.float64)
        self._placed = np.zeros(n, bool)

    def __setitem__(self, f: int, value: np.ndarray) -> None:
        self._arr[int(f)] = np.asarray(value, np.float64)
        self._placed[int(f)] = True

    def __getitem__(self, f: int) -> Optional[np.ndarray]:
        return np.asarray(self._arr[int(f)], np.float64) if self._placed[int(f)] else None


def weighted_procrustes(src: np.ndarray, dst: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity ``dst ~ s R src + T`` minimising the weighted squared error (roma, float64).

    Args:
        src, dst: (..., 3) corresponding points (same shape).
        weights: (...) non-negative weights.
    Returns:
        s (float), R (3, 3) float64, T (3,) float64.
    """
    import torch

    import roma

    x = np.asarray(src, np.float64).reshape(-1, 3)
    y = np.asarray(dst, np.float64).reshape(-1, 3)
    wt = np.asarray(weights, np.float64).reshape(-1)
    ok = np.isfinite(x).all(1) & np.isfinite(y).all(1) & np.isfinite(wt)
    if not ok.all():
        x, y, wt = x[ok], y[ok], wt[ok]
    R, T, s = roma.rigid_points_registration(torch.from_numpy(x), torch.from_numpy(y), weights=torch.from_numpy(wt),
                                             compute_scaling=True)
    return float(s), R.numpy(), T.numpy().reshape(3)


def _sim3(s: float, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = s * R
    out[:3, 3] = T
    return out


def pnp_world_from_cam(
    pts_world: np.ndarray, mask: np.ndarray, focal: float, pp: tuple[float, float], iterations: int = 10,
    reprojection_px: float = 5.0, max_points: Optional[int] = None, seed: int = 0,
) -> Optional[tuple[np.ndarray, int]]:
    """Camera pose from a pointmap seen by that camera: ``cv2.solvePnPRansac`` (SQPnP) as ``fast_pnp``.

    Args:
        pts_world: (H, W, 3) the camera's own pointmap in the target frame (2-D–3-D correspondences
            are same-view: pixel (x, y) sees point ``pts_world[y, x]``).
        mask: (H, W) bool, pixels to use.
        focal: focal in pixels; pp: principal point (x, y).
        iterations: RANSAC iterations; reprojection_px: inlier threshold in pixels.
        max_points: optional random subsample of the masked pixels (None = all, as official).
    Returns:
        (world_from_cam (4, 4) float64, inlier count), or None when PnP fails or < 4 points.
    """
    import cv2

    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if len(ys) < 4:
        return None
    if max_points is not None and len(ys) > max_points:
        sel = np.random.default_rng(seed).choice(len(ys), max_points, replace=False)
        ys, xs = ys[sel], xs[sel]
    obj = np.ascontiguousarray(pts_world[ys, xs], np.float32)
    img = np.stack([xs, ys], axis=1).astype(np.float32)
    K = np.array([[focal, 0, pp[0]], [0, focal, pp[1]], [0, 0, 1]], np.float32)
    try:
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(obj, img, K, None, iterationsCount=int(iterations),
                                                     reprojectionError=float(reprojection_px),
                                                     flags=cv2.SOLVEPNP_SQPNP)
    except cv2.error:
        return None
    if not ok or inliers is None or len(inliers) == 0:
        return None
    cam_from_world = np.eye(4)
    cam_from_world[:3, :3] = cv2.Rodrigues(rvec)[0]
    cam_from_world[:3, 3] = tvec.reshape(3)
    return np.linalg.inv(cam_from_world), int(len(inliers))


def pnp_unknown_focal(
    pts_world: np.ndarray, mask: np.ndarray, pp: tuple[float, float], iterations: int = 10,
    reprojection_px: float = 5.0, max_points: Optional[int] = None, seed: int = 0,
) -> Optional[tuple[np.ndarray, int, float]]:
    """:func:`pnp_world_from_cam` for a frame whose focal is unknown, as the official ``fast_pnp``
    with ``focal=None``: 21 focals geometrically spaced over [max(H, W) / 2, 3 max(H, W)], the one
    with the most RANSAC inliers wins. Needed for frames that are never the first view of a pair
    (the last frame of an unsymmetrised ``swin-K-noncyclic`` graph): no pointmap in their own camera
    gives a focal. Returns (world_from_cam, inliers, focal) or None."""
    size = float(max(mask.shape))
    best = None
    for focal in np.geomspace(size / 2, size * 3, 21):
        res = pnp_world_from_cam(pts_world, mask, float(focal), pp, iterations, reprojection_px, max_points, seed)
        if res is not None and (best is None or res[1] > best[1]):
            best = (res[0], res[1], float(focal))
    return best


def load_known_poses(path: str, n_frames: int) -> np.ndarray:
    """Read camera-to-world poses from ``.npz``/``.npy`` or a text file.

    Accepted layouts: npz with key ``world_from_cam``/``cam_to_world``/``poses`` (or a single
    array); arrays of shape (F, 4, 4), (F, 3, 4), (F, 16), (F, 12) or (4F, 4); text TUM lines
    ``t tx ty tz qx qy qz qw`` (F, 8).

    Returns:
        (F, 4, 4) float64 cam-to-world.
    """
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"pose_solver.known_poses: file not found: {p}; pass a .npz/.npy/.txt of camera-to-world poses")
    try:
        if p.suffix == ".npz":
            with np.load(p) as z:
                key = next((k for k in ("world_from_cam", "cam_to_world", "poses") if k in z.files), None)
                if key is None and len(z.files) == 1:
                    key = z.files[0]
                if key is None:
                    raise InputError(f"pose_solver.known_poses: {p} has arrays {z.files}; expected one named "
                                     "'world_from_cam', 'cam_to_world' or 'poses'; rename it")
                arr = np.asarray(z[key], np.float64)
        elif p.suffix == ".npy":
            arr = np.load(p).astype(np.float64)
        else:
            arr = np.loadtxt(p, dtype=np.float64, comments="#", ndmin=2)
    except InputError:
        raise
    except Exception as exc:  # unreadable file
        raise InputError(f"pose_solver.known_poses: cannot read {p} ({exc}); pass a .npz/.npy/.txt of poses") from exc
    if arr.ndim == 2 and arr.shape == (n_frames, 8):
        import roma

        q = torch.from_numpy(arr[:, 4:8])  # qx qy qz qw (roma's XYZW order)
        out = np.tile(np.eye(4), (n_frames, 1, 1))
        out[:, :3, :3] = roma.unitquat_to_rotmat(q / q.norm(dim=1, keepdim=True)).numpy()
        out[:, :3, 3] = arr[:, 1:4]
        return out
    if arr.ndim == 2 and arr.shape == (4 * n_frames, 4):
        arr = arr.reshape(n_frames, 4, 4)
    elif arr.ndim == 2 and arr.shape[0] == n_frames and arr.shape[1] in (12, 16):
        arr = arr.reshape(n_frames, -1, 4)
    if arr.ndim != 3 or arr.shape[0] != n_frames or arr.shape[1:] not in ((3, 4), (4, 4)):
        raise InputError(f"pose_solver.known_poses: {p} holds shape {arr.shape}; expected {n_frames} "
                         f"camera-to-world poses as (F, 4, 4), (F, 3, 4), (F, 16), (F, 12), (4F, 4) or TUM (F, 8)")
    out = np.tile(np.eye(4), (n_frames, 1, 1))
    out[:, :3, :] = arr[:, :3, :]
    return out


def align_pose_sets(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity taking the camera set ``src`` onto ``dst`` (official ``align_multiple_poses``).

    Registers camera centres and points a little along each optical axis (``eps`` = median distance
    between poses / 100) without weights. Args: (N, 4, 4) cam-to-world each. Returns s, R, T.
    """
    def centres_and_axes(poses: np.ndarray) -> np.ndarray:
        c = poses[:, :3, 3]
        d = np.linalg.norm(c[:, None] - c[None], axis=-1)
        eps = np.median(d[np.triu_indices(len(c), 1)]) / 100 if len(c) > 1 else 1.0
        return np.concatenate([c, c + eps * poses[:, :3, 2]])

    a, b = centres_and_axes(src), centres_and_axes(dst)
    return weighted_procrustes(a, b, np.ones(len(a)))


# --------------------------------------------------------------------------------------------
# Stage
# --------------------------------------------------------------------------------------------


class PnPMSTConfig(StageConfig):
    type: Literal["pnp_mst"] = "pnp_mst"
    iterations: int = Field(10, ge=1, le=100000, description="RANSAC iterations per PnP (official niter_PnP = 10).")
    reprojection_px: float = Field(5.0, gt=0, le=1000, description="PnP inlier threshold in pixels (official 5).")
    min_conf_thr: float = Field(3.0, ge=0, description="PnP uses pixels with im_conf above this (official min_conf_thr 3).")
    min_pnp_points: int = Field(
        64, ge=4, description="If fewer pixels pass min_conf_thr, PnP uses the more confident half instead "
        "(the official code gives up and uses an identity pose).")
    max_pnp_points: Optional[int] = Field(
        None, ge=16, description="Random subsample of PnP correspondences for speed; null = all (official).")
    principal_point: Literal["center", "pixel_center"] = Field(
        "center", description="Principal point convention: 'center' = (W/2, H/2) as MonST3R; "
        "'pixel_center' = ((W-1)/2, (H-1)/2). Ignored when intrinsics are given.")
    focal: Optional[float] = Field(None, gt=0, description="Known focal in pixels at network resolution (all frames).")
    intrinsics: Optional[tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]] = Field(
        None, description="Known 3x3 pixel intrinsics at network resolution (all frames); focal = (fx + fy) / 2.")
    known_poses: Annotated[Optional[str], InputFile()] = Field(
        None, description="Path of known camera-to-world poses for every frame (.npz/.npy/.txt, see docs); "
        "the estimate is similarity-aligned to them and the depths rescaled.")
    num_workers: int = Field(0, ge=0, le=256, description="Threads for PnP; 0 = one per CPU core.")
    chaining: Literal["similarity", "camera_scale"] = Field(
        "similarity", description="How a tree edge is attached to the placed frame: 'similarity' = weighted "
        "Procrustes of the pointmaps (official); 'camera_scale' = the placed frame's camera pose and a robust "
        "scale only (a pair's view of a frame lies on that frame's camera rays, so rotation and centre are "
        "already known; Procrustes instead absorbs depth distortion into a rotation that accumulates along "
        "the tree). With 'camera_scale' every frame is posed by PnP as soon as it is placed.")

    @field_validator("intrinsics")
    @classmethod
    def _check_k(cls, v):
        if v is not None:
            k = np.asarray(v, np.float64)
            if not (k[0, 0] > 0 and k[1, 1] > 0 and np.allclose(k[2], [0, 0, 1])):
                raise ValueError("intrinsics must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
        return v


class PnPMST(PoseSolver):
    """Initial cameras by MonST3R's maximum-confidence spanning tree and PnP-RANSAC (``init='mst'``).

    Output :class:`CameraTrajectory`: world_from_cam (F, 4, 4) float64 cam-to-world in the frame of
    the first camera of the strongest pair; intrinsics (F, 3, 3) at network resolution; depth
    (F, H, W) float32 in the same scale as the translations; conf (F, H, W) float32 = ``im_conf``.
    """

    name: ClassVar[str] = "pnp_mst"
    config_model = PnPMSTConfig
    config: PnPMSTConfig

    def _workers(self) -> int:
        return self.config.num_workers or max(1, os.cpu_count() or 1)

    def run(self, inputs: PoseInputs, ctx: RunContext) -> CameraTrajectory:
        # torch's work here is one frame's Procrustes (a few thousand points) or a 16-frame Weiszfeld
        # focal at a time: too small for threads to pay, and on a loaded machine torch's waiting workers
        # cost far more than the work (roma's weighted Procrustes of 3,072 points at load 16 on 2 cores:
        # 103 ms wall / 34 ms CPU with 2 threads, 6 ms / 1.6 ms with 1).
        with torch_threads(1):
            return self._solve(inputs, ctx)

    def _solve(self, inputs: PoseInputs, ctx: RunContext) -> CameraTrajectory:
        cfg = self.config
        pred = inputs.predictions
        n = inputs.frames.n_frames
        pairs = np.asarray(pred.pairs, np.int64)
        h, w = (int(v) for v in pred.pts3d_i.shape[1:3])
        if len(pairs) == 0:
            raise StageError("pose_solver pnp_mst: no pairs in the predictions; the scene graph must have at least one edge")
        if pairs.min() < 0 or pairs.max() >= n:
            raise StageError(f"pose_solver pnp_mst: pair indices span {pairs.min()}..{pairs.max()} but the video has "
                             f"{n} frames; the predictions do not belong to these frames")
        missing = sorted(set(range(n)) - set(pairs.ravel().tolist()))
        if missing:
            raise StageError(f"pose_solver pnp_mst: frames {missing[:10]} appear in no pair; use a scene graph "
                             "that covers every frame")

        if cfg.intrinsics is not None:
            k_known = np.asarray(cfg.intrinsics, np.float64)
            pp = (float(k_known[0, 2]), float(k_known[1, 2]))
            known_focal: Optional[float] = float(k_known[0, 0] + k_known[1, 1]) / 2.0
        else:
            pp = principal_point(h, w, cfg.principal_point)
            known_focal = cfg.focal

        scores = edge_scores(pred)
        im_conf = image_confidence(pred, n, ctx.output("conf", (n, h, w), np.float32))
        tree = _spanning_tree(pairs, scores, n)
        pts3d = _WorldPointmaps(ctx, n, h, w)
        if cfg.chaining == "camera_scale":
            focals, poses = self._traverse_camera(tree, pairs, scores, pred, n, pp, known_focal, pts3d, ctx)
        else:
            focals = None
            poses, focal_edge = self._traverse(tree, pairs, pred, n, pts3d)

        # Focals: the view-i pointmap of the tree edge that placed the frame, else of its best edge.
        if focals is not None:
            pass
        elif known_focal is not None:
            focals = np.full(n, known_focal, np.float64)
        else:
            for k in np.argsort(-scores, kind="stable"):
                focal_edge.setdefault(int(pairs[k, 0]), int(k))
            focals = self._focals_of_first_views(pred, focal_edge, n, pp)

        # PnP for frames the tree did not pose, in parallel.
        todo = [f for f in range(n) if poses[f] is None]

        def solve(f: int):
            conf_f = np.asarray(im_conf[f], np.float32)
            mask = conf_f > cfg.min_conf_thr
            if mask.sum() < cfg.min_pnp_points:
                mask = conf_f >= np.median(conf_f)
            if np.isnan(focals[f]):  # never a first view: focal searched by PnP (official)
                res = pnp_unknown_focal(pts3d[f], mask, pp, cfg.iterations, cfg.reprojection_px,
                                        cfg.max_pnp_points, seed=ctx.seed + f)
                if res is not None:
                    focals[f] = res[2]
                return res
            return pnp_world_from_cam(pts3d[f], mask, float(focals[f]), pp, cfg.iterations, cfg.reprojection_px,
                                      cfg.max_pnp_points, seed=ctx.seed + f)

        with ctx.progress(len(todo), "pnp_mst: PnP") as bar:
            if len(todo) > 1 and self._workers() > 1:
                with ThreadPoolExecutor(self._workers()) as pool:
                    results = list(pool.map(solve, todo))
            else:
                results = [solve(f) for f in todo]
            bar.advance(len(todo))
        unknown = np.isnan(focals)
        if unknown.any():  # PnP failed for a frame without a focal: the median of the others
            focals[unknown] = np.median(focals[~unknown])
        failed = []
        for f, res in zip(todo, results):
            if res is None:
                failed.append(f)
                poses[f] = np.eye(4)  # official fallback
            else:
                poses[f] = res[0]
        if failed:
            ctx.log(f"pose_solver pnp_mst: PnP failed for frames {failed[:10]}; identity pose used (official fallback)")

        world_from_cam = np.stack(poses).astype(np.float64)
        scale = np.float32(1.0)
        placed_from_cam = world_from_cam
        if cfg.known_poses:
            known = load_known_poses(cfg.known_poses, n)
            s, R, T = align_pose_sets(world_from_cam, known)
            scale = np.float32(s)
            ctx.log(f"pose_solver pnp_mst: aligned to known poses (scale {s:.4g})")
            world_from_cam = known
        depth = ctx.output("depth", (n, h, w), np.float32)
        for f in range(n):  # one frame at a time: z of the placed pointmap in its own camera
            cam_from_world = np.linalg.inv(placed_from_cam[f])
            depth[f] = (pts3d[f] @ cam_from_world[2, :3] + cam_from_world[2, 3]).astype(np.float32) * scale

        intrinsics = np.tile(np.eye(3), (n, 1, 1))
        intrinsics[:, 0, 0] = intrinsics[:, 1, 1] = focals
        intrinsics[:, 0, 2], intrinsics[:, 1, 2] = pp
        return CameraTrajectory(world_from_cam=world_from_cam, intrinsics=intrinsics, depth=depth, conf=im_conf)

    # ---- steps -------------------------------------------------------------------------------

    def _traverse(self, tree: list[tuple[float, int, int, int]], pairs: np.ndarray, pred: PairPredictions,
                  n: int, pts3d: _WorldPointmaps) -> tuple[list[Optional[np.ndarray]], dict[int, int]]:
        """Place every frame's pointmap in the world frame along the tree (official traversal order).

        Writes the world pointmaps ((H, W, 3) float64 per frame) into ``pts3d``; returns poses (F of
        (4, 4) or None) and, per frame, the pair index whose view-i pointmap gives its focal.
        """
        poses: list[Optional[np.ndarray]] = [None] * n
        focal_edge: dict[int, int] = {}
        todo = sorted(tree)  # ascending score; pop() takes the strongest
        _, i, j, k = todo.pop()
        pts3d[i] = np.asarray(pred.pts3d_i[k], np.float64)
        pts3d[j] = np.asarray(pred.pts3d_j[k], np.float64)
        poses[i] = np.eye(4)
        focal_edge[i] = k
        done = {i, j}
        stalled = 0
        while todo:
            score, i, j, k = todo.pop()
            if i in done and j not in done:
                focal_edge.setdefault(i, k)
                s, R, T = weighted_procrustes(pred.pts3d_i[k], pts3d[i], pred.conf_i[k])
                pts3d[j] = _apply(_sim3(s, R, T), np.asarray(pred.pts3d_j[k], np.float64))
                done.add(j)
            elif j in done and i not in done:
                focal_edge.setdefault(i, k)
                s, R, T = weighted_procrustes(pred.pts3d_j[k], pts3d[j], pred.conf_j[k])
                pts3d[i] = _apply(_sim3(s, R, T), np.asarray(pred.pts3d_i[k], np.float64))
                done.add(i)
            elif i not in done and j not in done:
                todo.insert(0, (score, i, j, k))  # try again once a neighbour is placed
                stalled += 1
                if stalled > len(todo):
                    raise StageError(f"pose_solver pnp_mst: the pair graph is disconnected (frames "
                                     f"{sorted(set(range(n)) - done)[:10]} unreachable); use a connected scene graph")
                continue
            else:
                raise StageError(f"pose_solver pnp_mst: spanning tree edge ({i}, {j}) closes a cycle; internal error")
            stalled = 0
            if poses[i] is None:
                poses[i] = _sim3(1.0, R, T)
        return poses, focal_edge

    def _traverse_camera(self, tree: list[tuple[float, int, int, int]], pairs: np.ndarray, scores: np.ndarray,
                         pred: PairPredictions, n: int, pp: tuple[float, float], known_focal: Optional[float],
                         pts3d: _WorldPointmaps, ctx: RunContext) -> tuple[np.ndarray, list[Optional[np.ndarray]]]:
        """``chaining='camera_scale'``: place frames along the tree by camera pose + scale.

        Same traversal order as :meth:`_traverse`. For a tree edge whose frame ``f`` is placed
        (world pointmap ``W_f``, pose ``world_from_cam_f``), the pair's view of ``f`` is brought into
        camera f (identity when f is the pair's first view, else by PnP of that view), its scale is
        the confidence-weighted median of ``|cam_f_from_world W_f| / |X|``, and the pair frame is
        ``world_from_cam_f * scale * cam_f_from_pair``. The new frame is posed from it (first view)
        or by PnP of its world pointmap (second view).

        Returns:
            focals (F,) float64 and world_from_cam (F of (4, 4)); the world pointmaps ((H, W, 3)
            float64 per frame) are written into ``pts3d``.
        """
        cfg = self.config
        if known_focal is not None:
            focals = np.full(n, known_focal, np.float64)
        else:  # each frame's focal from its best-scoring pair where it is the first view
            best: dict[int, int] = {}
            for k in np.argsort(-scores, kind="stable"):
                best.setdefault(int(pairs[k, 0]), int(k))
            focals = self._focals_of_first_views(pred, best, n, pp)

        def pnp(f: int, pts: np.ndarray, conf: np.ndarray) -> np.ndarray:
            mask = conf > cfg.min_conf_thr
            if mask.sum() < cfg.min_pnp_points:
                mask = conf >= np.median(conf)
            if np.isnan(focals[f]):  # never a first view: focal searched by PnP (official), then kept
                res = pnp_unknown_focal(pts, mask, pp, cfg.iterations, cfg.reprojection_px,
                                        cfg.max_pnp_points, seed=ctx.seed + f)
                if res is not None:
                    focals[f] = res[2]
            else:
                res = pnp_world_from_cam(pts, mask, float(focals[f]), pp, cfg.iterations, cfg.reprojection_px,
                                         cfg.max_pnp_points, seed=ctx.seed + f)
            if res is None:
                ctx.log(f"pose_solver pnp_mst: PnP failed for frame {f} while chaining; identity used")
                return np.eye(4)
            return res[0]

        poses: list[Optional[np.ndarray]] = [None] * n
        todo = sorted(tree)
        _, i, j, k = todo.pop()
        pts3d[i] = np.asarray(pred.pts3d_i[k], np.float64)
        pts3d[j] = np.asarray(pred.pts3d_j[k], np.float64)
        poses[i] = np.eye(4)
        poses[j] = pnp(j, np.asarray(pred.pts3d_j[k], np.float64), np.asarray(pred.conf_j[k], np.float64))
        done = {i, j}
        stalled = 0
        while todo:
            score, i, j, k = todo.pop()
            if (i in done) == (j in done):
                if i in done:
                    raise StageError(f"pose_solver pnp_mst: spanning tree edge ({i}, {j}) closes a cycle; internal error")
                todo.insert(0, (score, i, j, k))
                stalled += 1
                if stalled > len(todo):
                    raise StageError(f"pose_solver pnp_mst: the pair graph is disconnected (frames "
                                     f"{sorted(set(range(n)) - done)[:10]} unreachable); use a connected scene graph")
                continue
            stalled = 0
            x_i = np.asarray(pred.pts3d_i[k], np.float64)
            x_j = np.asarray(pred.pts3d_j[k], np.float64)
            c_i = np.asarray(pred.conf_i[k], np.float64)
            c_j = np.asarray(pred.conf_j[k], np.float64)
            if i in done:  # the pair frame is camera i
                f, x_f, c_f, pair_from_cam_f = i, x_i, c_i, np.eye(4)
            else:  # camera j in the pair frame, by PnP of its own view
                f, x_f, c_f = j, x_j, c_j
                pair_from_cam_f = pnp(j, x_j, c_j)
            cam_f_from_pair = np.linalg.inv(pair_from_cam_f)
            y = _apply(np.linalg.inv(poses[f]), pts3d[f])  # placed pointmap in camera f
            z = _apply(cam_f_from_pair, x_f)
            s = _weighted_median_ratio(np.linalg.norm(y, axis=-1), np.linalg.norm(z, axis=-1), c_f)
            world_from_pair = poses[f] @ np.diag([s, s, s, 1.0]) @ cam_f_from_pair
            if f == i:
                world_j = _apply(world_from_pair, x_j)
                pts3d[j] = world_j
                poses[j] = pnp(j, world_j, c_j)
                done.add(j)
            else:
                pts3d[i] = _apply(world_from_pair, x_i)
                pose = np.eye(4)
                pose[:3, :3] = poses[f][:3, :3] @ cam_f_from_pair[:3, :3]
                pose[:3, 3] = world_from_pair[:3, 3]
                poses[i] = pose
                done.add(i)
        unknown = np.isnan(focals)
        if unknown.any():  # PnP failed for a frame without a focal: the median of the others
            focals[unknown] = np.median(focals[~unknown])
        return focals, poses

    def _focals_of_first_views(self, pred: PairPredictions, edge_of: dict[int, int], n: int,
                               pp: tuple[float, float]) -> np.ndarray:
        """(F,) focals from each frame's chosen first-view pair; NaN for frames that are never a
        pair's first view (their focal is searched by PnP)."""
        focals = np.full(n, np.nan)
        have = sorted(edge_of)
        focals[have] = self._estimate_focals(pred, [edge_of[f] for f in have], pp)
        return focals

    def _estimate_focals(self, pred: PairPredictions, edges: Sequence[int], pp: tuple[float, float],
                         chunk: int = 16) -> np.ndarray:
        """Weiszfeld focal of each frame from the view-i pointmap of the given pair, batched."""
        import torch

        from .geometry import estimate_focal_knowing_depth

        out = np.empty(len(edges), np.float64)
        for s in range(0, len(edges), chunk):
            batch = torch.from_numpy(read_rows(pred.pts3d_i, edges[s:s + chunk]).astype(np.float32, copy=False))
            pp_t = torch.tensor(pp, dtype=torch.float32).expand(len(batch), 2)
            out[s:s + chunk] = estimate_focal_knowing_depth(batch, pp_t, mode="weiszfeld").double().numpy()
        if not np.all(np.isfinite(out) & (out > 0)):
            bad = np.nonzero(~(np.isfinite(out) & (out > 0)))[0].tolist()
            raise StageError(f"pose_solver pnp_mst: focal estimate failed for frames {bad[:10]} (pointmaps with "
                             "non-positive depth?); pass a known `focal` or `intrinsics` in the recipe")
        return out


def _apply(t: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ t[:3, :3].T + t[:3, 3]


def _weighted_median_ratio(num: np.ndarray, den: np.ndarray, weights: np.ndarray) -> float:
    """Weighted median of ``num / den`` over pixels where both are finite and positive (1.0 if none)."""
    num, den, wt = num.reshape(-1), den.reshape(-1), np.asarray(weights, np.float64).reshape(-1)
    ok = np.isfinite(num) & np.isfinite(den) & (num > 0) & (den > 0) & np.isfinite(wt) & (wt > 0)
    if not ok.any():
        return 1.0
    ratio, wt = num[ok] / den[ok], wt[ok]
    order = np.argsort(ratio)
    cum = np.cumsum(wt[order])
    return float(ratio[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _spanning_tree(pairs: np.ndarray, scores: np.ndarray, n: int) -> list[tuple[float, int, int, int]]:
    """Maximum-score spanning tree (scipy MST of negated scores); returns (score, i, j, pair index)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    index: dict[tuple[int, int], int] = {}
    for k, (i, j) in enumerate(pairs.tolist()):
        index.setdefault((i, j), k)  # duplicates: keep the first
    keys = list(index)
    rows = np.array([a for a, _ in keys])
    cols = np.array([b for _, b in keys])
    vals = np.array([-scores[index[key]] for key in keys])
    if np.any(vals >= 0):
        raise StageError("pose_solver pnp_mst: edge scores must be positive (confidences > 0)")
    graph = coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()
    mst = minimum_spanning_tree(graph).tocoo()
    return [(-float(v), int(a), int(b), index[(int(a), int(b))]) for v, a, b in zip(mst.data, mst.row, mst.col)]


STAGES = (PnPMST,)
