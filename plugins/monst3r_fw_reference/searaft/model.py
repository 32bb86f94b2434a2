"""SEA-RAFT (the ``RAFT2`` variant vendored by MonST3R) as a plain PyTorch module.

Module and parameter names follow the official state dict, so the released checkpoint loads with a
strict key check (see :mod:`.checkpoint`). The forward pass, for images I1, I2 in [0, 255]:

1. ``x = 2 * I / 255 - 1``; pad to multiples of 8 by edge replication (centred).
2. Context: ``c = init_conv(cnet([x1, x2]))``, split into the hidden state ``net`` (first D
   channels) and ``context`` (last D), with no activation on either.
3. Prediction 0 comes from the context alone: ``flow_head(net)`` gives the 1/8-resolution flow
   (2 channels) and the info (4 channels); ``0.25 * upsample_weight(net)`` the convex-upsampling
   logits.
4. Features ``F1 = fnet(x1)``, ``F2 = fnet(x2)``; a 4-level correlation pyramid of F2.
5. Each update looks up the correlation around ``grid + flow``, encodes motion, runs the ConvNeXt
   refinement blocks on ``[net, context, motion]``, then adds ``flow_head``'s delta to the flow and
   replaces the info.
6. Every prediction is upsampled x8 with the convex weights and cropped back to the input size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from monst3r_framework.errors import InputError

from .config import SeaRaftConfig
from .ops import (
    MIN_PADDED_SIDE,
    STRIDE,
    CorrPyramid,
    convex_upsample,
    coords_grid,
    expected_abs_error,
    laplace_mixture_nll,
    log_scale_heatmap,
    pad_amounts,
    pad_replicate,
    unpad,
)

# --------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BN, projection shortcut when the shape changes.

    Every conv has a bias. The projection's BN is registered both as ``bn3`` and as
    ``downsample.1`` (one module, two state-dict names), as in the official layout.
    """

    def __init__(self, in_dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_dim)
        self.bn2 = nn.BatchNorm2d(out_dim)
        self.relu = nn.ReLU()
        if stride == 1 and in_dim == out_dim:
            self.downsample: Optional[nn.Sequential] = None
        else:
            self.bn3 = nn.BatchNorm2d(out_dim)
            self.downsample = nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, stride=stride), self.bn3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(shortcut + y)


