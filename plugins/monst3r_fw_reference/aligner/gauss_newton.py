"""Second-order solver of the MonST3R global alignment: Levenberg-Marquardt on an IRLS model,
with the per-pixel depths eliminated by a Schur complement.

Same objective as the Adam loop (:class:`.optimize.Objective` evaluates it, value and gradient, with
the same kernels). Each iteration:

1. **IRLS model.** Every robust term becomes a weighted least-squares term whose gradient at the
   current point is the exact gradient: the confidence-weighted L1 point distance ``w ||r||`` gets
   weight ``w / ||r||`` on ``||r||^2 / 2``, the smooth-L1 flow residual ``e`` gets
   ``min(1, 1 / |e|)`` (elements over ``pixel_threshold`` weight 0), and the smoothness norms
   ``||a||`` get ``1 / ||a||``. The Gauss-Newton matrix of that model is ``H = J^T W J``. For the
   point distances W is ``w / ||r|| (I - c r r^T / ||r||^2)`` with ``c = gn_norm_curvature``: plain IRLS
   (c = 0) over-estimates the curvature of ``||r||`` along ``r`` (the norm's own Hessian has none there)
   and converges linearly; c = 0.5, switched on once an iteration gains less than 2%, reaches Adam's
   objective in about 60% of the iterations on the synthetic benchmark. The gradient is the exact
   one for every c.
2. **Schur complement.** Variables: per-frame pose twists (left, world frame), log-focal(s),
   per-edge Sim(3) twists (rotation, translation, log-scale; the scales keep their geometric mean,
   as the official normalisation) and the log-depth of every pixel. A pixel's depth only enters
   the residuals of its own frame, so ``H_dd`` is diagonal and the reduced camera system
   ``S = H_cc - H_cd H_dd^-1 H_dc`` (a few thousand unknowns) is solved by a dense Cholesky
   (torch.linalg), then each pixel's depth step follows in closed form. ``S`` is accumulated on a
   regular subset of ``gn_hessian_pixels`` pixels per frame (scaled to the full count) while the
   gradient and the depth back-substitution use every pixel, so a step is an exact-gradient
   Gauss-Newton step with a subsampled curvature estimate; with all pixels it is the exact
   Schur-eliminated GN step (a test checks it against the full system).
3. **Levenberg-Marquardt.** ``(H + lambda diag(H)) delta = -g``; a step is kept only when the
   objective decreases, otherwise lambda grows and the step is recomputed. Stops when the
   relative decrease of an iteration falls below ``gn_tolerance`` or after ``gn_iterations``.

The flow term starts at iteration ``ceil(flow_loss_start * gn_iterations)`` (the official start
fraction of the step budget), or as soon as the flow-free objective has converged.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, TypeVar

import numpy as np
import roma
import torch

from monst3r_framework.errors import StageError

from .config import MonST3RGAConfig
from ..threads import torch_threads
from .losses import _single_threaded_ops, kernel_workers, worker_count
from .optimize import LOSS_NAMES, AlignProblem, Objective, build_params, conf_to_weight
from .params import SceneParams, params_from_poses, pixel_grid_flat

_EPS_NORM = 1e-12
#: relative decrease of an iteration under which gn_norm_curvature is switched on
NORM_CURVATURE_AFTER = 0.02
T = TypeVar("T")


def parallel_ranges(n_items: int, work: Callable[[int, int], T], per_thread: int = 4) -> list[T]:
    """``work(lo, hi)`` over contiguous ranges of [0, n_items), on a pool of :func:`.losses.worker_count` workers.

    Each worker runs single-threaded torch ops (many small ops inside one parallel region
    scale badly, and collapse when other processes hold the cores); there are ``per_thread``
    ranges per worker, handed out as workers free up, so a worker slowed by other load takes
    fewer of them (with one thread the ranges run in turn, which keeps the temporaries of a
    range small). Results come back in range order.
    """
    threads = worker_count()
    k = max(1, min(n_items, threads * per_thread))
    bounds = [round(i * n_items / k) for i in range(k + 1)]
    ranges = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if lo < hi]
    if threads == 1 or len(ranges) == 1:
        return [work(lo, hi) for lo, hi in ranges]

    def run(r: tuple[int, int]) -> T:
        with torch.no_grad():
            return work(*r)

    with _single_threaded_ops(), ThreadPoolExecutor(threads) as pool:
        return list(pool.map(run, ranges))


def _depth_curvature_floor(h: torch.Tensor) -> torch.Tensor:
    """Per-pixel log-depth curvature (F, n) with a floor of 1e-6 of its mean: a pixel that no term
    constrains (zero confidence weight and masked out of the flow) has h = 0 and would otherwise get
    an unbounded depth step from round-off in its gradient."""
    return h.clamp_min(max(1e-6 * float(h.mean()), 1e-30))


def _norm3(r: torch.Tensor) -> torch.Tensor:
    """(c, 3, n) -> (c, n) Euclidean norm over axis 1 (torch's norm over a middle axis of size 3
    is a slow strided reduction on CPU: 40% of an iteration before this)."""
    n = r[:, 0] * r[:, 0]
    return n.addcmul_(r[:, 1], r[:, 1]).addcmul_(r[:, 2], r[:, 2]).sqrt_()


def _skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) with skew(v) @ x = v x x."""
    z = torch.zeros_like(v[..., 0])
    return torch.stack([
        torch.stack([z, -v[..., 2], v[..., 1]], -1),
        torch.stack([v[..., 2], z, -v[..., 0]], -1),
        torch.stack([-v[..., 1], v[..., 0], z], -1),
    ], -2)


# ------------------------------------------------------------------------------------------
# state: the linearisation point, and the variables as increments on it
# ------------------------------------------------------------------------------------------


@dataclass
class GNState:
    """One point of the optimisation (float32 tensors).

    rot (F, 3, 3), trans (F, 3): camera-to-world; logd (F, N) log-depth; logf (nf,) log-focal
    (nf = 1 when shared); pp (F, 2) principal points (fixed); e_rot (P, 3, 3), e_trans (P, 3),
    e_logs (P,) the effective edge Sim(3) (``world = exp(e_logs) e_rot (adapt * x) + e_trans``);
    adapt (P, 3) the (fixed) adaptors.
    """

    rot: torch.Tensor
    trans: torch.Tensor
    logd: torch.Tensor
    logf: torch.Tensor
    pp: torch.Tensor
    e_rot: torch.Tensor
    e_trans: torch.Tensor
    e_logs: torch.Tensor
    adapt: torch.Tensor

    @staticmethod
    def from_params(params: SceneParams) -> "GNState":
        with torch.no_grad():
            c2w = params.world_from_cam()
            pw = params.pw_world_from_pair()
            scale = params.pw_scale()
            return GNState(
                rot=c2w[:, :3, :3].clone(), trans=c2w[:, :3, 3].clone(), logd=params.im_logdepth.detach().clone(),
                logf=(params.im_focals[:, 0] / params.focal_break).detach().clone(),
                pp=params.principal_points().detach().clone(),
                e_rot=(pw[:, :3, :3] / scale[:, None, None]).clone(), e_trans=pw[:, :3, 3].clone(),
                e_logs=scale.log().clone(), adapt=params.pw_adaptors_xyz().detach().clone(),
            )

    @torch.no_grad()
    def write_to(self, params: SceneParams) -> None:
        """Store this point in the official parametrisation (scales keep their geometric mean)."""
        c2w = torch.zeros(self.rot.shape[0], 4, 4)
        c2w[:, :3, :3] = self.rot
        c2w[:, :3, 3] = self.trans
        c2w[:, 3, 3] = 1
        params.im_poses.data[:] = params_from_poses(c2w)
        params.im_logdepth.data[:] = self.logd
        params.im_focals.data[:, 0] = self.logf * params.focal_break
        rt = torch.zeros(self.e_rot.shape[0], 4, 4)
        rt[:, :3, :3] = self.e_rot
        rt[:, :3, 3] = self.e_trans
        rt[:, 3, 3] = 1
        params.pw_poses.data[:] = params_from_poses(rt, self.e_logs.exp())


