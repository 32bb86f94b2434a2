"""Pair predictor ``flow_triangulation``: two-view geometry from optical flow, no learned weights.

For every undirected edge (a, b) of the scene graph:

1. **Correspondences.** The flow stage's ``flow_ab`` maps every pixel of frame a to frame b. A
   random subset of forward-backward consistent pixels that land inside frame b feeds RANSAC.
2. **Relative pose.** ``cv2.findEssentialMat`` (RANSAC) with pixel intrinsics ``K`` whose focal is
   the config's ``focal`` or, when that is null, the focal of a ``fov_deg`` field of view over the
   long image edge; the principal point is the image centre ``((W - 1) / 2, (H - 1) / 2)`` (integer
   pixel coordinates are pixel centres). Hypotheses are refined by robust least squares of the
   Sampson distance and a cheirality test picks ``cam_b_from_cam_a`` = (R, t) with ``|t| = 1``: the
   scale of each edge is arbitrary, the global aligner's per-edge scale absorbs it.
   With ``rotation_averaging`` (recipes/classical.yaml), the edges' rotations are then replaced by
   those of a robust rotation averaging over the whole graph
   (:func:`~monst3r_fw_reference.rotation_averaging.average_rotations`, started along the shortest
   edges) and each translation is re-estimated with its rotation held fixed
   (:func:`~monst3r_fw_reference.two_view.translation_given_rotation`). Two-view geometry lives in
   :mod:`monst3r_fw_reference.two_view`. A near-planar static scene makes two-view fits two-fold
   ambiguous (the spurious solution's translation points along the plane normal, its rotation is
   off by degrees); DIS noise tips long edges to it, the consistent graph of rotations does not.
   ``border_px`` keeps correspondences away from the image border, where flow is least accurate.
   With ``focal_per_frame: zoom`` a camera that zooms gets one focal per frame: each adjacent pair's
   static flow is fitted by rotation only and by rotation + zoom (the fits of the aligner's zoom check,
   :mod:`monst3r_fw_reference.aligner.zoom`); when some pair is a zoom, the scale factors of the pairs the
   zoom model fits clearly better are chained into per-frame focals (the median frame keeping the prior).
   Each edge's two-view fit then sees frame b's pixels moved to frame a's focal
   (``x' = pp + f_a / f_b (x - pp)``, which leaves the rotation unchanged) and each frame's pixels are
   triangulated on the rays of its own focal. With one focal for both views a zoom is triangulated as
   motion along the optical axis and the pointmaps carry it into the pose solver and the aligner.
3. **Dense triangulation.** Every pixel of frame a is triangulated *on its own ray* (so the
   pointmap stays pixel-aligned, like a network's): its depth ``s`` along ``K^-1 (x, y, 1)`` is the
   linear least-squares solution of the two projection equations in frame b with the flow target
   as observation. Every pixel of frame b is triangulated the same way on its own ray, with
   ``flow_ba`` and the inverse pose.
4. **Confidence** ``conf = 1 + (max_conf - 1) * q`` with ``q`` in [0, 1] the product of
   - a parallax term ``1 - exp(-angle / parallax_scale_deg)`` (angle between the two viewing rays
     at the triangulated point: depth from a tiny angle is unreliable),
   - a reprojection term ``exp(-(e / reprojection_sigma_px)^2)`` with ``e`` the distance in the
     other image between the flow target and the triangulated point's projection (motion that
     leaves the epipolar line, i.e. most independently moving objects, is inconsistent),
   - a forward-backward term ``exp(-(fb / fb_sigma_px)^2)`` (occlusions, flow failures),
   - zero when the flow target leaves the other image or the point is not in front of both cameras.
   So ``conf >= 1`` as for MonST3R / DUSt3R, and ``conf == 1`` (weight ``log(conf) = 0`` in the
   aligner) where nothing can be said.

Output for a directed pair (i, j) (DUSt3R's convention, both in camera i):

* ``pts3d_i[p]``: frame i's pixels triangulated on their rays in camera i (with ``flow_ij``).
* ``pts3d_j[p]``: frame j's pixels triangulated on *their* rays in camera j (with ``flow_ji``),
  then mapped into camera i with ``cam_i_from_cam_j``. For a static surface this is the same surface
  point that frame i's pixel flowing onto it triangulates to; for moving objects it is wherever the
  (inconsistent) geometry puts it, with low confidence.
* Pairs (i, j) and (j, i) share one edge computation: their outputs are each other's, re-expressed.

Degenerate edges (self-pairs, fewer than ``min_inliers`` RANSAC inliers, a median parallax below
``min_parallax_deg``, or OpenCV failing) get a fronto-parallel pointmap at depth 1 in both cameras
with the identity pose and ``conf == 1`` everywhere instead of an error; the stage logs them.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

import numpy as np
from pydantic import Field

from monst3r_framework.errors import StageError
from monst3r_framework.stages import FlowField, PairInputs, PairPredictions, PairPredictor, RunContext, StageConfig

from .rotation_averaging import average_rotations
from .two_view import EdgeGeometry, relative_pose_from_flow, sample_correspondences, translation_given_rotation

__all__ = ["FlowTriangulationConfig", "FlowTriangulation", "EdgeGeometry", "intrinsics_from_config",
           "relative_pose_from_flow", "triangulate_on_rays"]


class FlowTriangulationConfig(StageConfig):
    type: Literal["flow_triangulation"] = "flow_triangulation"
    focal: Optional[float] = Field(
        None, gt=0, description="Focal length in pixels at network resolution; null = from fov_deg.")
    fov_deg: float = Field(
        60.0, gt=1.0, lt=179.0, description="Field of view over the long image edge used when focal is null.")
    ransac_threshold_px: float = Field(
        1.0, gt=0, le=50, description="RANSAC inlier threshold of the essential matrix, in pixels.")
    ransac_confidence: float = Field(0.999, gt=0, lt=1, description="RANSAC success probability.")
    max_correspondences: int = Field(
        2000, ge=8, le=1_000_000, description="Flow correspondences sampled per edge for RANSAC.")
    fb_threshold_px: float = Field(
        1.0, gt=0, description="Forward-backward error below which a pixel may be sampled for RANSAC, in pixels.")
    min_inliers: int = Field(30, ge=5, description="Fewer RANSAC inliers than this -> degenerate edge (conf 1).")
    min_parallax_deg: float = Field(
        0.05, ge=0, le=90, description="Median parallax angle below this -> degenerate edge (conf 1), in degrees.")
    parallax_scale_deg: float = Field(
        1.0, gt=0, le=90, description="Parallax angle at which the parallax term reaches 1 - 1/e, in degrees.")
    reprojection_sigma_px: float = Field(
        1.0, gt=0, description="Scale of the reprojection (epipolar) error term of the confidence, in pixels.")
    fb_sigma_px: float = Field(
        1.5, gt=0, description="Scale of the forward-backward error term of the confidence, in pixels.")
    max_conf: float = Field(10.0, gt=1.0, le=1000.0, description="Confidence of a perfect pixel (conf is in [1, max_conf]).")
    max_depth_ratio: float = Field(
        100.0, gt=1.0, description="Depths are clipped to [median / ratio, median * ratio] of the edge's reliable pixels.")
    border_px: float = Field(
        0.0, ge=0, le=64, description="Flow correspondences closer than this to the image border (in either frame) "
        "are not used for the relative pose, in pixels (flow is least accurate at the border).")
    rotation_averaging: bool = Field(
        False, description="Replace each edge's rotation by the one implied by robust rotation averaging over the "
        "whole scene graph and re-estimate its translation with that rotation fixed (removes the rotation / "
        "translation ambiguity of small-baseline two-view fits).")
    rotation_scale_deg: float = Field(
        0.5, gt=0, le=90, description="Cauchy scale of the edge residual angles in rotation averaging, in degrees.")
    batch_size: int = Field(8, ge=1, le=1024, description="Edges triangulated together (memory ~ 1 KB per pixel per edge).")
    focal_per_frame: Literal["shared", "zoom"] = Field(
        "shared", description="shared: one focal (focal / fov_deg) for every frame. zoom: when the flow of some adjacent "
        "frames is a zoom (rotation + zoom fits it much better than rotation alone and the scale changes by more "
        "than zoom_threshold, the test of monst3r_ga's zoom_check), each frame gets its own focal from the chained "
        "scale factors of the adjacent pairs whose zoom fit has at most half the rotation-only error, the median "
        "frame keeping focal / fov_deg; every pair is then triangulated with both frames' own intrinsics. Without "
        "a zoom the output is that of 'shared'.")
    zoom_threshold: float = Field(
        0.01, gt=0, le=0.5, description="focal_per_frame zoom: smallest scale change per frame that counts as a zoom.")


def intrinsics_from_config(h: int, w: int, focal: Optional[float], fov_deg: float) -> np.ndarray:
    """(3, 3) float64 pixel intrinsics: ``focal`` or the focal of ``fov_deg`` over the long edge,
    principal point at the image centre ``((W - 1) / 2, (H - 1) / 2)``."""
    f = float(focal) if focal is not None else (max(h, w) / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]], np.float64)


def _sample(image: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup. image (B, H, W, C), xy (B, H, W, 2) pixels -> (B, H, W, C), border padding."""
    import torch
    import torch.nn.functional as F

    b, h, w, _ = image.shape
    grid = torch.stack((2.0 * xy[..., 0] / max(w - 1, 1) - 1.0, 2.0 * xy[..., 1] / max(h - 1, 1) - 1.0), -1)
    out = F.grid_sample(image.permute(0, 3, 1, 2), grid.to(image.dtype), align_corners=True, padding_mode="border")
    return out.permute(0, 2, 3, 1)


