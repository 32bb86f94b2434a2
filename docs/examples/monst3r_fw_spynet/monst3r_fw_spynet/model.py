"""SPyNet (Ranjan & Black, CVPR 2017) in plain PyTorch: a coarse-to-fine pyramid of small CNNs.

Each pyramid level k (1 = coarsest) has its own network ``G_k``: five 7x7 convolutions
(8 -> 32 -> 64 -> 32 -> 16 -> 2 channels, ReLU between them). At level k the flow of level k-1 is
upsampled by 2 (bilinear) and doubled, image 2 is warped towards image 1 with it, and ``G_k`` reads
``[image 1, warped image 2, flow]`` and predicts a residual that is added to the flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from .t7 import T7Object, load_t7

#: ImageNet statistics the weights were trained with (RGB, values in [0, 1]).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class LevelNet(nn.Sequential):
    """One pyramid level: (B, 8, h, w) [image 1, warped image 2, flow] -> (B, 2, h, w) flow residual."""

    def __init__(self) -> None:
        widths = (8, 32, 64, 32, 16, 2)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=7, padding=3), nn.ReLU()]
        super().__init__(*layers[:-1])  # no ReLU after the last convolution


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` (B, C, h, w) at ``x + flow`` (B, 2, h, w; channel 0 = dx, 1 = dy, pixels)."""
    b, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=image.device, dtype=image.dtype),
                            torch.arange(w, device=image.device, dtype=image.dtype), indexing="ij")
    gx = 2.0 * (xs + flow[:, 0]) / max(w - 1, 1) - 1.0
    gy = 2.0 * (ys + flow[:, 1]) / max(h - 1, 1) - 1.0
    return F.grid_sample(image, torch.stack((gx, gy), -1), mode="bilinear", padding_mode="border", align_corners=True)


class SPyNet(nn.Module):
    """The pyramid; ``forward`` needs H and W divisible by 2^(levels-1) (the stage resizes to that)."""

    def __init__(self, levels: int = 5) -> None:
        super().__init__()
        self.nets = nn.ModuleList(LevelNet() for _ in range(levels))
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.nets) - 1)

    def forward(self, img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
        """img1, img2: (B, 3, H, W) float RGB in [0, 1] -> (B, 2, H, W) flow img1 -> img2 in pixels."""
        pyr1, pyr2 = [(img1 - self.mean) / self.std], [(img2 - self.mean) / self.std]
        for _ in range(len(self.nets) - 1):
            pyr1.append(F.avg_pool2d(pyr1[-1], 2))
            pyr2.append(F.avg_pool2d(pyr2[-1], 2))
        b, _, h, w = pyr1[-1].shape
        flow = img1.new_zeros(b, 2, h, w)
        for level, net in enumerate(self.nets):
            im1, im2 = pyr1[-1 - level], pyr2[-1 - level]
            if level > 0:
                flow = 2.0 * F.interpolate(flow, size=im1.shape[-2:], mode="bilinear", align_corners=True)
            flow = flow + net(torch.cat([im1, warp(im2, flow), flow], 1))
        return flow


def load_spynet(weights_dir: Union[str, Path], levels: int = 5) -> SPyNet:
    """Build SPyNet from the official Torch7 files ``modelL1_F.t7`` (coarsest) ... ``modelL{levels}_F.t7``.

    Raises:
        FileNotFoundError: naming the first missing file.
        ValueError: when a file does not hold the expected five convolutions.
    """
    model = SPyNet(levels)
    for k, net in enumerate(model.nets, start=1):
        path = Path(weights_dir) / f"modelL{k}_F.t7"
        if not path.is_file():
            raise FileNotFoundError(str(path))
        seq = load_t7(path)
        modules = seq.fields.get("modules", {}) if isinstance(seq, T7Object) else {}
        convs = [m for _, m in sorted(modules.items()) if isinstance(m, T7Object) and "weight" in m.fields]
        targets = [m for m in net if isinstance(m, nn.Conv2d)]
        if len(convs) != len(targets):
            raise ValueError(f"{path}: expected {len(targets)} convolutions, found {len(convs)}")
        with torch.no_grad():
            for src, dst in zip(convs, targets):
                weight = torch.from_numpy(src.fields["weight"]).reshape(dst.weight.shape)
                dst.weight.copy_(weight)
                dst.bias.copy_(torch.from_numpy(src.fields["bias"]).reshape(dst.bias.shape))
    return model.eval()
