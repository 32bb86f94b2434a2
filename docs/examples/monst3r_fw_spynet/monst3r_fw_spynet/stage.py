"""The ``spynet`` flow estimator: the only file a new flow model really needs.

The base class :class:`~monst3r_framework.stages.FlowEstimator` already loops over every edge of
the scene graph in both directions, batches them, reports progress and builds the
:class:`~monst3r_framework.stages.FlowField`; a flow plugin implements :meth:`estimate` (a batch of
image pairs -> flow) and, to load weights once, :meth:`setup`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from monst3r_framework.errors import InputError
from monst3r_framework.stages import FlowEstimator, RunContext, StageConfig

#: Environment variable read when the recipe gives no ``weights`` path.
WEIGHTS_ENV = "MONST3R_FW_SPYNET_WEIGHTS"


class SPyNetConfig(StageConfig):
    type: Literal["spynet"] = "spynet"
    weights: Optional[str] = Field(
        None, description=f"Folder holding modelL1_F.t7 ... modelL<levels>_F.t7 (the official SPyNet Torch7 "
                          f"weights, non-commercial licence, never bundled); null = ${WEIGHTS_ENV}.")
    levels: int = Field(5, ge=1, le=6, description="Pyramid levels (5 for the 'sintelFinal' weights).")
    batch_size: int = Field(4, ge=1, le=256, description="Image pairs per forward pass.")


class SPyNetFlow(FlowEstimator):
    """Optical flow for every pair edge by SPyNet.

    Frames are resized (bilinear) to the nearest multiple of 2^(levels-1) per side, and the flow is
    resized back and rescaled per axis, so any frame size works.
    """

    name: ClassVar[str] = "spynet"
    version: ClassVar[str] = "1"
    config_model = SPyNetConfig
    config: SPyNetConfig

    def setup(self, ctx: RunContext) -> None:
        from .model import load_spynet

        folder = self.config.weights or os.environ.get(WEIGHTS_ENV)
        if not folder:
            raise InputError(f"flow_estimator spynet: no weights folder; set stages.flow_estimator.weights=PATH "
                             f"or ${WEIGHTS_ENV} to the folder with modelL1_F.t7 ... (github anuragranj/spynet)")
        try:
            self.model = load_spynet(Path(folder).expanduser(), self.config.levels).to(ctx.device)
        except (FileNotFoundError, ValueError) as exc:
            raise InputError(f"flow_estimator spynet: cannot load weights ({exc}); point weights at the folder "
                             f"holding modelL1_F.t7 ... modelL{self.config.levels}_F.t7") from None

    @torch.no_grad()
    def estimate(self, img1: np.ndarray, img2: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """img1, img2: (B, H, W, 3) uint8 RGB -> ((B, H, W, 2) float32 flow img1 -> img2 in pixels, None)."""
        if not hasattr(self, "model"):
            self.setup(ctx)
        a, b = (torch.tensor(np.asarray(x), dtype=torch.float32, device=ctx.device).permute(0, 3, 1, 2) / 255.0
                for x in (img1, img2))
        h, w = a.shape[-2:]
        m = self.model.multiple
        hh, ww = max(m, round(h / m) * m), max(m, round(w / m) * m)
        if (hh, ww) != (h, w):
            a = F.interpolate(a, size=(hh, ww), mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=(hh, ww), mode="bilinear", align_corners=False)
        flow = self.model(a, b)
        if (hh, ww) != (h, w):
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            flow = flow * torch.tensor([w / ww, h / hh], device=flow.device).view(1, 2, 1, 1)
        return flow.permute(0, 2, 3, 1).float().cpu().numpy(), None


STAGES = (SPyNetFlow,)
