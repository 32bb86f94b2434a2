"""Mask builder ``flow_static``: MonST3R's flow-residual motion mask.

It follows MonST3R's ``PointCloudOptimizer.get_motion_mask_from_pairs``. For every
unordered pair {a, b} of the (symmetrised) graph the official code builds a two-view ``PairViewer``
from the pair's own two directed predictions (a, b) and (b, a) alone, independent of any global pose:

* focal of each view: Weiszfeld estimate on its own view-1 pointmap (``pts3d_i`` of (a, b) for a,
  of (b, a) for b), principal point ``(W/2, H/2)``;
* relative pose of each view: PnP-RANSAC (SQPnP, 100 iterations, 5 px) of that view's points as
  predicted in the *other* camera (``pts3d_j`` of (b, a) for a) against its pixel grid, using the
  pixels whose pair-level confidence (max over the two predictions) exceeds ``min_conf_thr`` = 3;
* the world frame is the camera of the more confident direction (score = mean conf_i * mean
  conf_j): that view keeps identity and its own ``pts3d_i`` depth; the other view gets its PnP
  pose and the depth of its ``pts3d_j`` points seen from that pose;
* ego flow a->b = :func:`geometry.ego_flow` with that depth, the two poses and the two focals; the
  error map is ``||ego flow - estimated flow||`` (vector norm), min-max normalised per pair over the
  whole image, and the same for b->a;
* per frame, the mean of its normalised error maps over all its pairs, thresholded at
  ``threshold`` (``motion_mask_thre`` = 0.35): above = dynamic.

``pose_source: solver`` replaces the per-pair PairViewer by the pose solver's global cameras and
depths (cheaper, not the official path).

Robust options (not official; the defaults reproduce the official behaviour):

* ``pose_source: homography``: the camera-induced flow of each directed pair is a RANSAC
  homography fitted to its forward-backward consistent flow (rotation-only / distant or planar
  scene model; needs neither pointmaps nor cameras). On real handheld clips where the
  weight-free pose solver fails this is the cue that works; scenes with strong near-field
  parallax make it flag static foreground.
* ``valid_pixels: fb_consistent``: pixels whose flow leaves the other image or is forward-backward
  inconsistent (:func:`geometry.flow_consistency` above ``fb_threshold_px``) are left out of the
  normalisation and of the per-frame mean (a pixel valid in no pair gets error 0). Otherwise
  out-of-view pixels, whose flow is meaningless, dominate the per-pair maximum.
* ``normalisation: median``: ``e / (e + median_scale * median(e))`` with the median over the
  pair's valid pixels (a robust scale of the static background's residual) instead of min-max;
  0.5 means a residual ``median_scale`` times the typical one.
* ``morph_radius``: binary opening then closing of the final mask with a square of side ``2r+1``.
* ``texture_floor``: with ``evidence_pixels: in_view``, a forward-backward inconsistent pixel is
  evidence only where the frame has texture (:func:`~monst3r_fw_reference.motion_segmentation.textured_pixels`):
  DIS flow in flat regions is the regulariser's guess.
* ``fill_threshold``: masks carried along the flow into frames that lost most of them, gaining the
  nearby pixels scoring over ``fill_threshold`` (:func:`~monst3r_fw_reference.motion_segmentation.temporal_fill`).
* ``colour_refine: grabcut``: each frame's mask pruned to GrabCut's foreground
  (:func:`~monst3r_fw_reference.motion_segmentation.colour_prune`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, ClassVar, Literal, Optional

import numpy as np
from pydantic import Field

from monst3r_framework.errors import StageError
from monst3r_framework.scene_graph import pair_rows
from monst3r_framework.stages import (
    CameraTrajectory, DynamicMasks, FlowField, FlowReader, FrameSet, MaskBuilder, MaskInputs, PairPredictions,
    RunContext, StageConfig, read_rows,
)

from ..motion_segmentation import (
    camera_flow_homography, colour_prune, mask_confidence_from_stats, mask_frame_stats, mask_notices_from_area,
    remove_small_components, temporal_average_frame, temporal_fill, textured_pixels,
)
from ..pose import pnp_world_from_cam, principal_point

__all__ = ["FlowStaticConfig", "FlowStaticMask", "flow_residual_maps", "STAGES"]


class FlowStaticConfig(StageConfig):
    type: Literal["flow_static"] = "flow_static"
    threshold: float = Field(0.35, ge=0, le=1, description="Dynamic where the mean normalised flow residual exceeds "
                             "this (official motion_mask_thre 0.35).")
    pose_source: Literal["pair", "solver", "homography"] = Field(
        "pair", description="'pair': each pair's own two-view poses and depths (official PairViewer); "
        "'solver': the pose solver's global cameras and depths; 'homography': a RANSAC homography of "
        "each pair's consistent flow (no pointmaps or cameras needed; not official).")
    pnp_iterations: int = Field(100, ge=1, le=100000, description="RANSAC iterations of the per-pair PnP (official 100).")
    reprojection_px: float = Field(5.0, gt=0, description="Per-pair PnP inlier threshold in pixels (official 5).")
    min_conf_thr: float = Field(3.0, ge=0, description="Per-pair PnP uses pixels whose confidence exceeds this (official 3).")
    min_pnp_points: int = Field(64, ge=4, description="If fewer pixels pass min_conf_thr, use the more confident half "
                                "(the official code falls back to an identity pose).")
    max_pnp_points: Optional[int] = Field(None, ge=16, description="Random subsample of PnP correspondences for "
                                          "speed; null = all (official).")
    principal_point: Literal["center", "pixel_center"] = Field(
        "center", description="Per-pair camera principal point: (W/2, H/2) official, or ((W-1)/2, (H-1)/2).")
    num_workers: int = Field(0, ge=0, le=256, description="Threads for the per-pair PnP; 0 = one per CPU core.")
    batch_size: int = Field(16, ge=1, le=4096, description="Pairs per batched focal / ego-flow computation.")
    threads: int = Field(0, ge=0, le=1024, description="torch CPU threads inside the stage (0: leave as is). Its torch "
                         "work is a chunk of small per-pixel maps at a time, where a second intra-op thread on a "
                         "busy machine mostly waits (docs/long-videos.md).")
    valid_pixels: Literal["all", "fb_consistent"] = Field(
        "all", description="'all': every pixel enters normalisation and mean (official); 'fb_consistent': only "
        "pixels whose flow stays in the other image and is forward-backward consistent.")
    fb_threshold_px: float = Field(1.0, gt=0, description="valid_pixels fb_consistent (and homography fitting): "
                                   "forward-backward inconsistency limit in pixels (flow_consistency's measure).")
    normalisation: Literal["minmax", "median"] = Field(
        "minmax", description="Per-pair residual normalisation: 'minmax' (official) or 'median': "
        "e / (e + median_scale * median of the pair's valid residuals).")
    median_scale: float = Field(16.0, gt=0, le=1e6, description="normalisation median: residual, in multiples "
                                "of the pair's median residual, that maps to 0.5.")
    homography_ransac_px: float = Field(2.0, gt=0, le=100, description="pose_source homography: RANSAC inlier "
                                        "threshold in pixels.")
    homography_points: int = Field(3000, ge=8, le=1_000_000, description="pose_source homography: random "
                                   "consistent correspondences per pair fed to RANSAC.")
    morph_radius: int = Field(0, ge=0, le=64, description="Opening then closing of the final mask with a "
                              "(2r+1)^2 square; 0 = none (official).")
    background_model: Literal["dominant", "border"] = Field(
        "dominant", description="pose_source homography: 'dominant' = the RANSAC model with most support; 'border' = "
        "also fit the motion the first model leaves out and keep the model that explains more of the image "
        "border (the static scene when the camera follows a subject that fills the view).")
    max_pair_gap: Optional[int] = Field(None, ge=1, description="Use only pairs at most this many frames apart "
                                        "(DIS flow fails as displacement grows); null = all pairs (official).")
    pair_weight_power: float = Field(0.0, ge=0, le=10, description="Weight each pair's residual map by its "
                                     "forward-backward consistent pixel fraction to this power (0 = equal weights, "
                                     "official); pairs whose flow failed count less.")
    evidence_pixels: Literal["valid", "in_view"] = Field(
        "valid", description="valid_pixels fb_consistent: pixels whose residual enters the per-frame mean: 'valid' "
        "(consistent ones) or 'in_view' (every pixel whose flow stays in the other image: fast non-rigid "
        "subjects are forward-backward inconsistent, so 'valid' leaves them without evidence).")
    median_floor_px: float = Field(0.0, ge=0, le=1000, description="normalisation median: lower bound in pixels of "
                                   "the scale median_scale * median (a near-perfect fit would make noise dynamic).")
    temporal_radius: int = Field(0, ge=0, le=10, description="Average each frame's residual map with those of the "
                                 "frames within this radius, warped by the flow; 0 = off (official).")
    min_component: float = Field(0.0, ge=0, le=0.5, description="Drop connected mask components smaller than this "
                                 "fraction of the frame; 0 = keep all (official).")
    texture_floor: float = Field(0.0, ge=0, le=1, description="evidence_pixels in_view: a forward-backward "
                                 "inconsistent pixel counts as evidence only where the frame's local gradient energy "
                                 "reaches this fraction of its median (DIS flow in flat, e.g. over-exposed, regions is "
                                 "arbitrary); 0 = off.")
    fill_threshold: Optional[float] = Field(None, gt=0, le=1, description="Carry each mask along the flow into the "
                                            "next / previous frame where that frame's own mask holds under "
                                            "fill_min_kept of it, adding the pixels near the carried mask whose "
                                            "score exceeds this (below threshold); null = off (official).")
    fill_min_kept: float = Field(0.5, gt=0, le=1, description="fill_threshold: a frame is filled when its own mask "
                                 "holds less than this fraction of the neighbour's carried mask.")
    fill_reach: float = Field(0.01, ge=0, le=0.2, description="fill_threshold: how far around the carried mask pixels "
                              "may join, as a fraction of the long image edge.")
    colour_refine: Literal["off", "grabcut"] = Field(
        "off", description="'grabcut': prune each frame's mask to what GrabCut's colour models, started from the mask, "
        "call foreground (drops shadows, wakes, ground and flow halo coloured like the surroundings; never adds "
        "pixels); 'off' (official).")
    colour_ring: float = Field(0.1, gt=0, le=1, description="colour_refine: width of the probable-background ring "
                               "around the mask, as a fraction of the long image edge.")
    colour_core: float = Field(0.02, ge=0, le=0.5, description="colour_refine: the mask eroded by this fraction of the "
                               "long image edge is certain foreground (anchors the cut).")
    colour_core_quantile: float = Field(0.0, ge=0, lt=1, description="colour_refine: of the eroded mask, only pixels "
                                        "whose residual score reaches this quantile of the frame's masked scores are "
                                        "certain foreground (a wide shadow or wake moves less than the subject); 0 = all.")


def _normalise(err: torch.Tensor) -> torch.Tensor:
    """Per-map min-max normalisation of (B, H, W) error maps (constant maps -> 0)."""
    lo = err.amin(dim=(1, 2), keepdim=True)
    hi = err.amax(dim=(1, 2), keepdim=True)
    return (err - lo) / (hi - lo).clamp_min(1e-12)


def _normalise_valid(err: torch.Tensor, valid: torch.Tensor, cfg: FlowStaticConfig) -> torch.Tensor:
    """Normalise (B, H, W) residuals in pixels using only their ``valid`` (B, H, W) bool pixels.

    'minmax': min-max over the valid pixels; 'median': ``e / (e + median_scale * median_valid(e))``.
    Maps without valid pixels come back as zeros.
    """
    import torch

    big = torch.finfo(err.dtype).max
    if cfg.normalisation == "minmax":
        lo = torch.where(valid, err, big).amin(dim=(1, 2), keepdim=True)
        hi = torch.where(valid, err, -big).amax(dim=(1, 2), keepdim=True)
        out = (err - lo) / (hi - lo).clamp_min(1e-12)
        return torch.where(valid.any(dim=(1, 2), keepdim=True), out.clamp(0, 1), torch.zeros_like(err))
    flat = torch.where(valid, err, torch.nan).flatten(1)
    med = torch.nanmedian(flat, dim=1).values.nan_to_num(0.0)[:, None, None]
    scale = (cfg.median_scale * med).clamp_min(max(1e-6, cfg.median_floor_px))
    return err / (err + scale)


def _in_view(f_12: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: the flow (B, H, W, 2) lands inside the other image."""
    import torch

    _, h, w, _ = f_12.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=f_12.dtype), torch.arange(w, dtype=f_12.dtype), indexing="ij")
    x2, y2 = xs + f_12[..., 0], ys + f_12[..., 1]
    return (x2 >= 0) & (x2 <= w - 1) & (y2 >= 0) & (y2 <= h - 1)


