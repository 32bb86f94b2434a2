"""Torch geometry helpers with MonST3R's exact numerical semantics.

These functions reproduce the helpers MonST3R's pose initialisation, motion masks and global
optimisation rely on (focal from a pointmap, ego-motion flow, forward-backward flow consistency,
robust flow loss, depth to points, rigid transforms), checked against
``fixtures/monst3r_parity/geometry_helpers.npz``. They are differentiable where the official ones
are, batched, and device/dtype agnostic (they follow the dtype of their inputs).

Conventions: OpenCV cameras (x right, y down, z forward); pixel ``(x, y)`` = (column, row) with
integer coordinates at pixel centres; poses are camera-to-world 4x4 matrices unless named otherwise.

Two principal-point conventions coexist in the official code and both are exposed:

* ``(W / 2, H / 2)``: used by the optimiser, ``estimate_focal`` and the PnP initialisation
  (:func:`default_principal_point`).
* ``((W - 1) / 2, (H - 1) / 2)``: the default of DUSt3R's ``depthmap_to_pts3d`` when ``pp=None``.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

TensorLike = Union[torch.Tensor, np.ndarray]

__all__ = [
    "as_tensor",
    "xy_grid",
    "default_principal_point",
    "focal_base",
    "estimate_focal_knowing_depth",
    "estimate_focal",
    "relative_transform",
    "ego_flow",
    "flow_consistency",
    "occlusion_mask",
    "smooth_l1_flow_loss",
    "depthmap_to_pts3d",
    "fast_depthmap_to_pts3d",
    "depth_to_cam_points",
    "geotrf",
    "inv",
    "intrinsics_from_focal",
]


def as_tensor(x: TensorLike, dtype: Optional[torch.dtype] = None, device: Optional[torch.device] = None) -> torch.Tensor:
    """Tensor view of ``x`` (numpy arrays are converted without copying when possible)."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype or x.dtype, device=device or x.device)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def xy_grid(h: int, w: int, *, dtype: torch.dtype = torch.float32, device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """(H, W, 2) pixel coordinates ``(x, y)`` = (column, row), origin at the top-left pixel centre."""
    ys = torch.arange(h, dtype=dtype, device=device)
    xs = torch.arange(w, dtype=dtype, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1)


def default_principal_point(h: int, w: int, *, dtype: torch.dtype = torch.float32,
                            device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """(2,) principal point ``(W / 2, H / 2)``, the convention of MonST3R's optimiser and PnP init."""
    return torch.tensor((w / 2.0, h / 2.0), dtype=dtype, device=device)


def focal_base(h: int, w: int) -> float:
    """Focal of a 60-degree field of view over the long side, the unit of the focal clip bounds."""
    return max(h, w) / (2.0 * math.tan(math.radians(60.0) / 2.0))


