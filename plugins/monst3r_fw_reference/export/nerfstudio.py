"""``nerfstudio``: a nerfstudio dataset folder (transforms.json + images, optional masks, depth and
a static point cloud). Layout and conventions: docs/exporters.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from monst3r_framework.errors import StageError
from monst3r_framework.stages import ExportInputs, RunContext, StageConfig

from ._common import (
    CORNER_FROM_CENTRE,
    AtomicExporter,
    SceneArrays,
    depth_to_u16,
    dynamic_frames,
    gl_from_cv,
    select_points,
    warp_to_original,
    write_png,
)
from .pointcloud import ply_vertices, write_ply


class NerfstudioConfig(StageConfig):
    type: Literal["nerfstudio"] = "nerfstudio"
    resolution: Literal["network", "original"] = Field(
        "network", description="'network': the frames exactly as the model saw them with the network intrinsics; "
                               "'original': frames, masks and depth resampled to the original size with the original intrinsics.")
    masks: bool = Field(True, description="Write masks/mask_XXXXX.png and mask_path per frame (255 = use, 0 = ignore: dynamic pixels are 0).")
    mask_dilate: int = Field(0, ge=0, le=99, description="Grow the ignored (dynamic) region by a square kernel of this side in pixels; 0 = off.")
    depth: bool = Field(False, description="Write depth/depth_XXXXX.png (16-bit) and depth_file_path per frame.")
    depth_scale: float = Field(1000.0, gt=0, description="Stored value = depth * depth_scale (nerfstudio's default depth_unit_scale_factor 1e-3 matches 1000).")
    min_conf: float = Field(1.5, ge=0, description="Confidence threshold for the static point cloud (points.ply) and for valid depth pixels (others are 0).")
    point_cloud: bool = Field(True, description="Write points.ply (confident static points) and ply_file_path, used e.g. by splatfacto as initialisation.")
    max_points: int = Field(200_000, ge=1, description="At most this many points in points.ply (reproducible random subset).")


def nerfstudio_intrinsics(k: np.ndarray) -> dict[str, float]:
    """fl_x, fl_y, cx, cy of one (3, 3) pixel-centre intrinsics matrix in nerfstudio's convention
    (ray through pixel (u, v) at u + 0.5, v + 0.5, i.e. the top-left centre at (0.5, 0.5))."""
    return {"fl_x": float(k[0, 0]), "fl_y": float(k[1, 1]),
            "cx": float(k[0, 2] + CORNER_FROM_CENTRE), "cy": float(k[1, 2] + CORNER_FROM_CENTRE)}


class NerfstudioExporter(AtomicExporter):
    """nerfstudio dataset: transforms.json (per-frame intrinsics, OpenGL camera-to-world) and images.

    Optionally masks (dynamic pixels = 0 = ignore), 16-bit depth and a static point cloud.
    """

    name = "nerfstudio"
    config_model = NerfstudioConfig
    config: NerfstudioConfig

    def write(self, inputs: ExportInputs, scene: SceneArrays, out: Path, ctx: RunContext) -> None:
        import cv2

        cfg = self.config
        where = f"exporter {self.name}"
        dyn, _ = dynamic_frames(inputs, scene, where)  # read per frame: nothing whole-video in memory
        net_from_orig = np.asarray(inputs.frames.network_from_original, np.float64)
        if cfg.resolution == "original":
            h, w = (int(v) for v in inputs.frames.original_hw)
            ks = scene.intrinsics_original

            def resample(img: np.ndarray, nearest: bool) -> np.ndarray:
                return warp_to_original(img, net_from_orig, (h, w), nearest=nearest)
        else:
            h, w = scene.size_hw
            ks = scene.intrinsics

            def resample(img: np.ndarray, nearest: bool) -> np.ndarray:
                return img
        if not np.all(np.isfinite(ks)) or np.any(ks[:, 0, 0] <= 0) or np.any(ks[:, 1, 1] <= 0):
            raise StageError(f"{where}: intrinsics have non-finite or non-positive focal lengths; check the aligner output")

        transform = gl_from_cv(scene.world_from_cam)
        meta: dict[str, Any] = {"camera_model": "OPENCV", "frames": []}
        (out / "images").mkdir()
        if cfg.masks:
            (out / "masks").mkdir()
        if cfg.depth:
            (out / "depth").mkdir()
        kernel = np.ones((cfg.mask_dilate, cfg.mask_dilate), np.uint8) if cfg.mask_dilate else None
        for i in range(scene.n_frames):
            frame: dict[str, Any] = {"file_path": f"images/frame_{i:05d}.png", **nerfstudio_intrinsics(ks[i]),
                                     "w": int(w), "h": int(h),
                                     "transform_matrix": transform[i].tolist()}
            write_png(out / frame["file_path"], resample(scene.frame("rgb", i), False))
            if cfg.masks:
                ignore = dyn(i).astype(np.uint8)
                if kernel is not None:
                    ignore = cv2.dilate(ignore, kernel, iterations=1)
                frame["mask_path"] = f"masks/mask_{i:05d}.png"
                write_png(out / frame["mask_path"], resample((1 - ignore) * 255, True).astype(np.uint8))
            if cfg.depth:
                frame["depth_file_path"] = f"depth/depth_{i:05d}.png"
                write_png(out / frame["depth_file_path"], resample(depth_to_u16(
                    scene.frame("depth", i), cfg.depth_scale, scene.frame("conf", i) >= cfg.min_conf), True))
            meta["frames"].append(frame)
        if cfg.depth:
            # Not read by nerfstudio (it takes --depth-unit-scale-factor); recorded so nobody has to guess.
            meta["depth_unit_scale_factor"] = 1.0 / cfg.depth_scale
        if cfg.point_cloud:
            idx = select_points(scene, min_conf=cfg.min_conf, static_only=True, max_points=cfg.max_points,
                                seed=ctx.seed, dynamic=dyn)
            write_ply(out / "points.ply", ply_vertices(scene, idx, dyn), binary=True)
            meta["ply_file_path"] = "points.ply"
        (out / "transforms.json").write_text(json.dumps(meta, indent=2))


STAGES = (NerfstudioExporter,)
