"""``monst3r_layout``: the output folder of the official MonST3R demo, so its viewer and evaluation
scripts read our runs; ``tum``: a standard TUM trajectory (kept separate: the two quaternion orders
differ). Layouts: docs/exporters.md.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterable, Literal, Optional

import numpy as np
from pydantic import Field

from monst3r_framework.errors import StageError
from monst3r_framework.stages import ExportInputs, RunContext, StageConfig

from ._common import AtomicExporter, SceneArrays, dynamic_frames, write_png


def quaternions_xyzw(world_from_cam: np.ndarray) -> np.ndarray:
    """(F, 4) float64 scalar-last unit quaternions of the (F, 4, 4) poses' rotations (scipy's convention)."""
    from scipy.spatial.transform import Rotation

    rot = np.asarray(world_from_cam, np.float64)[:, :3, :3]
    return np.asarray(Rotation.from_matrix(rot).as_quat(), np.float64).reshape(-1, 4)


def _join(values: np.ndarray) -> str:
    # str() of a float64 is its shortest round-trip repr ("0.1", "1e-05"), as the official writer prints.
    return " ".join(str(np.float64(v)) for v in values)


def format_monst3r_traj(world_from_cam: np.ndarray) -> str:
    """Text of MonST3R's ``pred_traj.txt``: one line ``t x y z qw qx qy qz`` per frame.

    ``t`` is the frame index as a float ("0.0"), the position is the camera centre in the world, the
    quaternion (w first) is the camera-to-world rotation; every number is printed with ``str`` of a
    float64, exactly as the official ``save_trajectory_tum_format`` does.

    Args:
        world_from_cam: (F, 4, 4) float64 camera-to-world poses.
    """
    c2w = np.asarray(world_from_cam, np.float64)
    q = quaternions_xyzw(c2w)[:, [3, 0, 1, 2]]
    lines = [f"{np.float64(i)} {_join(c2w[i, :3, 3])} {_join(q[i])}\n" for i in range(len(c2w))]
    return "".join(lines)


def format_tum(timestamps: np.ndarray, world_from_cam: np.ndarray, header: bool = True) -> str:
    """Text of a standard TUM RGB-D trajectory: ``timestamp tx ty tz qx qy qz qw`` per line.

    Args:
        timestamps: (F,) float64 seconds.
        world_from_cam: (F, 4, 4) float64 camera-to-world poses (TUM stores camera-to-world).
        header: start with a ``#`` comment line naming the columns (TUM tools skip it).
    """
    c2w = np.asarray(world_from_cam, np.float64)
    t = np.asarray(timestamps, np.float64).reshape(-1)
    q = quaternions_xyzw(c2w)
    lines = ["# timestamp tx ty tz qx qy qz qw\n"] if header else []
    lines += [f"{_join(t[i:i + 1])} {_join(c2w[i, :3, 3])} {_join(q[i])}\n" for i in range(len(c2w))]
    return "".join(lines)


class Monst3rLayoutConfig(StageConfig):
    type: Literal["monst3r_layout"] = "monst3r_layout"
    conf_transform: Literal["log", "none"] = Field(
        "log", description="Transform applied to conf_i.npy / init_conf_i.npy: 'log' as the official demo "
                           "(its optimizer's default confidence transform), 'none' for raw confidences.")
    dilate_kernel: int = Field(
        0, ge=0, le=99, description="Side of the square kernel for enlarged_dynamic_mask_i.png; 0 = as the official "
                                    "demo (5 for user-supplied masks, 3 otherwise).")
    depth_gif: bool = Field(True, description="Write the _depth_maps.gif preview (colour-mapped depth).")
    gif_frame_ms: int = Field(100, ge=1, le=10_000, description="Duration of each GIF frame in milliseconds.")


class Monst3rLayoutExporter(AtomicExporter):
    """The official MonST3R demo output folder, so MonST3R's viewer and evaluation scripts read our runs.

    pred_traj.txt, pred_intrinsics.txt, per-frame depth, confidence, dynamic masks and RGB frames.
    """

    name = "monst3r_layout"
    config_model = Monst3rLayoutConfig
    config: Monst3rLayoutConfig

    def write(self, inputs: ExportInputs, scene: SceneArrays, out: Path, ctx: RunContext) -> None:
        import cv2

        cfg = self.config
        where = f"exporter {self.name}"
        (out / "pred_traj.txt").write_text(format_monst3r_traj(scene.world_from_cam))
        np.savetxt(out / "pred_intrinsics.txt", scene.intrinsics.reshape(-1, 9), fmt="%.6f")

        n = scene.n_frames
        if inputs.init is not None:
            init_conf = inputs.init.conf
            if tuple(init_conf.shape) != (n,) + scene.size_hw:
                raise StageError(f"{where}: init.conf has shape {tuple(init_conf.shape)}, expected {(n,) + scene.size_hw} "
                                 "(F, H, W) like reconstruction.conf; re-run the pose solver on the same frames")
        else:
            init_conf = None  # no initialisation recorded: the final confidences are the best we have
        trf = (lambda c: np.log(c)) if cfg.conf_transform == "log" else (lambda c: c)

        dyn, source = dynamic_frames(inputs, scene, where)
        k = cfg.dilate_kernel or (5 if source == "user" else 3)
        kernel = np.ones((k, k), np.uint8)
        top = 0.0
        for i in range(n):  # frame by frame: nothing whole-video in memory (the staging folder is atomic)
            depth, conf = scene.frame("depth", i), scene.frame("conf", i)
            conf0 = conf if init_conf is None else np.asarray(init_conf[i], np.float32)
            if cfg.conf_transform == "log" and (conf.min(initial=1.0) <= 0 or conf0.min(initial=1.0) <= 0):
                raise StageError(f"{where}: conf_transform 'log' needs positive confidences, found values <= 0 "
                                 f"(frame {i}); set conf_transform: none")
            np.save(out / f"frame_{i:04d}.npy", depth.astype(np.float32))
            np.save(out / f"conf_{i}.npy", trf(conf).astype(np.float32))
            np.save(out / f"init_conf_{i}.npy", trf(conf0).astype(np.float32))
            mask = dyn(i).astype(np.uint8) * 255
            write_png(out / f"dynamic_mask_{i}.png", mask)
            write_png(out / f"enlarged_dynamic_mask_{i}.png", cv2.dilate(mask, kernel, iterations=1))
            write_png(out / f"frame_{i:04d}.png", scene.frame("rgb", i))
            top = max(top, _depth_top(depth))
        if cfg.depth_gif:
            write_depth_gif(out / "_depth_maps.gif", (scene.frame("depth", i) for i in range(n)), cfg.gif_frame_ms, top)


def _depth_top(depth: np.ndarray) -> float:
    d = np.nan_to_num(np.asarray(depth, np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
    return float(d.max()) if d.size else 0.0


def _jet_indices(depth: np.ndarray, top: float) -> np.ndarray:
    """Depth (any shape) -> uint8 indices into the jet colour map, 255 at ``top``; non-finite -> 0."""
    d = np.nan_to_num(np.asarray(depth, np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0)
    scaled = np.round(d / top * 255.0) if top > 0 else np.zeros_like(d)
    return scaled.astype(np.uint8)


def _jet_palette() -> np.ndarray:
    """(256, 3) uint8 RGB: OpenCV's COLORMAP_JET for each index."""
    import cv2

    return np.ascontiguousarray(cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1])


