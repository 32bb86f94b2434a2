"""Parametrisation of the MonST3R global optimisation (same variables as the official optimiser).

Per frame: log-depth map, pose as an unnormalised XYZW quaternion plus a signed-log translation,
focal as ``exp(p / focal_break)`` (one value shared by all frames by default), principal point
``(W/2, H/2) + 10 p``. Per directed edge: an 8-vector pose (quaternion, signed-log translation,
log scale) whose scale is normalised to a geometric mean of ``base_scale``, and a 2-vector
adaptor (xy and z scale) normalised to unit product.

All poses are camera-to-world (OpenCV axes). Tensors are float32 unless stated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import roma
import torch
from torch import nn


def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * log(1 + |x|), the inverse of :func:`signed_expm1`."""
    return torch.sign(x) * torch.log1p(x.abs())


def signed_expm1(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * (exp(|x|) - 1): translation from its parameter."""
    return torch.sign(x) * torch.expm1(x.abs())


def signed_expm1_smooth(x: torch.Tensor) -> torch.Tensor:
    """The same values as :func:`signed_expm1`, with the true derivative exp(|x|) also at x = 0.

    Autograd differentiates ``sign(x) * expm1(|x|)`` as 0 at exactly x = 0 (sign' = 0 and
    sign(0) = 0), so a translation component that starts at exactly 0 can never move. The pose
    solver puts the world origin at one frame (identity pose), so with the official form that frame's
    camera centre stays pinned at the origin while every other camera moves and the scene rescales:
    the "spike" of the origin frame in aligned trajectories (docs/global-aligner.md).
    """
    return torch.where(x >= 0, torch.expm1(x.clamp_min(0)), -torch.expm1((-x).clamp_min(0)))


def poses_from_params(params: torch.Tensor, smooth_at_zero: bool = False) -> torch.Tensor:
    """(N, >=7) [qx, qy, qz, qw, a, b, c, ...] -> (N, 4, 4) rigid transforms (quaternion normalised).

    ``smooth_at_zero``: translation by :func:`signed_expm1_smooth` (gradient 1 at 0) instead of the
    official :func:`signed_expm1` (gradient 0 at exactly 0); values are identical.
    """
    quat = params[:, :4]
    rot = roma.unitquat_to_rotmat(quat / quat.norm(dim=-1, keepdim=True))
    trans = (signed_expm1_smooth if smooth_at_zero else signed_expm1)(params[:, 4:7])
    out = torch.zeros(params.shape[0], 4, 4, dtype=params.dtype, device=params.device)
    out[:, :3, :3] = rot
    out[:, :3, 3] = trans
    out[:, 3, 3] = 1.0
    return out


def params_from_poses(world_from_cam: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Inverse of :func:`poses_from_params`: (N, 4, 4) -> (N, 7), or (N, 8) with log ``scale``.

    The translation parameter is ``signed_log1p(t / scale)`` as in the official ``_set_pose``.
    """
    rot = world_from_cam[:, :3, :3]
    trans = world_from_cam[:, :3, 3]
    quat = roma.rotmat_to_unitquat(rot)
    if scale is None:
        return torch.cat([quat, signed_log1p(trans)], dim=-1)
    return torch.cat([quat, signed_log1p(trans / scale[:, None]), scale.log()[:, None]], dim=-1)


@dataclass
class FixedParts:
    """Which groups of variables stay at their initial values."""

    poses: bool = False
    focals: bool = False
    principal_points: bool = True
    depth: bool = False
    adaptors: bool = True


class SceneParams(nn.Module):
    """Learnable variables of one (batched) global alignment.

    Args:
        n_frames: F.
        size_hw: (H, W) network resolution.
        n_edges: P directed edges.
        shared_focal: one focal for all frames (official ``shared_focal=True``).
        focal_break: focal = exp(p / focal_break) (official 20).
        pw_break: adaptor = exp(a / pw_break) (official 20).
        base_scale: geometric mean of the edge scales after normalisation (official 0.5).
        fixed: groups kept constant.
        norm_pw_scale: normalise edge scales and adaptors (off when poses are known, as official).
    """

    def __init__(
        self, n_frames: int, size_hw: tuple[int, int], n_edges: int, *, shared_focal: bool = True,
        focal_break: float = 20.0, pw_break: float = 20.0, base_scale: float = 0.5,
        fixed: Optional[FixedParts] = None, norm_pw_scale: bool = True, smooth_at_zero: bool = False,
    ) -> None:
        super().__init__()
        fixed = fixed or FixedParts()
        h, w = size_hw
        h, w = int(h), int(w)
        self.size_hw = (h, w)
        self.n_frames = int(n_frames)
        self.shared_focal = bool(shared_focal)
        self.focal_break = float(focal_break)
        self.pw_break = float(pw_break)
        self.base_scale = float(base_scale)
        self.norm_pw_scale = bool(norm_pw_scale)
        self.smooth_at_zero = bool(smooth_at_zero)
        self.im_logdepth = nn.Parameter(torch.zeros(n_frames, h * w), requires_grad=not fixed.depth)
        self.im_poses = nn.Parameter(torch.zeros(n_frames, 7), requires_grad=not fixed.poses)
        n_focal = 1 if shared_focal else n_frames
        self.im_focals = nn.Parameter(
            torch.full((n_focal, 1), self.focal_break * math.log(max(h, w))), requires_grad=not fixed.focals
        )
        self.im_pp = nn.Parameter(torch.zeros(n_frames, 2), requires_grad=not fixed.principal_points)
        self.pw_poses = nn.Parameter(torch.zeros(n_edges, 8))
        self.pw_adaptors = nn.Parameter(torch.zeros(n_edges, 2), requires_grad=not fixed.adaptors)
        self.register_buffer("_pp_centre", torch.tensor([w / 2.0, h / 2.0], dtype=torch.float32))

    # ---- per-frame quantities -------------------------------------------------------------
    def focals(self) -> torch.Tensor:
        """(F, 1) focal lengths in pixels."""
        f = (self.im_focals / self.focal_break).exp()
        return f.expand(self.n_frames, 1) if self.shared_focal else f

    def principal_points(self) -> torch.Tensor:
        """(F, 2) principal points (x, y) in pixels."""
        return self._pp_centre + 10.0 * self.im_pp

    def intrinsics(self) -> torch.Tensor:
        """(F, 3, 3) pixel intrinsics."""
        f = self.focals()[:, 0]
        pp = self.principal_points()
        k = torch.zeros(self.n_frames, 3, 3, dtype=f.dtype, device=f.device)
        k[:, 0, 0] = f
        k[:, 1, 1] = f
        k[:, :2, 2] = pp
        k[:, 2, 2] = 1.0
        return k

    def world_from_cam(self) -> torch.Tensor:
        """(F, 4, 4) camera-to-world poses."""
        return poses_from_params(self.im_poses, self.smooth_at_zero)

    def depth(self) -> torch.Tensor:
        """(F, H*W) z-depth."""
        return self.im_logdepth.exp()

    # ---- per-edge quantities --------------------------------------------------------------
    def pw_scale(self) -> torch.Tensor:
        """(P,) edge scales exp(s) * exp(log(base_scale) - mean(s)) (the official normalisation)."""
        s = self.pw_poses[:, 7]
        if self.norm_pw_scale:
            return s.exp() * (math.log(self.base_scale) - s.mean()).exp()
        return s.exp()

    def pw_world_from_pair(self) -> torch.Tensor:
        """(P, 4, 4) scaled edge poses: rotation and translation rows multiplied by the edge scale."""
        rt = poses_from_params(self.pw_poses)
        scale = self.pw_scale()
        top = rt[:, :3, :] * scale[:, None, None]
        return torch.cat([top, rt[:, 3:, :]], dim=1)

    def pw_adaptors_xyz(self) -> torch.Tensor:
        """(P, 3) per-axis multipliers exp(([a0, a0, a1] - mean) / pw_break)."""
        a = torch.cat([self.pw_adaptors[:, :1], self.pw_adaptors], dim=-1)
        if self.norm_pw_scale:
            a = a - a.mean(dim=1, keepdim=True)
        return (a / self.pw_break).exp()

    # ---- initialisation -------------------------------------------------------------------
    @torch.no_grad()
    def set_frames(
        self, world_from_cam: torch.Tensor, focals: torch.Tensor, depth: torch.Tensor,
        principal_points: Optional[torch.Tensor] = None,
    ) -> None:
        """Set per-frame variables: (F, 4, 4) poses, (F,) focals, (F, H*W) depth, (F, 2) pp."""
        self.im_poses.data[:] = params_from_poses(world_from_cam.to(self.im_poses))
        if self.shared_focal:
            self.im_focals.data[:] = self.focal_break * focals.to(self.im_focals).mean().log()
        else:
            self.im_focals.data[:] = self.focal_break * focals.to(self.im_focals).log()[:, None]
        self.im_logdepth.data[:] = depth.to(self.im_logdepth).clamp_min(1e-30).log()
        if principal_points is not None:
            self.im_pp.data[:] = (principal_points.to(self.im_pp) - self._pp_centre) / 10.0

    @torch.no_grad()
    def set_edges(self, rot: torch.Tensor, trans: torch.Tensor, scale: torch.Tensor) -> None:
        """Set edge poses from (P, 3, 3) rotations, (P, 3) translations and (P,) scales
        (``world = scale * rot @ x + trans``), stored as the official ``_set_pose`` does."""
        rt = torch.zeros(rot.shape[0], 4, 4, dtype=rot.dtype, device=rot.device)
        rt[:, :3, :3] = rot
        rt[:, :3, 3] = trans
        self.pw_poses.data[:] = params_from_poses(rt, scale.to(rt)).to(self.pw_poses)

    def norm_scale_factor(self) -> torch.Tensor:
        """exp(log(base_scale) - mean(s)), or 1 when scales are not normalised."""
        if not self.norm_pw_scale:
            return torch.ones((), dtype=self.pw_poses.dtype, device=self.pw_poses.device)
        return (math.log(self.base_scale) - self.pw_poses[:, 7].mean()).exp()


def pixel_grid_flat(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H*W, 2) float32 pixel centres (x, y), row-major."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2).to(device)


def cam_points(depth: torch.Tensor, grid: torch.Tensor, focals: torch.Tensor, pp: torch.Tensor) -> torch.Tensor:
    """Back-project (F, N) depth at (N, 2) pixels with (F, 1) focals and (F, 2) pp -> (F, N, 3)."""
    d = depth[..., None]
    xy = d * (grid[None] - pp[:, None, :]) / focals[:, None, :]
    return torch.cat([xy, d], dim=-1)


def world_points(params: SceneParams, grid: torch.Tensor) -> torch.Tensor:
    """(F, H*W, 3) world points of every frame's depth map (the official ``depth_to_pts3d``)."""
    c2w = params.world_from_cam()
    pts = cam_points(params.depth(), grid, params.focals(), params.principal_points())
    return pts @ c2w[:, :3, :3].transpose(1, 2) + c2w[:, None, :3, 3]


def world_points_cf(params: SceneParams, grid_cf: torch.Tensor) -> torch.Tensor:
    """Channel-first world points (F, 3, H*W) from a (2, H*W) pixel grid; same values as :func:`world_points`."""
    c2w = params.world_from_cam()
    depth = params.depth()
    f = params.focals()  # (F, 1)
    pp = params.principal_points()  # (F, 2)
    xy = (grid_cf[None] - pp[:, :, None]) * (depth[:, None, :] / f[:, :, None])
    cam = torch.cat([xy, depth[:, None, :]], dim=1)
    return torch.baddbmm(c2w[:, :3, 3:], c2w[:, :3, :3], cam)


def as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()
