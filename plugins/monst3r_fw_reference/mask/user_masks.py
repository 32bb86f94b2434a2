"""Mask builder ``user_masks``: per-frame PNG masks from a folder, mapped to network resolution."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Optional

import numpy as np
from pydantic import Field

from monst3r_framework.errors import InputError
from monst3r_framework.fingerprint import InputFile
from monst3r_framework.stages import DynamicMasks, MaskBuilder, MaskInputs, RunContext, StageConfig

__all__ = ["UserMasksConfig", "UserMasks", "STAGES"]


class UserMasksConfig(StageConfig):
    type: Literal["user_masks"] = "user_masks"
    path: Annotated[Optional[str], InputFile()] = Field(None, description="Folder of per-frame PNG masks named with the frame number "
                                "(e.g. mask_0007.png for frame 7 of the original video, or 0..F-1).")
    dynamic_is: Literal["white", "black"] = Field("white", description="Which pixel value marks dynamic pixels.")
    threshold: int = Field(127, ge=0, le=254, description="Grey level separating the two classes.")


_NUMBER = re.compile(r"(\d+)(?!.*\d)")


class UserMasks(MaskBuilder):
    """Dynamic masks read from a folder of PNG files, mapped to network resolution (nearest).

    Files are matched to frames by the last number in their name: first against the frames'
    original indices (``FrameSet.frame_index``), else against 0..F-1. Masks at network size are
    used as they are; masks at the original video size are mapped through
    ``FrameSet.network_from_original`` (resize + crop); any other size is first resized to the original size.
    """

    name: ClassVar[str] = "user_masks"
    config_model = UserMasksConfig
    config: UserMasksConfig
    reads: ClassVar[frozenset[str]] = frozenset()

    def run(self, inputs: MaskInputs, ctx: RunContext) -> DynamicMasks:
        from PIL import Image

        cfg = self.config
        if not cfg.path:
            raise InputError("mask_builder user_masks: no `path` set; pass the folder of PNG masks "
                             "(stages.mask_builder.path=DIR)")
        folder = Path(cfg.path).expanduser()
        if not folder.is_dir():
            raise InputError(f"mask_builder user_masks: folder not found: {folder}; pass an existing folder of PNG masks")
        files: dict[int, Path] = {}
        for p in sorted(folder.glob("*.png")):
            m = _NUMBER.search(p.stem)
            if m is None:
                raise InputError(f"mask_builder user_masks: {p.name} has no frame number in its name; "
                                 "name masks like mask_0007.png")
            num = int(m.group(1))
            if num in files:
                raise InputError(f"mask_builder user_masks: {files[num].name} and {p.name} both claim frame {num}; "
                                 "keep one mask per frame")
            files[num] = p
        frames = inputs.frames
        wanted = [int(v) for v in np.asarray(frames.frame_index)]
        if not all(v in files for v in wanted):
            positional = list(range(frames.n_frames))
            if all(v in files for v in positional):
                wanted = positional
            else:
                lacking = [v for v in wanted if v not in files]
                raise InputError(f"mask_builder user_masks: {folder} lacks masks for frames {lacking[:10]} "
                                 f"({len(lacking)} of {frames.n_frames}; found numbers "
                                 f"{sorted(files)[:5]}...); provide one PNG per frame numbered by original "
                                 f"frame index or 0..{frames.n_frames - 1}")
        h, w = frames.size_hw
        oh, ow = frames.original_hw
        out = np.zeros((frames.n_frames, h, w), bool)
        # network pixel centre -> original pixel (nearest)
        orig_from_net = frames.original_from_network()
        ys, xs = np.mgrid[0:h, 0:w]
        src = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3) @ orig_from_net.T
        sx = np.clip(np.rint(src[:, 0]), 0, ow - 1).astype(np.int64)
        sy = np.clip(np.rint(src[:, 1]), 0, oh - 1).astype(np.int64)
        for k, num in enumerate(wanted):
            img = Image.open(files[num]).convert("L")
            if img.size == (w, h):
                arr = np.asarray(img)
            else:
                if img.size != (ow, oh):
                    img = img.resize((ow, oh), Image.NEAREST)
                arr = np.asarray(img)[sy, sx].reshape(h, w)
            mask = arr > cfg.threshold
            out[k] = mask if cfg.dynamic_is == "white" else ~mask
        return DynamicMasks(dynamic=out, error=None, source="user")


STAGES = (UserMasks,)