def colourise_depth(depth: np.ndarray, top: Optional[float] = None) -> np.ndarray:
    """(F, H, W) depth -> (F, H, W, 3) uint8 RGB jet colour map, normalised by the sequence maximum
    (as the demo's gallery; ``top``: that maximum when colouring a part of the sequence); non-finite
    depth maps to the colour of 0."""
    if top is None:
        top = _depth_top(depth)
    return _jet_palette()[_jet_indices(depth, top)]


def write_depth_gif(path: Path, depth: Iterable[np.ndarray], frame_ms: int, top: Optional[float] = None) -> None:
    """Animated GIF (looping) of the colour-mapped depth maps ((H, W) each, or one (F, H, W) array);
    ``top``: the sequence's maximum depth (given: frames are coloured and written one at a time as
    they come, so a long video's GIF never holds more than one frame).

    Each frame is a palette image whose global palette is the jet colour map itself, so the GIF shows
    exactly :func:`colourise_depth`'s colours with no quantisation. Written frame by frame with
    Pillow's GIF frame encoder (``getheader`` / ``getdata``): ``Image.save(save_all=True)`` keeps
    every frame in memory until the end.
    """
    from PIL import GifImagePlugin, Image

    if top is None:
        depth = np.asarray(depth)
        top = _depth_top(depth)
    palette = _jet_palette().tobytes()
    frames = iter(depth)
    first = next(frames, None)
    if first is None:
        return
    with open(path, "wb") as fp:
        for k, d in enumerate(itertools.chain([first], frames)):
            im = Image.fromarray(_jet_indices(d, top), "P")
            im.putpalette(palette)
            if k == 0:
                header, _ = GifImagePlugin.getheader(im, info={"loop": 0, "duration": frame_ms})
                fp.write(b"".join(header))
            for chunk in GifImagePlugin.getdata(im, duration=frame_ms):
                fp.write(chunk)
            fp.flush()  # the frame is on disk before the next one is made
        fp.write(b";")  # GIF trailer


class TumConfig(StageConfig):
    type: Literal["tum"] = "tum"
    filename: str = Field("trajectory_tum.txt", min_length=1, description="Output file name inside the exporter folder.")
    timestamps: Literal["frames", "index"] = Field(
        "frames", description="'frames': FrameSet.timestamps (seconds); 'index': the frame's position 0, 1, 2, ...")
    header: bool = Field(True, description="Start the file with a '# timestamp tx ty tz qx qy qz qw' comment line.")


class TumExporter(AtomicExporter):
    """Standard TUM RGB-D trajectory (``timestamp tx ty tz qx qy qz qw``, scalar-last quaternion)."""

    name = "tum"
    config_model = TumConfig
    config: TumConfig

    def write(self, inputs: ExportInputs, scene: SceneArrays, out: Path, ctx: RunContext) -> None:
        if "/" in self.config.filename or self.config.filename in (".", ".."):
            raise StageError(f"exporter tum: filename {self.config.filename!r} must be a plain file name, "
                             "e.g. 'trajectory_tum.txt'")
        if self.config.timestamps == "frames":
            t = np.asarray(inputs.frames.timestamps, np.float64).reshape(-1)
            if t.shape[0] != scene.n_frames:
                raise StageError(f"exporter tum: {t.shape[0]} timestamps for {scene.n_frames} frames; "
                                 "fix the FrameSet or use timestamps: index")
        else:
            t = np.arange(scene.n_frames, dtype=np.float64)
        (out / self.config.filename).write_text(format_tum(t, scene.world_from_cam, self.config.header))


STAGES = (Monst3rLayoutExporter, TumExporter)
