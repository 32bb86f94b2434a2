"""Mask builder ``sam2_refine``: ``flow_static`` masks refined by the SAM2 video predictor (optional extra)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Optional

import numpy as np
from pydantic import Field

from monst3r_framework.errors import StageError
from monst3r_framework.fingerprint import InputFile
from monst3r_framework.stages import DynamicMasks, MaskBuilder, MaskInputs, RunContext

from .flow_static import FlowStaticConfig, FlowStaticMask

__all__ = ["SAM2RefineConfig", "SAM2Refine", "STAGES"]


class SAM2RefineConfig(FlowStaticConfig):
    type: Literal["sam2_refine"] = "sam2_refine"  # type: ignore[assignment]
    checkpoint: Annotated[Optional[str], InputFile()] = Field(None, description="SAM2 checkpoint (.pt), e.g. sam2.1_hiera_large.pt.")
    model_cfg: str = Field("configs/sam2.1/sam2.1_hiera_l.yaml", description="SAM2 model config name (official: "
                           "configs/sam2.1/sam2.1_hiera_l.yaml).")


class SAM2Refine(MaskBuilder):
    """``flow_static`` masks refined by the SAM2 video predictor and OR-ed in (official ``sam2_mask_refine``).

    As the official code: the flow masks of the odd frames prompt SAM2 and its propagation gives
    the even frames' masks, then the even frames prompt the odd ones; each frame's final mask is
    its flow mask OR its SAM2 mask. Needs the optional ``sam2`` package and a checkpoint.
    """

    name: ClassVar[str] = "sam2_refine"
    config_model = SAM2RefineConfig
    config: SAM2RefineConfig
    requires: ClassVar[frozenset[str]] = frozenset({"flow_estimator"})

    def setup(self, ctx: RunContext) -> None:
        try:
            import sam2  # noqa: F401
        except ImportError as exc:
            raise StageError("mask_builder sam2_refine: the sam2 package is not installed: "
                             "pip install monst3r-fw[sam2] and set stages.mask_builder.checkpoint") from exc
        if not self.config.checkpoint or not Path(self.config.checkpoint).expanduser().is_file():
            raise StageError(f"mask_builder sam2_refine: SAM2 checkpoint not found ({self.config.checkpoint!r}): "
                             "download sam2.1_hiera_large.pt and set stages.mask_builder.checkpoint")

    def run(self, inputs: MaskInputs, ctx: RunContext) -> DynamicMasks:
        self.setup(ctx)
        base = FlowStaticMask(FlowStaticConfig(**{k: v for k, v in self.config.model_dump().items()
                                                  if k in FlowStaticConfig.model_fields and k != "type"}))
        flow_masks = base.run(inputs, ctx)
        refined = self._refine(np.asarray(inputs.frames.rgb), np.asarray(flow_masks.dynamic), ctx)
        return DynamicMasks(dynamic=np.asarray(flow_masks.dynamic) | refined, error=flow_masks.error, source="sam2")

    def _refine(self, rgb: np.ndarray, masks: np.ndarray, ctx: RunContext) -> np.ndarray:
        import torch

        from PIL import Image
        from sam2.build_sam import build_sam2_video_predictor

        device = ctx.device if ctx.device.startswith("cuda") and torch.cuda.is_available() else "cpu"
        predictor = build_sam2_video_predictor(self.config.model_cfg, str(Path(self.config.checkpoint).expanduser()),
                                               device=device)
        n = len(rgb)
        out = np.zeros_like(masks, dtype=bool)
        with tempfile.TemporaryDirectory() as tmp:
            for k, img in enumerate(rgb):  # the public SAM2 API reads a folder of JPEG frames
                Image.fromarray(img).save(Path(tmp) / f"{k:05d}.jpg", quality=95)
            autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device != "cpu" else torch.no_grad()
            with torch.inference_mode(), autocast:
                state = predictor.init_state(video_path=tmp)
                for prompt_parity in (1, 0):  # odd frames prompt the even ones, then the reverse
                    predictor.reset_state(state)
                    for k in range(n):
                        if k % 2 == prompt_parity:
                            predictor.add_new_mask(state, frame_idx=k, obj_id=1, mask=masks[k])
                    for k, obj_ids, logits in predictor.propagate_in_video(state, start_frame_idx=0):
                        if k % 2 != prompt_parity and 1 in list(obj_ids):
                            out[k] = (logits[list(obj_ids).index(1)] > 0.0).cpu().numpy().reshape(out.shape[1:])
        return out


STAGES = (SAM2Refine,)
