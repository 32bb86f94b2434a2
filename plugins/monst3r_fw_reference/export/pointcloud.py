"""``glb`` (coloured point cloud + camera frustums) and ``ply`` (point cloud with confidence and
dynamic-flag vertex attributes) exporters. Layouts: docs/exporters.md."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
from pydantic import Field

from monst3r_framework.errors import StageError
from monst3r_framework.stages import ExportInputs, RunContext, StageConfig

from ._common import CV_FROM_GL, AtomicExporter, SceneArrays, dynamic_frames, gather_points, select_points

#: numpy dtype of a PLY vertex (names as read by trimesh, Open3D, CloudCompare, MeshLab).
PLY_VERTEX_DTYPE = np.dtype([
    ("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
    ("red", "u1"), ("green", "u1"), ("blue", "u1"),
    ("confidence", "<f4"), ("dynamic", "u1"), ("frame", "<i4"),
])


def _plain_filename(where: str, name: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise StageError(f"{where}: filename {name!r} must be a plain file name such as 'scene.glb'")
    return name


def frustum_mesh(width: int, height: int, intrinsics: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """A camera frustum as a small closed pyramid in the camera frame.

    Args:
        width, height: image size in pixels.
        intrinsics: (3, 3) pixel intrinsics (pixel-centre convention).
        size: depth of the base (z) in scene units.
    Returns:
        vertices (5, 3) float64 (apex, then the image corners top-left, top-right, bottom-right,
        bottom-left at z = size) and faces (6, 3) int64.
    """
    k = np.asarray(intrinsics, np.float64)
    u = np.array([-0.5, width - 0.5, width - 0.5, -0.5])
    v = np.array([-0.5, -0.5, height - 0.5, height - 0.5])
    x = (u - k[0, 2]) / k[0, 0] * size
    y = (v - k[1, 2]) / k[1, 1] * size
    verts = np.concatenate([np.zeros((1, 3)), np.stack([x, y, np.full(4, size)], -1)], 0)
    faces = np.array([[0, 2, 1], [0, 3, 2], [0, 4, 3], [0, 1, 4], [1, 2, 3], [1, 3, 4]], np.int64)
    return verts, faces


def camera_colours(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB colours along the viridis ramp, first camera dark."""
    import cv2

    ramp = np.round(np.linspace(0, 255, max(n, 1))).astype(np.uint8)[:n].reshape(-1, 1)
    return cv2.applyColorMap(ramp, cv2.COLORMAP_VIRIDIS).reshape(-1, 3)[:, ::-1].copy()


class GlbConfig(StageConfig):
    type: Literal["glb"] = "glb"
    min_conf: float = Field(1.5, ge=0, description="Keep pixels with confidence >= this (raw confidence, >= 1 for MonST3R).")
    static_only: bool = Field(False, description="Drop pixels flagged dynamic (keeps only the static background).")
    max_points: Optional[int] = Field(2_000_000, ge=1, description="Random subset of at most this many points (reproducible from the run seed); null = all.")
    frame_stride: int = Field(1, ge=1, description="Take points from every n-th frame only (long videos; the point budget max_points still applies).")
    show_cameras: bool = Field(True, description="Add one frustum mesh per frame, coloured from dark (first) to yellow (last).")
    cam_size: Optional[float] = Field(None, gt=0, description="Frustum depth in scene units; null = 10% of the median depth.")
    view: Literal["first_camera_gl", "world"] = Field(
        "first_camera_gl", description="'first_camera_gl': express everything in the first camera's OpenGL frame (y up, "
                                       "looking down -z) so glTF viewers open facing the scene; 'world': keep world coordinates.")
    filename: str = Field("scene.glb", description="Output file name inside the exporter folder.")


