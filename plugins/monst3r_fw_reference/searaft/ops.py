"""Building blocks of SEA-RAFT that have no weights: padding, sampling, correlation, upsampling,
and the mixture-of-Laplace read-outs of the "info" head.

Conventions: images and maps are (B, C, H, W); pixel coordinates are (x, y) = (column, row) with
integer values at pixel centres. Flows are (B, 2, H, W) with channel 0 = x displacement.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Image-space stride of the feature maps.
STRIDE = 8
#: Smallest padded image side the official code accepts (level 3 of the pyramid must be >= 2).
MIN_PADDED_SIDE = 128


# --------------------------------------------------------------------------------------------
# Padding ("sintel" mode of the official InputPadder)
# --------------------------------------------------------------------------------------------


def pad_amounts(height: int, width: int, multiple: int = STRIDE) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding that makes H and W multiples of ``multiple``, centred
    with the odd pixel on the right/bottom."""
    ph = (multiple - height % multiple) % multiple
    pw = (multiple - width % multiple) % multiple
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


def pad_replicate(x: torch.Tensor, lrtb: tuple[int, int, int, int]) -> torch.Tensor:
    """Pad (B, C, H, W) by replicating edge pixels."""
    if not any(lrtb):
        return x
    return F.pad(x, list(lrtb), mode="replicate")


def unpad(x: torch.Tensor, lrtb: tuple[int, int, int, int]) -> torch.Tensor:
    """Crop what :func:`pad_replicate` added."""
    left, right, top, bottom = lrtb
    h, w = x.shape[-2:]
    return x[..., top:h - bottom, left:w - right]


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def coords_grid(batch: int, height: int, width: int, device: torch.device | str) -> torch.Tensor:
    """(B, 2, H, W) float32 pixel grid, channel 0 = column x, channel 1 = row y."""
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    return torch.stack([xs, ys]).float()[None].expand(batch, 2, height, width)