def estimate_focal_knowing_depth(
    pts3d: TensorLike,
    pp: TensorLike,
    mode: str = "weiszfeld",
    min_focal: float = 0.0,
    max_focal: float = float("inf"),
    iterations: int = 10,
) -> torch.Tensor:
    """Focal length (square pixels) that best reprojects a camera-frame pointmap onto its pixel grid.

    Semantics of DUSt3R's ``estimate_focal_knowing_depth``: the pixel grid ``(col, row) - pp`` is
    matched to ``f * (x, y) / z``. ``"median"`` takes the nan-median of the per-pixel votes
    ``u z / x`` and ``v z / y``; ``"weiszfeld"`` starts from the L2 closed form and runs
    ``iterations`` IRLS steps with weights ``1 / max(residual, 1e-8)`` (an L1 fit). The result is
    clipped to ``[min_focal, max_focal] * focal_base(H, W)``.

    Args:
        pts3d: (B, H, W, 3) points in each camera's frame.
        pp: (B, 2) or (2,) principal points ``(x, y)`` in pixels.
        mode: "weiszfeld" or "median".
        min_focal, max_focal: clip bounds in units of :func:`focal_base`.
        iterations: IRLS steps of the weiszfeld mode (the official value is 10).
    Returns:
        (B,) focals in pixels, dtype of ``pts3d``.
    """
    pts = as_tensor(pts3d)
    if pts.ndim != 4 or pts.shape[-1] != 3:
        raise ValueError(f"estimate_focal_knowing_depth: pts3d must be (B, H, W, 3), got {tuple(pts.shape)}")
    b, h, w, _ = pts.shape
    pp_t = as_tensor(pp, dtype=pts.dtype, device=pts.device).reshape(-1, 1, 2)
    pixels = xy_grid(h, w, dtype=pts.dtype, device=pts.device).reshape(1, -1, 2) - pp_t  # (B|1, HW, 2)
    flat = pts.reshape(b, -1, 3)
    if mode == "median":
        with torch.no_grad():
            fx_votes = pixels[..., 0] * flat[..., 2] / flat[..., 0]
            fy_votes = pixels[..., 1] * flat[..., 2] / flat[..., 1]
            votes = torch.cat((fx_votes.expand(b, -1), fy_votes.expand(b, -1)), dim=-1)
            focal = torch.nanmedian(votes, dim=-1).values
    elif mode == "weiszfeld":
        xy_over_z = (flat[..., :2] / flat[..., 2:3]).nan_to_num(posinf=0.0, neginf=0.0)
        dot_xy_px = (xy_over_z * pixels).sum(dim=-1)
        dot_xy_xy = xy_over_z.square().sum(dim=-1)
        focal = dot_xy_px.mean(dim=1) / dot_xy_xy.mean(dim=1)
        # channel-split contiguous copies so each IRLS step is a few fused passes (same maths)
        qx, qy = xy_over_z[..., 0].contiguous(), xy_over_z[..., 1].contiguous()
        px, py = pixels[..., 0].expand_as(qx).contiguous(), pixels[..., 1].expand_as(qy).contiguous()
        n_pix = qx.shape[1]
        for _ in range(iterations):
            f = focal.view(-1, 1)
            # weight = 1 / max(||pixel - f * xy/z||, 1e-8)
            weight = torch.hypot(torch.addcmul(px, qx, f, value=-1.0), torch.addcmul(py, qy, f, value=-1.0))
            weight.clamp_(min=1e-8).reciprocal_()
            focal = torch.linalg.vecdot(weight, dot_xy_px) / n_pix / (torch.linalg.vecdot(weight, dot_xy_xy) / n_pix)
    else:
        raise ValueError(f"estimate_focal_knowing_depth: unknown mode {mode!r}; expected 'weiszfeld' or 'median'")
    base = focal_base(h, w)
    return focal.clip(min=min_focal * base, max=max_focal * base)


def estimate_focal(pts3d: TensorLike, pp: Optional[TensorLike] = None, iterations: int = 10) -> torch.Tensor:
    """MonST3R's ``init_im_poses.estimate_focal``: weiszfeld focal with default pp ``(W/2, H/2)``.

    Args:
        pts3d: (H, W, 3) or (B, H, W, 3) camera-frame pointmap(s).
        pp: optional (2,) or (B, 2) principal point; default ``(W/2, H/2)``.
    Returns:
        () or (B,) focal in pixels, matching the batch-ness of ``pts3d``.
    """
    pts = as_tensor(pts3d)
    single = pts.ndim == 3
    if single:
        pts = pts[None]
    h, w = pts.shape[1:3]
    if pp is None:
        pp = default_principal_point(h, w, dtype=pts.dtype, device=pts.device)
    focal = estimate_focal_knowing_depth(pts, pp, mode="weiszfeld", iterations=iterations)
    return focal[0] if single else focal


