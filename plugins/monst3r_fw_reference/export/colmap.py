"""``colmap``: a COLMAP sparse model (cameras, images, points3D; binary and/or text) at the original
image resolution, written with pycolmap. Layout and conventions: docs/exporters.md."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Literal, Optional

import numpy as np
from pydantic import Field

from monst3r_framework.errors import StageError
from monst3r_framework.geometry import inv_rigid
from monst3r_framework.stages import ExportInputs, RunContext, StageConfig

from ._common import (
    CORNER_FROM_CENTRE,
    AtomicExporter,
    SceneArrays,
    dynamic_frames,
    gather_points,
    select_points,
    warp_to_original,
    write_png,
)


class ColmapConfig(StageConfig):
    type: Literal["colmap"] = "colmap"
    format: Literal["bin", "txt", "both"] = Field("both", description="Model files to write into sparse/0: binary (.bin), text (.txt) or both.")
    min_conf: float = Field(1.5, ge=0, description="Only pixels with confidence >= this become 3D points.")
    max_points: Optional[int] = Field(200_000, ge=1, description="Random subset of at most this many 3D points (reproducible from the run seed); null = all.")
    include_dynamic: bool = Field(False, description="Also export points on moving objects (COLMAP assumes a static scene; keep false).")
    shared_camera: Literal["auto", "per_frame"] = Field(
        "auto", description="'auto': one camera when every frame has the same intrinsics (else one per frame); 'per_frame': always one per frame.")
    write_images: bool = Field(True, description="Write images/frame_XXXX.png, the network-resolution frames resampled to the original resolution.")
    image_name: str = Field("frame_{i:04d}.png", description="Image name pattern; {i} is the frame's position in the run.")


def _require_pycolmap(where: str) -> ModuleType:
    try:
        import pycolmap
    except ImportError as exc:
        raise StageError(f"{where}: pycolmap is not installed ({exc}); pip install 'pycolmap>=3.12' "
                         "or drop the colmap exporter from the recipe") from exc
    if not hasattr(pycolmap.Reconstruction, "add_camera_with_trivial_rig"):
        raise StageError(f"{where}: pycolmap {getattr(pycolmap, '__version__', '?')} lacks the rig/frame API; "
                         "pip install -U 'pycolmap>=3.12'")
    return pycolmap


def colmap_pinhole_params(intrinsics_original: np.ndarray) -> np.ndarray:
    """(F, 4) float64 COLMAP PINHOLE parameters (fx, fy, cx, cy): COLMAP puts the top-left pixel's
    centre at (0.5, 0.5), we put it at (0, 0), so the principal point moves by half a pixel."""
    k = np.asarray(intrinsics_original, np.float64)
    return np.stack([k[:, 0, 0], k[:, 1, 1], k[:, 0, 2] + CORNER_FROM_CENTRE, k[:, 1, 2] + CORNER_FROM_CENTRE], -1)


def observations_original(scene: SceneArrays, idx: np.ndarray, network_from_original: np.ndarray) -> np.ndarray:
    """(N, 2) float64 COLMAP pixel coordinates (original resolution, corner convention) of the
    network pixels at flat (F*H*W) indices ``idx``."""
    h, w = scene.size_hw
    rem = idx % (h * w)
    xy1 = np.stack([(rem % w).astype(np.float64), (rem // w).astype(np.float64), np.ones(idx.size)], -1)
    orig = xy1 @ np.linalg.inv(np.asarray(network_from_original, np.float64)).T
    return orig[:, :2] / orig[:, 2:3] + CORNER_FROM_CENTRE


class ColmapExporter(AtomicExporter):
    """COLMAP sparse model (PINHOLE cameras at original resolution, world-to-camera poses, static points).

    One camera per frame (or one shared), and confident static points each observed in the frame
    they came from; written with pycolmap.
    """

    name = "colmap"
    config_model = ColmapConfig
    config: ColmapConfig

    def write(self, inputs: ExportInputs, scene: SceneArrays, out: Path, ctx: RunContext) -> None:
        cfg = self.config
        where = f"exporter {self.name}"
        pycolmap = _require_pycolmap(where)
        try:
            names = [cfg.image_name.format(i=i) for i in range(scene.n_frames)]
        except (KeyError, IndexError, ValueError) as exc:
            raise StageError(f"{where}: image_name {cfg.image_name!r} is not a valid pattern ({exc}); "
                             "use e.g. 'frame_{{i:04d}}.png'") from exc
        if len(set(names)) != len(names) or any("/" in n for n in names):
            raise StageError(f"{where}: image_name {cfg.image_name!r} must give distinct plain file names per frame; "
                             "include {i}")
        h0, w0 = (int(v) for v in inputs.frames.original_hw)
        net_from_orig = np.asarray(inputs.frames.network_from_original, np.float64)
        params = colmap_pinhole_params(scene.intrinsics_original)
        if not np.all(np.isfinite(params)) or np.any(params[:, :2] <= 0):
            raise StageError(f"{where}: intrinsics_original has non-finite or non-positive focal lengths; "
                             "check the aligner output")
        shared = cfg.shared_camera == "auto" and np.allclose(params, params[:1], rtol=0, atol=1e-12)
        camera_of_frame = np.ones(scene.n_frames, np.int64) if shared else np.arange(1, scene.n_frames + 1)

        dyn, _ = dynamic_frames(inputs, scene, where)  # read per frame: nothing whole-video in memory
        idx = select_points(scene, min_conf=cfg.min_conf, static_only=not cfg.include_dynamic,
                            max_points=cfg.max_points, seed=ctx.seed, dynamic=dyn)
        xy = observations_original(scene, idx, net_from_orig)
        frame_of_point = idx // (scene.size_hw[0] * scene.size_hw[1])
        xyz = gather_points(scene, "pts3d_world", idx).astype(np.float64)
        colours = gather_points(scene, "rgb", idx)

        rec = pycolmap.Reconstruction()
        for cam_id in np.unique(camera_of_frame):
            fx, fy, cx, cy = params[cam_id - 1]
            rec.add_camera_with_trivial_rig(pycolmap.Camera(
                camera_id=int(cam_id), model="PINHOLE", width=w0, height=h0, params=[fx, fy, cx, cy]))
        cam_from_world = inv_rigid(np.asarray(scene.world_from_cam, np.float64))
        bounds = np.searchsorted(frame_of_point, np.arange(scene.n_frames + 1))
        for i in range(scene.n_frames):
            image = pycolmap.Image(name=names[i], keypoints=xy[bounds[i]:bounds[i + 1]],
                                   camera_id=int(camera_of_frame[i]), image_id=i + 1)
            rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(cam_from_world[i, :3, :4]))
        for n in range(idx.size):
            i = int(frame_of_point[n])
            track = pycolmap.Track()
            track.add_element(i + 1, n - int(bounds[i]))
            rec.add_point3D(xyz[n], track, colours[n])

        model = out / "sparse" / "0"
        model.mkdir(parents=True)
        if cfg.format in ("bin", "both"):
            rec.write_binary(str(model))
        if cfg.format in ("txt", "both"):
            rec.write_text(str(model))
        if cfg.write_images:
            (out / "images").mkdir()
            for i in range(scene.n_frames):
                write_png(out / "images" / names[i], warp_to_original(scene.frame("rgb", i), net_from_orig, (h0, w0)))


STAGES = (ColmapExporter,)
