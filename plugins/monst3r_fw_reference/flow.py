"""Flow stage ``opencv_dis``: OpenCV's DIS optical flow (no weights; the default on CPU).

DIS works on 8-bit grey images; each directed edge is computed independently in a thread pool
(OpenCV releases the GIL). The optional per-pixel uncertainty is the forward-backward error
``|f_ij(p) + f_ji(p + f_ij(p))|`` (vector norm, pixels), computed from the two directions the stage
produces anyway, so it costs one bilinear lookup per pixel.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Literal, Optional

import numpy as np
from pydantic import Field

from monst3r_framework.errors import StageError
from monst3r_framework.stages import FlowEstimator, FlowField, FlowInputs, RunContext, StageConfig

_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}  # cv2.DISOPTICAL_FLOW_PRESET_*


class OpenCVDISConfig(StageConfig):
    type: Literal["opencv_dis"] = "opencv_dis"
    preset: Literal["ultrafast", "fast", "medium"] = Field(
        "medium", description="DIS preset (speed/quality trade-off); 'medium' is the most accurate.")
    finest_scale: Optional[int] = Field(
        None, ge=0, le=10, description="Finest pyramid level DIS refines (0 = full resolution); null = the preset's "
        "(1 for 'medium': flow at half resolution, about 3x the end-point error of 0 on small frames).")
    variational_refinement_iterations: Optional[int] = Field(
        None, ge=0, le=1000, description="Variational refinement iterations per level; null = the preset's.")
    batch_size: int = Field(32, ge=1, le=4096, description="Directed pairs handed to the thread pool at a time.")
    num_threads: int = Field(0, ge=0, le=256, description="Worker threads; 0 = one per CPU core.")
    uncertainty: Literal["none", "forward_backward"] = Field(
        "forward_backward",
        description="Per-pixel uncertainty to store: none, or the forward-backward error in pixels.")


class OpenCVDISFlow(FlowEstimator):
    """Dense optical flow for every pair edge, both directions, by OpenCV DIS on grey images.

    Output: :class:`FlowField` with flow_ij / flow_ji (P, H, W, 2) float32 pixels (dx, dy) and, if
    configured, uncertainty_ij / uncertainty_ji (P, H, W) float32 forward-backward errors in pixels.
    """

    name: ClassVar[str] = "opencv_dis"
    config_model = OpenCVDISConfig
    config: OpenCVDISConfig

    def __init__(self, config: StageConfig) -> None:
        super().__init__(config)
        self._local = threading.local()

    def setup(self, ctx: RunContext) -> None:
        import cv2  # noqa: F401  (fail early with a clear message if OpenCV is missing)

    # ---- per-pair work ---------------------------------------------------------------------

    def _dis(self):
        import cv2

        dis = getattr(self._local, "dis", None)
        if dis is None:  # DIS objects hold per-call buffers: one per thread
            dis = cv2.DISOpticalFlow_create(_PRESETS[self.config.preset])
            if self.config.finest_scale is not None:
                dis.setFinestScale(int(self.config.finest_scale))
            if self.config.variational_refinement_iterations is not None:
                dis.setVariationalRefinementIterations(int(self.config.variational_refinement_iterations))
            self._local.dis = dis
        return dis

    def _one(self, img1: np.ndarray, img2: np.ndarray) -> np.ndarray:
        import cv2

        g1 = cv2.cvtColor(np.ascontiguousarray(img1), cv2.COLOR_RGB2GRAY)
        g2 = cv2.cvtColor(np.ascontiguousarray(img2), cv2.COLOR_RGB2GRAY)
        return self._dis().calc(g1, g2, None).astype(np.float32, copy=False)

    def estimate(self, img1: np.ndarray, img2: np.ndarray, ctx: RunContext) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Flow for a batch of image pairs.

        Args:
            img1, img2: (B, H, W, 3) uint8 RGB.
        Returns:
            (B, H, W, 2) float32 flow from img1 to img2 in pixels, and None (the uncertainty needs
            both directions and is added in :meth:`run`).
        """
        if img1.dtype != np.uint8 or img1.shape != img2.shape or img1.ndim != 4 or img1.shape[-1] != 3:
            raise StageError(f"flow_estimator opencv_dis: expected two (B, H, W, 3) uint8 batches, got "
                             f"{img1.shape} {img1.dtype} and {img2.shape} {img2.dtype}; pass FrameSet.rgb frames")
        if len(img1) == 1 or self._workers() == 1:
            return np.stack([self._one(a, b) for a, b in zip(img1, img2)]), None
        with ThreadPoolExecutor(self._workers()) as pool:
            return np.stack(list(pool.map(self._one, img1, img2))), None

    def _workers(self) -> int:
        import os

        return self.config.num_threads or max(1, os.cpu_count() or 1)

    def run(self, inputs: FlowInputs, ctx: RunContext) -> FlowField:
        out = super().run(inputs, ctx)
        if self.config.uncertainty == "none" or len(out.flow_ij) == 0:
            return out
        unc_ij = forward_backward_error(out.flow_ij, out.flow_ji)
        unc_ji = forward_backward_error(out.flow_ji, out.flow_ij)
        return dataclasses.replace(out, uncertainty_ij=unc_ij, uncertainty_ji=unc_ji)


def forward_backward_error(flow_fw: np.ndarray, flow_bw: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Forward-backward error ``|f_fw(p) + f_bw(p + f_fw(p))|`` in pixels (vector norm).

    Args:
        flow_fw: (P, H, W, 2) float32 flow from image a to image b.
        flow_bw: (P, H, W, 2) float32 flow from image b to image a.
    Returns:
        (P, H, W) float32; target pixels outside the image sample the border (the error is then
        large wherever the flows disagree, as it should be for pixels leaving the view).
    """
    import torch
    import torch.nn.functional as F

    p, h, w, _ = flow_fw.shape
    out = np.empty((p, h, w), np.float32)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    for s in range(0, p, chunk):
        fw = torch.from_numpy(np.asarray(flow_fw[s:s + chunk], np.float32))
        bw = torch.from_numpy(np.asarray(flow_bw[s:s + chunk], np.float32)).permute(0, 3, 1, 2)
        gx = 2.0 * (xs + fw[..., 0]) / max(w - 1, 1) - 1.0
        gy = 2.0 * (ys + fw[..., 1]) / max(h - 1, 1) - 1.0
        sampled = F.grid_sample(bw, torch.stack((gx, gy), -1), align_corners=True, padding_mode="border")
        out[s:s + chunk] = (sampled.permute(0, 2, 3, 1) + fw).norm(dim=-1).numpy()
    return out


STAGES = (OpenCVDISFlow,)