def relative_transform(R_src: torch.Tensor, t_src: torch.Tensor, R_tgt: torch.Tensor,
                       t_tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``tgt_from_src`` from two cam-to-world poses: ``R = R_t^T R_s``, ``t = R_t^T (t_s - t_t)``.

    Args:
        R_src, R_tgt: (B, 3, 3) cam-to-world rotations.
        t_src, t_tgt: (B, 3, 1) cam-to-world translations.
    Returns:
        (B, 3, 3) rotation and (B, 3, 1) translation mapping source-camera points to the target camera.
    """
    r_t_inv = R_tgt.transpose(-1, -2)
    return r_t_inv @ R_src, r_t_inv @ (t_src - t_tgt)


def ego_flow(
    R_src: TensorLike, t_src: TensorLike, R_tgt: TensorLike, t_tgt: TensorLike,
    disp_src: TensorLike, K_tgt: TensorLike, inv_K_src: TensorLike,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-induced (rigid-scene) optical flow from source to target, MonST3R's ``DepthBasedWarping``.

    ``p = K_t R_rel K_s^-1 [u, v, 1]^T + disp * K_t t_rel``, then ``p /= p_z + 1e-6``, and the flow
    is ``p - [u, v, 1]``. The optimiser calls it as
    ``ego_flow(R_i, t_i, R_j, t_j, 1 / (depth_i + 1e-6), K_j, inv(K_i))``.

    Args:
        R_src, R_tgt: (B, 3, 3) cam-to-world rotations of the source / target cameras.
        t_src, t_tgt: (B, 3, 1) (or (B, 3)) cam-to-world translations.
        disp_src: (B, 1, H, W) (or (B, H, W)) source disparity ``1 / (depth + 1e-6)``.
        K_tgt: (B, 3, 3) target pixel intrinsics.
        inv_K_src: (B, 3, 3) inverse source pixel intrinsics.
    Returns:
        flow: (B, 3, H, W), channels (du, dv, ~0) in target pixels minus source pixels.
        coords: (B, 3, H*W) normalised homogeneous target coordinates ``p``.
    """
    disp = as_tensor(disp_src)
    if disp.ndim == 3:
        disp = disp[:, None]
    b, _, h, w = disp.shape
    kw = dict(dtype=disp.dtype, device=disp.device)
    R_s, R_t = as_tensor(R_src, **kw), as_tensor(R_tgt, **kw)
    t_s, t_t = as_tensor(t_src, **kw).reshape(-1, 3, 1), as_tensor(t_tgt, **kw).reshape(-1, 3, 1)
    K_t, K_s_inv = as_tensor(K_tgt, **kw), as_tensor(inv_K_src, **kw)
    rel_R, rel_t = relative_transform(R_s, t_s, R_t, t_t)
    grid = xy_grid(h, w, **kw).reshape(-1, 2)
    coord = torch.cat((grid, torch.ones_like(grid[:, :1])), dim=-1).T[None]  # (1, 3, HW)
    homography = K_t @ (rel_R @ K_s_inv)  # (B, 3, 3), same association as the official code
    p = homography @ coord + disp.reshape(b, 1, h * w) * (K_t @ rel_t)
    p = p / (p[:, 2:3] + 1e-6)
    return (p - coord).reshape(b, 3, h, w), p


def flow_consistency(flow_12: TensorLike, flow_21: TensorLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward-backward inconsistency as in MonST3R's ``OccMask`` (before the threshold).

    For each pixel p of image 1, ``q = p + f12(p)``; ``s = bilinear(f21, q)`` (align_corners=True,
    zeros outside); ``inconsistency = |(s_x + f12_x) + (s_y + f12_y)|``: the absolute value of the
    **sum of the two components** (official quirk, not a vector norm).

    Args:
        flow_12: (B, 2, H, W) flow from image 1 to image 2 in pixels.
        flow_21: (B, 2, H, W) flow from image 2 to image 1.
    Returns:
        inconsistency: (B, 1, H, W) float; in_bounds: (B, 1, H, W) bool, ``q`` inside
        ``[0, W-1] x [0, H-1]``.
    """
    f12, f21 = as_tensor(flow_12), as_tensor(flow_21)
    b, _, h, w = f12.shape
    grid = xy_grid(h, w, dtype=f12.dtype, device=f12.device)[None]  # (1, H, W, 2)
    q = grid + f12.permute(0, 2, 3, 1)
    in_bounds = (q[..., 0] >= 0) & (q[..., 0] <= w - 1) & (q[..., 1] >= 0) & (q[..., 1] <= h - 1)
    norm = torch.stack((2.0 * q[..., 0] / max(w - 1, 1) - 1.0, 2.0 * q[..., 1] / max(h - 1, 1) - 1.0), dim=-1)
    sampled = F.grid_sample(f21.to(f12.dtype), norm, mode="bilinear", padding_mode="zeros", align_corners=True)
    inconsistency = (sampled + f12).sum(dim=1, keepdim=True).abs()
    return inconsistency, in_bounds[:, None]


def occlusion_mask(flow_12: TensorLike, flow_21: TensorLike, th: float = 3.0) -> torch.Tensor:
    """MonST3R's ``OccMask(th)``: (B, 1, H, W) bool, True where the flow is forward-backward consistent.

    ``valid = (inconsistency < th) & in_bounds`` with the quantities of :func:`flow_consistency`.
    """
    inconsistency, in_bounds = flow_consistency(flow_12, flow_21)
    return (inconsistency < th) & in_bounds


def smooth_l1_flow_loss(
    estimate: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, beta: float = 1.0,
    per_pixel_thre: float = 50.0, faithful_quirk: bool = True,
) -> torch.Tensor:
    """Robust flow loss of MonST3R's optimiser (``smooth_L1_loss_fn``).

    The per-element smooth-L1 loss of ``estimate * mask`` against ``gt * mask``; with
    ``per_pixel_thre > 0`` only masked-in elements whose loss is below the threshold count, and the
    result is their summed loss over their count (the mask broadcast over the flow channels).

    With ``per_pixel_thre <= 0`` the official code divides by the **un-broadcast** mask sum
    (B, 1, H, W), i.e. it returns C times (2x for flow) the per-element mean. ``faithful_quirk=True``
    (default) reproduces that; ``False`` divides by the broadcast count instead (a true mean).

    Args:
        estimate, gt: (B, C, H, W) flows (C = 2).
        mask: (B, 1, H, W) bool/float validity mask.
        beta: smooth-L1 transition point.
        per_pixel_thre: per-element loss threshold (the optimiser passes ``pxl_thre = 50``).
        faithful_quirk: reproduce the official normalisation of the ``per_pixel_thre <= 0`` branch.
    Returns:
        () scalar loss (NaN if nothing is masked in, as the official code).
    """
    m = mask.to(estimate.dtype)
    raw = F.smooth_l1_loss(estimate * m, gt * m, beta=beta, reduction="none")
    if per_pixel_thre > 0:
        keep = (raw < per_pixel_thre).to(estimate.dtype) * m
        return (raw * keep).sum() / keep.sum()
    if faithful_quirk:
        return (raw * m).sum() / m.sum()
    keep = m.expand_as(raw)
    return (raw * keep).sum() / keep.sum()


def depthmap_to_pts3d(depth: TensorLike, pseudo_focal: TensorLike, pp: Optional[TensorLike] = None) -> torch.Tensor:
    """Back-project depth maps to camera points, DUSt3R's ``depthmap_to_pts3d``.

    Args:
        depth: (B, H, W) z-depth.
        pseudo_focal: (B, H, W) per-pixel focal, (B, 2, H, W) separate fx/fy, or (B,) per image.
        pp: (B, 2) principal points ``(x, y)``; None -> ``((W-1)/2, (H-1)/2)`` (DUSt3R's default,
            different from the optimiser's ``(W/2, H/2)``).
    Returns:
        (B, H, W, 3) camera-frame points.
    """
    d = as_tensor(depth)
    b, h, w = d.shape
    f = as_tensor(pseudo_focal, dtype=d.dtype, device=d.device)
    if f.ndim == 1:
        fx = fy = f.view(b, 1, 1)
    elif f.ndim == 3:
        fx = fy = f
    elif f.ndim == 4:
        fx = f[:, 0]
        fy = f[:, 1] if f.shape[1] == 2 else fx
    else:
        raise ValueError(f"depthmap_to_pts3d: pseudo_focal must be (B,), (B,H,W) or (B,C,H,W), got {tuple(f.shape)}")
    grid = xy_grid(h, w, dtype=d.dtype, device=d.device)
    if pp is None:
        gx = grid[..., 0][None] - (w - 1) / 2.0
        gy = grid[..., 1][None] - (h - 1) / 2.0
    else:
        pp_t = as_tensor(pp, dtype=d.dtype, device=d.device).reshape(-1, 2)
        gx = grid[..., 0][None] - pp_t[:, 0, None, None]
        gy = grid[..., 1][None] - pp_t[:, 1, None, None]
    return torch.stack((d * gx / fx, d * gy / fy, d.expand(b, h, w)), dim=-1)


def fast_depthmap_to_pts3d(depth: TensorLike, pixel_grid: TensorLike, focal: TensorLike, pp: TensorLike) -> torch.Tensor:
    """The optimiser's ``_fast_depthmap_to_pts3d`` on flattened images: ``[depth * (px - pp) / f, depth]``.

    Args:
        depth: (B, N) z-depth of N pixels per image.
        pixel_grid: (B, N, 2) pixel coordinates ``(x, y)``.
        focal: (B,) or (B, 1) focal in pixels (or (B, 2) for fx, fy).
        pp: (B, 2) principal points.
    Returns:
        (B, N, 3) camera-frame points.
    """
    d = as_tensor(depth)
    kw = dict(dtype=d.dtype, device=d.device)
    grid = as_tensor(pixel_grid, **kw)
    f = as_tensor(focal, **kw).reshape(d.shape[0], 1, -1)
    pp_t = as_tensor(pp, **kw).reshape(d.shape[0], 1, 2)
    return torch.cat((d[..., None] * (grid - pp_t) / f, d[..., None]), dim=-1)


def depth_to_cam_points(depth: TensorLike, intrinsics: TensorLike) -> torch.Tensor:
    """(B, H, W) z-depth + (B, 3, 3) pixel intrinsics -> (B, H, W, 3) camera points (fx, fy, cx, cy used)."""
    d = as_tensor(depth)
    k = as_tensor(intrinsics, dtype=d.dtype, device=d.device)
    b, h, w = d.shape
    grid = xy_grid(h, w, dtype=d.dtype, device=d.device)[None]
    x = (grid[..., 0] - k[:, 0, 2, None, None]) / k[:, 0, 0, None, None] * d
    y = (grid[..., 1] - k[:, 1, 2, None, None]) / k[:, 1, 1, None, None] * d
    return torch.stack((x, y, d), dim=-1)


def geotrf(trf: TensorLike, pts: TensorLike) -> torch.Tensor:
    """Apply rigid/affine 4x4 (or 3x3 linear) transforms to points, DUSt3R's ``geotrf`` for 3-D points.

    Args:
        trf: (4, 4), (3, 3), (B, 4, 4) or (B, 3, 3).
        pts: (..., 3) with a leading batch axis B matching ``trf`` when ``trf`` is batched.
    Returns:
        Transformed points, same shape as ``pts``.
    """
    p = as_tensor(pts)
    t = as_tensor(trf, dtype=p.dtype, device=p.device)
    if t.ndim == 2:
        out = p @ t[:3, :3].T
        return out + t[:3, 3] if t.shape[-1] == 4 else out
    b = t.shape[0]
    flat = p.reshape(b, -1, 3)
    out = flat @ t[:, :3, :3].transpose(-1, -2)
    if t.shape[-1] == 4:
        out = out + t[:, None, :3, 3]
    return out.reshape(p.shape)


def inv(mat: TensorLike) -> torch.Tensor:
    """Matrix inverse (batched), DUSt3R's ``inv`` for tensors."""
    return torch.linalg.inv(as_tensor(mat))


def intrinsics_from_focal(focal: TensorLike, pp: TensorLike) -> torch.Tensor:
    """(B,) focals + (B, 2) principal points -> (B, 3, 3) pixel intrinsics with fx = fy = focal."""
    f = as_tensor(focal).reshape(-1)
    pp_t = as_tensor(pp, dtype=f.dtype, device=f.device).reshape(-1, 2).expand(f.shape[0], 2)
    k = torch.zeros((f.shape[0], 3, 3), dtype=f.dtype, device=f.device)
    k[:, 0, 0] = f
    k[:, 1, 1] = f
    k[:, :2, 2] = pp_t
    k[:, 2, 2] = 1.0
    return k
