"""One batched global alignment: problem data, initialisation, objective and the Adam loop."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import roma
import torch

from monst3r_framework.errors import StageError

from .config import MonST3RGAConfig
from .losses import (
    _single_threaded_ops, kernel_workers, worker_count,
    align_sum_autograd, align_sum_fused, depth_prior, ego_motion_maps, flow_sums_autograd, flow_sums_fused,
    temporal_smoothness, velocity_smoothness,
)
from .params import FixedParts, SceneParams, cam_points, pixel_grid_flat, signed_log1p, world_points_cf

LOSS_NAMES: tuple[str, ...] = ("total", "align_i", "align_j", "flow", "flow_raw", "smoothness", "depth_prior")


@dataclass
class AlignProblem:
    """Inputs of one optimisation over F frames (the whole video or one window), as torch tensors.

    ei, ej: (P,) int64 frames of each directed edge (local indices 0..F-1).
    pred_i, pred_j: (P, 3, N) float32 pointmaps of views i and j in camera i (channel-first).
    conf_i, conf_j: (P, N) float32 raw confidences.
    flow_fwd: (P, 2, N) flow ei -> ej (channel-first), or None (flow loss off).
    flow_bwd: (P, 2, N) flow ej -> ei, or None when the edge set is symmetric (then the official
        two directional terms are equal and the forward one is counted twice).
    static: (F, N) bool, pixels used by the flow loss.
    dynamic: (F, N) bool, the dynamic mask (depth prior weighting, output).
    world_from_cam: (F, 4, 4) float32 initial poses; intrinsics (F, 3, 3); depth (F, N) initial depth.
    size_hw: (H, W).
    pixels: (N, 2) float32 pixel coordinates (x, y) of the N pixels when they are a subset of the
        H x W grid (e.g. every s-th row and column, for a coarse solve), or None: the whole grid
        (N = H W, row-major). Every mean over pixels is over these N.
    fixed_frames: (F,) bool, frames whose pose, depth, focal and principal point stay at the initial
        values (a window's overlap with the frames already solved), or None: every frame is free.
        With any fixed frame the edges' geometric-mean scale is held at its initial value instead of
        ``base_scale`` (the fixed frames set the scene scale) and a shared focal stays at its initial value.
    """

    ei: torch.Tensor
    ej: torch.Tensor
    pred_i: torch.Tensor
    pred_j: torch.Tensor
    conf_i: torch.Tensor
    conf_j: torch.Tensor
    flow_fwd: Optional[torch.Tensor]
    flow_bwd: Optional[torch.Tensor]
    static: torch.Tensor
    dynamic: torch.Tensor
    world_from_cam: torch.Tensor
    intrinsics: torch.Tensor
    depth: torch.Tensor
    size_hw: tuple[int, int]
    pixels: Optional[torch.Tensor] = None
    fixed_frames: Optional[torch.Tensor] = None

    def pixel_grid(self) -> torch.Tensor:
        """(N, 2) float32 pixel coordinates (x, y) of the problem's pixels."""
        return pixel_grid_flat(*self.size_hw) if self.pixels is None else self.pixels

    @property
    def n_frames(self) -> int:
        return int(self.depth.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.ei.shape[0])


def conf_to_weight(conf: torch.Tensor, mode: str) -> torch.Tensor:
    """Official ``get_conf_trf``: log / sqrt / m1 / none."""
    if mode == "log":
        return conf.log()
    if mode == "sqrt":
        return conf.sqrt()
    if mode == "m1":
        return conf - 1
    return conf


def lr_at(cfg_schedule: str, t: float, lr: float, lr_min: float) -> float:
    """Learning rate at progress t in [0, 1] (official linear / cosine schedules)."""
    if cfg_schedule == "cosine":
        return lr_min + (lr - lr_min) * (1 + math.cos(t * math.pi)) / 2
    return lr + (lr_min - lr) * t


def frame_conf(problem: AlignProblem) -> torch.Tensor:
    """(F, N) per-frame confidence: max over the edges that see the frame (official ``im_conf``)."""
    out = torch.zeros(problem.n_frames, problem.pred_i.shape[2])
    idx_i = problem.ei[:, None].expand_as(problem.conf_i)
    out.scatter_reduce_(0, idx_i, problem.conf_i, reduce="amax")
    out.scatter_reduce_(0, problem.ej[:, None].expand_as(problem.conf_j), problem.conf_j, reduce="amax")
    return out


def build_params(problem: AlignProblem, cfg: MonST3RGAConfig, chunk: int = 64) -> SceneParams:
    """Create the variables and initialise them as the official ``init_from_pts3d`` does.

    Frames take the initial poses, focals (shared: their mean) and depth; each edge's pose and scale
    is the weighted Procrustes fit of its view-i pointmap onto frame i's initial world points; then
    edge scales are normalised and poses/depths rescaled by the same factor.
    """
    h, w = problem.size_hw
    held = problem.fixed_frames is not None and bool(problem.fixed_frames.any())
    fixed = FixedParts(
        poses=cfg.fix_poses, focals=cfg.fix_intrinsics or (held and cfg.shared_focal),
        principal_points=not cfg.optimize_pp or cfg.fix_intrinsics, depth=cfg.fix_depth, adaptors=not cfg.optimize_adaptors,
    )
    params = SceneParams(
        problem.n_frames, (h, w), problem.n_edges, shared_focal=cfg.shared_focal, focal_break=cfg.focal_break,
        pw_break=cfg.pw_break, base_scale=cfg.base_scale, fixed=fixed, norm_pw_scale=not cfg.fix_poses,
        smooth_at_zero=cfg.translation_gradient == "smooth",
    )
    if held:
        # zero the gradient rows of the held frames: Adam's moments stay 0 there, so they never move
        free = (~problem.fixed_frames.bool()).to(torch.float32)
        per_frame = [params.im_logdepth, params.im_poses, params.im_pp] + ([] if cfg.shared_focal else [params.im_focals])
        for t in per_frame:
            if t.requires_grad:
                t.register_hook(lambda g, m=free: g * m[:, None])
    k = problem.intrinsics
    focals = 0.5 * (k[:, 0, 0] + k[:, 1, 1])
    pp = k[:, :2, 2] if (cfg.optimize_pp or cfg.fix_intrinsics) else None
    params.set_frames(problem.world_from_cam, focals, problem.depth, pp)
    grid = problem.pixel_grid()
    with torch.no_grad():
        # initial world points from the *initial* cameras (the pose solver's pointmaps)
        pts = cam_points(problem.depth, grid, focals[:, None], k[:, :2, 2])
        c2w = problem.world_from_cam
        x_world = pts @ c2w[:, :3, :3].transpose(1, 2) + c2w[:, None, :3, 3]
        rots, transs, scales = [], [], []
        for s in range(0, problem.n_edges, chunk):
            e = slice(s, s + chunk)
            r, t, sc = roma.rigid_points_registration(
                problem.pred_i[e].transpose(1, 2), x_world[problem.ei[e]], weights=problem.conf_i[e], compute_scaling=True
            )
            rots.append(r), transs.append(t), scales.append(sc)
        params.set_edges(torch.cat(rots), torch.cat(transs), torch.cat(scales))
        if held and params.norm_pw_scale:
            # the held frames set the scale: keep the edges' geometric-mean scale where their fits put it
            # instead of at base_scale (without the normalisation the free frames shrink, window after
            # window: a smaller scene has smaller alignment residuals)
            params.base_scale = float(params.pw_poses[:, 7].double().mean().exp())
        factor = params.norm_scale_factor()
        if not held and float(factor) != 1.0:
            c2w_scaled = params.world_from_cam().clone()
            c2w_scaled[:, :3, 3] *= factor
            params.im_poses.data[:, 4:7] = signed_log1p(c2w_scaled[:, :3, 3])
            params.im_logdepth.data += factor.log()
    return params


class Objective:
    """The official total loss: alignment (both views) + smoothness + flow + depth prior."""

    def __init__(self, problem: AlignProblem, params: SceneParams, cfg: MonST3RGAConfig, iterations: int) -> None:
        self.p = problem
        self.params = params
        self.cfg = cfg
        self.iterations = iterations
        self.grid = problem.pixel_grid().t().contiguous()  # (2, N)
        n = self.grid.shape[1]
        self.grid_h = torch.cat([self.grid, torch.ones(1, n)], dim=0)  # (3, N)
        self.w_i = conf_to_weight(problem.conf_i, cfg.conf_transform)
        self.w_j = conf_to_weight(problem.conf_j, cfg.conf_transform)
        self.area_i = float(problem.n_edges * n)
        self.area_j = self.area_i
        self.init_depth = params.depth().detach().clone()
        self.use_flow = cfg.flow_loss_weight > 0 and problem.flow_fwd is not None
        self.flow_start = iterations * cfg.flow_loss_start
        fused = cfg.implementation == "fused"
        chunk = cfg.chunk_edges
        self._align = (lambda *a: align_sum_fused(*a, chunk=chunk)) if fused else align_sum_autograd
        self._flow = (lambda *a: flow_sums_fused(*a, chunk=chunk)) if fused else flow_sums_autograd
        self._smooth = velocity_smoothness if cfg.smoothness_mode == "velocity" else temporal_smoothness
        #: element counts of the flow sums when the flow term was part of the last value, else None
        self.last_flow_counts: Optional[tuple[float, ...]] = None

    def __call__(self, iteration: int) -> tuple[torch.Tensor, list[float]]:
        cfg, p, params = self.cfg, self.p, self.params
        x_world = world_points_cf(params, self.grid)
        pw = params.pw_world_from_pair()
        mat = pw[:, :3, :3] * params.pw_adaptors_xyz()[:, None, :]
        trans = pw[:, :3, 3]
        li = self._align(x_world, p.ei, mat, trans, p.pred_i, self.w_i) / self.area_i
        lj = self._align(x_world, p.ej, mat, trans, p.pred_j, self.w_j) / self.area_j
        total = li + lj
        zero = torch.zeros(())
        smooth, flow, flow_raw, prior = zero, zero, zero, zero
        c2w = None
        self.last_flow_counts = None
        if cfg.smoothness_weight > 0:
            c2w = params.world_from_cam()
            smooth = self._smooth(c2w, cfg.translation_weight)
            total = total + cfg.smoothness_weight * smooth
        if self.use_flow and iteration >= self.flow_start:
            c2w = params.world_from_cam() if c2w is None else c2w
            k = params.intrinsics()
            disp = 1.0 / (params.depth() + 1e-6)
            a, b = ego_motion_maps(c2w, k, p.ei, p.ej)
            s_f, n_f = self._flow(disp, p.ei, a, b, self.grid_h, p.flow_fwd, p.static, cfg.pixel_threshold)
            counts: tuple[float, ...] = (float(n_f),)
            if p.flow_bwd is None:
                flow_raw = 2.0 * s_f / n_f.clamp_min(1.0)
            else:
                a2, b2 = ego_motion_maps(c2w, k, p.ej, p.ei)
                s_b, n_b = self._flow(disp, p.ej, a2, b2, self.grid_h, p.flow_bwd, p.static, cfg.pixel_threshold)
                flow_raw = s_f / n_f.clamp_min(1.0) + s_b / n_b.clamp_min(1.0)
                counts = (float(n_f), float(n_b))
            raw = float(flow_raw.detach())
            if not (cfg.flow_loss_threshold > 0 and raw > cfg.flow_loss_threshold) or not math.isfinite(raw):
                flow = flow_raw
                total = total + cfg.flow_loss_weight * flow
                self.last_flow_counts = counts
        if cfg.depth_prior_weight > 0:
            prior = depth_prior(params.depth(), self.init_depth, p.dynamic)
            total = total + cfg.depth_prior_weight * prior
        values = [float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for v in (total, li, lj, flow, flow_raw, smooth, prior)]
        if not all(math.isfinite(v) for v in values):
            bad = [n for n, v in zip(LOSS_NAMES, values) if not math.isfinite(v) and n != "total"] or ["total"]
            raise StageError(
                f"global_aligner monst3r_ga: loss term {bad[0]} is {values[LOSS_NAMES.index(bad[0])]} at iteration "
                f"{iteration}; expected finite values; check the pair predictions / flow for NaN or inf, or lower lr"
            )
        return total, values


def solver_steps(cfg: MonST3RGAConfig) -> int:
    """Step budget of the configured solver (for progress bars)."""
    return cfg.gn_iterations if cfg.solver == "gauss_newton" else cfg.iterations


def optimise(
    problem: AlignProblem, cfg: MonST3RGAConfig, params: Optional[SceneParams] = None,
    log: Callable[[str], None] = lambda m: None, progress: Optional[Callable[[int], None]] = None,
) -> tuple[SceneParams, np.ndarray]:
    """Run the Adam loop (or the Gauss-Newton solver when ``cfg.solver`` says so); returns the optimised
    variables and the (I, T) loss history (LOSS_NAMES)."""
    if cfg.solver == "gauss_newton":
        from .gauss_newton import optimise_gn

        return optimise_gn(problem, cfg, params, log=log, progress=progress)
    if params is None:
        params = build_params(problem, cfg)
    iterations = cfg.iterations
    schedule = cfg.schedule
    objective = Objective(problem, params, cfg, iterations)
    trainable = [t for t in params.parameters() if t.requires_grad]
    history = np.zeros((iterations, len(LOSS_NAMES)), np.float32)
    if not trainable:
        with torch.no_grad():
            _, values = objective(iterations)
        history[:] = values
        return params, history
    opt = torch.optim.Adam(trainable, lr=cfg.lr, betas=(0.9, 0.9))
    # the fused kernels keep one edge range per thread (same sums as before); every other op runs on
    # one thread: with intra-op threads each was an OpenMP region waiting for a descheduled thread on
    # a busy machine (see docs/global-aligner.md, Threads)
    with kernel_workers(worker_count()), _single_threaded_ops():
        for it in range(iterations):
            lr = lr_at(schedule, it / iterations, cfg.lr, cfg.lr_min)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            loss, values = objective(it)
            loss.backward()
            opt.step()
            history[it] = values
            if progress is not None:
                progress(1)
    log(f"monst3r_ga: {problem.n_frames} frames, {problem.n_edges} edges, {iterations} iterations, final loss {history[-1, 0]:.5g}")
    return params, history
