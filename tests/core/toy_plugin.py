"""Test-only plugin: tiny deterministic stages of every kind (loaded through a recipe's `plugins:`).

Each stage counts its `run` calls in TOY_CALLS_FILE (if set) so tests can tell computed from cached.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from monst3r_framework.hookspecs import hookimpl
from monst3r_framework.stages import (
    CameraTrajectory, DynamicMasks, Exporter, ExportResult, FlowEstimator, GlobalAligner, MaskBuilder,
    PairPredictions, PairPredictor, PoseSolver, Reconstruction, StageConfig,
)


def _count(name: str) -> None:
    path = os.environ.get("TOY_CALLS_FILE")
    if path:
        with open(path, "a") as fh:
            fh.write(name + "\n")


class ToyFlowConfig(StageConfig):
    type: Literal["toy_flow"] = "toy_flow"
    shift: float = Field(1.0, description="Constant flow value.")


class ToyFlow(FlowEstimator):
    name = "toy_flow"
    config_model = ToyFlowConfig

    def estimate(self, img1, img2, ctx):
        _count(self.name)
        b, h, w, _ = img1.shape
        return np.full((b, h, w, 2), self.config.shift, np.float32), None


class ToyPairsConfig(StageConfig):
    type: Literal["toy_pairs"] = "toy_pairs"
    scale: float = Field(1.0, gt=0, description="Depth scale.")


class ToyPairs(PairPredictor):
    name = "toy_pairs"
    config_model = ToyPairsConfig

    def run(self, inputs, ctx):
        _count(self.name)
        pairs = inputs.pairs
        h, w = inputs.frames.size_hw
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        out_i, out_j = [], []
        with ctx.progress(len(pairs), "toy pairs") as bar:
            for i, j in pairs:
                time.sleep(float(os.environ.get("TOY_DELAY", "0")))  # kill tests; not part of the key
                zi = self.config.scale * (2.0 + np.asarray(inputs.frames.rgb[int(i)], np.float32).mean(-1) / 255.0)
                zj = self.config.scale * (2.0 + np.asarray(inputs.frames.rgb[int(j)], np.float32).mean(-1) / 255.0)
                out_i.append(np.stack([(xs - w / 2) / w * zi, (ys - h / 2) / w * zi, zi], -1))
                out_j.append(np.stack([(xs - w / 2) / w * zj, (ys - h / 2) / w * zj, zj], -1))
                bar.advance()
        conf = np.full((len(pairs), h, w), 2.0, np.float32)
        return PairPredictions(pairs=pairs, pts3d_i=np.stack(out_i), pts3d_j=np.stack(out_j), conf_i=conf, conf_j=conf)


class ToyPoseConfig(StageConfig):
    type: Literal["toy_pose"] = "toy_pose"
    step: float = Field(0.1, description="Translation per frame along x.")


class ToyPose(PoseSolver):
    name = "toy_pose"
    config_model = ToyPoseConfig

    def run(self, inputs, ctx):
        _count(self.name)
        n = inputs.frames.n_frames
        h, w = inputs.frames.size_hw
        c2w = np.tile(np.eye(4), (n, 1, 1))
        c2w[:, 0, 3] = self.config.step * np.arange(n)
        k = np.tile(np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1.0]]), (n, 1, 1))
        depth = np.zeros((n, h, w), np.float32)
        pairs = np.asarray(inputs.predictions.pairs)
        for f in range(n):
            idx = int(np.nonzero(pairs[:, 0] == f)[0][0])
            depth[f] = np.asarray(inputs.predictions.pts3d_i[idx])[..., 2]
        return CameraTrajectory(world_from_cam=c2w, intrinsics=k, depth=depth, conf=np.ones_like(depth))


class ToyMaskConfig(StageConfig):
    type: Literal["toy_mask"] = "toy_mask"
    threshold: int = Field(128, description="Brightness threshold.")


class ToyMask(MaskBuilder):
    name = "toy_mask"
    config_model = ToyMaskConfig
    reads = frozenset()

    def run(self, inputs, ctx):
        _count(self.name)
        rgb = np.asarray(inputs.frames.rgb)
        return DynamicMasks(dynamic=rgb.mean(-1) > self.config.threshold)


class ToyAlignerConfig(StageConfig):
    type: Literal["toy_aligner"] = "toy_aligner"
    offset: float = Field(0.0, description="Added to every depth.")
    iterations: int = Field(3, ge=1, description="Fake iterations.")


class ToyAligner(GlobalAligner):
    name = "toy_aligner"
    config_model = ToyAlignerConfig

    def run(self, inputs, ctx):
        _count(self.name)
        from monst3r_framework.stages import reconstruction_from_cameras

        init = inputs.init
        cams = CameraTrajectory(world_from_cam=np.asarray(init.world_from_cam), intrinsics=np.asarray(init.intrinsics),
                                depth=np.asarray(init.depth) + self.config.offset, conf=np.asarray(init.conf))
        rec = reconstruction_from_cameras(inputs.frames, cams, inputs.masks)
        hist = np.linspace(1.0, 0.1, self.config.iterations, dtype=np.float32)[:, None]
        return Reconstruction(**{**{k: getattr(rec, k) for k in rec.DIMS}, "loss_history": hist, "loss_names": ("total",)})


class ToyExportConfig(StageConfig):
    type: Literal["toy_export"] = "toy_export"


class ToyExport(Exporter):
    name = "toy_export"
    config_model = ToyExportConfig

    def run(self, inputs, ctx):
        _count(self.name)
        np.save(inputs.out_dir / "depth.npy", np.asarray(inputs.reconstruction.depth))
        np.save(inputs.out_dir / "poses.npy", np.asarray(inputs.reconstruction.world_from_cam))
        (inputs.out_dir / "info.json").write_text(json.dumps({"frames": inputs.frames.n_frames}))
        return ExportResult(files=("depth.npy", "poses.npy", "info.json"))


STAGES = (ToyFlow, ToyPairs, ToyPose, ToyMask, ToyAligner, ToyExport)


@hookimpl
def monst3r_fw_stage_classes():
    return list(STAGES)
