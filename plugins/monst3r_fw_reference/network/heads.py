"""Prediction heads (DPT and linear) and the pointmap/confidence post-processing.

The DPT head reads four token maps (the encoder output and three decoder layers), lifts them to
four resolutions (x4, x2, x1, x0.5 of the patch grid), fuses them coarse-to-fine with RefineNet
blocks and upsamples to full resolution. Its sizes are fixed (feature 256, last 128, layer dims
96/192/384/768) whatever the backbone size, as in the official release.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import NetworkConfig

DPT_FEATURE_DIM = 256
DPT_LAST_DIM = 128
DPT_LAYER_DIMS = (96, 192, 384, 768)


def _upsample2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convolutions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """RefineNet fusion: ``a (+ RCU1(skip))`` -> RCU2 -> x2 bilinear (align_corners) -> 1x1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(channels, channels, 1)
        self.resConfUnit1 = ResidualConvUnit(channels)  # noqa: N815 (official key name)
        self.resConfUnit2 = ResidualConvUnit(channels)  # noqa: N815

    def forward(self, x: Tensor, skip: Optional[Tensor] = None, skip_refined: Optional[Tensor] = None) -> Tensor:
        """``skip_refined`` = ``resConfUnit1(skip)`` computed beforehand (e.g. cached per frame)."""
        if skip_refined is not None:
            x = x + skip_refined
        elif skip is not None:
            x = x + self.resConfUnit1(skip)
        return self.out_conv(_upsample2(self.resConfUnit2(x)))


class _Scratch(nn.Module):
    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        for i, dim in enumerate(DPT_LAYER_DIMS, start=1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(dim, feature_dim, 3, padding=1, bias=False))
        # The official module also lists the same four convs under layer_rn.{0..3}: the checkpoint
        # carries both names for one tensor (alias keys), so keep both names here too.
        self.layer_rn = nn.ModuleList([self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn])
        for i in range(1, 5):
            setattr(self, f"refinenet{i}", FusionBlock(feature_dim))


