"""``sea_raft`` flow-estimator stage: SEA-RAFT spring-M, as MonST3R computes its flows."""

from __future__ import annotations

import contextlib
from typing import Annotated, ClassVar, Literal, Optional

import numpy as np
from pydantic import Field

from monst3r_framework.errors import InputError, StageError
from monst3r_framework.fingerprint import InputFile
from monst3r_framework.stages import FlowEstimator, RunContext, StageConfig

_AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


class SeaRaftFlowConfig(StageConfig):
    """Config of the ``sea_raft`` flow estimator."""

    type: Literal["sea_raft"] = "sea_raft"
    checkpoint: Annotated[Optional[str], InputFile(env="SEARAFT_CHECKPOINT")] = Field(
        None,
        description="Path to Tartan-C-T-TSKH-spring540x960-M.pth (official layout, bare or 'module.' keys); "
        "None reads the SEARAFT_CHECKPOINT environment variable.",
    )
    iters: int = Field(20, ge=0, le=100, description="Update steps per pair (MonST3R uses 20); iters+1 predictions.")
    batch_size: int = Field(4, ge=1, le=256, description="Directed image pairs per network call.")
    dtype: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Compute precision; bf16/fp16 use autocast on CUDA only (CPU always runs fp32)."
    )


class SeaRaftFlow(FlowEstimator):
    """Optical flow with SEA-RAFT (spring-M), on images in [0, 255] as MonST3R's ``get_flow`` does.

    Uncertainty output: the expected absolute error of each flow component in pixels,
    ``sum_j pi_j * b_j`` of the predicted two-component Laplace mixture (see
    :func:`monst3r_fw_reference.searaft.ops.expected_abs_error`).
    """

    name: ClassVar[str] = "sea_raft"
    version: ClassVar[str] = "1"
    config_model = SeaRaftFlowConfig
    config: SeaRaftFlowConfig

    def __init__(self, config: SeaRaftFlowConfig) -> None:
        super().__init__(config)
        self._model = None
        self._device: Optional[str] = None

    def setup(self, ctx: RunContext) -> None:
        import torch

        from .checkpoint import load_searaft, resolve_checkpoint

        device = str(ctx.device)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"sea_raft: device {device!r} requested but CUDA is not available; run with --device cpu")
        path = resolve_checkpoint(self.config.checkpoint)
        self._model = load_searaft(path, device=device)
        self._device = device
        ctx.log(f"sea_raft: loaded {path} (dim={self._model.cfg.dim}) on {device}")

    def estimate(self, img1: np.ndarray, img2: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Flow and uncertainty for a batch of pairs.

        Args:
            img1, img2: (B, H, W, 3) uint8 RGB, same shape.
        Returns:
            flow (B, H, W, 2) float32 pixels (dx, dy) from img1 to img2; uncertainty (B, H, W)
            float32, expected |error| per component in pixels.
        """
        import torch

        img1, img2 = np.asarray(img1), np.asarray(img2)
        if img1.ndim != 4 or img1.shape[-1] != 3 or img1.shape != img2.shape:
            raise StageError(
                f"sea_raft: expected two (B, H, W, 3) RGB batches of equal shape, got {img1.shape} and {img2.shape}"
            )
        if self._model is None or self._device != str(ctx.device):
            self.setup(ctx)
        model = self._model
        device = torch.device(self._device)

        def to_tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device).permute(0, 3, 1, 2).float()

        autocast: contextlib.AbstractContextManager = contextlib.nullcontext()
        if device.type == "cuda" and self.config.dtype in _AUTOCAST_DTYPES:
            autocast = torch.autocast("cuda", dtype=getattr(torch, _AUTOCAST_DTYPES[self.config.dtype]))
        with torch.inference_mode(), autocast:
            out = model(to_tensor(img1), to_tensor(img2), iters=self.config.iters)
            flow = out.flow.float().permute(0, 2, 3, 1)
            unc = out.uncertainty().float()
        return flow.cpu().numpy(), unc.cpu().numpy()


STAGES = (SeaRaftFlow,)
