"""``depth_png16`` (16-bit PNG depth with a stated scale) and ``mask_png`` (8-bit dynamic masks)
exporters, both at network resolution. Layouts: docs/exporters.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from monst3r_framework.errors import StageError
from monst3r_framework.stages import ExportInputs, RunContext, StageConfig

from ._common import AtomicExporter, SceneArrays, depth_to_u16, dynamic_frames, write_png


class DepthPng16Config(StageConfig):
    type: Literal["depth_png16"] = "depth_png16"
    scale: float = Field(1000.0, gt=0, description="Stored value = round(depth * scale); read back as value / scale "
                                                   "(1000: millimetres if the reconstruction were in metres).")
    min_conf: float = Field(0.0, ge=0, description="Pixels with confidence below this are written as 0 (no depth).")
    drop_dynamic: bool = Field(False, description="Write dynamic pixels as 0 (no depth).")


class DepthPng16Exporter(AtomicExporter):
    """Per-frame z-depth as 16-bit grayscale PNG, 0 = invalid, plus depth_png16.json stating the scale."""

    name = "depth_png16"
    config_model = DepthPng16Config
    config: DepthPng16Config

    def write(self, inputs: ExportInputs, scene: SceneArrays, out: Path, ctx: RunContext) -> None:
        cfg = self.config
        dyn, _ = dynamic_frames(inputs, scene, f"exporter {self.name}")
        clipped = 0
        for i in range(scene.n_frames):  # frame by frame: nothing whole-video in memory
            depth = scene.frame("depth", i)
            valid = scene.frame("conf", i) >= cfg.min_conf
            if cfg.drop_dynamic:
                valid &= ~dyn(i)
            clipped += int(np.count_nonzero(valid & (depth * cfg.scale > 65535.0)))
            write_png(out / f"depth_{i:04d}.png", depth_to_u16(depth, cfg.scale, valid))
        if clipped:
            ctx.log(f"{self.name}: {clipped} pixels deeper than {65535.0 / cfg.scale:g} written as 0; lower scale to keep them")
        meta = {"format": "16-bit grayscale PNG, one per frame: depth_XXXX.png", "depth": "value / scale",
                "scale": cfg.scale, "invalid_value": 0, "max_depth": 65535.0 / cfg.scale,
                "size_hw": list(scene.size_hw), "n_frames": scene.n_frames, "pixels_out_of_range": clipped}
        (out / "depth_png16.json").write_text(json.dumps(meta, indent=2))


class MaskPngConfig(StageConfig):
    type: Literal["mask_png"] = "mask_png"
    dilate: int = Field(0, ge=0, le=99, description="Grow the dynamic region by a square kernel of this side in pixels; 0 = off.")
    invert: bool = Field(False, description="false: 255 = dynamic, 0 = static; true: 255 = static (keep), 0 = dynamic.")
    source: Literal["auto", "masks", "reconstruction"] = Field(
        "auto", description="'masks': the mask builder's output; 'reconstruction': the mask the aligner used; 'auto': masks when present.")


class MaskPngExporter(AtomicExporter):
    """Per-frame dynamic masks as 8-bit 0/255 PNG (mask_XXXX.png)."""

    name = "mask_png"
    config_model = MaskPngConfig
    config: MaskPngConfig

    def write(self, inputs: ExportInputs, scene: SceneArrays, out: Path, ctx: RunContext) -> None:
        import cv2

        cfg = self.config
        where = f"exporter {self.name}"
        if cfg.source == "reconstruction":
            dyn, source = (lambda i: scene.frame("dynamic", i)), "reconstruction"
        else:
            if cfg.source == "masks" and inputs.masks is None:
                raise StageError(f"{where}: source 'masks' but the run has no mask builder output; "
                                 "enable a mask_builder or set source: auto")
            dyn, source = dynamic_frames(inputs, scene, where)
        kernel = np.ones((cfg.dilate, cfg.dilate), np.uint8) if cfg.dilate else None
        for i in range(scene.n_frames):  # frame by frame
            m = dyn(i).astype(np.uint8)
            if kernel is not None:
                m = cv2.dilate(m, kernel, iterations=1)
            write_png(out / f"mask_{i:04d}.png", ((1 - m) if cfg.invert else m) * np.uint8(255))
        meta = {"format": "8-bit grayscale PNG, one per frame: mask_XXXX.png",
                "value_255": "static" if cfg.invert else "dynamic", "source": source, "dilate": cfg.dilate,
                "size_hw": list(scene.size_hw), "n_frames": scene.n_frames}
        (out / "mask_png.json").write_text(json.dumps(meta, indent=2))


STAGES = (DepthPng16Exporter, MaskPngExporter)