def bilinear_sample(img: torch.Tensor, coords_xy: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``img`` at pixel coordinates; samples outside count as 0.

    Args:
        img: (N, C, H, W).
        coords_xy: (N, h, w, 2) pixel (x, y); pixel centres at 0..W-1 (the ``align_corners=True``
            convention).
    Returns:
        (N, C, h, w).
    """
    height, width = img.shape[-2:]
    gx, gy = coords_xy.split(1, dim=-1)
    # Normalise exactly as the official sampler does, so grid_sample sees the same values.
    gx = 2 * gx / (width - 1) - 1
    gy = 2 * gy / (height - 1) - 1
    return F.grid_sample(img, torch.cat([gx, gy], dim=-1), mode="bilinear", padding_mode="zeros", align_corners=True)


# --------------------------------------------------------------------------------------------
# Correlation pyramid
# --------------------------------------------------------------------------------------------


class CorrPyramid:
    """All-pairs correlation of image 1's features with a pyramid of image 2's features.

    Level l holds ``corr_l[q, 0, u, v] = <F1[:, i, j], G_l[:, u, v]> / sqrt(C)`` for every query
    pixel ``q = b*h*w + i*w + j`` of the 1/8-resolution map, where ``G_0 = F2`` and ``G_{l+1}`` is
    ``G_l`` bilinearly halved (``align_corners=False``; a 2x2 average with floor). sqrt(C) is taken
    in float32 as the official code does.

    Args:
        fmap1, fmap2: (B, C, h, w) feature maps of image 1 and image 2.
        levels: number of pyramid levels.
        radius: lookup radius r.
    """

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, levels: int = 4, radius: int = 4) -> None:
        batch, channels, height, width = fmap1.shape
        self.radius = radius
        self.out_dtype = torch.float64 if fmap1.dtype == torch.float64 else torch.float32
        scale = torch.tensor(float(channels), dtype=torch.float32).sqrt().to(fmap1.device)
        queries = fmap1.reshape(batch, channels, height * width).transpose(1, 2)  # (B, hw, C)
        self.levels: list[torch.Tensor] = []
        target = fmap2
        for level in range(levels):
            if level > 0:
                target = F.interpolate(target, scale_factor=0.5, mode="bilinear", align_corners=False)
            hl, wl = target.shape[-2:]
            corr = torch.matmul(queries, target.reshape(batch, channels, hl * wl)) / scale.to(target.dtype)
            self.levels.append(corr.reshape(batch * height * width, 1, hl, wl))

    def lookup(self, coords_xy: torch.Tensor) -> torch.Tensor:
        """Sample a (2r+1)^2 window around each query's target at every level.

        Args:
            coords_xy: (B, 2, h, w) target positions (x, y) at 1/8 resolution, level-0 pixels.
        Returns:
            (B, L*(2r+1)^2, h, w), float32 (float64 for float64 inputs). Channel
            ``l*K*K + a*K + b`` samples level l at ``(x/2^l + a - r, y/2^l + b - r)``: the slower
            window index moves x, the faster one moves y.
        """
        batch, _, height, width = coords_xy.shape
        r = self.radius
        k = 2 * r + 1
        steps = torch.arange(-r, r + 1, device=coords_xy.device, dtype=torch.float32)
        # offsets[a, b] = (a - r, b - r) as (dx, dy)
        offsets = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), dim=-1).view(1, k, k, 2)
        centres = coords_xy.permute(0, 2, 3, 1).reshape(batch * height * width, 1, 1, 2)
        out = []
        for level, corr in enumerate(self.levels):
            sampled = bilinear_sample(corr, centres / 2**level + offsets)  # (Bhw, 1, K, K)
            out.append(sampled.view(batch, height, width, k * k))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous().to(self.out_dtype)


# --------------------------------------------------------------------------------------------
# Convex upsampling
# --------------------------------------------------------------------------------------------


def convex_upsample(values: torch.Tensor, mask_logits: torch.Tensor, factor: int = STRIDE) -> torch.Tensor:
    """Upsample by a learned convex combination of each cell's 3x3 neighbourhood.

    Args:
        values: (B, C, h, w) values to upsample (multiply flows by ``factor`` first).
        mask_logits: (B, 9*factor*factor, h, w); channel ``n*f*f + s*f + t`` is the logit of
            neighbour n (row-major 3x3) for output sub-pixel (row s, column t).
    Returns:
        (B, C, h*factor, w*factor). Neighbours outside the grid count as 0.
    """
    batch, channels, height, width = values.shape
    weights = torch.softmax(mask_logits.view(batch, 1, 9, factor, factor, height, width), dim=2)
    neighbours = F.unfold(values, kernel_size=3, padding=1).view(batch, channels, 9, 1, 1, height, width)
    up = (weights * neighbours).sum(dim=2)  # (B, C, s, t, h, w)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(batch, channels, height * factor, width * factor)


# --------------------------------------------------------------------------------------------
# Mixture-of-Laplace read-outs of the info head
# --------------------------------------------------------------------------------------------


def laplace_log_scales(info: torch.Tensor, var_min: float = 0.0, var_max: float = 10.0) -> torch.Tensor:
    """(B, 2, H, W) log b of the two Laplace components from info = [w0, w1, beta0, beta1].

    ``log b0 = clamp(beta0, 0, var_max)`` (the wide component) and ``log b1 = clamp(beta1,
    var_min, 0)`` (the narrow one; with spring-M's var_min = 0 it is always 0, i.e. b1 = 1 px).
    """
    return torch.stack(
        [info[:, 2].clamp(0.0, var_max), info[:, 3].clamp(var_min, 0.0)], dim=1
    )


def laplace_mixture_nll(
    flow: torch.Tensor, info: torch.Tensor, flow_gt: torch.Tensor, var_min: float = 0.0, var_max: float = 10.0
) -> torch.Tensor:
    """Per-pixel, per-component negative log-likelihood of ``flow_gt`` under the predicted mixture.

    ``nf_c = -log sum_j pi_j exp(-|gt_c - flow_c| / b_j) / (2 b_j)`` with ``pi = softmax(w0, w1)``.

    Args:
        flow, flow_gt: (B, 2, H, W) pixels. info: (B, 4, H, W) at the same resolution.
    Returns:
        (B, 2, H, W).
    """
    logits = info[:, :2]
    log_b = laplace_log_scales(info, var_min, var_max)
    err = (flow_gt - flow).abs().unsqueeze(2)  # (B, 2 comps, 1, H, W)
    per_mix = (logits - math.log(2) - log_b).unsqueeze(1) - err * torch.exp(-log_b).unsqueeze(1)
    return torch.logsumexp(logits, dim=1, keepdim=True) - torch.logsumexp(per_mix, dim=2)


def expected_abs_error(info: torch.Tensor, var_min: float = 0.0, var_max: float = 10.0) -> torch.Tensor:
    """(B, H, W) expected absolute error of each flow component, in pixels: ``sum_j pi_j * b_j``.

    A Laplace(b) error has mean absolute value b, so this is the mixture's predicted |error| of the
    x (equally y) displacement; larger = less reliable. It lies in [1, e^var_max] px for spring-M.
    """
    weights = torch.softmax(info[:, :2], dim=1)
    return (weights * torch.exp(laplace_log_scales(info, var_min, var_max))).sum(dim=1)


def log_scale_heatmap(info: torch.Tensor, var_min: float = 0.0, var_max: float = 10.0) -> torch.Tensor:
    """(B, H, W) ``sum_j pi_j * log b_j``: the uncertainty heat map of SEA-RAFT's demo script."""
    weights = torch.softmax(info[:, :2], dim=1)
    return (weights * laplace_log_scales(info, var_min, var_max)).sum(dim=1)