def _valid_pixels(f_12: torch.Tensor, f_21: torch.Tensor, fb_threshold_px: float) -> torch.Tensor:
    """(B, H, W) bool: flow (B, H, W, 2) target inside the image and forward-backward consistent."""
    from ..geometry import flow_consistency

    inconsistency, in_bounds = flow_consistency(f_12.permute(0, 3, 1, 2), f_21.permute(0, 3, 1, 2))
    return (inconsistency[:, 0] < fb_threshold_px) & in_bounds[:, 0]


def _homography_flow(f_12: np.ndarray, valid: np.ndarray, cfg: FlowStaticConfig, seed: int) -> np.ndarray:
    """Camera-induced flow (H, W, 2) float32 of a RANSAC homography fitted to the valid flow.

    Args:
        f_12: (H, W, 2) float32 flow of image 1 to image 2 in pixels.
        valid: (H, W) bool pixels usable as correspondences (consistent, inside image 2).
    Returns:
        ``H(x) - x`` for every pixel x of image 1; zeros (identity) if fewer than 8 valid pixels
        or RANSAC fails.
    """
    import cv2

    h, w = f_12.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = np.stack([xs, ys], -1)
    idx = np.flatnonzero(valid)
    if len(idx) < 8:
        return np.zeros((h, w, 2), np.float32)
    rng = np.random.default_rng(seed)
    idx = rng.choice(idx, min(cfg.homography_points, len(idx)), replace=False)
    p1 = grid.reshape(-1, 2)[idx]
    p2 = p1 + f_12.reshape(-1, 2)[idx]
    hom, _ = cv2.findHomography(p1, p2, cv2.RANSAC, cfg.homography_ransac_px)
    if hom is None:
        return np.zeros((h, w, 2), np.float32)
    mapped = cv2.perspectiveTransform(grid.reshape(-1, 1, 2), hom).reshape(h, w, 2)
    return (mapped - grid).astype(np.float32)