class TangentParams:
    """The variables of :class:`.params.SceneParams` as increments at a :class:`GNState`.

    Frame poses: ``R = exp(w) R0``, ``t = t0 + tau``; depth ``exp(logd0 + dd)``; focal
    ``exp(logf0 + df)``; edge ``s = exp(logs0 + P sigma)``, ``R = exp(w) R0``, ``T = T0 + tau`` with
    ``P`` removing the mean of ``sigma`` when the scales are normalised. Duck-types the methods
    :class:`.optimize.Objective` calls, so the objective and its gradient are the Adam loop's.
    """

    def __init__(self, st: GNState, n_frames: int, shared_focal: bool, norm_scale: bool,
                 delta: Optional[dict[str, torch.Tensor]] = None, requires_grad: bool = False) -> None:
        self.st = st
        self.n_frames = n_frames
        self.shared_focal = shared_focal
        self.norm_scale = norm_scale
        p = st.e_rot.shape[0]
        shapes = {"rot": (n_frames, 3), "trans": (n_frames, 3), "logd": tuple(st.logd.shape), "logf": tuple(st.logf.shape),
                  "e_rot": (p, 3), "e_trans": (p, 3), "e_logs": (p,)}
        self.delta = {k: (delta[k].clone() if delta is not None else torch.zeros(s)).requires_grad_(requires_grad)
                      for k, s in shapes.items()}

    def _sigma(self) -> torch.Tensor:
        s = self.delta["e_logs"]
        return s - s.mean() if self.norm_scale else s

    def world_from_cam(self) -> torch.Tensor:
        d = self.delta
        out = torch.zeros(self.n_frames, 4, 4)
        out[:, :3, :3] = roma.rotvec_to_rotmat(d["rot"]) @ self.st.rot
        out[:, :3, 3] = self.st.trans + d["trans"]
        out[:, 3, 3] = 1.0
        return out

    def depth(self) -> torch.Tensor:
        return (self.st.logd + self.delta["logd"]).exp()

    def focals(self) -> torch.Tensor:
        f = (self.st.logf + self.delta["logf"]).exp()[:, None]
        return f.expand(self.n_frames, 1) if self.shared_focal else f

    def principal_points(self) -> torch.Tensor:
        return self.st.pp

    def intrinsics(self) -> torch.Tensor:
        f = self.focals()[:, 0]
        k = torch.zeros(self.n_frames, 3, 3)
        k[:, 0, 0] = f
        k[:, 1, 1] = f
        k[:, :2, 2] = self.st.pp
        k[:, 2, 2] = 1.0
        return k

    def pw_world_from_pair(self) -> torch.Tensor:
        d = self.delta
        s = (self.st.e_logs + self._sigma()).exp()
        out = torch.zeros(self.st.e_rot.shape[0], 4, 4)
        out[:, :3, :3] = s[:, None, None] * (roma.rotvec_to_rotmat(d["e_rot"]) @ self.st.e_rot)
        out[:, :3, 3] = self.st.e_trans + d["e_trans"]
        out[:, 3, 3] = 1.0
        return out

    def pw_adaptors_xyz(self) -> torch.Tensor:
        return self.st.adapt

    @torch.no_grad()
    def retract(self) -> GNState:
        """The state at these increments."""
        c2w = self.world_from_cam()
        pw = self.pw_world_from_pair()
        logs = self.st.e_logs + self._sigma()
        return GNState(rot=c2w[:, :3, :3].clone(), trans=c2w[:, :3, 3].clone(), logd=self.st.logd + self.delta["logd"],
                       logf=self.st.logf + self.delta["logf"], pp=self.st.pp,
                       e_rot=pw[:, :3, :3] / logs.exp()[:, None, None], e_trans=pw[:, :3, 3].clone(),
                       e_logs=logs, adapt=self.st.adapt)


# ------------------------------------------------------------------------------------------
# variable layout of the reduced camera system
# ------------------------------------------------------------------------------------------


class Layout:
    """Columns of the camera system and, per frame, the local columns its depths couple to.

    Global columns: pose twists (w, tau) 6 per frame, log-focal (1 or F), edge twists
    (w, tau, sigma) 7 per edge. Alignment term t (edge e, view v of frame f) has 14 columns
    (pose f, focal f, edge e); flow term (src s -> dst d) 14 columns (pose s, pose d, focal s,
    focal d). ``frame_cols`` (F, Kf) lists frame f's local columns (padding: K, a dummy column).
    """

    def __init__(self, problem: AlignProblem, shared_focal: bool, flow_edges: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        f, p = problem.n_frames, problem.n_edges
        self.n_frames, self.n_edges = f, p
        self.nf = 1 if shared_focal else f
        self.K = 6 * f + self.nf + 7 * p
        ei, ej = problem.ei.tolist(), problem.ej.tolist()
        fc = lambda k: 6 * f + (0 if shared_focal else k)  # noqa: E731
        ec = lambda e: 6 * f + self.nf + 7 * e  # noqa: E731
        self.focal_col = fc
        self.edge_col0 = 6 * f + self.nf
        # alignment terms: view i of every edge, then view j
        a_frame = ei + ej
        a_edge = list(range(p)) * 2
        a_cols = [list(range(6 * fr, 6 * fr + 6)) + [fc(fr)] + list(range(ec(e), ec(e) + 7)) for fr, e in zip(a_frame, a_edge)]
        flow_terms = []  # (src, dst) over every flow direction in use
        for src, dst in flow_edges:
            flow_terms += list(zip(src.tolist(), dst.tolist()))
        w_cols = [list(range(6 * s, 6 * s + 6)) + list(range(6 * d, 6 * d + 6)) + [fc(s), fc(d)] for s, d in flow_terms]
        local: list[dict[int, int]] = [dict() for _ in range(f)]
        def loc(fr: int, cols: list[int]) -> list[int]:
            m = local[fr]
            return [m.setdefault(c, len(m)) for c in cols]
        self.a_local = torch.tensor([loc(fr, c) for fr, c in zip(a_frame, a_cols)], dtype=torch.int64).reshape(-1, 14)
        self.w_local = torch.tensor([loc(s, c) for (s, _), c in zip(flow_terms, w_cols)], dtype=torch.int64).reshape(-1, 14)
        self.a_cols = torch.tensor(a_cols, dtype=torch.int64).reshape(-1, 14)
        self.w_cols = torch.tensor(w_cols, dtype=torch.int64).reshape(-1, 14)
        self.a_frame = torch.tensor(a_frame, dtype=torch.int64)
        self.a_edge = torch.tensor(a_edge, dtype=torch.int64)
        self.kf = max(1, max(len(m) for m in local))
        self.frame_cols = torch.full((f, self.kf), self.K, dtype=torch.int64)
        for fr, m in enumerate(local):
            for c, k in m.items():
                self.frame_cols[fr, k] = c

    def pose_slice(self) -> slice:
        return slice(0, 6 * self.n_frames)

    def focal_slice(self) -> slice:
        return slice(6 * self.n_frames, 6 * self.n_frames + self.nf)

    def sigma_cols(self) -> torch.Tensor:
        return self.edge_col0 + 7 * torch.arange(self.n_edges) + 6

    def pack(self, delta: dict[str, torch.Tensor]) -> torch.Tensor:
        """Camera increments of a TangentParams delta dict -> (K,) vector."""
        f = self.n_frames
        poses = torch.cat([delta["rot"], delta["trans"]], dim=1).reshape(-1)
        edges = torch.cat([delta["e_rot"], delta["e_trans"], delta["e_logs"][:, None]], dim=1).reshape(-1)
        return torch.cat([poses, delta["logf"].reshape(-1), edges]).double() if f else edges.double()

    def unpack(self, x: torch.Tensor, logd: torch.Tensor) -> dict[str, torch.Tensor]:
        f, p = self.n_frames, self.n_edges
        x = x.float()
        poses = x[:6 * f].reshape(f, 6)
        edges = x[self.edge_col0:].reshape(p, 7)
        return {"rot": poses[:, :3], "trans": poses[:, 3:], "logd": logd, "logf": x[self.focal_slice()],
                "e_rot": edges[:, :3], "e_trans": edges[:, 3:6], "e_logs": edges[:, 6]}


# ------------------------------------------------------------------------------------------
# the IRLS model: residuals, weights and Jacobians
# ------------------------------------------------------------------------------------------


def _align_jacobian(xc: torch.Tensor, a: torch.Tensor, depth: torch.Tensor, rz: torch.Tensor) -> torch.Tensor:
    """(c, n, 3, 14) d r / d (pose w, tau, log-focal, edge w, tau, sigma) of r = X - (M p + T).

    xc (c, n, 3) = X - t (frame side), a (c, n, 3) = M p (edge side), depth (c, n), rz (c, 3) the
    camera's optical axis in the world.
    """
    c, n = xc.shape[:2]
    jac = torch.zeros(c, n, 3, 14)
    jt = jac.permute(0, 1, 3, 2)  # (c, n, 14, 3) view: column k is jt[..., k, :]
    jac[..., 0:3] = -_skew(xc)  # w x (X - t)
    for k in range(3):
        jac[..., k, 3 + k] = 1.0
        jac[..., k, 10 + k] = -1.0
    jt[..., 6, :] = -xc + depth[..., None] * rz[:, None, :]  # X(f) = R (d (u - c) / f, d (v - c) / f, d) + t
    jac[..., 7:10] = _skew(a)  # -(w_e x a)
    jt[..., 13, :] = -a  # -(sigma a)
    return jac


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """u x v over axis 1 of channel-first (c, 3, n) tensors (either may be (c, 3, 1)); by components,
    as torch.linalg.cross over a middle axis is a slow strided kernel on CPU."""
    return torch.stack([u[:, 1] * v[:, 2] - u[:, 2] * v[:, 1], u[:, 2] * v[:, 0] - u[:, 0] * v[:, 2],
                        u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]], 1)


def _align_jacobian_cf(xc: torch.Tensor, a: torch.Tensor, depth: torch.Tensor, rz: torch.Tensor) -> torch.Tensor:
    """Channel-first :func:`_align_jacobian`: (c, 14, 3, n), column k of d r / d (pose w, tau, log-focal,
    edge w, tau, sigma) as a (3, n) block.

    xc (c, 3, n) = X - t, a (c, 3, n) = M p, depth (c, n), rz (c, 3) the camera's optical axis.
    """
    c, _, n = xc.shape
    jac = xc.new_zeros(c, 14, 3, n)
    x0, x1, x2 = xc[:, 0], xc[:, 1], xc[:, 2]
    a0, a1, a2 = a[:, 0], a[:, 1], a[:, 2]
    # pose rotation: e_k x (X - t)
    jac[:, 0, 1], jac[:, 0, 2] = -x2, x1
    jac[:, 1, 0], jac[:, 1, 2] = x2, -x0
    jac[:, 2, 0], jac[:, 2, 1] = -x1, x0
    for k in range(3):
        jac[:, 3 + k, k] = 1.0
        jac[:, 10 + k, k] = -1.0
    jac[:, 6] = depth[:, None, :] * rz[:, :, None] - xc
    # edge rotation: -(e_k x a) = a x e_k
    jac[:, 7, 1], jac[:, 7, 2] = a2, -a1
    jac[:, 8, 0], jac[:, 8, 2] = -a2, a0
    jac[:, 9, 0], jac[:, 9, 1] = a1, -a0
    jac[:, 13] = -a
    return jac