class DPTAdapter(nn.Module):
    """The DPT decoder proper (key prefix ``dpt.``)."""

    def __init__(self, dim_tokens: Sequence[int], hooks: Sequence[int], patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.hooks = tuple(hooks)
        self.patch_size = patch_size
        d = DPT_LAYER_DIMS
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dim_tokens[0], d[0], 1), nn.ConvTranspose2d(d[0], d[0], 4, stride=4)),
            nn.Sequential(nn.Conv2d(dim_tokens[1], d[1], 1), nn.ConvTranspose2d(d[1], d[1], 2, stride=2)),
            nn.Sequential(nn.Conv2d(dim_tokens[2], d[2], 1)),
            nn.Sequential(nn.Conv2d(dim_tokens[3], d[3], 1), nn.Conv2d(d[3], d[3], 3, stride=2, padding=1)),
        ])
        self.scratch = _Scratch(DPT_FEATURE_DIM)
        # indices 0, 2, 4 carry weights (1 = upsample, 3 = ReLU), matching the official key names
        self.head = nn.Sequential(
            nn.Conv2d(DPT_FEATURE_DIM, DPT_LAST_DIM, 3, padding=1),
            _Upsample2(),
            nn.Conv2d(DPT_LAST_DIM, DPT_LAST_DIM, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(DPT_LAST_DIM, out_channels, 1),
        )

    def _level(self, idx: int, t: Tensor, image_size: tuple[int, int]) -> Tensor:
        rows, cols = image_size[0] // self.patch_size, image_size[1] // self.patch_size
        fmap = t.transpose(1, 2).reshape(t.shape[0], t.shape[2], rows, cols)
        return self.scratch.layer_rn[idx](self.act_postprocess[idx](fmap))

    def encoder_skip(self, enc_tokens: Tensor, image_size: tuple[int, int]) -> Tensor:
        """The part of the head that depends on the encoder tokens only (hook 0 is the encoder
        output): ``refinenet1.resConfUnit1(layer_rn[0](act_postprocess[0](tokens)))``,
        (B, 256, 4*H/16, 4*W/16). A caller can compute it once per frame and pass it to forward."""
        if self.hooks[0] != 0:
            raise ValueError("encoder_skip needs hook 0 to read the encoder output")
        return self.scratch.refinenet1.resConfUnit1(self._level(0, enc_tokens, image_size))

    def forward(self, tokens: Sequence[Tensor], image_size: tuple[int, int],
                encoder_skip: Optional[Tensor] = None) -> Tensor:
        """tokens: [encoder out, dec 1..L] each (B, N, C); image_size (H, W) -> (B, out_channels, H, W).

        ``encoder_skip``: optional precomputed :meth:`encoder_skip` of ``tokens[0]``.
        """
        s = self.scratch
        levels = [None if (idx == 0 and encoder_skip is not None) else self._level(idx, tokens[hook], image_size)
                  for idx, hook in enumerate(self.hooks)]
        path = s.refinenet4(levels[3])
        # hook-3 is downsampled with stride 2: with an odd grid its x2 upsample overshoots, so crop
        path = path[:, :, : levels[2].shape[2], : levels[2].shape[3]]
        path = s.refinenet3(path, levels[2])
        path = s.refinenet2(path, levels[1])
        path = s.refinenet1(path, levels[0], skip_refined=encoder_skip)
        return self.head(path)


class _Upsample2(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return _upsample2(x)


def postprocess(raw: Tensor, config: NetworkConfig) -> dict[str, Tensor]:
    """Raw head output (B, 3 [+1], H, W) -> ``{"pts3d": (B, H, W, 3), "conf": (B, H, W)}``.

    depth_mode exp: ``d = |xyz|``, ``pts = xyz / max(d, 1e-8) * expm1(d)`` (square: ``* d**2``,
    linear: ``xyz``). conf_mode exp: ``vmin + min(exp(c), vmax - vmin)``; sigmoid:
    ``vmin + (vmax - vmin) * sigmoid(c)``.
    """
    fmap = raw.permute(0, 2, 3, 1)
    xyz = fmap[..., 0:3]
    mode = config.depth_mode[0]
    if mode == "linear":
        pts = xyz
    else:
        d = xyz.norm(dim=-1, keepdim=True)
        unit = xyz / d.clip(min=1e-8)
        pts = unit * (torch.expm1(d) if mode == "exp" else d.square())
    out = {"pts3d": pts}
    if config.has_conf:
        cmode, vmin, vmax = config.conf_mode
        c = fmap[..., 3]
        if cmode == "exp":
            out["conf"] = vmin + c.exp().clip(max=vmax - vmin)
        else:
            out["conf"] = vmin + (vmax - vmin) * torch.sigmoid(c)
    return out


class DPTHead(nn.Module):
    """``downstream_head{1,2}`` for head_type 'dpt'."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        dims = [config.enc_embed_dim] + [config.dec_embed_dim] * 3
        self.dpt = DPTAdapter(dims, config.dpt_hooks, config.patch_size, 3 + int(config.has_conf))

    def raw(self, tokens: Sequence[Tensor], image_size: tuple[int, int], encoder_skip: Optional[Tensor] = None
            ) -> Tensor:
        return self.dpt(tokens, image_size, encoder_skip)

    def encoder_skip(self, enc_tokens: Tensor, image_size: tuple[int, int]) -> Optional[Tensor]:
        return self.dpt.encoder_skip(enc_tokens, image_size)

    def forward(self, tokens: Sequence[Tensor], image_size: tuple[int, int], encoder_skip: Optional[Tensor] = None
                ) -> dict[str, Tensor]:
        return postprocess(self.raw(tokens, image_size, encoder_skip), self.config)


class LinearHead(nn.Module):
    """``downstream_head{1,2}`` for head_type 'linear' (DUSt3R 224): one Linear per token to a
    patch of (3 [+1]) x p x p values, then pixel shuffle."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_size = config.patch_size
        self.proj = nn.Linear(config.dec_embed_dim, (3 + int(config.has_conf)) * config.patch_size ** 2)

    def encoder_skip(self, enc_tokens: Tensor, image_size: tuple[int, int]) -> Optional[Tensor]:
        return None  # the linear head reads the last decoder layer only

    def raw(self, tokens: Sequence[Tensor], image_size: tuple[int, int], encoder_skip: Optional[Tensor] = None
            ) -> Tensor:
        last = tokens[-1]
        b = last.shape[0]
        p = self.patch_size
        feat = self.proj(last).transpose(-1, -2).reshape(b, -1, image_size[0] // p, image_size[1] // p)
        return F.pixel_shuffle(feat, p)

    def forward(self, tokens: Sequence[Tensor], image_size: tuple[int, int], encoder_skip: Optional[Tensor] = None
                ) -> dict[str, Tensor]:
        return postprocess(self.raw(tokens, image_size), self.config)


def make_head(config: NetworkConfig) -> nn.Module:
    return DPTHead(config) if config.head_type == "dpt" else LinearHead(config)