def _pair_views(pred: PairPredictions, a: int, b: int, k_ab: int, k_ba: Optional[int], focals: dict[int, float],
                cfg: FlowStaticConfig, pp: tuple[float, float], seed: int):
    """Two-view geometry of the unordered pair {a, b} with PairViewer semantics.

    Returns (world_from_cam_a, world_from_cam_b, depth_a, depth_b, focal_a, focal_b).
    """
    def conf_mask(conf: np.ndarray) -> np.ndarray:
        mask = conf > cfg.min_conf_thr
        if mask.sum() < cfg.min_pnp_points:
            mask = conf >= np.median(conf)
        return mask

    def pose_or_eye(pts: np.ndarray, conf: np.ndarray, focal: float, s: int) -> np.ndarray:
        res = pnp_world_from_cam(pts, conf_mask(conf), focal, pp, cfg.pnp_iterations, cfg.reprojection_px,
                                 cfg.max_pnp_points, seed=s)
        return np.eye(4) if res is None else res[0]

    ci_ab, cj_ab = np.asarray(pred.conf_i[k_ab], np.float32), np.asarray(pred.conf_j[k_ab], np.float32)
    pi_ab, pj_ab = np.asarray(pred.pts3d_i[k_ab], np.float64), np.asarray(pred.pts3d_j[k_ab], np.float64)
    f_a = focals[k_ab]
    if k_ba is None:  # one direction only: world = camera a
        f_b = f_a
        pose_b = pose_or_eye(pj_ab, cj_ab, f_b, seed)
        depth_b = _depth_in(pose_b, pj_ab)
        return np.eye(4), pose_b, pi_ab[..., 2], depth_b, f_a, f_b
    ci_ba, cj_ba = np.asarray(pred.conf_i[k_ba], np.float32), np.asarray(pred.conf_j[k_ba], np.float32)
    pi_ba, pj_ba = np.asarray(pred.pts3d_i[k_ba], np.float64), np.asarray(pred.pts3d_j[k_ba], np.float64)
    f_b = focals[k_ba]
    im_conf_a = np.maximum(ci_ab, cj_ba)
    im_conf_b = np.maximum(cj_ab, ci_ba)
    score_a = float(ci_ab.mean()) * float(cj_ab.mean())
    score_b = float(ci_ba.mean()) * float(cj_ba.mean())
    if score_a > score_b:  # world = camera a
        pose_b = pose_or_eye(pj_ab, im_conf_b, f_b, seed)  # cam b -> cam a
        return np.eye(4), pose_b, pi_ab[..., 2], _depth_in(pose_b, pj_ab), f_a, f_b
    pose_a = pose_or_eye(pj_ba, im_conf_a, f_a, seed)  # cam a -> cam b
    return pose_a, np.eye(4), _depth_in(pose_a, pj_ba), pi_ba[..., 2], f_a, f_b