class IRLSModel:
    """Linearisation of the alignment and flow terms at a state (IRLS weights of the robust losses)."""

    def __init__(self, problem: AlignProblem, cfg: MonST3RGAConfig, layout: Layout, chunk: int = 8) -> None:
        self.p, self.cfg, self.lay = problem, cfg, layout
        self.grid = problem.pixel_grid().t().contiguous()  # (2, N)
        self.n = self.grid.shape[1]
        self.w_i = conf_to_weight(problem.conf_i, cfg.conf_transform)
        self.w_j = conf_to_weight(problem.conf_j, cfg.conf_transform)
        self.area = float(problem.n_edges * self.n)
        self.chunk = chunk
        self._sub: Optional[tuple[torch.Tensor, dict]] = None
        #: fraction of each L1 point distance's IRLS curvature removed along its residual (gn_norm_curvature)
        self.norm_curvature = cfg.gn_norm_curvature
        # flow directions in use: (src, dst, obs (P, 2, N), factor index 0 fwd / 1 bwd)
        self.flow_dirs = [(problem.ei, problem.ej, problem.flow_fwd)]
        if problem.flow_bwd is not None:
            self.flow_dirs.append((problem.ej, problem.ei, problem.flow_bwd))

    # ---- shared per-frame geometry ----------------------------------------------------------
    def frame_geometry(self, st: GNState, pix: Optional[torch.Tensor], eps_depth: float = 0.0):
        """Rays, offsets from the camera centre (X - t) and world points of pixels ``pix`` (None: all).

        Returns depth (F, n), xc (F, 3, n) = R (depth ray), x (F, 3, n), f (F,) focals.
        """
        grid = self.grid if pix is None else self.grid[:, pix]
        depth = st.logd.exp() if pix is None else st.logd[:, pix].exp()
        depth = depth + eps_depth
        f = st.logf.exp().expand(self.lay.n_frames) if self.lay.nf == 1 else st.logf.exp()
        ray = torch.cat([(grid[None] - st.pp[:, :, None]) / f[:, None, None], torch.ones(len(f), 1, grid.shape[1])], dim=1)
        xc = st.rot @ (ray * depth[:, None, :])
        return depth, xc, xc + st.trans[:, :, None], f

    def edge_maps(self, st: GNState) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, 3, 3) M = s R diag(adapt) and (P, 3) T."""
        m = st.e_logs.exp()[:, None, None] * st.e_rot * st.adapt[:, None, :]
        return m, st.e_trans

    def align_views(self):
        """(frame index per edge, pred, weight) for views i and j."""
        p = self.p
        return [(p.ei, p.pred_i, self.w_i), (p.ej, p.pred_j, self.w_j)]

    def flow_factors(self, counts: tuple[float, ...]) -> list[float]:
        """Weight of each flow direction's sum in the objective (symmetric graph: forward twice)."""
        fw = self.cfg.flow_loss_weight
        if len(self.flow_dirs) == 1:
            return [fw * 2.0 / max(counts[0], 1.0)]
        return [fw / max(counts[0], 1.0), fw / max(counts[1], 1.0)]

    def _flow_residual(self, st: GNState, src, dst, obs, static_src, pix, depth_s, xc_s, x_s, f):
        """Exact residual of the flow kernel, IRLS weight, point in dst camera and dq/dP.

        Returns err (c, 2, n), wgt (c, 2, n) (smooth-L1 IRLS weight incl. mask/threshold),
        pc (c, 3, n), gq (c, 2, 3, n) [dq / dpc], q0 (c, 2, n) = projected coords minus pp.
        """
        rd = st.rot[dst]
        pc = rd.transpose(1, 2) @ (x_s - st.trans[dst][:, :, None])  # (c, 3, n)
        fd = f[dst][:, None]
        z = pc[:, 2]
        zz = z
        q0 = fd[:, :, None] * pc[:, :2] / zz[:, None]
        grid = self.grid if pix is None else self.grid[:, pix]
        q = q0 + st.pp[dst][:, :, None] - grid[None]
        m = static_src.to(q.dtype)[:, None, :]
        err = q * m - obs * m
        a = err.abs()
        c = a.clamp(max=1.0)
        loss = (a - 0.5 * c) * c
        keep = m.expand_as(err)
        if self.cfg.pixel_threshold > 0:
            keep = keep * (loss < self.cfg.pixel_threshold).to(q.dtype)
        wgt = keep / a.clamp_min(1.0)
        gq = torch.zeros(pc.shape[0], 2, 3, pc.shape[2])
        inv = fd / zz
        gq[:, 0, 0] = inv
        gq[:, 1, 1] = inv
        gq[:, 0, 2] = -inv * pc[:, 0] / zz
        gq[:, 1, 2] = -inv * pc[:, 1] / zz
        return err, wgt, pc, gq, q0

    # ---- the reduced camera system on a pixel subset ----------------------------------------
    def _subset(self, pix: torch.Tensor) -> dict:
        """Inputs restricted to the Hessian pixels, gathered once per solver (the subset is fixed)."""
        if self._sub is not None and self._sub[0] is pix:
            return self._sub[1]
        p = self.p
        sub = {"grid": self.grid[:, pix].contiguous(), "static": p.static[:, pix].contiguous(),
               "views": [(p.ei, p.pred_i[:, :, pix].contiguous(), self.w_i[:, pix].contiguous()),
                         (p.ej, p.pred_j[:, :, pix].contiguous(), self.w_j[:, pix].contiguous())],
               "flow": [(src, dst, obs[:, :, pix].contiguous()) for src, dst, obs in self.flow_dirs]}
        self._sub = (pix, sub)
        return sub

    def _flow_weights(self, q0, pp_d, grid, obs, static_s):
        """Smooth-L1 residual of the flow kernel and its IRLS weight (c, 2, n) each (masked pixels and
        elements at or over ``pixel_threshold`` weight 0)."""
        m = static_s.to(q0.dtype)[:, None, :]
        err = (q0 + pp_d[:, :, None] - grid[None] - obs) * m
        a = err.abs()
        keep = m.expand_as(err)
        if self.cfg.pixel_threshold > 0:
            c = a.clamp(max=1.0)
            keep = keep * (((a - 0.5 * c) * c) < self.cfg.pixel_threshold).to(q0.dtype)
        return err, keep / a.clamp_min(1.0)

    def camera_system(self, st: GNState, pix: torch.Tensor, flow_counts: Optional[tuple[float, ...]],
                      prior_diag: Optional[torch.Tensor], fix_depth: bool):
        """Hcc (K+1, K+1) float64 over the subset, couplings C (F, Kf, n), depth diagonal h (F, n).

        All sums are over the ``pix`` subset, unscaled. Jacobians are built channel-first,
        (c, 14 columns, rows, n), for every edge of a frame range at once: the camera blocks are then
        one batched (14, rows n) @ (rows n, 14) product per range and the couplings one row-wise
        index_add into C (this replaced per-chunk (n, 3, 14) tensors and accumulating index_put,
        which dominated an iteration).
        """
        lay = self.lay
        nfr, n = lay.n_frames, pix.shape[0]
        kf = lay.kf
        sub = self._subset(pix)
        beta = self.norm_curvature
        cpl = torch.zeros(nfr * kf, n)
        hdd = torch.zeros(nfr, n)
        depth, xc, x, f = self.frame_geometry(st, pix)
        m_all, t_all = self.edge_maps(st)
        rz = st.rot[:, :, 2]
        use_flow = flow_counts is not None
        if use_flow:
            deps, xce, _, _ = self.frame_geometry(st, pix, eps_depth=1e-6)
            factors = self.flow_factors(flow_counts)
            rzd = deps[:, None, :] * rz[:, :, None]  # d R e_z (F, 3, n)

        def add(jac, w, jd, fr, cols, local, out, neg=False):
            """jac (c, 14, R, n), w (c, R, n) or (c, 1, n), jd (c, R, n): camera blocks out, couplings in
            (``neg``: w <= 0, a rank-R correction subtracted). Overwrites jac and w."""
            c, _, rows, _ = jac.shape
            if not fix_depth:
                wjd = w * jd  # (c, R, n)
                coup = jac[:, :, 0] * wjd[:, None, 0]  # (c, 14, n) = sum over rows, by components
                for k in range(1, rows):
                    coup.addcmul_(jac[:, :, k], wjd[:, None, k])
                cpl.index_add_(0, (fr[:, None] * kf + local).reshape(-1), coup.reshape(-1, n))
                hdd.index_add_(0, fr, wjd.mul_(jd).sum(1))
            flat = jac.mul_((-w if neg else w).sqrt_()[:, None]).reshape(c, 14, -1)  # jac's last use: in place
            blk = torch.bmm(flat, flat.transpose(1, 2)).double()
            out.append((blk.neg_() if neg else blk, cols))

        def work(f0: int, f1: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
            """Terms whose depths belong to frames [f0, f1): they write disjoint rows of cpl / hdd."""
            out: list[tuple[torch.Tensor, torch.Tensor]] = []
            for v, (fidx, pred, wt) in enumerate(sub["views"]):
                e = torch.nonzero((fidx >= f0) & (fidx < f1))[:, 0]
                if len(e) == 0:
                    continue
                fr = fidx[e]
                a = torch.bmm(m_all[e], pred.index_select(0, e))  # M p = Y - T  (c, 3, n)
                xcf = xc.index_select(0, fr)
                r = xcf + (st.trans[fr] - t_all[e])[:, :, None] - a
                rn = _norm3(r).clamp_min_(_EPS_NORM)
                wgt = (wt.index_select(0, e) / rn / self.area)[:, None]
                jac = _align_jacobian_cf(xcf, a, depth[fr], rz[fr])
                rows = v * lay.n_edges + e
                if beta > 0:  # minus beta times the curvature along the residual (see norm_curvature)
                    rh = r.div_(rn[:, None])
                    jr = jac[:, :, 0] * rh[:, None, 0]  # (c, 14, n) = J^T r^, by components
                    jr.addcmul_(jac[:, :, 1], rh[:, None, 1]).addcmul_(jac[:, :, 2], rh[:, None, 2])
                    sd = (rh[:, 0] * xcf[:, 0]).addcmul_(rh[:, 1], xcf[:, 1]).addcmul_(rh[:, 2], xcf[:, 2])[:, None]
                    add(jr[:, :, None], -beta * wgt, sd, fr, lay.a_cols[rows], lay.a_local[rows], out, neg=True)
                add(jac, wgt, xcf, fr, lay.a_cols[rows], lay.a_local[rows], out)
            if not use_flow:
                return out
            for k, ((src, dst, obs), fac) in enumerate(zip(sub["flow"], factors)):
                e = torch.nonzero((src >= f0) & (src < f1))[:, 0]
                if len(e) == 0:
                    continue
                sr, ds = src[e], dst[e]
                rdt = st.rot[ds].transpose(1, 2)  # (c, 3, 3) dst world -> camera
                xcs = xce.index_select(0, sr)
                jdp = torch.bmm(rdt, xcs)  # d pc / d logd
                pc = jdp + (rdt @ (st.trans[sr] - st.trans[ds])[:, :, None])
                inv = f[ds][:, None] / pc[:, 2]
                qx, qy = pc[:, 0] / pc[:, 2], pc[:, 1] / pc[:, 2]
                q0 = torch.stack([qx, qy], 1) * f[ds][:, None, None]

                def proj(vec):  # d q for a change vec of pc: (c, 3, n) or (c, 3, 1) -> (c, 2, n)
                    return torch.stack([inv * (vec[:, 0] - qx * vec[:, 2]), inv * (vec[:, 1] - qy * vec[:, 2])], 1)

                _, wgt = self._flow_weights(q0, st.pp[ds], sub["grid"], obs.index_select(0, e), sub["static"][sr])
                rd = [rdt[:, :, j:j + 1] for j in range(3)]  # R_d^T e_j  (c, 3, 1)
                cols = [proj(_cross(rd[j], jdp)) for j in range(3)]  # w_s
                cols += [proj(rd[j]) for j in range(3)]  # tau_s
                cols += [proj(_cross(pc, rd[j])) for j in range(3)]  # w_d
                cols += [-cols[3 + j] for j in range(3)]  # tau_d
                cols.append(proj(torch.bmm(rdt, rzd.index_select(0, sr)) - jdp))  # log-focal of src
                cols.append(q0)  # log-focal of dst
                jac = torch.stack(cols, 1)  # (c, 14, 2, n)
                rows = lay.n_edges * k + e
                add(jac, wgt * fac, proj(jdp), sr, lay.w_cols[rows], lay.w_local[rows], out)
            return out

        blocks, cols = [], []
        for part in parallel_ranges(nfr, work):
            for b, c in part:
                blocks.append(b)
                cols.append(c)
        hcc = torch.zeros((lay.K + 1) * (lay.K + 1), dtype=torch.float64)
        if blocks:
            cols_t = torch.cat(cols)
            flat_idx = (cols_t[:, :, None] * (lay.K + 1) + cols_t[:, None, :]).reshape(-1)
            hcc.index_add_(0, flat_idx, torch.cat(blocks).reshape(-1))
        if prior_diag is not None:
            hdd += prior_diag[:, pix]
        return hcc.reshape(lay.K + 1, lay.K + 1), cpl.reshape(nfr, kf, n), hdd

    def gradient_check(self, st: GNState, flow_counts: Optional[tuple[float, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
        """J^T W r of the IRLS model over all pixels: (K,) camera and (F, N) log-depth gradients
        of the alignment (+ flow) terms. Dense and slow: for tests on tiny problems."""
        full = self.full_system(st, flow_counts)
        return full[2], full[3]

    def full_system(self, st: GNState, flow_counts: Optional[tuple[float, ...]]):
        """The whole GN system over all pixels, dense (tiny problems only, for tests):
        H (K + F N, K + F N) float64 and J^T W r split into camera (K,) and depth (F, N) parts."""
        lay = self.lay
        nfr, n = lay.n_frames, self.n
        dim = lay.K + nfr * n
        hmat = torch.zeros(dim + 1, dim + 1, dtype=torch.float64)
        grad = torch.zeros(dim + 1, dtype=torch.float64)
        pix = torch.arange(n)
        depth, xc, x, f = self.frame_geometry(st, pix)
        m_all, t_all = self.edge_maps(st)
        terms = []
        for v, (fidx, pred, wt) in enumerate(self.align_views()):
            e = torch.arange(lay.n_edges)
            fr = fidx[e]
            a = m_all @ pred
            r = x[fr] - a - t_all[:, :, None]
            wgt = wt / _norm3(r).clamp_min(_EPS_NORM) / self.area
            jd = xc[fr].transpose(1, 2)
            jac = _align_jacobian(jd, a.transpose(1, 2), depth[fr], st.rot[fr][:, :, 2])
            terms.append((jac, wgt[..., None].expand(-1, -1, 3), jd, r.transpose(1, 2), fr, lay.a_cols[v * lay.n_edges + e],
                          wgt))
        if flow_counts is not None:
            deps, xce, xe, _ = self.frame_geometry(st, pix, eps_depth=1e-6)
            for k, ((src, dst, obs), fac) in enumerate(zip(self.flow_dirs, self.flow_factors(flow_counts))):
                e = torch.arange(lay.n_edges)
                err, wgt, pc, gq, q0 = self._flow_residual(st, src, dst, obs, self.p.static[src], None, deps[src], xce[src], xe[src], f)
                rdt = st.rot[dst].transpose(1, 2)[:, None]
                xcs = xce[src].transpose(1, 2)
                c = lay.n_edges
                dp = torch.zeros(c, n, 3, 13)
                dp[..., 0:3] = rdt @ -_skew(xcs)
                dp[..., 3:6] = rdt.expand(c, n, 3, 3)
                dp[..., 6:9] = _skew(pc.transpose(1, 2)) @ rdt
                dp[..., 9:12] = -rdt.expand(c, n, 3, 3)
                dp[..., 12] = (rdt @ (-xcs + deps[src][..., None] * st.rot[src][:, None, :, 2])[..., None])[..., 0]
                gqt = gq.permute(0, 3, 1, 2)
                jac = torch.zeros(c, n, 2, 14)
                jac[..., :13] = gqt @ dp
                jac[..., 13] = q0.transpose(1, 2)
                jd = (gqt @ (rdt @ xcs[..., None]))[..., 0]
                terms.append((jac, (wgt * fac).transpose(1, 2), jd, err.transpose(1, 2), src, lay.w_cols[lay.n_edges * k + e],
                              None))
        for jac, w, jd, r, fr, cols, w_norm in terms:
            # full Jacobian rows: camera columns plus one depth column per (frame, pixel)
            c = jac.shape[0]
            dcol = lay.K + fr[:, None] * n + pix[None, :]  # (c, n)
            allcols = torch.cat([cols[:, None, :].expand(c, n, 14), dcol[..., None]], dim=2)  # (c, n, 15)
            jfull = torch.cat([jac, jd[..., None]], dim=3).double()  # (c, n, R, 15)
            wd = w.double()
            blocks = torch.einsum("cnri,cnr,cnrj->cnij", jfull, wd, jfull)
            if w_norm is not None and self.norm_curvature > 0:  # (I - beta r^ r^T) weight of an L1 point distance
                rh = r.double() / r.double().norm(dim=2, keepdim=True).clamp_min(_EPS_NORM)
                jr = torch.einsum("cnri,cnr->cni", jfull, rh)
                blocks -= self.norm_curvature * w_norm.double()[..., None, None] * jr[..., :, None] * jr[..., None, :]
            hmat.index_put_((allcols[..., :, None], allcols[..., None, :]), blocks, accumulate=True)
            g = torch.einsum("cnri,cnr,cnr->cni", jfull, wd, r.double())
            grad.index_put_((allcols,), g, accumulate=True)
        grad = grad[:-1]
        return hmat[:-1, :-1], grad, grad[:lay.K], grad[lay.K:].reshape(nfr, n)

    # ---- full-resolution depth back-substitution --------------------------------------------
    def _frame_points(self, st: GNState, fr: int, eps_depth: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Depth (N,) and offset from the camera centre X - t (3, N) of every pixel of frame ``fr``."""
        depth = st.logd[fr].exp()
        if eps_depth:
            depth = depth + eps_depth
        f = st.logf[0 if self.lay.nf == 1 else fr].exp()
        ray = torch.cat([(self.grid - st.pp[fr][:, None]) / f, torch.ones(1, self.n)])
        return depth, st.rot[fr] @ ray.mul_(depth)

    def depth_step_terms(self, st: GNState, dcam: dict[str, torch.Tensor], flow_counts: Optional[tuple[float, ...]]):
        """Per-pixel h = sum J_d^T W J_d and c . dc = sum J_d^T W J_c dc over all pixels: (F, N) each.

        Frame by frame (each worker of :func:`parallel_ranges` owns whole frames, so no full-size
        (F, 3, N) temporaries and no scatter), one edge at a time with 2-D ops on views of the edge's
        rows (no gathered copies; session 7: ~20 instead of ~30 passes over a (3, N) array per
        alignment term, ~28 instead of ~45 over a (2, N) one per flow term). Alignment terms:
        J_d = X - t of the frame pixel and J_c dc = dX (frame side, the same for every edge of the
        frame) - dY_e (edge side), so with v_e = W_e J_d the frame needs only S = sum_e v_e and
        sum_e v_e . dY_e: h = J_d . S, c . dc = dX . S - sum_e v_e . dY_e. Flow terms: with
        pc = R_d^T (X_s - t_d) = jdp + off (off = R_d^T (t_s - t_d), per edge) and q = pc_xy / z, the
        depth column dq/dlogd = f/z (jdp_xy - q jdp_z) is f/z (q off_z - off_xy).
        """
        lay = self.lay
        rot = st.rot
        w_f, t_f = dcam["rot"], dcam["trans"]
        dlf = dcam["logf"].expand(lay.n_frames) if lay.nf == 1 else dcam["logf"]
        eye = torch.eye(3)
        # camera-side change of a frame's points: (skew(w) - dlogf I) (X - t) + tau + dlogf depth R e_z
        a_cam = _skew(w_f) - dlf[:, None, None] * eye  # (F, 3, 3)
        b_rz = dlf[:, None] * rot[:, :, 2]  # (F, 3)
        m_all, t_all = self.edge_maps(st)
        # edge-side change: (skew(w_e) + sigma_e) M p + tau_e
        sig = dcam["e_logs"] - dcam["e_logs"].mean() if self._norm_scale else dcam["e_logs"]
        dm = (_skew(dcam["e_rot"]) + sig[:, None, None] * eye) @ m_all
        nfr, n = lay.n_frames, self.n
        h = torch.empty(nfr, n)
        cdc = torch.empty(nfr, n)
        beta = self.norm_curvature
        use_flow = flow_counts is not None
        factors = self.flow_factors(flow_counts) if use_flow else []
        fpx = st.logf.exp().expand(nfr) if lay.nf == 1 else st.logf.exp()
        views = [(pred, wt, [torch.nonzero(fidx == fr)[:, 0].tolist() for fr in range(nfr)]) for fidx, pred, wt in self.align_views()]
        e_trans = dcam["e_trans"]
        thr = self.cfg.pixel_threshold
        # smooth-L1 loss < thr  <=>  |e| < thr + 1/2 when thr >= 1/2 (loss = e^2 / 2 < 1/2 below 1, |e| - 1/2
        # above, both exact in float32); a smaller threshold takes the loss itself
        a_max = thr + 0.5 if thr >= 0.5 else math.inf
        if use_flow:
            # per flow term (src -> dst): [pc; dpc] = mat (6, 6) @ [X_s - t_s; dX_s] + boff, with
            # dpc = R_d^T (dX_s - tau_d) - (R_d^T w_d) x pc (the dst camera's change)
            flows = []
            for (src, dst, obs), fac in zip(self.flow_dirs, factors):
                rdt = rot[dst].transpose(1, 2)  # (P, 3, 3) dst world -> camera
                om = _skew((rdt @ w_f[dst][:, :, None])[..., 0])
                off = rdt @ (st.trans[src] - st.trans[dst])[:, :, None]  # (P, 3, 1)
                mat = torch.zeros(len(src), 6, 6)
                mat[:, :3, :3] = rdt
                mat[:, 3:, :3] = -om @ rdt
                mat[:, 3:, 3:] = rdt
                boff = torch.cat([off, -(rdt @ t_f[dst][:, :, None]) - om @ off], 1)  # (P, 6, 1)
                # err = q f + (pp_d - grid) - obs: the observation side per edge is obs + grid - pp_d
                flows.append((dst, obs, fac, mat, boff, off, [torch.nonzero(src == fr)[:, 0].tolist() for fr in range(nfr)]))

        def frame(fr: int) -> None:
            depth, xc = self._frame_points(st, fr)
            x = xc + st.trans[fr][:, None]
            acc = torch.zeros(3, n)  # S = sum_e v_e
            sdv = torch.zeros(3, n)  # sum_e v_e * dY_e (summed over the rows at the end)
            for pred, wt, by_frame in views:
                for e in by_frame[fr]:
                    pe = pred[e]
                    r = torch.addmm(x - t_all[e][:, None], m_all[e], pe, alpha=-1.0)  # (3, n)
                    nsq = r[0] * r[0]
                    nsq.addcmul_(r[1], r[1]).addcmul_(r[2], r[2]).clamp_min_(_EPS_NORM * _EPS_NORM)
                    om = wt[e] / nsq.sqrt()  # w / ||r||
                    v = xc * om
                    if beta > 0:  # v = w/||r|| (xc - beta (r . xc) r / ||r||^2)
                        k = (r[0] * xc[0]).addcmul_(r[1], xc[1]).addcmul_(r[2], xc[2])
                        v.addcmul_(r, k.mul_(om).div_(nsq), value=-beta)
                    acc += v
                    sdv.addcmul_(torch.addmm(e_trans[e][:, None], dm[e], pe), v)
            dx = (a_cam[fr] @ xc).add_(t_f[fr][:, None]).add_(b_rz[fr][:, None] * depth)
            hf = (xc * acc).sum(0) / self.area
            cf = ((dx * acc).sum(0) - sdv.sum(0)) / self.area
            if use_flow:
                deps, xce = self._frame_points(st, fr, eps_depth=1e-6)
                dxe = (a_cam[fr] @ xce).add_(t_f[fr][:, None]).add_(b_rz[fr][:, None] * deps)
                both = torch.cat([xce, dxe])  # (6, n)
                m = self.p.static[fr].to(xce.dtype)  # (n,)
                for dst, obs, fac, mat, boff, off, by_frame in flows:
                    for e in by_frame[fr]:
                        ds = int(dst[e])
                        fd = float(fpx[ds])
                        out = torch.addmm(boff[e], mat[e], both)  # (6, n): pc, dpc
                        pc, dpc = out[:3], out[3:]
                        inv = pc[2].reciprocal()  # 1 / z
                        q = pc[:2] * inv  # (2, n) = pc_xy / z
                        err = torch.sub(obs[e] + self.grid, st.pp[ds][:, None]).sub_(q, alpha=fd).abs_()  # |q f + pp - grid - obs|
                        wgt = err.clamp_min(1.0).reciprocal_()  # smooth-L1 IRLS weight min(1, 1/|e|)
                        if a_max < math.inf:
                            wgt.mul_(err < a_max)
                        elif thr > 0:
                            c = err.clamp(max=1.0)
                            wgt.mul_((err - 0.5 * c).mul_(c) < thr)
                        wgt.mul_(m)
                        jd = torch.mul(q, float(off[e, 2, 0])).sub_(off[e, :2])  # (2, n) jd z / f
                        # with J = q off_z - off_xy (jd = f J / z): h += fac w (f/z)^2 J^2 and
                        # c.dc += fac w (f/z) J f (1/z (dpc_xy - q dpc_z) + dlogf_d q); t = fac f^2 w J / z
                        t = wgt.mul_(jd).mul_(inv * (fd * fd * fac))
                        hf.add_((t * jd).mul_(inv).sum(0))
                        d = torch.addcmul(dpc[:2], q, dpc[2:], value=-1.0).mul_(inv).add_(q, alpha=float(dlf[ds]))
                        cf.add_((t.mul_(d)).sum(0))
            h[fr] = hf
            cdc[fr] = cf

        def work(f0: int, f1: int) -> None:
            for fr in range(f0, f1):
                frame(fr)

        parallel_ranges(nfr, work)
        return h, cdc


    # ---- per-pixel depth choices at fixed cameras (gn_coarse_stride's fine start) -------------
    def ray_median_logd(self, st: GNState, mean: bool = False) -> torch.Tensor:
        """(F, N) log-depth of each pixel at the weighted median, along its ray, of the depths at which
        its alignment terms' residuals are shortest (``argmin_d w_e ||d a - (Y_e - t)||``, weights
        ``w_e ||a||``): the minimiser of the alignment terms when the residuals lie along the ray, as
        with depth noise. ``mean``: the weighted mean of the same depths instead (same weights; ``||a||``
        is common to a pixel's terms, so this is their least-squares depth when the residuals lie along
        the ray). Pixels whose terms all have weight 0 keep their depth."""
        lay = self.lay
        m_all, t_all = self.edge_maps(st)
        out = st.logd.clone()
        views = [(pred, wt, [torch.nonzero(fidx == fr)[:, 0] for fr in range(lay.n_frames)])
                 for fidx, pred, wt in self.align_views()]

        def frame(fr: int) -> None:
            depth, xc = self._frame_points(st, fr)
            ray = xc / depth
            aa = _norm3(ray[None])[0]  # ||a||
            ds, ws = [], []
            for pred, wt, by_frame in views:
                e = by_frame[fr]
                if len(e) == 0:
                    continue
                b = torch.baddbmm((t_all[e] - st.trans[fr])[:, :, None], m_all[e], pred.index_select(0, e))
                k = (b[:, 0] * ray[0]).addcmul_(b[:, 1], ray[1]).addcmul_(b[:, 2], ray[2])
                ds.append(k.div_(aa * aa))
                ws.append(wt.index_select(0, e) * aa)
            if not ds:
                return
            d, wgt = torch.cat(ds), torch.cat(ws)
            if mean:
                tot = wgt.sum(0)
                med = (d * wgt).sum(0) / tot.clamp_min(1e-30)
                ok = (tot > 0) & (med > 0)
                out[fr] = torch.where(ok, med.clamp_min(1e-30).log(), out[fr])
                return
            d, order = d.sort(0)
            cum = wgt.gather(0, order).cumsum_(0)
            k = (cum < 0.5 * cum[-1:]).sum(0, keepdim=True).clamp_(max=len(d) - 1)
            med = d.gather(0, k)[0]
            ok = (cum[-1] > 0) & (med > 0)
            out[fr] = torch.where(ok, med.clamp_min(1e-30).log(), out[fr])

        def work(f0: int, f1: int) -> None:
            for fr in range(f0, f1):
                frame(fr)

        parallel_ranges(lay.n_frames, work)
        return out

    def pixel_values(self, st: GNState, flow_counts: Optional[tuple[float, ...]]) -> torch.Tensor:
        """(F, N) each pixel's share of the alignment and flow terms that its depth enters (alignment:
        both views' terms of its frame, ``w ||r|| / area``; flow: the terms leaving its frame, with the
        objective's per-direction factors), at ``st``: with the cameras fixed, the objective is the sum
        of these plus terms that no depth enters (the flow counts held fixed)."""
        lay = self.lay
        nfr, n = lay.n_frames, self.n
        m_all, t_all = self.edge_maps(st)
        out = torch.zeros(nfr, n)
        use_flow = flow_counts is not None
        factors = self.flow_factors(flow_counts) if use_flow else []
        fpx = st.logf.exp().expand(nfr) if lay.nf == 1 else st.logf.exp()
        views = [(pred, wt, [torch.nonzero(fidx == fr)[:, 0] for fr in range(nfr)]) for fidx, pred, wt in self.align_views()]
        flows = [(dst, obs, fac, [torch.nonzero(src == fr)[:, 0] for fr in range(nfr)])
                 for (src, dst, obs), fac in zip(self.flow_dirs, factors)]
        chunk = self.chunk

        def frame(fr: int) -> None:
            _, xc = self._frame_points(st, fr)
            x = xc + st.trans[fr][:, None]
            acc = torch.zeros(n)
            for pred, wt, by_frame in views:
                edges = by_frame[fr]
                for s0 in range(0, len(edges), chunk):
                    e = edges[s0:s0 + chunk]
                    r = torch.baddbmm(t_all[e][:, :, None], m_all[e], pred.index_select(0, e)).neg_().add_(x)
                    acc += (_norm3(r).mul_(wt.index_select(0, e))).sum(0)
            acc /= self.area
            if use_flow:
                _, xce = self._frame_points(st, fr, eps_depth=1e-6)
                m = self.p.static[fr].to(xce.dtype)
                for dst, obs, fac, by_frame in flows:
                    edges = by_frame[fr]
                    for s0 in range(0, len(edges), chunk):
                        e = edges[s0:s0 + chunk]
                        ds = dst[e]
                        rdt = st.rot[ds].transpose(1, 2)
                        pc = torch.baddbmm(rdt @ (st.trans[fr] - st.trans[ds])[:, :, None], rdt, xce.expand(len(e), 3, n))
                        q0 = pc[:, :2] / pc[:, 2:] * fpx[ds][:, None, None]
                        err = (q0 + st.pp[ds][:, :, None] - self.grid[None] - obs.index_select(0, e)).mul_(m)
                        a = err.abs()
                        c = a.clamp(max=1.0)
                        loss = a.sub_(0.5 * c).mul_(c)
                        if self.cfg.pixel_threshold > 0:
                            loss = loss * (loss < self.cfg.pixel_threshold).to(loss.dtype)
                        acc += loss.sum((0, 1)) * fac
            out[fr] = acc

        def work(f0: int, f1: int) -> None:
            for fr in range(f0, f1):
                frame(fr)

        parallel_ranges(nfr, work)
        return out


# ------------------------------------------------------------------------------------------
# pose-only terms (smoothness): small, Jacobians by torch.autograd.functional
# ------------------------------------------------------------------------------------------


def smoothness_residuals(rot: torch.Tensor, trans: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation (K, 9) and translation (K, 3) residuals whose norms the smoothness term sums.

    motion (official): R_rel - I and t_rel of rel_k = inv(P_k) P_{k+1};
    velocity: rel_{k+1} - rel_k (change of the relative motion, a constant-velocity prior).
    """
    r_rel = rot[:-1].transpose(1, 2) @ rot[1:]
    t_rel = (rot[:-1].transpose(1, 2) @ (trans[1:] - trans[:-1])[:, :, None])[..., 0]
    if mode == "velocity":
        return (r_rel[1:] - r_rel[:-1]).reshape(-1, 9), t_rel[1:] - t_rel[:-1]
    eye = torch.eye(3, dtype=rot.dtype)
    return (r_rel - eye).reshape(-1, 9), t_rel


def smoothness_hessian(st: GNState, cfg: MonST3RGAConfig) -> Optional[torch.Tensor]:
    """(6F, 6F) float64 IRLS Gauss-Newton matrix of the smoothness term over the pose twists."""
    nfr = st.rot.shape[0]
    if cfg.smoothness_weight <= 0 or nfr < (3 if cfg.smoothness_mode == "velocity" else 2):
        return None

    def res(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(nfr, 6)
        a, b = smoothness_residuals(roma.rotvec_to_rotmat(x[:, :3]) @ st.rot, st.trans + x[:, 3:], cfg.smoothness_mode)
        return torch.cat([a, b], dim=1).reshape(-1)

    x0 = torch.zeros(nfr * 6, dtype=torch.float32)
    jac = torch.autograd.functional.jacobian(res, x0, vectorize=True).double()  # (12 K, 6F)
    with torch.no_grad():
        a, b = smoothness_residuals(st.rot, st.trans, cfg.smoothness_mode)
    wa = cfg.smoothness_weight / a.norm(dim=1).clamp_min(1e-9)
    wb = cfg.smoothness_weight * cfg.translation_weight / b.norm(dim=1).clamp_min(1e-9)
    w = torch.cat([wa[:, None].expand(-1, 9), wb[:, None].expand(-1, 3)], dim=1).reshape(-1).double()
    return jac.t() @ (w[:, None] * jac)


# ------------------------------------------------------------------------------------------
# the solver
# ------------------------------------------------------------------------------------------


def alignment_weight(problem: AlignProblem, model: "IRLSModel") -> torch.Tensor:
    """(F, N) float32 summed alignment weight (``conf_transform`` of the confidence) of each frame pixel over
    every pair view it appears in: view i of the edges leaving the frame, view j of those entering it."""
    w = torch.zeros(problem.n_frames, problem.depth.shape[1])
    w.index_add_(0, problem.ei, model.w_i.to(w.dtype))
    w.index_add_(0, problem.ej, model.w_j.to(w.dtype))
    return w


def bound_depths(st: GNState, ratio: float) -> GNState:
    """``st`` with every log-depth clamped to its frame's median +- log(ratio) (``gn_max_depth_ratio``; 0: as is)."""
    if ratio <= 0:
        return st
    med = st.logd.median(dim=1, keepdim=True).values
    width = math.log(max(ratio, 1.0))
    st.logd = torch.maximum(torch.minimum(st.logd, med + width), med - width)
    return st


class GaussNewtonSolver:
    """Levenberg-Marquardt over the IRLS model with the depths Schur-eliminated (see module doc)."""

    def __init__(self, problem: AlignProblem, cfg: MonST3RGAConfig, params: SceneParams,
                 state: Optional[GNState] = None, init_depth: Optional[torch.Tensor] = None) -> None:
        """``state``: start there instead of at ``params`` (whose pixels may then differ: the coarse
        stage of gn_coarse_stride); ``init_depth`` (F, N): the depth prior's reference when it is not
        the start (the fine stage)."""
        self.p, self.cfg, self.params = problem, cfg, params
        self.norm_scale = params.norm_pw_scale
        self.use_flow = cfg.flow_loss_weight > 0 and problem.flow_fwd is not None
        flow_dirs = [(problem.ei, problem.ej)] + ([(problem.ej, problem.ei)] if problem.flow_bwd is not None else [])
        self.lay = Layout(problem, cfg.shared_focal, flow_dirs if self.use_flow else [])
        self.model = IRLSModel(problem, cfg, self.lay, chunk=max(1, cfg.chunk_edges))
        self.model._norm_scale = self.norm_scale
        # plain IRLS while steps still make large progress (far from the optimum the residuals carry
        # the pose error, not noise, and less curvature along them overshoots); the norm's curvature
        # once an iteration gains less than NORM_CURVATURE_AFTER (the linear-convergence tail)
        self.model.norm_curvature = 0.0
        self.state = GNState.from_params(params) if state is None else state
        self.objective = Objective(problem, self._tangent(self.state), cfg, cfg.gn_iterations)
        if init_depth is not None:
            self.objective.init_depth = init_depth
        n = problem.depth.shape[1]
        m = cfg.gn_hessian_pixels
        step = 1 if m <= 0 or m >= n else max(1, n // m)
        self.pix = torch.arange(0, n, step)
        self.rho = n / len(self.pix)
        act = torch.ones(self.lay.K, dtype=torch.bool)
        if cfg.fix_poses:
            act[self.lay.pose_slice()] = False
        if cfg.fix_intrinsics:
            act[self.lay.focal_slice()] = False
        self.active = act
        self.fix_depth = cfg.fix_depth
        #: (F, N) bool pixels whose depth stays where it starts (gn_free_depth: hold), or None
        self.held = None
        if cfg.gn_free_depth == "hold" and not cfg.fix_depth:
            self.held = alignment_weight(problem, self.model) < cfg.gn_free_weight

    def _tangent(self, st: GNState, delta=None, grad: bool = False) -> TangentParams:
        return TangentParams(st, self.p.n_frames, self.cfg.shared_focal, self.norm_scale, delta, grad)

    def evaluate(self, st: GNState, it: int, grad: bool):
        """Objective at a state: (total, values, flow counts or None, gradient dict or None)."""
        tp = self._tangent(st, grad=grad)
        self.objective.params = tp
        if grad:
            total, values = self.objective(it)
            total.backward()
            g = {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in tp.delta.items()}
        else:
            with torch.no_grad():
                total, values = self.objective(it)
            g = None
        counts = self.objective.last_flow_counts
        return float(values[0]), values, counts, g

    def prior_diag(self, st: GNState) -> Optional[torch.Tensor]:
        """Diagonal GN curvature of the depth prior (its per-frame mean shift is left out)."""
        w = self.cfg.depth_prior_weight
        if w <= 0:
            return None
        nfr, n = st.logd.shape
        dyn = self.p.dynamic.to(torch.float32) + 1.0
        return 2.0 * w * dyn / (nfr * n)

    def linearise(self, st: GNState, counts, g: dict[str, torch.Tensor]):
        """Everything a damped solve needs that does not depend on lambda."""
        prior = self.prior_diag(st)
        hcc, cpl, hdd = self.model.camera_system(st, self.pix, counts, prior, self.fix_depth)
        hcc = hcc[:-1, :-1] * self.rho
        hs = smoothness_hessian(st, self.cfg)
        if hs is not None:
            hcc[self.lay.pose_slice(), self.lay.pose_slice()] += hs
        gc = self.lay.pack(g)
        lin = {"hcc": hcc, "gc": gc, "gd": g["logd"], "prior": prior}
        if not self.fix_depth:
            cw = cpl / _depth_curvature_floor(hdd)[:, None, :]  # (F, Kf, n)
            if self.held is not None:  # held depths are constants: no Schur correction from them
                cw = cw * (~self.held[:, self.pix])[:, None, :]
            blocks = torch.bmm(cw, cpl.transpose(1, 2)).double() * self.rho  # sum c c^T / h
            corr = torch.bmm(cw, g["logd"][:, self.pix, None])[..., 0].double() * self.rho  # sum c g_d / h
            k1 = self.lay.K + 1
            fc = self.lay.frame_cols
            m = torch.zeros(k1 * k1, dtype=torch.float64)
            m.index_add_(0, (fc[:, :, None] * k1 + fc[:, None, :]).reshape(-1), blocks.reshape(-1))
            cv = torch.zeros(k1, dtype=torch.float64)
            cv.index_add_(0, fc.reshape(-1), corr.reshape(-1))
            lin["m"], lin["corr"] = m.reshape(k1, k1)[:-1, :-1], cv[:-1]
        return lin

    def solve(self, st: GNState, lin, lam: float, counts) -> Optional[dict[str, torch.Tensor]]:
        """The damped Schur step at lambda, or None when the system is not positive definite."""
        hcc = lin["hcc"]
        diag = hcc.diagonal().clamp_min(1e-12 * float(hcc.diagonal().abs().max().clamp_min(1e-30)))
        # (K, K) float64 temporaries are 30-140 MB at 30-60 frames: build S in one buffer, in place
        if self.fix_depth:
            s = hcc.clone()
        else:
            s = lin["m"].mul(-1.0 / (1.0 + lam)).add_(hcc)
        s.diagonal().add_(diag, alpha=lam)
        b = -lin["gc"].clone()
        if not self.fix_depth:
            # the gradient from autograd is already in the raw (mean-free) sigma coordinates; the
            # depth correction is projected below with the matrix
            b = b + self._project_vec(lin["corr"]) / (1.0 + lam) if self.norm_scale else b + lin["corr"] / (1.0 + lam)
        if self.norm_scale:
            s = self._project_mat(s, diag)
        act = self.active
        sa = s if bool(act.all()) else s[act][:, act]  # the Cholesky reads only its lower triangle
        with torch_threads(worker_count()):  # one large LAPACK call: worth its thread team
            chol, info = torch.linalg.cholesky_ex(sa)
            if int(info) != 0:
                return None
            x = torch.zeros(self.lay.K, dtype=torch.float64)
            x[act] = torch.cholesky_solve(b[act][:, None], chol)[:, 0]
        dcam = self.lay.unpack(x, torch.zeros_like(st.logd))
        if self.fix_depth:
            return dcam
        h, cdc = self.model.depth_step_terms(st, dcam, counts)
        if lin["prior"] is not None:
            h = h + lin["prior"]
        dcam["logd"] = -(lin["gd"] + cdc) / (_depth_curvature_floor(h) * (1.0 + lam))
        if self.held is not None:
            dcam["logd"] = dcam["logd"].masked_fill(self.held, 0.0)
        if not all(bool(torch.isfinite(v).all()) for v in dcam.values()):
            return None  # treated like a failed factorisation: more damping
        return dcam

    def _project_mat(self, s: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
        """Sigma columns in raw coordinates (sigma_eff = sigma - mean): S <- T^T S T, plus a
        penalty on the (objective-free) mean of sigma so that the system stays definite (in place)."""
        idx = self.lay.sigma_cols()
        s[idx, :] -= s[idx, :].mean(0, keepdim=True)
        s[:, idx] -= s[:, idx].mean(1, keepdim=True)
        pen = float(diag[idx].mean())
        s[idx[:, None], idx[None, :]] += pen / len(idx)
        return s

    def _project_vec(self, v: torch.Tensor) -> torch.Tensor:
        idx = self.lay.sigma_cols()
        v = v.clone()
        v[idx] -= v[idx].mean()
        return v

    def run(self, log: Callable[[str], None] = lambda m: None,
            progress: Optional[Callable[[int], None]] = None, flow_joined: bool = False,
            write: bool = True, damping: Optional[float] = None) -> np.ndarray:
        """Iterate; returns the loss curve (rows of LOSS_NAMES).

        ``flow_joined``: the flow term is part of the objective from the first iteration (a stage that
        continues another solve: gn_coarse_stride's fine stage). ``write``: store the result in the
        solver's ``params`` (the coarse stage's state has fewer pixels than they do). ``damping``: the
        initial lambda (default gn_damping). After the run, ``state``, ``lam`` (the last lambda) and
        ``flow_joined`` (whether the flow term is part of the final objective) describe where it ended.

        Threads: torch's intra-op thread count (at the call) becomes the number of workers of the
        full-resolution passes (fused kernels, depth step, camera system), which take ranges of edges
        or frames from a queue with single-threaded ops, and every other op runs on one thread. With
        intra-op threads, each small op was an OpenMP parallel region whose barrier waits for the
        slowest thread: on a busy machine (where this process gets less than one core per thread)
        that doubled the CPU time of the small-op parts and made 2 threads slower than 1.
        """
        with kernel_workers(worker_count()), _single_threaded_ops():
            return self._run(log, progress, flow_joined, write, damping)

    def _run(self, log: Callable[[str], None], progress: Optional[Callable[[int], None]], flow_joined: bool,
             write: bool, damping: Optional[float]) -> np.ndarray:
        cfg = self.cfg
        if self.held is not None:
            log(f"monst3r_ga gauss_newton: gn_free_depth hold keeps {float(self.held.float().mean()):.1%} of the depths "
                f"where they start (alignment weight < {cfg.gn_free_weight:g})")
        cap = cfg.gn_iterations
        flow_start = math.ceil(cfg.flow_loss_start * cap) if self.use_flow else 0
        st = self.state
        it = 0
        flow_it = flow_start  # the iteration the Objective is evaluated at once the flow term has joined
        phase_it = flow_start if not self.use_flow or flow_joined else 0
        if flow_joined:
            flow_start = 0
        f, values, counts, g = self.evaluate(st, phase_it, grad=True)
        history = [values]
        t0 = time.perf_counter()
        #: seconds since the start of the loop at which each history row was reached
        self.times = [0.0]
        lam = cfg.gn_damping if damping is None else damping
        done = 0
        for it in range(cap):
            flow_on = self.use_flow and it >= flow_start
            if flow_on and phase_it < flow_it:  # the flow term joins: re-evaluate the new objective
                phase_it = flow_it
                f, values, counts, g = self.evaluate(st, phase_it, grad=True)
                history.append(values)
                self.times.append(time.perf_counter() - t0)
            t_it = time.perf_counter()
            lin = self.linearise(st, counts, g)
            t_lin = time.perf_counter() - t_it
            accepted = False
            tries = 0
            f_new = math.inf
            while lam < 1e10:
                tries += 1
                step = self.solve(st, lin, lam, counts)
                if step is None:
                    lam *= 10.0
                    continue
                trial = bound_depths(self._tangent(st, step).retract(), cfg.gn_max_depth_ratio)
                try:
                    f_new, v_new, c_new, g_new = self.evaluate(trial, phase_it, grad=True)
                except StageError:  # a non-finite objective at the trial point: reject the step
                    f_new = math.inf
                if math.isfinite(f_new) and f_new < f:
                    accepted = True
                    break
                lam *= 10.0
            log(f"monst3r_ga gauss_newton: iteration {it}: objective {f:.6g} -> {f_new:.6g}, lambda {lam:.1e}, "
                f"{tries} tries, linearise {t_lin:.1f} s, total {time.perf_counter() - t_it:.1f} s")
            done += 1
            if progress is not None:
                progress(1)
            if not accepted:
                if self.use_flow and phase_it < flow_it:  # flow-free part converged: start the flow term
                    flow_start, lam = it + 1, cfg.gn_damping
                    continue
                log(f"monst3r_ga gauss_newton: no decrease at lambda {lam:.1e}; stopping at iteration {it}")
                break
            rel = (f - f_new) / max(abs(f), 1e-30)
            st, f, values, counts, g = trial, f_new, v_new, c_new, g_new
            history.append(values)
            self.times.append(time.perf_counter() - t0)
            lam = max(lam / 3.0, 1e-7)
            if rel < NORM_CURVATURE_AFTER:
                self.model.norm_curvature = cfg.gn_norm_curvature
            if rel < cfg.gn_tolerance:
                if self.use_flow and phase_it < flow_it:
                    flow_start = it + 1  # converged without flow: start it now
                    continue
                break
        if progress is not None and done < cap:
            progress(cap - done)
        self.state = st
        self.lam = lam
        self.flow_joined = self.use_flow and phase_it >= flow_it
        if write:
            st.write_to(self.params)
        log(f"monst3r_ga gauss_newton: {self.p.n_frames} frames, {self.p.n_edges} edges, {done} iterations, "
            f"final loss {f:.5g}")
        return np.asarray(history, np.float32).reshape(-1, len(LOSS_NAMES))


def optimise_gn(problem: AlignProblem, cfg: MonST3RGAConfig, params: Optional[SceneParams] = None,
                log: Callable[[str], None] = lambda m: None,
                progress: Optional[Callable[[int], None]] = None) -> tuple[SceneParams, np.ndarray]:
    """Gauss-Newton/LM counterpart of :func:`.optimize.optimise` (same inputs and outputs)."""
    if params is None:
        params = build_params(problem, cfg)
    if cfg.gn_warmup > 0:
        with kernel_workers(worker_count()), _single_threaded_ops():  # threads as in the Adam loop and run()
            _adam_warmup(problem, cfg, params, log)
    if cfg.gn_coarse_stride > 1 and min(problem.size_hw) >= 2 * cfg.gn_coarse_stride:
        return params, coarse_to_fine(problem, cfg, params, log, progress)[0]
    solver = GaussNewtonSolver(problem, cfg, params)
    history = solver.run(log, progress)
    return params, history


def coarse_pixels(size_hw: tuple[int, int], stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows (hc,), columns (wc,) and flat indices (hc wc,) of every ``stride``-th pixel, centred in
    its stride x stride block (offset stride // 2)."""
    h, w = size_hw
    ys = torch.arange(stride // 2, h, stride)
    xs = torch.arange(stride // 2, w, stride)
    return ys, xs, (ys[:, None] * w + xs[None, :]).reshape(-1)


def subsample_problem(problem: AlignProblem, idx: torch.Tensor) -> AlignProblem:
    """The same problem restricted to pixels ``idx`` (flat indices of the H x W grid), which keep their
    pixel coordinates: the objective of the result is the same per-pixel means over a subset."""
    def sel(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if t is None else t[..., idx].contiguous()

    base = problem.pixel_grid()
    return AlignProblem(
        ei=problem.ei, ej=problem.ej, pred_i=sel(problem.pred_i), pred_j=sel(problem.pred_j),
        conf_i=sel(problem.conf_i), conf_j=sel(problem.conf_j), flow_fwd=sel(problem.flow_fwd),
        flow_bwd=sel(problem.flow_bwd), static=sel(problem.static), dynamic=sel(problem.dynamic),
        world_from_cam=problem.world_from_cam, intrinsics=problem.intrinsics, depth=sel(problem.depth),
        size_hw=problem.size_hw, pixels=base[idx].contiguous(),
    )


def upsample_bilinear(values: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """(F, hc wc) values at the pixel rows ``ys`` x columns ``xs`` (regularly spaced) -> (F, H W) by
    bilinear interpolation (constant beyond the outermost rows / columns)."""
    h, w = size_hw
    v = values.reshape(values.shape[0], len(ys), len(xs))

    def axis(pos: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if len(pos) == 1:
            z = torch.zeros(n, dtype=torch.int64)
            return z, z, torch.zeros(n)
        step = float(pos[1] - pos[0])
        t = ((torch.arange(n, dtype=torch.float32) - float(pos[0])) / step).clamp(0, len(pos) - 1)
        i0 = t.floor().long().clamp(max=len(pos) - 2)
        return i0, i0 + 1, t - i0

    r0, r1, a = axis(ys, h)
    c0, c1, b = axis(xs, w)
    rows = v[:, r0] * (1 - a)[None, :, None] + v[:, r1] * a[None, :, None]  # (F, H, wc)
    out = rows[:, :, c0] * (1 - b) + rows[:, :, c1] * b  # (F, H, W)
    return out.reshape(values.shape[0], h * w)


def coarse_to_fine(problem: AlignProblem, cfg: MonST3RGAConfig, params: SceneParams,
                   log: Callable[[str], None] = lambda m: None,
                   progress: Optional[Callable[[int], None]] = None) -> tuple[np.ndarray, list[float], int]:
    """``gn_coarse_stride``: solve on every s-th row and column of pixels, then at full resolution.

    The coarse problem is the same objective over a 1/s^2 subset of the pixels (same pixel
    coordinates, focal and principal point; every term is a mean over pixels, so the values match the
    full objective's up to sampling), solved from the initialisation until it converges. The full
    solve then starts from its cameras, focal(s) and edge Sim(3)s, with each full-resolution log-depth
    moved by the coarse solve's change, interpolated bilinearly from the subset, and the flow term,
    damping and curvature model where the coarse stage left them. The loss curve is the coarse
    stage's rows (values of the subset objective) followed by the full stage's. Returns it, the
    seconds since the start at which each row was reached (as :attr:`GaussNewtonSolver.times`) and the
    number of coarse rows.
    """
    stride = cfg.gn_coarse_stride
    ys, xs, idx = coarse_pixels(problem.size_hw, stride)
    coarse = subsample_problem(problem, idx)
    start = GNState.from_params(params)
    init_depth = params.depth().detach().clone()
    st_c = dataclasses.replace(start, logd=start.logd[:, idx].clone())
    t0 = time.perf_counter()
    cfg_c = cfg if cfg.gn_coarse_tolerance is None else cfg.model_copy(update={"gn_tolerance": cfg.gn_coarse_tolerance})
    solver_c = GaussNewtonSolver(coarse, cfg_c, params, state=st_c)
    hist_c = solver_c.run(log, None, write=False)
    end, lam, flow_joined, curvature, times_c = (solver_c.state, solver_c.lam, solver_c.flow_joined,
                                                 solver_c.model.norm_curvature, solver_c.times)
    log(f"monst3r_ga gauss_newton: coarse stage (every {stride}th pixel, {coarse.depth.shape[1]} per frame) "
        f"{len(hist_c) - 1} rows in {time.perf_counter() - t0:.1f} s")
    del coarse, solver_c
    # full-resolution depths at the coarse cameras: per pixel the better (by its own terms) of the
    # initial depth moved by the interpolated coarse change and the weighted ray median
    logd = start.logd + upsample_bilinear(end.logd - st_c.logd, ys, xs, problem.size_hw)
    st_f = bound_depths(dataclasses.replace(end, logd=logd), cfg.gn_max_depth_ratio)
    solver = GaussNewtonSolver(problem, cfg, params, state=st_f, init_depth=init_depth)
    if not cfg.fix_depth and cfg.gn_coarse_depth == "ray_mean":
        with kernel_workers(worker_count()), _single_threaded_ops():
            st_f = bound_depths(dataclasses.replace(end, logd=solver.model.ray_median_logd(st_f, mean=True)),
                                cfg.gn_max_depth_ratio)
        solver.state = st_f
    if not cfg.fix_depth and cfg.gn_coarse_depth == "ray_median":
        model = solver.model
        counts = None
        if flow_joined:  # the flow sums' element counts (2 per static source pixel; none over pixel_threshold)
            counts = tuple(2.0 * float(problem.static[src].sum()) for src, _, _ in model.flow_dirs)
        with kernel_workers(worker_count()), _single_threaded_ops():
            v_interp = model.pixel_values(st_f, counts)
            st_m = bound_depths(dataclasses.replace(end, logd=model.ray_median_logd(st_f)), cfg.gn_max_depth_ratio)
            v_med = model.pixel_values(st_m, counts)
        better = v_med < v_interp
        st_f = dataclasses.replace(st_f, logd=torch.where(better, st_m.logd, st_f.logd))
        solver.state = st_f
        log(f"monst3r_ga gauss_newton: full resolution from the coarse cameras, ray median depth at "
            f"{100 * float(better.float().mean()):.1f}% of the pixels")
    solver.model.norm_curvature = curvature
    hist_f = solver.run(log, progress, flow_joined=flow_joined, damping=lam)
    t_f = time.perf_counter() - t0 - solver.times[-1]  # the full stage's loop started then
    return np.concatenate([hist_c, hist_f]), times_c + [t_f + t for t in solver.times], len(hist_c)


def _adam_warmup(problem: AlignProblem, cfg: MonST3RGAConfig, params: SceneParams,
                 log: Callable[[str], None]) -> None:
    """``gn_warmup`` Adam steps at the constant rate ``lr`` on the objective without its flow term."""
    objective = Objective(problem, params, cfg, cfg.gn_iterations)
    trainable = [t for t in params.parameters() if t.requires_grad]
    if not trainable:
        return
    opt = torch.optim.Adam(trainable, lr=cfg.lr, betas=(0.9, 0.9))
    first = last = math.nan
    for it in range(cfg.gn_warmup):
        opt.zero_grad(set_to_none=True)
        loss, values = objective(-1)  # before flow_start: no flow term
        loss.backward()
        opt.step()
        first = values[0] if it == 0 else first
        last = values[0]
    log(f"monst3r_ga gauss_newton: {cfg.gn_warmup} Adam warm-up steps, objective {first:.6g} -> {last:.6g}")