def triangulate_on_rays(flow: torch.Tensor, fb_error: torch.Tensor, cam_b_from_cam_a: torch.Tensor, k: torch.Tensor,
                        config: FlowTriangulationConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Depth of every pixel of frame a along its own ray, from its flow target in frame b.

    Args:
        flow: (B, H, W, 2) float flow a -> b in pixels.
        fb_error: (B, H, W) forward-backward error of ``flow`` in pixels.
        cam_b_from_cam_a: (B, 4, 4) float64 relative poses (unit translation).
        k: (3, 3) float64 pixel intrinsics of both frames, or (B, 2, 3, 3): per edge those of frame a and of
            frame b.
        config: confidence and clipping settings.
    Returns:
        depth (B, H, W) float64 z-depth in camera a (clipped, finite), quality q (B, H, W) float64 in
        [0, 1] (see the module docstring), and the parallax angle (B, H, W) float64 in degrees.
    """
    import torch

    dt = torch.float64
    b, h, w, _ = flow.shape
    k = torch.as_tensor(k, dtype=dt)
    if k.ndim == 2:
        fx, fy, cx, cy = float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])
        fxa, fya, cxa, cya = fx, fy, cx, cy
    else:  # per edge: frame a's intrinsics for its rays, frame b's for the projection into b
        fxa, fya, cxa, cya = (k[:, 0, r, c].view(b, 1, 1) for r, c in ((0, 0), (1, 1), (0, 2), (1, 2)))
        fx, fy, cx, cy = (k[:, 1, r, c].view(b, 1, 1) for r, c in ((0, 0), (1, 1), (0, 2), (1, 2)))
    xs = torch.arange(w, dtype=dt).view(1, 1, w)
    ys = torch.arange(h, dtype=dt).view(1, h, 1)
    ax, ay = (xs - cxa) / fxa, (ys - cya) / fya  # ray of each pixel in camera a, z = 1
    rot, trans = cam_b_from_cam_a[:, :3, :3].to(dt), cam_b_from_cam_a[:, :3, 3].to(dt)
    # Component-wise (B, H, W) tensors: far cheaper than (..., 3) stacks and norms over the last axis.
    rr = [rot[:, c, 0].view(b, 1, 1) * ax + rot[:, c, 1].view(b, 1, 1) * ay + rot[:, c, 2].view(b, 1, 1)
          for c in range(3)]  # ray direction in camera b
    tx, ty, tz = (trans[:, c].view(b, 1, 1) for c in range(3))
    tgt_x = xs + flow[..., 0].to(dt)
    tgt_y = ys + flow[..., 1].to(dt)
    u, v = (tgt_x - cx) / fx, (tgt_y - cy) / fy
    # (s r + t) projects to (u, v):  s (u r_z - r_x) = t_x - u t_z  and  s (v r_z - r_y) = t_y - v t_z.
    c1, c2 = u * rr[2] - rr[0], v * rr[2] - rr[1]
    denom = c1 * c1 + c2 * c2
    s = (c1 * (tx - u * tz) + c2 * (ty - v * tz)) / denom.clamp_min(1e-18)
    xb, yb, zb = s * rr[0] + tx, s * rr[1] + ty, s * rr[2] + tz  # the point in camera b
    front = (s > 0) & (zb > 0) & (denom > 1e-18)
    zb_safe = zb.clamp_min(1e-12)
    reproj = torch.hypot(fx * xb / zb_safe + cx - tgt_x, fy * yb / zb_safe + cy - tgt_y)
    # Parallax: angle at the point between the ray from camera a (direction r) and from camera b.
    dot = rr[0] * xb + rr[1] * yb + rr[2] * zb
    norms = torch.sqrt((rr[0] ** 2 + rr[1] ** 2 + rr[2] ** 2) * (xb ** 2 + yb ** 2 + zb ** 2)).clamp_min(1e-18)
    parallax = torch.rad2deg(torch.arccos((dot / norms).clamp(-1.0, 1.0)))
    inside = (tgt_x > -0.5) & (tgt_x < w - 0.5) & (tgt_y > -0.5) & (tgt_y < h - 0.5)
    q = ((1.0 - torch.exp(-parallax / config.parallax_scale_deg))
         * torch.exp(-(reproj / config.reprojection_sigma_px) ** 2)
         * torch.exp(-(fb_error.to(dt) / config.fb_sigma_px) ** 2))
    q = torch.where(front & inside & torch.isfinite(q), q, torch.zeros_like(q))
    # Clip depths around the median of each edge's reliable pixels; fill the rest with that median.
    depth = torch.empty_like(s)
    for e in range(b):
        good = front[e] & (q[e] > 0.1)
        if not bool(good.any()):
            good = front[e]
        med = float(s[e][good].median()) if bool(good.any()) else 1.0
        lo, hi = med / config.max_depth_ratio, med * config.max_depth_ratio
        depth[e] = torch.where(front[e] & torch.isfinite(s[e]), s[e].clamp(lo, hi), torch.full_like(s[e], med))
    return depth, q, torch.where(front, parallax, torch.zeros_like(parallax))


def _fb_error(flow_fw: torch.Tensor, flow_bw: torch.Tensor) -> torch.Tensor:
    """(B, H, W) forward-backward error ``|f_fw(p) + f_bw(p + f_fw(p))|`` in pixels."""
    import torch

    b, h, w, _ = flow_fw.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=flow_fw.dtype), torch.arange(w, dtype=flow_fw.dtype), indexing="ij")
    target = torch.stack((xs, ys), -1) + flow_fw
    err = _sample(flow_bw, target) + flow_fw
    # hypot, not .norm(dim=-1): the sum is a permuted (non-contiguous) view, where the norm reduction
    # was 6x slower (profiled: 8 % of the stage).
    return torch.hypot(err[..., 0], err[..., 1])


class FlowTriangulation(PairPredictor):
    """Weight-free pointmaps for every directed pair by essential-matrix pose and dense triangulation.

    Reads the flow stage (``flow_ij`` / ``flow_ji`` for each edge) and writes
    :class:`PairPredictions`: pts3d_i / pts3d_j (P, H, W, 3) float32 in camera i with a unit-norm
    baseline per edge, conf_i / conf_j (P, H, W) float32 in [1, max_conf]. See the module docstring
    for the exact definitions.
    """

    name: ClassVar[str] = "flow_triangulation"
    config_model = FlowTriangulationConfig
    config: FlowTriangulationConfig
    reads: ClassVar[frozenset[str]] = frozenset({"flow_estimator"})
    requires: ClassVar[frozenset[str]] = frozenset({"flow_estimator"})

    def setup(self, ctx: RunContext) -> None:
        import cv2  # noqa: F401  (fail early if OpenCV is missing)

    def intrinsics(self, h: int, w: int) -> np.ndarray:
        """(3, 3) float64 pixel intrinsics this stage assumes for an H x W frame."""
        return intrinsics_from_config(h, w, self.config.focal, self.config.fov_deg)

    def frame_focals(self, flow: FlowField, n_frames: int, k: np.ndarray, ctx: RunContext) -> np.ndarray:
        """(F,) float64 focal of each frame (``focal_per_frame``): the config focal everywhere unless some
        adjacent pair's flow is a zoom; then the chained zoom factors, the median frame at the config focal."""
        from .aligner.zoom import adjacent_zoom, zoom_flags

        f0 = float(k[0, 0])
        focals = np.full(n_frames, f0)
        if self.config.focal_per_frame == "shared" or n_frames < 2:
            return focals
        fits = adjacent_zoom(flow, None, n_frames, focals, np.tile(k[:2, 2], (n_frames, 1)))
        flagged = zoom_flags(fits, self.config.zoom_threshold)
        if not flagged.any():
            ctx.log(f"flow_triangulation: no zoom (largest scale change {np.nanmax(np.abs(fits[:, 0] - 1)):.2%} per "
                    f"frame), focal {f0:.1f} px for every frame")
            return focals
        with np.errstate(invalid="ignore"):
            use = flagged | (fits[:, 2] <= 0.5 * fits[:, 1])
        use &= np.isfinite(fits[:, 0])
        log_f = np.concatenate([[0.0], np.cumsum(np.where(use, np.log(np.where(use, fits[:, 0], 1.0)), 0.0))])
        focals = f0 * np.exp(log_f - np.median(log_f))
        rows = np.flatnonzero(flagged)
        ctx.log(f"flow_triangulation: zoom between frames {int(rows[0])}-{int(rows[-1]) + 1} ({len(rows)} adjacent pairs "
                f"over {self.config.zoom_threshold:.0%} per frame; {int(use.sum())} pairs' scale factors chained): "
                f"per-frame focal {focals.min():.1f}-{focals.max():.1f} px")
        return focals

    def run(self, inputs: PairInputs, ctx: RunContext) -> PairPredictions:
        import torch

        cfg = self.config
        if inputs.flow is None:
            raise StageError("pair_predictor flow_triangulation: no flow was handed over; enable a flow_estimator "
                             "in the recipe (e.g. stages.flow_estimator.type=opencv_dis)")
        pairs = np.asarray(inputs.pairs, np.int64).reshape(-1, 2)
        h, w = inputs.frames.size_hw
        k = self.intrinsics(h, w)
        k_t = torch.from_numpy(k)
        rays = np.stack(np.meshgrid((np.arange(w) - k[0, 2]) / k[0, 0], (np.arange(h) - k[1, 2]) / k[1, 1]), -1)
        rays = np.concatenate([rays, np.ones((h, w, 1))], -1).astype(np.float64)  # (H, W, 3), z = 1
        # Per-frame intrinsics (focal_per_frame: zoom); all equal to k otherwise, and then every step
        # below is the single-focal computation.
        focals = self.frame_focals(inputs.flow, inputs.frames.n_frames, k, ctx)
        per_frame = bool(np.any(focals != k[0, 0]))
        ks = np.repeat(k[None], len(focals), 0)
        ks[:, 0, 0] = ks[:, 1, 1] = focals

        def rays_of(f: int) -> np.ndarray:  # (H, W, 3) rays of frame f, z = 1
            return rays * np.array([k[0, 0] / focals[f], k[1, 1] / focals[f], 1.0]) if per_frame else rays

        grid = torch.from_numpy(np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(np.float32)
                                - k[:2, 2].astype(np.float32))  # (H, W, 2) pixel - principal point

        def in_focal_of_a(batch: np.ndarray, f_ab: torch.Tensor) -> torch.Tensor:
            """flow a -> b with frame b's pixels moved to frame a's focal (x' = pp + f_a / f_b (x - pp)), so
            a two-view fit with frame a's intrinsics sees one camera model (rotations are unchanged)."""
            if not per_frame:
                return f_ab
            r = torch.from_numpy((focals[batch[:, 0]] / focals[batch[:, 1]]).astype(np.float32)).view(-1, 1, 1, 1)
            return f_ab * r + grid * (r - 1.0)

        n = len(pairs)
        # written pair by pair into the store workspace under the runner (numpy otherwise): a long video's
        # pointmaps are never all in memory
        pts_i = ctx.output("pts3d_i", (n, h, w, 3), np.float32)
        pts_j = ctx.output("pts3d_j", (n, h, w, 3), np.float32)
        conf_i = ctx.output("conf_i", (n, h, w), np.float32)
        conf_j = ctx.output("conf_j", (n, h, w), np.float32)
        reader = inputs.flow.reader()  # the flow's pair list read and indexed once

        # One computation per undirected edge (a < b) serves (a, b) and (b, a).
        non_self = pairs[pairs[:, 0] != pairs[:, 1]]
        edges = np.unique(np.sort(non_self, axis=1), axis=0) if len(non_self) else np.zeros((0, 2), np.int64)
        users: dict[tuple[int, int], list[int]] = {}
        for p, (i, j) in enumerate(pairs):
            if i == j:
                pts_i[p] = rays_of(int(i))
                pts_j[p] = rays_of(int(i))
                conf_i[p] = 1.0
                conf_j[p] = 1.0
            else:
                users.setdefault((int(min(i, j)), int(max(i, j))), []).append(p)

        def load(batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            try:
                f_ab = torch.from_numpy(reader.gather(batch))
                f_ba = torch.from_numpy(reader.gather(batch[:, ::-1]))
            except KeyError as exc:
                raise StageError(f"pair_predictor flow_triangulation: {exc.args[0]}; the flow stage must cover "
                                 "every edge of the scene graph (run it on the same pairs)") from None
            return f_ab, f_ba, _fb_error(f_ab, f_ba), _fb_error(f_ba, f_ab)

        def seed_of(a: int, b: int) -> int:
            return ctx.seed * 100003 + int(a) * 1009 + int(b)

        def two_view(batch: np.ndarray, f_ab: torch.Tensor, fb_a: torch.Tensor) -> list[EdgeGeometry]:
            f_ab = in_focal_of_a(batch, f_ab)
            return [relative_pose_from_flow(
                f_ab[e].numpy(), fb_a[e].numpy(), ks[a], max_correspondences=cfg.max_correspondences,
                fb_threshold_px=cfg.fb_threshold_px, ransac_threshold_px=cfg.ransac_threshold_px,
                ransac_confidence=cfg.ransac_confidence, min_inliers=cfg.min_inliers,
                seed=seed_of(a, b), border_px=cfg.border_px) for e, (a, b) in enumerate(batch)]

        all_geos: dict[tuple[int, int], EdgeGeometry] = {}
        if cfg.rotation_averaging and len(edges):
            with ctx.progress(len(edges), "flow triangulation: two-view poses") as bar:
                for start in range(0, len(edges), cfg.batch_size):
                    batch = edges[start:start + cfg.batch_size]
                    f_ab, _, fb_a, _ = load(batch)
                    for (a, b), geo in zip(batch, two_view(batch, f_ab, fb_a)):
                        all_geos[(int(a), int(b))] = geo
                    bar.advance(len(batch))
            good = [key for key, geo in all_geos.items() if not geo.degenerate]
            if good:
                rel = np.stack([all_geos[key].cam_b_from_cam_a[:3, :3] for key in good])
                cam_from_world, resid = average_rotations(np.array(good), rel, inputs.frames.n_frames,
                                                          scale_deg=cfg.rotation_scale_deg)
                ctx.log(f"flow_triangulation: rotation averaging over {len(good)} edges, residual angle median "
                        f"{np.median(resid):.3f} deg, max {np.max(resid):.2f} deg")
                for (a, b) in good:
                    rot = cam_from_world[b] @ cam_from_world[a].T
                    pose = all_geos[(a, b)].cam_b_from_cam_a.copy()
                    pose[:3, :3] = rot  # the two-view translation stays as a starting point
                    all_geos[(a, b)] = EdgeGeometry(pose, all_geos[(a, b)].inliers, False)

        degenerate: list[str] = []
        with ctx.progress(len(edges), "flow triangulation") as bar:
            for start in range(0, len(edges), cfg.batch_size):
                batch = edges[start:start + cfg.batch_size]
                f_ab, f_ba, fb_a, fb_b = load(batch)
                if all_geos:
                    geos = []
                    f_ab_a = in_focal_of_a(batch, f_ab)
                    for e, (a, b) in enumerate(batch):
                        geo = all_geos[(int(a), int(b))]
                        if not geo.degenerate:
                            p1, p2 = sample_correspondences(
                                f_ab_a[e].numpy(), fb_a[e].numpy(), max_correspondences=cfg.max_correspondences,
                                fb_threshold_px=cfg.fb_threshold_px, border_px=cfg.border_px, seed=seed_of(a, b))
                            pose = translation_given_rotation(geo.cam_b_from_cam_a[:3, :3], p1, p2, ks[a],
                                                              starts=(geo.cam_b_from_cam_a[:3, 3],),
                                                              ransac_threshold_px=cfg.ransac_threshold_px)
                            geo = EdgeGeometry(pose, geo.inliers, False)
                        geos.append(geo)
                else:
                    geos = two_view(batch, f_ab, fb_a)
                b_from_a = torch.from_numpy(np.stack([g.cam_b_from_cam_a for g in geos]))
                a_from_b = torch.linalg.inv(b_from_a)
                if per_frame:
                    k_ab = torch.from_numpy(np.stack([ks[batch[:, 0]], ks[batch[:, 1]]], 1))  # (B, 2, 3, 3)
                    k_ba = k_ab.flip(1)
                else:
                    k_ab = k_ba = k_t
                depth_a, q_a, par_a = triangulate_on_rays(f_ab, fb_a, b_from_a, k_ab, cfg)
                depth_b, q_b, _ = triangulate_on_rays(f_ba, fb_b, a_from_b, k_ba, cfg)
                for e, (a, b) in enumerate(batch):
                    geo = geos[e]
                    if not geo.degenerate:
                        good = q_a[e] > 0.1
                        med_par = float(par_a[e][good].median()) if bool(good.any()) else 0.0
                        if med_par < cfg.min_parallax_deg:
                            geo = EdgeGeometry(np.eye(4), geo.inliers, True,
                                               f"median parallax {med_par:.3f} deg < min_parallax_deg")
                    if geo.degenerate:
                        degenerate.append(f"({int(a)}, {int(b)}): {geo.reason}")
                        xa, xb = rays_of(int(a)), rays_of(int(b))
                        ca = cb = np.ones((h, w), np.float32)
                        pose = np.eye(4)
                    else:
                        xa = rays_of(int(a)) * depth_a[e].numpy()[..., None]  # frame a's points in camera a
                        xb = rays_of(int(b)) * depth_b[e].numpy()[..., None]  # frame b's points in camera b
                        ca = (1.0 + (cfg.max_conf - 1.0) * q_a[e].numpy()).astype(np.float32)
                        cb = (1.0 + (cfg.max_conf - 1.0) * q_b[e].numpy()).astype(np.float32)
                        pose = geo.cam_b_from_cam_a
                    inv_pose = np.linalg.inv(pose)
                    for p in users[(int(a), int(b))]:
                        if int(pairs[p, 0]) == int(a):
                            pts_i[p], conf_i[p], conf_j[p] = xa, ca, cb
                            pts_j[p] = xb @ inv_pose[:3, :3].T + inv_pose[:3, 3]
                        else:
                            pts_i[p], conf_i[p], conf_j[p] = xb, cb, ca
                            pts_j[p] = xa @ pose[:3, :3].T + pose[:3, 3]
                bar.advance(len(batch))
        if degenerate:
            ctx.log(f"flow_triangulation: {len(degenerate)} of {len(edges)} edges degenerate (conf 1): "
                    + "; ".join(degenerate[:5]) + (" ..." if len(degenerate) > 5 else ""))
        return PairPredictions(pairs=pairs, pts3d_i=pts_i, pts3d_j=pts_j, conf_i=conf_i, conf_j=conf_j)


STAGES = (FlowTriangulation,)