def _depth_in(world_from_cam: np.ndarray, pts_world: np.ndarray) -> np.ndarray:
    cam_from_world = np.linalg.inv(world_from_cam)
    return pts_world @ cam_from_world[2, :3] + cam_from_world[2, 3]


def _intrinsics(f: np.ndarray, pp: tuple[float, float]) -> torch.Tensor:
    import torch

    k = torch.zeros((len(f), 3, 3), dtype=torch.float64)
    k[:, 0, 0] = k[:, 1, 1] = torch.as_tensor(f, dtype=torch.float64)
    k[:, 0, 2], k[:, 1, 2] = pp
    k[:, 2, 2] = 1.0
    return k


def flow_residual_maps(
    frames: FrameSet, predictions: Optional[PairPredictions], flow: FlowField, cfg: FlowStaticConfig,
    cameras: Optional[CameraTrajectory] = None, ctx: Optional[RunContext] = None,
    evidence: Optional[np.ndarray] = None, out: Optional[Any] = None,
) -> Any:
    """Per-frame mean of per-pair min-max-normalised ``||ego flow - flow||`` maps.

    Streams: edges are processed in chunks of ``batch_size`` (their two-view poses, depths and flow
    made chunk by chunk), running sums are kept only for the frames the chunks touch, and a frame's
    map is written once its last edge is done; the temporal average then reads ``2 r + 1`` maps at a
    time. Sums and their order are those of a whole-video accumulation, so the maps are identical.

    Args:
        evidence: optional (F,) float64 receiving each frame's mean summed pair weight.
        out: (F, H, W) float32 array to write the maps into (e.g. a ``ctx.output``); None: numpy.
    Returns:
        ``out``: (F, H, W) float32 in [0, 1]; frames in no pair get 0.
    """
    import torch

    from ..geometry import estimate_focal_knowing_depth

    ctx = ctx or RunContext()
    n = frames.n_frames
    h, w = frames.size_hw
    pp = principal_point(h, w, cfg.principal_point)
    if out is None:
        out = np.zeros((n, h, w), np.float32)

    view: Optional[Callable[[tuple[int, int]], tuple]] = None
    if cfg.pose_source == "homography":
        edges = sorted({(min(i, j), max(i, j)) for i, j in np.asarray(flow.pairs, np.int64).tolist() if i != j})
        if cfg.max_pair_gap is not None:
            edges = [(a, b) for a, b in edges if b - a <= cfg.max_pair_gap]
    elif cfg.pose_source == "solver":
        if cameras is None:
            raise StageError("mask_builder flow_static: pose_source 'solver' needs the pose solver's cameras; "
                             "enable a pose_solver or set pose_source: pair")
        edges = sorted({(min(i, j), max(i, j)) for i, j in np.asarray(flow.pairs, np.int64).tolist()})
        c2w = np.asarray(cameras.world_from_cam, np.float64)
        kk = np.asarray(cameras.intrinsics, np.float64)

        def view(e: tuple[int, int]) -> tuple:
            a, b = e
            return c2w[a], c2w[b], depths[a], depths[b], kk[a], kk[b]
    else:
        if predictions is None:
            raise StageError("mask_builder flow_static: needs pair predictions (pose_source 'pair'); "
                             "enable the pair_predictor or set pose_source: solver")
        pred_pairs = np.asarray(predictions.pairs, np.int64).reshape(-1, 2)
        own, _ = pair_rows(pred_pairs, pred_pairs)          # first row of each directed pair
        rev, rev_fwd = pair_rows(pred_pairs, pred_pairs[:, ::-1])
        has_rev = (rev >= 0) & rev_fwd
        # one edge per unordered pair, taken from the direction stored first as (min, max) if both are
        keep = (own == np.arange(len(pred_pairs))) & (pred_pairs[:, 0] != pred_pairs[:, 1]) \
            & ~(has_rev & (pred_pairs[:, 1] < pred_pairs[:, 0]))
        edges = [(int(i), int(j)) for i, j in pred_pairs[keep]]
        index = {e: int(k) for e, k in zip(edges, np.flatnonzero(keep))}
        reverse = {e: int(r) for e, r, ok in zip(edges, rev[keep], has_rev[keep]) if ok}
        # focals of every directed pair's view 1 (only those needed), batched Weiszfeld
        need = sorted(set(index.values()) | set(reverse.values()))
        focals: dict[int, float] = {}
        for s in range(0, len(need), cfg.batch_size):
            ks = need[s:s + cfg.batch_size]
            batch = torch.from_numpy(np.stack([np.asarray(predictions.pts3d_i[k], np.float32) for k in ks]))
            f = estimate_focal_knowing_depth(batch, torch.tensor(pp, dtype=torch.float32)).double().numpy()
            focals.update(zip(ks, f.tolist()))

        def view(e: tuple[int, int]) -> tuple:
            a, b = e
            pa, pb, da, db, fa, fb = _pair_views(predictions, a, b, index[e], reverse.get(e), focals, cfg, pp,
                                                 seed=ctx.seed + 7919 * a + b)
            ka, kb = _intrinsics(np.array([fa]), pp)[0].numpy(), _intrinsics(np.array([fb]), pp)[0].numpy()
            return pa, pb, da, db, ka, kb

    reader = flow.reader()  # the stored pair list read and indexed once, rows read per run
    has_flow = reader.has(np.asarray(edges, np.int64).reshape(-1, 2))
    missing = [e for e, ok in zip(edges, has_flow) if not ok]
    if missing:
        raise StageError(f"mask_builder flow_static: no flow for pairs {missing[:5]}; the flow estimator must run "
                         "on the same scene graph as the pair predictor")
    # before the temporal average the raw maps wait in a scratch output (the store workspace under the runner)
    raw = out if cfg.temporal_radius <= 0 else ctx.output("scratch_raw_error", (n, h, w), np.float32)
    chunks = [edges[s:s + cfg.batch_size] for s in range(0, len(edges), cfg.batch_size)]
    last_chunk = np.full(n, -1)
    for c, chunk in enumerate(chunks):
        for a, b in chunk:
            last_chunk[a] = last_chunk[b] = c
    for f in np.flatnonzero(last_chunk < 0):  # in no pair: 0 (also over a resumed workspace's old content)
        raw[int(f)] = np.zeros((h, w), np.float32)
        if evidence is not None:
            evidence[f] = 0.0
    total: dict[int, np.ndarray] = {}
    count: dict[int, np.ndarray] = {}
    depths: dict[int, np.ndarray] = {}  # pose_source solver: the depth maps of the current chunk's frames
    workers = cfg.num_workers or max(1, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(workers) if view is not None and cfg.pose_source == "pair" and workers > 1 else None
    try:
        with ctx.progress(len(edges), "flow_static: flow residuals") as bar:
            for c, chunk in enumerate(chunks):
                if cfg.pose_source == "solver":  # the chunk's frames in one read per run of frames
                    touched = sorted({x for e in chunk for x in e})
                    depths.clear()
                    depths.update(zip(touched, read_rows(cameras.depth, touched).astype(np.float64)))
                views = [] if view is None else list(pool.map(view, chunk) if pool is not None else map(view, chunk))
                textured = None
                if cfg.texture_floor > 0:
                    textured = {x: textured_pixels(np.asarray(frames.rgb[x]), cfg.texture_floor)
                                for x in sorted({x for e in chunk for x in e})}
                _accumulate(chunk, views, reader, cfg, ctx, total, count, (h, w), textured)
                for f in sorted({x for e in chunk for x in e}):
                    if last_chunk[f] == c:  # its last edge is done: finish the frame
                        cnt = count.pop(f)
                        raw[f] = (total.pop(f) / np.maximum(cnt, 1e-12)).astype(np.float32)
                        if evidence is not None:
                            evidence[f] = cnt.mean()
                bar.advance(len(chunk))
    finally:
        if pool is not None:
            pool.shutdown()
    if cfg.temporal_radius > 0:
        flow_to = _flow_lookup(reader)
        cache: dict[int, np.ndarray] = {}

        def err_of(u: int) -> np.ndarray:  # the 2r+1 raw maps around the current frame
            if u not in cache:
                cache[u] = np.asarray(raw[u], np.float32)
            return cache[u]

        for t in range(n):
            for u in [u for u in cache if u < t - cfg.temporal_radius]:
                del cache[u]
            out[t] = temporal_average_frame(err_of, t, n, flow_to, cfg.temporal_radius)
    return out


def _flow_lookup(flow: FlowField | FlowReader) -> Callable[[int, int], Optional[np.ndarray]]:
    """(t, u) -> (H, W, 2) float32 flow t -> u from whichever direction is stored, or None (the stored
    pair list read and indexed once: pass the stage's reader to share it)."""
    reader = flow if isinstance(flow, FlowReader) else flow.reader()

    def flow_to(t: int, u: int) -> Optional[np.ndarray]:
        pair = np.array([[t, u]], np.int64)
        return reader.gather(pair)[0] if reader.has(pair)[0] else None

    return flow_to


def _accumulate(chunk: list[tuple[int, int]], views: list[tuple], flow: FlowReader, cfg: FlowStaticConfig,
                ctx: RunContext, total: dict[int, np.ndarray], count: dict[int, np.ndarray],
                size_hw: tuple[int, int], textured: Optional[dict[int, np.ndarray]] = None) -> None:
    """Add one chunk of edges' normalised residuals (and their weights) to the running per-frame sums."""
    import torch

    from ..geometry import ego_flow

    h, w = size_hw
    robust = cfg.valid_pixels != "all" or cfg.normalisation != "minmax"
    f_ab = torch.from_numpy(flow.gather(np.array(chunk)))
    f_ba = torch.from_numpy(flow.gather(np.array(chunk)[:, ::-1]))
    if cfg.valid_pixels == "fb_consistent" or cfg.pose_source == "homography":
        valid_a = _valid_pixels(f_ab, f_ba, cfg.fb_threshold_px)
        valid_b = _valid_pixels(f_ba, f_ab, cfg.fb_threshold_px)
    if cfg.pose_source == "homography":
        va, vb = valid_a.numpy(), valid_b.numpy()
        ego_ab = torch.from_numpy(np.stack([
            camera_flow_homography(f_ab[m].numpy(), va[m], ransac_px=cfg.homography_ransac_px,
                                   points=cfg.homography_points, seed=ctx.seed + 7919 * a + b,
                                   background=cfg.background_model)
            for m, (a, b) in enumerate(chunk)])).permute(0, 3, 1, 2)
        ego_ba = torch.from_numpy(np.stack([
            camera_flow_homography(f_ba[m].numpy(), vb[m], ransac_px=cfg.homography_ransac_px,
                                   points=cfg.homography_points, seed=ctx.seed + 7919 * b + a,
                                   background=cfg.background_model)
            for m, (a, b) in enumerate(chunk)])).permute(0, 3, 1, 2)
    else:
        # float32 as the official code (the residual is normalised per pair, so precision is ample)
        pa, pb, da, db, ka, kb = (torch.from_numpy(np.stack([v[m] for v in views]).astype(np.float32))
                                  for m in range(6))
        ra, ta, rb, tb = pa[:, :3, :3], pa[:, :3, 3:], pb[:, :3, :3], pb[:, :3, 3:]
        ego_ab, _ = ego_flow(ra, ta, rb, tb, 1.0 / (da[:, None] + 1e-6), kb, torch.linalg.inv(ka))
        ego_ba, _ = ego_flow(rb, tb, ra, ta, 1.0 / (db[:, None] + 1e-6), ka, torch.linalg.inv(kb))
    res_a = torch.hypot(ego_ab[:, 0] - f_ab[..., 0], ego_ab[:, 1] - f_ab[..., 1])
    res_b = torch.hypot(ego_ba[:, 0] - f_ba[..., 0], ego_ba[:, 1] - f_ba[..., 1])
    if not robust:  # official path
        err_a, err_b = _normalise(res_a).numpy(), _normalise(res_b).numpy()
        w_a = w_b = np.ones((len(chunk), h, w))
    else:
        if cfg.valid_pixels == "all":
            valid_a = valid_b = torch.ones_like(res_a, dtype=torch.bool)
        err_a = _normalise_valid(res_a, valid_a, cfg).numpy()
        err_b = _normalise_valid(res_b, valid_b, cfg).numpy()
        w_a, w_b = valid_a.numpy().astype(np.float64), valid_b.numpy().astype(np.float64)
        if cfg.pair_weight_power > 0:  # pairs whose flow failed (few consistent pixels) count less
            w_a = w_a * (w_a.mean(axis=(1, 2), keepdims=True) ** cfg.pair_weight_power)
            w_b = w_b * (w_b.mean(axis=(1, 2), keepdims=True) ** cfg.pair_weight_power)
        if cfg.evidence_pixels == "in_view" and cfg.valid_pixels == "fb_consistent":
            f_a = w_a.reshape(len(chunk), -1).max(1)[:, None, None]
            f_b = w_b.reshape(len(chunk), -1).max(1)[:, None, None]
            w_a = _in_view(f_ab).numpy() * f_a
            w_b = _in_view(f_ba).numpy() * f_b
            if textured is not None:  # flat regions: only forward-backward consistent flow is evidence
                ta = np.stack([textured[a] for a, _ in chunk]) | valid_a.numpy()
                tb = np.stack([textured[b] for _, b in chunk]) | valid_b.numpy()
                w_a, w_b = w_a * ta, w_b * tb
    for m, (a, b) in enumerate(chunk):
        for f in (a, b):
            if f not in total:
                total[f], count[f] = np.zeros((h, w), np.float64), np.zeros((h, w), np.float64)
        total[a] += err_a[m] * w_a[m]
        total[b] += err_b[m] * w_b[m]
        count[a] += w_a[m]
        count[b] += w_b[m]


class FlowStaticMask(MaskBuilder):
    """Dynamic masks from the residual between estimated flow and camera-induced (ego) flow.

    Output :class:`DynamicMasks`: dynamic (F, H, W) bool (error > threshold), error (F, H, W)
    float32 in [0, 1] = per-frame mean of per-pair min-max-normalised residuals, source "flow".
    Both are written frame by frame into ``ctx.output`` arrays.
    """

    name: ClassVar[str] = "flow_static"
    version: ClassVar[str] = "2"  # 2: colour_refine's GrabCut seeded per frame (results no longer depend on the process)
    config_model = FlowStaticConfig
    config: FlowStaticConfig
    requires: ClassVar[frozenset[str]] = frozenset({"flow_estimator"})

    def run(self, inputs: MaskInputs, ctx: RunContext) -> DynamicMasks:
        from ..threads import torch_threads

        with torch_threads(self.config.threads):
            return self._run(inputs, ctx)

    def _run(self, inputs: MaskInputs, ctx: RunContext) -> DynamicMasks:
        if inputs.flow is None:
            raise StageError("mask_builder flow_static: needs optical flow; enable a flow_estimator "
                             "(e.g. type: opencv_dis) in the recipe")
        cfg = self.config
        n, (h, w) = inputs.frames.n_frames, inputs.frames.size_hw
        evidence = np.zeros(n, np.float64)
        err = flow_residual_maps(inputs.frames, inputs.predictions, inputs.flow, cfg, inputs.cameras, ctx, evidence,
                                 out=ctx.output("error", (n, h, w), np.float32))
        dynamic = ctx.output("dynamic", (n, h, w), bool)
        long_edge = max(h, w)
        for f in range(n):  # one frame at a time: threshold and clean
            dynamic[f] = remove_small_components(_clean((np.asarray(err[f]) > cfg.threshold)[None], cfg.morph_radius),
                                                 cfg.min_component)[0]
        filled = cfg.fill_threshold is not None and n > 1
        if filled:
            temporal_fill(dynamic, lambda f: np.asarray(err[f], np.float32), _flow_lookup(inputs.flow),
                          cfg.fill_threshold, min_kept=cfg.fill_min_kept, reach_px=round(cfg.fill_reach * long_edge))
        stats = []
        for f in range(n):  # colour refinement and statistics frame by frame
            err_f = np.asarray(err[f], np.float32)
            dyn_f = np.asarray(dynamic[f], bool)[None]
            if filled:
                dyn_f = remove_small_components(dyn_f, cfg.min_component)
            if cfg.colour_refine == "grabcut":  # GrabCut works frame by frame: the same cut as on the whole video
                dyn_f = remove_small_components(colour_prune(
                    np.asarray(inputs.frames.rgb[f])[None], dyn_f, ring_px=max(1, round(cfg.colour_ring * long_edge)),
                    core_px=round(cfg.colour_core * long_edge), score=err_f[None],
                    core_quantile=cfg.colour_core_quantile), cfg.min_component)
            dynamic[f] = dyn_f[0]
            decided, _, area = mask_frame_stats(err_f, cfg.threshold, np.zeros(1), dyn_f[0])
            stats.append((decided, float(evidence[f]), area))
        return DynamicMasks(dynamic=dynamic, error=err, source="flow",
                            confidence=mask_confidence_from_stats(*stats) if n else np.zeros(0, np.float32),
                            notices=mask_notices_from_area(np.array([s[2] for s in stats])))


def _clean(mask: np.ndarray, radius: int) -> np.ndarray:
    """Per-frame binary opening then closing of (F, H, W) bool masks with a (2r+1)^2 square (r=0: unchanged)."""
    if radius <= 0:
        return mask
    import cv2

    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    out = np.empty_like(mask)
    for k, m in enumerate(mask.astype(np.uint8)):
        out[k] = cv2.morphologyEx(cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel) > 0
    return out


STAGES = (FlowStaticMask,)