class ResNetFPN(nn.Module):
    """Stride-8 ResNet encoder: 7x7/2 stem + BN + ReLU, three stages (strides 1, 2, 2), 1x1 head.

    Args:
        in_dim: input channels (3 for features, 6 for the context of both images).
        out_dim: output channels (no norm or activation after the final 1x1 conv).
    """

    def __init__(self, cfg: SeaRaftConfig, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, cfg.initial_dim, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(cfg.initial_dim)
        self.relu = nn.ReLU()
        width = cfg.initial_dim
        stages = []
        for dim, count, stride in zip(cfg.block_dims, cfg.block_counts, (1, 2, 2)):
            blocks = [BasicBlock(width, dim, stride)] + [BasicBlock(dim, dim, 1) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            width = dim
        self.layer1, self.layer2, self.layer3 = stages
        self.final_conv = nn.Conv2d(width, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.final_conv(self.layer3(self.layer2(self.layer1(x))))


# --------------------------------------------------------------------------------------------
# Update block
# --------------------------------------------------------------------------------------------


class ConvNextBlock(nn.Module):
    """ConvNeXt-style refinement: ``final1x1(u + gamma * MLP(LN(dwconv7x7(u))))``.

    Args:
        in_dim: channels of u (3D in SEA-RAFT). out_dim: output channels (D).
        hidden: MLP width (4D: four times the *output* width).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(in_dim))
        self.dwconv = nn.Conv2d(in_dim, in_dim, 7, padding=3, groups=in_dim)
        self.norm = nn.LayerNorm(in_dim, eps=1e-6)
        self.pwconv1 = nn.Linear(in_dim, hidden)
        self.act = nn.GELU()  # exact erf form
        self.pwconv2 = nn.Linear(hidden, in_dim)
        self.final = nn.Conv2d(in_dim, out_dim, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z = self.dwconv(u).permute(0, 2, 3, 1)
        z = self.pwconv2(self.act(self.pwconv1(self.norm(z)))) * self.gamma
        return self.final(u + z.permute(0, 3, 1, 2))


class MotionEncoder(nn.Module):
    """Encodes the correlation lookup and the current 1/8 flow into D channels; the last two
    channels are the raw flow itself."""

    def __init__(self, cfg: SeaRaftConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.convc1 = nn.Conv2d(cfg.corr_channels, 2 * d, 1)
        self.convc2 = nn.Conv2d(2 * d, d + d // 2, 3, padding=1)
        self.convf1 = nn.Conv2d(2, d, 7, padding=3)
        self.convf2 = nn.Conv2d(d, d // 2, 3, padding=1)
        self.conv = nn.Conv2d(2 * d, d - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(corr))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat([cor, flo], dim=1)))
        return torch.cat([out, flow], dim=1)


class UpdateBlock(nn.Module):
    """Motion encoder + ``num_blocks`` ConvNeXt blocks on ``[net, context, motion]`` (no GRU)."""

    def __init__(self, cfg: SeaRaftConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.encoder = MotionEncoder(cfg)
        self.refine = nn.ModuleList([ConvNextBlock(3 * d, d, 4 * d) for _ in range(cfg.num_blocks)])

    def forward(
        self, net: torch.Tensor, context: torch.Tensor, corr: torch.Tensor, flow: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the new hidden state (B, D, h, w) and the motion features (B, D, h, w)."""
        motion = self.encoder(flow, corr)
        inp = torch.cat([context, motion], dim=1)
        for block in self.refine:
            net = block(torch.cat([net, inp], dim=1))
        return net, motion


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------


@dataclass
class SeaRaftOutput:
    """Result of :meth:`SeaRaft.forward` (all at input resolution unless noted).

    flow: (B, 2, H, W) final flow image1 -> image2 in pixels, channel 0 = x (columns).
    info: (B, 4, H, W) final [w0, w1, beta0, beta1] mixture parameters (convex-upsampled).
    flow_all, info_all: lists of iters+1 (B, 2|4, H, W) predictions (index 0 = context only), when
        ``return_all``; else None.
    flow_8x_all, info_8x_all: lists of iters+1 (B, 2|4, h, w) 1/8-resolution predictions on the
        padded grid (flow in 1/8-resolution pixels), when ``return_all``; else None.
    nf: (B, 2, H, W) mixture NLL of ``flow_gt`` for the final prediction, when ``flow_gt`` was given.
    var_min, var_max: the config values the read-outs below use.
    """

    flow: torch.Tensor
    info: torch.Tensor
    flow_all: Optional[list[torch.Tensor]] = None
    info_all: Optional[list[torch.Tensor]] = None
    flow_8x_all: Optional[list[torch.Tensor]] = None
    info_8x_all: Optional[list[torch.Tensor]] = None
    nf: Optional[torch.Tensor] = None
    var_min: float = 0.0
    var_max: float = 10.0

    def uncertainty(self) -> torch.Tensor:
        """(B, H, W) expected absolute error per flow component in pixels (``sum_j pi_j b_j``)."""
        return expected_abs_error(self.info, self.var_min, self.var_max)

    def log_scale(self) -> torch.Tensor:
        """(B, H, W) ``sum_j pi_j log b_j``, the heat map of SEA-RAFT's demo."""
        return log_scale_heatmap(self.info, self.var_min, self.var_max)


class SeaRaft(nn.Module):
    """SEA-RAFT optical flow network (MonST3R's ``RAFT2``; spring-M by default).

    Build it with :func:`monst3r_fw_reference.searaft.load_searaft` to get weights; a bare instance
    has PyTorch's default initialisation.
    """

    def __init__(self, cfg: Optional[SeaRaftConfig] = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SeaRaftConfig.spring_m()
        d = cfg.dim
        # Registration order = the official state-dict order.
        self.cnet = ResNetFPN(cfg, 6, 2 * d)
        self.init_conv = nn.Conv2d(2 * d, 2 * d, 3, padding=1)
        self.upsample_weight = nn.Sequential(
            nn.Conv2d(d, 2 * d, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * d, 9 * STRIDE * STRIDE, 1)
        )
        self.flow_head = nn.Sequential(nn.Conv2d(d, 2 * d, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * d, 6, 3, padding=1))
        if cfg.iters > 0:
            self.fnet = ResNetFPN(cfg, 3, 2 * d)
            self.update_block = UpdateBlock(cfg)

    def _heads(self, net: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow_head(net), 0.25 * self.upsample_weight(net)

    def forward(
        self,
        image1: torch.Tensor,
        image2: torch.Tensor,
        iters: Optional[int] = None,
        *,
        return_all: bool = False,
        flow_gt: Optional[torch.Tensor] = None,
        capture: Optional[dict] = None,
    ) -> SeaRaftOutput:
        """Flow from image1 to image2.

        Args:
            image1, image2: (B, 3, H, W) float RGB in [0, 255] (MonST3R passes ``img * 255``). After
                padding to multiples of 8 both sides must be >= 128 px, as in the official code.
            iters: update steps (None = ``cfg.iters``; MonST3R uses 20). Makes iters+1 predictions.
            return_all: also return every prediction (upsampled and at 1/8 resolution).
            flow_gt: optional (B, 2, H, W) flow for the mixture NLL of the final prediction.
            capture: optional dict that receives intermediate tensors (for parity tests):
                ``pad_lrtb``, ``cnet_resnetfpn_out``, ``cnet_net_init``, ``cnet_context``,
                ``flow_head_out_iter0``, ``fnet_fmap1``, ``fnet_fmap2``, ``corr_pyramid`` (list),
                ``corr_lookup_iter1``, ``motion_features_iter1``, ``net_after_update_iter1``,
                ``flow_head_out_iter1``, ``delta_flow_iter1``, ``net_final``.
        Returns:
            :class:`SeaRaftOutput`.
        """
        cfg = self.cfg
        iters = cfg.iters if iters is None else int(iters)
        if image1.ndim != 4 or image1.shape[1] != 3 or image1.shape != image2.shape:
            raise InputError(
                f"SEA-RAFT: expected two (B, 3, H, W) images of the same shape, got {tuple(image1.shape)} and {tuple(image2.shape)}"
            )
        if iters > 0 and not hasattr(self, "fnet"):
            raise InputError(f"SEA-RAFT: this network was built with iters=0 (no feature encoder); call it with iters=0, got {iters}")
        height, width = image1.shape[-2:]
        lrtb = pad_amounts(height, width)
        hp, wp = height + lrtb[2] + lrtb[3], width + lrtb[0] + lrtb[1]
        if min(hp, wp) < MIN_PADDED_SIDE:
            raise InputError(
                f"SEA-RAFT: images of {height}x{width} (padded {hp}x{wp}) are too small; the network needs >= "
                f"{MIN_PADDED_SIDE} px per side (its coarsest correlation level must be >= 2 cells); resize the frames up"
            )
        cap = capture if capture is not None else {}
        keep = capture is not None
        cap["pad_lrtb"] = lrtb

        # contiguous(): channels-last inputs (e.g. permuted HWC frames) would pick other conv kernels.
        x1 = pad_replicate((2 * (image1 / 255.0) - 1.0).contiguous(), lrtb)
        x2 = pad_replicate((2 * (image2 / 255.0) - 1.0).contiguous(), lrtb)

        ctx_feat = self.cnet(torch.cat([x1, x2], dim=1))
        c = self.init_conv(ctx_feat)
        net, context = c[:, :cfg.dim], c[:, cfg.dim:]
        head, mask = self._heads(net)
        flow_8x, info_8x = head[:, :2], head[:, 2:]
        if keep:
            cap.update(cnet_resnetfpn_out=ctx_feat, cnet_net_init=net, cnet_context=context, flow_head_out_iter0=head)

        flows8 = [flow_8x] if return_all else None
        infos8 = [info_8x] if return_all else None
        masks = [mask] if return_all else None

        if iters > 0:
            fmap1 = self.fnet(x1)
            fmap2 = self.fnet(x2)
            # The correlation is computed in full precision even under autocast.
            with torch.autocast(device_type=fmap1.device.type, enabled=False):
                dt = torch.float64 if fmap1.dtype == torch.float64 else torch.float32
                pyramid = CorrPyramid(fmap1.to(dt), fmap2.to(dt), cfg.corr_levels, cfg.radius)
            grid = coords_grid(flow_8x.shape[0], flow_8x.shape[2], flow_8x.shape[3], flow_8x.device)
            if keep:
                cap.update(fnet_fmap1=fmap1, fnet_fmap2=fmap2, corr_pyramid=pyramid.levels)
            for step in range(iters):
                corr = pyramid.lookup(grid + flow_8x)
                net, motion = self.update_block(net, context, corr, flow_8x)
                head, mask = self._heads(net)
                flow_8x = flow_8x + head[:, :2]
                info_8x = head[:, 2:]
                if keep and step == 0:
                    cap.update(
                        corr_lookup_iter1=corr, motion_features_iter1=motion, net_after_update_iter1=net,
                        flow_head_out_iter1=head, delta_flow_iter1=head[:, :2],
                    )
                if return_all:
                    flows8.append(flow_8x)
                    infos8.append(info_8x)
                    masks.append(mask)
        if keep:
            cap["net_final"] = net

        def up(f8: torch.Tensor, i8: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return unpad(convex_upsample(STRIDE * f8, m), lrtb), unpad(convex_upsample(i8, m), lrtb)

        if return_all:
            ups = [up(f, i, m) for f, i, m in zip(flows8, infos8, masks)]
            flow_all, info_all = [u[0] for u in ups], [u[1] for u in ups]
            flow, info = flow_all[-1], info_all[-1]
        else:
            flow_all = info_all = None
            flow, info = up(flow_8x, info_8x, mask)
        nf = None
        if flow_gt is not None:
            nf = laplace_mixture_nll(flow, info, flow_gt, cfg.var_min, cfg.var_max)
        return SeaRaftOutput(
            flow=flow, info=info, flow_all=flow_all, info_all=info_all, flow_8x_all=flows8, info_8x_all=infos8,
            nf=nf, var_min=cfg.var_min, var_max=cfg.var_max,
        )

    def official_call(
        self,
        image1: torch.Tensor,
        image2: torch.Tensor,
        iters: Optional[int] = None,
        flow_gt: Optional[torch.Tensor] = None,
        test_mode: bool = False,
    ) -> list | dict:
        """The return convention of the vendored ``RAFT2.forward`` (for drop-in use and tests).

        ``test_mode=True`` (what MonST3R calls): ``[flows, flows[-1]]`` with ``flows`` the list of
        iters+1 upsampled flows; index ``[1]`` is the final flow. ``test_mode=False``: a dict with
        ``final``, ``flow``, ``info`` (lists of iters+1) and ``nf`` (per-prediction NLL against
        ``flow_gt``, zeros by default).
        """
        out = self.forward(image1, image2, iters, return_all=True)
        flows = out.flow_all
        if test_mode:
            return [flows, flows[-1]]
        gt = torch.zeros_like(flows[-1]) if flow_gt is None else flow_gt
        nf = [laplace_mixture_nll(f, i, gt, self.cfg.var_min, self.cfg.var_max) for f, i in zip(flows, out.info_all)]
        return {"final": flows[-1], "flow": flows, "info": out.info_all, "nf": nf}