class GlbExporter(AtomicExporter):
    """Coloured point cloud plus camera frustums in one binary glTF file (trimesh)."""

    name = "glb"
    config_model = GlbConfig
    config: GlbConfig

    def view_from_world(self, scene: SceneArrays) -> np.ndarray:
        """(4, 4) float64 transform applied to every exported vertex."""
        if self.config.view == "world":
            return np.eye(4)
        return np.linalg.inv(scene.world_from_cam[0] @ CV_FROM_GL)

    def write(self, inputs: ExportInputs, scene: SceneArrays, out: Path, ctx: RunContext) -> None:
        import trimesh

        cfg = self.config
        where = f"exporter {self.name}"
        filename = _plain_filename(where, cfg.filename)
        dyn, _ = dynamic_frames(inputs, scene, where)
        idx = select_points(scene, min_conf=cfg.min_conf, static_only=cfg.static_only,
                            max_points=cfg.max_points, seed=ctx.seed, dynamic=dyn, frame_stride=cfg.frame_stride)
        view = self.view_from_world(scene)
        glb = trimesh.Scene()
        if idx.size:
            pts = gather_points(scene, "pts3d_world", idx).astype(np.float64)
            pts = pts @ view[:3, :3].T + view[:3, 3]
            rgba = np.concatenate([gather_points(scene, "rgb", idx), np.full((idx.size, 1), 255, np.uint8)], 1)
            glb.add_geometry(trimesh.PointCloud(pts, colors=rgba), geom_name="points", node_name="points")
        else:
            ctx.log(f"{where}: no pixel passes min_conf={cfg.min_conf}; the GLB holds cameras only")
        if cfg.show_cameras:
            size = cfg.cam_size
            if size is None:
                # median depth over at most ~64 frames (all of them in short videos), one frame at a time
                step = max(1, scene.n_frames // 64)
                d = np.concatenate([x[np.isfinite(x) & (x > 0)] for x in
                                    (scene.frame("depth", i) for i in range(0, scene.n_frames, step))])
                size = 0.1 * float(np.median(d)) if d.size else 0.05
            h, w = scene.size_hw
            colours = camera_colours(scene.n_frames)
            for i in range(scene.n_frames):
                verts, faces = frustum_mesh(w, h, scene.intrinsics[i], size)
                t = view @ scene.world_from_cam[i]
                mesh = trimesh.Trimesh(verts @ t[:3, :3].T + t[:3, 3], faces, process=False,
                                       face_colors=np.tile(np.append(colours[i], 255), (len(faces), 1)))
                glb.add_geometry(mesh, geom_name=f"camera_{i:04d}", node_name=f"camera_{i:04d}")
        if not glb.geometry:
            raise StageError(f"{where}: nothing to export (no confident points and show_cameras is false); "
                             "lower min_conf or enable show_cameras")
        (out / filename).write_bytes(glb.export(file_type="glb"))


class PlyConfig(StageConfig):
    type: Literal["ply"] = "ply"
    min_conf: float = Field(0.0, ge=0, description="Keep pixels with confidence >= this (0 keeps every finite point).")
    static_only: bool = Field(False, description="Drop pixels flagged dynamic.")
    max_points: Optional[int] = Field(None, ge=1, description="Random subset of at most this many points over all frames (reproducible from the run seed); null = all.")
    frame_stride: int = Field(1, ge=1, description="Take points from every n-th frame only (long videos).")
    combined: bool = Field(True, description="Write every frame's points into one file (filename).")
    per_frame: bool = Field(False, description="Also write frames/frame_XXXX.ply, one file per frame (a 4D sequence).")
    binary: bool = Field(True, description="Binary little-endian PLY (false: ASCII).")
    filename: str = Field("points.ply", description="Name of the combined file.")


def ply_vertices(scene: SceneArrays, idx: np.ndarray, dynamic: np.ndarray | Callable[[int], np.ndarray]) -> np.ndarray:
    """Structured (N,) array of :data:`PLY_VERTEX_DTYPE` for the sorted flat (F*H*W) indices ``idx``
    (read frame by frame); ``dynamic``: (F, H, W) bool or a per-frame reader."""
    h, w = scene.size_hw
    v = np.empty(idx.size, PLY_VERTEX_DTYPE)
    pts = gather_points(scene, "pts3d_world", idx)
    rgb = gather_points(scene, "rgb", idx)
    v["x"], v["y"], v["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    v["red"], v["green"], v["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    v["confidence"] = gather_points(scene, "conf", idx)
    frames = idx // (h * w)
    read = dynamic if callable(dynamic) else (lambda f: np.asarray(dynamic[f], bool))
    flags = np.zeros(idx.size, bool)
    for f in np.unique(frames):
        sel = frames == f
        flags[sel] = read(int(f)).reshape(-1)[idx[sel] - f * h * w]
    v["dynamic"] = flags
    v["frame"] = frames
    return v


def write_ply(path: Path, vertices: np.ndarray, binary: bool) -> None:
    """Write a structured vertex array as a PLY point cloud (plyfile)."""
    from plyfile import PlyData, PlyElement

    PlyData([PlyElement.describe(vertices, "vertex")], text=not binary, byte_order="<").write(str(path))


class PlyExporter(AtomicExporter):
    """Point cloud(s) as PLY with per-vertex colour, confidence, dynamic flag and frame index (plyfile)."""

    name = "ply"
    config_model = PlyConfig
    config: PlyConfig

    def write(self, inputs: ExportInputs, scene: SceneArrays, out: Path, ctx: RunContext) -> None:
        cfg = self.config
        where = f"exporter {self.name}"
        if not (cfg.combined or cfg.per_frame):
            raise StageError(f"{where}: combined and per_frame are both false, nothing to write; enable one")
        filename = _plain_filename(where, cfg.filename)
        dyn, _ = dynamic_frames(inputs, scene, where)
        idx = select_points(scene, min_conf=cfg.min_conf, static_only=cfg.static_only,
                            max_points=cfg.max_points, seed=ctx.seed, dynamic=dyn, frame_stride=cfg.frame_stride)
        verts = ply_vertices(scene, idx, dyn)
        if cfg.combined:
            write_ply(out / filename, verts, cfg.binary)
        if cfg.per_frame:
            (out / "frames").mkdir()
            bounds = np.searchsorted(verts["frame"], np.arange(scene.n_frames + 1))
            for i in range(scene.n_frames):
                write_ply(out / "frames" / f"frame_{i:04d}.ply", verts[bounds[i]:bounds[i + 1]], cfg.binary)


STAGES = (GlbExporter, PlyExporter)
