"""Readers for the evaluation datasets, in the folder layouts MonST3R's preparation scripts produce.

Every reader returns a :class:`Sequence`: frame paths plus whatever ground truth the dataset has
(z-depth in metres with 0 = invalid, camera-to-world poses, intrinsics, timestamps, dynamic masks)
and the depth-evaluation settings MonST3R uses for it. Layouts (``ROOT`` is what ``--gt`` names):

==============  =============================================================================
dataset         layout read
==============  =============================================================================
``sintel``      ``ROOT[/training]/{final,clean}/SEQ/frame_0001.png``, ``depth/SEQ/*.dpt``,
                ``camdata_left/SEQ/*.cam`` (world-to-camera 3x4 + K), optional dynamic masks
                ``dynamic_label_perfect/SEQ/*.png`` (written by ``sintel_get_dynamics.py``)
``bonn``        ``ROOT/rgbd_bonn_SEQ/{rgb_110,depth_110,groundtruth_110.txt}`` (MonST3R's subset:
                frames 30..139), built on the fly from ``rgb/``, ``depth/``, ``groundtruth.txt``
                when the subset folders are absent; depth PNG / 5000
``tum``         ``ROOT/SEQ/{rgb_90,groundtruth_90.txt}`` (rgb/ground-truth associated within
                0.02 s, every 3rd, first 90), built from ``rgb.txt``/``groundtruth.txt`` when absent;
                depth from ``depth.txt`` (associated to each rgb stamp), PNG / 5000
``kitti``       ``ROOT/groundtruth_depth_gathered/SEQ/*.png`` (uint16 / 256) and
                ``ROOT/image_gathered/SEQ/*.png`` (``ROOT`` = ``depth_selection/val_selection_cropped``)
``scannet``     ``ROOT/SEQ/{color_90/frame_0000.jpg, depth_90/frame_0000.png, pose_90.txt}``
                (every 3rd of the first 270), from ``color/``, ``depth/``, ``pose/`` when absent;
                depth PNG / 1000; poses: 16 (or 12) numbers per line, camera-to-world
``davis``       ``ROOT/JPEGImages/480p/SEQ/*.jpg`` and ``ROOT/Annotations/480p/SEQ/*.png`` (mask > 0)
``synthetic``   ``ROOT/frames/frame_0000.png``, ``ROOT/gt.npz`` (see docs/synthetic.md)
==============  =============================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from monst3r_framework.errors import InputError
from .metrics import DEPTH_EVAL_PRESETS, associate_timestamps, quaternion_to_matrix

__all__ = [
    "Sequence", "DATASETS", "read_sequence", "list_sequences",
    "read_sintel", "read_bonn", "read_tum_dynamics", "read_kitti", "read_scannet", "read_davis", "read_synthetic",
    "read_sintel_depth", "write_sintel_depth", "read_sintel_cam", "write_sintel_cam", "read_depth_png",
    "read_tum_trajectory", "read_tum_list", "read_pose_rows",
    "BONN_SEQUENCES", "SINTEL_SEQUENCES",
]

SINTEL_TAG = 202021.25
#: MonST3R's Sintel evaluation subset (video depth and pose).
SINTEL_SEQUENCES = ("alley_2", "ambush_4", "ambush_5", "ambush_6", "cave_2", "cave_4", "market_2", "market_5",
                    "market_6", "shaman_3", "sleeping_1", "sleeping_2", "temple_2", "temple_3")
#: MonST3R's Bonn evaluation subset.
BONN_SEQUENCES = ("balloon2", "crowd2", "crowd3", "person_tracking2", "synchronous")
_IMAGE_EXT = (".png", ".jpg", ".jpeg")


@dataclass
class Sequence:
    """One evaluation sequence.

    Attributes:
        name: sequence name (e.g. "alley_2").
        dataset: reader name (e.g. "sintel").
        rgb_paths: N frame image paths, in order.
        depth: (N, H, W) float32 metres, 0 where invalid; None if the dataset has no depth.
        cam_to_world: (N, 4, 4) float64 camera-to-world (OpenCV axes for every dataset here);
            None if the dataset has no poses.
        intrinsics: (N, 3, 3) float64 pixel intrinsics of the images, or None.
        timestamps: (N,) float64 seconds (dataset clock), or None.
        dynamic_mask: (N, H, W) bool, True on moving objects, or None.
        depth_eval: MonST3R's ``depth_evaluation`` settings for the dataset (max_depth, post_clip_max).
        rgb: (N, H, W, 3) uint8 frames when already in memory (synthetic), else None: use load_rgb().
    """

    name: str
    dataset: str
    rgb_paths: list[Path]
    depth: Optional[np.ndarray] = None
    cam_to_world: Optional[np.ndarray] = None
    intrinsics: Optional[np.ndarray] = None
    timestamps: Optional[np.ndarray] = None
    dynamic_mask: Optional[np.ndarray] = None
    depth_eval: dict = field(default_factory=dict)
    rgb: Optional[np.ndarray] = None

    @property
    def n_frames(self) -> int:
        return len(self.rgb_paths)

    def load_rgb(self) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB frames."""
        if self.rgb is not None:
            return self.rgb
        import cv2

        imgs = []
        for p in self.rgb_paths:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise InputError(f"{self.dataset}/{self.name}: cannot read image {p}; check the file")
            imgs.append(img[..., ::-1])
        return np.stack(imgs)


# --------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------


def read_sintel_depth(path: str | Path) -> np.ndarray:
    """Sintel ``.dpt``: float32 tag 202021.25, int32 width, int32 height, float32 depth (H, W)."""
    raw = Path(path).read_bytes()
    if len(raw) < 12 or np.frombuffer(raw[:4], "<f4")[0] != np.float32(SINTEL_TAG):
        raise InputError(f"{path}: not a Sintel .dpt file (bad tag); expected float32 202021.25 first")
    w, h = (int(v) for v in np.frombuffer(raw[4:12], "<i4"))
    if w <= 0 or h <= 0 or len(raw) != 12 + 4 * w * h:
        raise InputError(f"{path}: .dpt header says {w}x{h} but the file holds {len(raw) - 12} data bytes")
    return np.frombuffer(raw[12:], "<f4").reshape(h, w).copy()


def write_sintel_depth(path: str | Path, depth: np.ndarray) -> None:
    """Write (H, W) depth as Sintel ``.dpt``."""
    d = np.asarray(depth, "<f4")
    h, w = d.shape
    Path(path).write_bytes(np.float32(SINTEL_TAG).tobytes() + np.array([w, h], "<i4").tobytes() + d.tobytes())


def read_sintel_cam(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Sintel ``.cam``: tag, 9 float64 intrinsics K, 12 float64 world-to-camera 3x4 extrinsics.

    Returns:
        K (3, 3) float64 and world_from_cam (4, 4) float64 (the inverse of the stored extrinsics).
    """
    raw = Path(path).read_bytes()
    if len(raw) < 4 + 21 * 8 or np.frombuffer(raw[:4], "<f4")[0] != np.float32(SINTEL_TAG):
        raise InputError(f"{path}: not a Sintel .cam file (bad tag or too short); expected tag + 21 float64")
    vals = np.frombuffer(raw[4:4 + 21 * 8], "<f8")
    k = vals[:9].reshape(3, 3).copy()
    cam_from_world = np.eye(4)
    cam_from_world[:3] = vals[9:].reshape(3, 4)
    return k, np.linalg.inv(cam_from_world)


def write_sintel_cam(path: str | Path, k: np.ndarray, cam_from_world: np.ndarray) -> None:
    """Write a Sintel ``.cam`` from K (3, 3) and world-to-camera (3, 4) or (4, 4)."""
    ext = np.asarray(cam_from_world, "<f8")[:3, :4]
    Path(path).write_bytes(np.float32(SINTEL_TAG).tobytes() + np.asarray(k, "<f8").tobytes() + ext.tobytes())


def read_depth_png(path: str | Path, scale: float) -> np.ndarray:
    """16-bit depth PNG -> (H, W) float32 metres (value / scale), 0 where the PNG is 0 (invalid)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: cannot read depth PNG; check the file exists and is a PNG")
    if img.dtype != np.uint16 or img.ndim != 2:
        raise InputError(f"{path}: depth PNG must be single-channel 16-bit, got {img.dtype} with shape {img.shape}; "
                         "an 8-bit PNG is a visualisation, not depth")
    return (img.astype(np.float32) / np.float32(scale)).astype(np.float32)


def _text_rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise InputError(f"missing file {path}; check the dataset layout (see monst3r_fw_eval/datasets.py)")
    rows = []
    for line in path.read_text().replace(",", " ").replace("\t", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split())
    return rows


def read_tum_trajectory(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """TUM trajectory ``t tx ty tz qx qy qz qw`` -> timestamps (N,) and camera-to-world (N, 4, 4)."""
    rows = _text_rows(Path(path))
    try:
        a = np.array([[float(v) for v in r[:8]] for r in rows if len(r) >= 8], np.float64)
    except ValueError:
        raise InputError(f"{path}: non-numeric TUM trajectory line; expected 't tx ty tz qx qy qz qw'") from None
    if a.ndim != 2 or len(a) == 0:
        raise InputError(f"{path}: no TUM pose lines (8 numbers each: t tx ty tz qx qy qz qw)")
    return tum_poses(a)


def tum_poses(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 8) TUM rows ``t tx ty tz qx qy qz qw`` -> timestamps (N,) and camera-to-world (N, 4, 4) float64."""
    a = np.asarray(rows, np.float64).reshape(-1, 8)
    poses = np.tile(np.eye(4), (len(a), 1, 1))
    poses[:, :3, :3] = quaternion_to_matrix(a[:, 4:8])
    poses[:, :3, 3] = a[:, 1:4]
    return a[:, 0], poses


def read_tum_list(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """TUM ``rgb.txt`` / ``depth.txt``: ``timestamp filename`` lines -> stamps (N,), relative paths."""
    rows = [r for r in _text_rows(Path(path)) if len(r) >= 2]
    return np.array([float(r[0]) for r in rows], np.float64), [r[1] for r in rows]


def read_pose_rows(path: str | Path) -> np.ndarray:
    """Poses as 12 (3x4) or 16 (4x4) row-major numbers per line -> (N, 4, 4) float64 (KITTI, ScanNet, Replica)."""
    rows = _text_rows(Path(path))
    try:
        a = np.array([[float(v) for v in r] for r in rows], np.float64)
    except ValueError:
        raise InputError(f"{path}: non-numeric pose line; expected 12 or 16 numbers per line") from None
    if a.ndim != 2 or a.shape[1] not in (12, 16):
        raise InputError(f"{path}: expected 12 or 16 numbers per line, got shape {a.shape}")
    poses = np.tile(np.eye(4), (len(a), 1, 1))
    poses[:, : a.shape[1] // 4] = a.reshape(len(a), -1, 4)
    return poses


def _images(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{what}: folder {folder} not found; check --gt points at the dataset root")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_EXT)
    if not files:
        raise InputError(f"{what}: no images in {folder}")
    return files


def _numeric_sort(paths: list[Path]) -> list[Path]:
    def key(p: Path) -> tuple[int, str]:
        digits = re.findall(r"\d+", p.stem)
        return (int(digits[-1]) if digits else -1, p.name)

    return sorted(paths, key=key)


# --------------------------------------------------------------------------------------------
# Dataset readers
# --------------------------------------------------------------------------------------------


def read_sintel(root: str | Path, seq: str, pass_name: str = "final",
                mask_dir: str = "dynamic_label_perfect") -> Sequence:
    """MPI Sintel training sequence ``seq`` (e.g. "alley_2"); ``root`` is ``.../sintel`` or ``.../training``."""
    base = Path(root)
    if (base / "training").is_dir():
        base = base / "training"
    rgb = _images(base / pass_name / seq, f"sintel/{seq}")
    depth_files = sorted((base / "depth" / seq).glob("*.dpt"))
    cam_files = sorted((base / "camdata_left" / seq).glob("*.cam"))
    if len(depth_files) != len(rgb) or len(cam_files) != len(rgb):
        raise InputError(f"sintel/{seq}: {len(rgb)} frames but {len(depth_files)} .dpt and {len(cam_files)} .cam files "
                         f"under {base}; expected depth/{seq}/*.dpt and camdata_left/{seq}/*.cam for every frame")
    depth = np.stack([read_sintel_depth(p) for p in depth_files])
    cams = [read_sintel_cam(p) for p in cam_files]
    masks = None
    mdir = base / mask_dir / seq
    if mdir.is_dir():
        import cv2

        # sintel_get_dynamics.py writes one mask per frame pair, so the last frame has none: reuse
        # the previous frame's mask there.
        masks = np.zeros(depth.shape, bool)
        for i, p in enumerate(rgb):
            f = mdir / (p.stem + ".png")
            if f.is_file():
                masks[i] = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 0
            elif i > 0:
                masks[i] = masks[i - 1]
    stamps = np.array([float(re.findall(r"\d+", p.stem)[-1]) for p in rgb])
    return Sequence(name=seq, dataset="sintel", rgb_paths=rgb, depth=depth,
                    cam_to_world=np.stack([c[1] for c in cams]), intrinsics=np.stack([c[0] for c in cams]),
                    timestamps=stamps, dynamic_mask=masks, depth_eval=dict(DEPTH_EVAL_PRESETS["sintel"]))


def _bonn_dir(root: Path, seq: str) -> Path:
    for cand in (root / seq, root / f"rgbd_bonn_{seq}", root / "rgbd_bonn_dataset" / f"rgbd_bonn_{seq}"):
        if cand.is_dir():
            return cand
    raise InputError(f"bonn: sequence {seq!r} not found under {root}; expected {root}/rgbd_bonn_{seq}/")


def read_bonn(root: str | Path, seq: str, subset: bool = True) -> Sequence:
    """Bonn RGB-D Dynamic sequence; ``subset`` = MonST3R's 110 frames (30..139), else every frame.

    Poses come from the ground-truth rows in the same index range (as MonST3R's preparation does);
    the full sequence associates rgb, depth and ground truth by time stamps (TUM tools, 0.02 s).
    """
    d = _bonn_dir(Path(root), seq)
    if subset:
        if (d / "rgb_110").is_dir() and (d / "groundtruth_110.txt").is_file():
            rgb = _images(d / "rgb_110", f"bonn/{seq}")
            depth_files = _images(d / "depth_110", f"bonn/{seq}")
            poses_rows = _text_rows(d / "groundtruth_110.txt")
        else:
            rgb = _images(d / "rgb", f"bonn/{seq}")[30:140]
            depth_files = _images(d / "depth", f"bonn/{seq}")[30:140]
            poses_rows = _text_rows(d / "groundtruth.txt")[30:140]
        if not (len(rgb) == len(depth_files) == len(poses_rows)):
            raise InputError(f"bonn/{seq}: subset has {len(rgb)} rgb, {len(depth_files)} depth and {len(poses_rows)} "
                             "pose rows; re-run MonST3R's prepare_bonn.py or pass subset=False")
        stamps, poses = tum_poses(np.array([[float(v) for v in r[:8]] for r in poses_rows]))
    else:
        t_rgb, f_rgb = read_tum_list(d / "rgb.txt")
        t_dep, f_dep = read_tum_list(d / "depth.txt")
        t_gt, poses_all = read_tum_trajectory(d / "groundtruth.txt")
        i_rgb, i_dep = associate_timestamps(t_rgb, t_dep, max_diff=0.02, method="tum")
        j_rgb, j_gt = associate_timestamps(t_rgb[i_rgb], t_gt, max_diff=0.02, method="tum")
        rgb = [d / f_rgb[i_rgb[k]] for k in j_rgb]
        depth_files = [d / f_dep[i_dep[k]] for k in j_rgb]
        poses = poses_all[j_gt]
        stamps = t_rgb[i_rgb][j_rgb]
    depth = np.stack([read_depth_png(p, 5000.0) for p in depth_files])
    return Sequence(name=seq, dataset="bonn", rgb_paths=list(rgb), depth=depth, cam_to_world=poses,
                    timestamps=stamps, depth_eval=dict(DEPTH_EVAL_PRESETS["bonn"]))


def read_tum_dynamics(root: str | Path, seq: str, subset: bool = True, with_depth: bool = True) -> Sequence:
    """TUM RGB-D (dynamic objects) sequence; ``subset`` = MonST3R's 90 frames (every 3rd associated frame).

    ``seq`` is the folder name (e.g. "rgbd_dataset_freiburg3_walking_xyz"). Depth (PNG / 5000) is
    associated to each rgb stamp from ``depth.txt`` when ``depth/`` exists.
    """
    d = Path(root) / seq
    if not d.is_dir():
        raise InputError(f"tum: sequence folder {d} not found; pass --gt pointing at the folder holding {seq}/")
    if subset and (d / "rgb_90").is_dir() and (d / "groundtruth_90.txt").is_file():
        rgb = _images(d / "rgb_90", f"tum/{seq}")
        stamps_gt, poses = read_tum_trajectory(d / "groundtruth_90.txt")
        stamps = np.array([float(p.stem) for p in rgb])
        if len(rgb) != len(poses):
            raise InputError(f"tum/{seq}: {len(rgb)} images in rgb_90 but {len(poses)} poses in groundtruth_90.txt")
    else:
        t_rgb, f_rgb = read_tum_list(d / "rgb.txt")
        t_gt, poses_all = read_tum_trajectory(d / "groundtruth.txt")
        i_rgb, i_gt = associate_timestamps(t_rgb, t_gt, max_diff=0.02, method="tum")
        if subset:
            i_rgb, i_gt = i_rgb[::3][:90], i_gt[::3][:90]
        rgb = [d / f_rgb[i] for i in i_rgb]
        poses = poses_all[i_gt]
        stamps = t_rgb[i_rgb]
    depth = None
    if with_depth and (d / "depth.txt").is_file():
        t_dep, f_dep = read_tum_list(d / "depth.txt")
        ia, ib = associate_timestamps(stamps, t_dep, max_diff=0.02, method="tum")
        if len(ia) == len(stamps):
            order = np.argsort(ia)
            depth = np.stack([read_depth_png(d / f_dep[ib[k]], 5000.0) for k in order])
    return Sequence(name=seq, dataset="tum", rgb_paths=list(rgb), depth=depth, cam_to_world=poses,
                    timestamps=stamps, depth_eval=dict(DEPTH_EVAL_PRESETS["tum"]))


def read_kitti(root: str | Path, seq: str) -> Sequence:
    """KITTI depth (MonST3R's gathered validation subset): ``seq`` like "2011_09_26_drive_0002_sync_02"."""
    base = Path(root)
    if (base / "depth_selection" / "val_selection_cropped").is_dir():
        base = base / "depth_selection" / "val_selection_cropped"
    depth_files = _images(base / "groundtruth_depth_gathered" / seq, f"kitti/{seq}")
    img_dir = base / "image_gathered" / seq
    rgb = [img_dir / p.name for p in depth_files]
    missing = [p for p in rgb if not p.is_file()]
    if missing:
        raise InputError(f"kitti/{seq}: {len(missing)} depth maps have no image (first: {missing[0]}); "
                         "re-run MonST3R's prepare_kitti.py")
    depth = np.stack([read_depth_png(p, 256.0) for p in depth_files])
    return Sequence(name=seq, dataset="kitti", rgb_paths=rgb, depth=depth, depth_eval=dict(DEPTH_EVAL_PRESETS["kitti"]))


def read_scannet(root: str | Path, seq: str, subset: bool = True) -> Sequence:
    """ScanNet(v2) scene ``seq`` (e.g. "scene0707_00"): MonST3R's 90-frame subset or every frame."""
    d = Path(root) / seq
    if not d.is_dir():
        raise InputError(f"scannet: scene folder {d} not found; pass --gt pointing at the folder holding {seq}/")
    if subset and (d / "color_90").is_dir() and (d / "pose_90.txt").is_file():
        rgb = _images(d / "color_90", f"scannet/{seq}")
        depth_files = _images(d / "depth_90", f"scannet/{seq}")
        poses = read_pose_rows(d / "pose_90.txt")
    else:
        rgb = _numeric_sort(_images(d / "color", f"scannet/{seq}"))
        depth_files = _numeric_sort(_images(d / "depth", f"scannet/{seq}"))
        pose_files = _numeric_sort([p for p in (d / "pose").glob("*.txt")])
        if subset:
            rgb, depth_files, pose_files = rgb[:270:3], depth_files[:270:3], pose_files[:270:3]
        poses = np.stack([read_pose_rows(p)[0] if len(_text_rows(p)) == 1 else _pose_4x4(p) for p in pose_files])
    if not (len(rgb) == len(depth_files) == len(poses)):
        raise InputError(f"scannet/{seq}: {len(rgb)} images, {len(depth_files)} depth maps, {len(poses)} poses; "
                         "they must match (re-run MonST3R's prepare_scannet.py)")
    intr = None
    kfile = d / "intrinsic" / "intrinsic_color.txt"
    if kfile.is_file():
        k4 = _pose_4x4(kfile)
        intr = np.repeat(k4[None, :3, :3], len(rgb), axis=0)
    depth = np.stack([read_depth_png(p, 1000.0) for p in depth_files])
    return Sequence(name=seq, dataset="scannet", rgb_paths=rgb, depth=depth, cam_to_world=poses, intrinsics=intr,
                    depth_eval=dict(DEPTH_EVAL_PRESETS["scannet"]))


def _pose_4x4(path: Path) -> np.ndarray:
    rows = _text_rows(path)
    a = np.array([[float(v) for v in r] for r in rows], np.float64)
    if a.shape != (4, 4):
        raise InputError(f"{path}: expected a 4x4 matrix (4 lines of 4 numbers), got shape {a.shape}")
    return a


def read_davis(root: str | Path, seq: str, resolution: str = "480p") -> Sequence:
    """DAVIS sequence: frames and ground-truth object masks (no depth, no poses)."""
    import cv2

    base = Path(root)
    if (base / "DAVIS").is_dir():
        base = base / "DAVIS"
    rgb = _images(base / "JPEGImages" / resolution / seq, f"davis/{seq}")
    masks = None
    ann = base / "Annotations" / resolution / seq
    if ann.is_dir():
        files = [ann / (p.stem + ".png") for p in rgb]
        if all(f.is_file() for f in files):
            masks = np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 0 for f in files])
    return Sequence(name=seq, dataset="davis", rgb_paths=rgb, dynamic_mask=masks,
                    depth_eval=dict(DEPTH_EVAL_PRESETS["davis"]))


def read_synthetic(root: str | Path, seq: Optional[str] = None) -> Sequence:
    """A scene written by ``monst3r-fw synth OUT`` (``root`` = OUT, or its parent with ``seq`` = folder name)."""
    from .synth import load_scene

    d = Path(root) / seq if seq else Path(root)
    scene = load_scene(d)
    n = scene.n_frames
    return Sequence(name=seq or d.name, dataset="synthetic",
                    rgb_paths=[d / "frames" / f"frame_{i:04d}.png" for i in range(n)], depth=scene.depth,
                    cam_to_world=scene.cam_to_world, intrinsics=np.repeat(scene.K[None], n, axis=0),
                    timestamps=scene.timestamps, dynamic_mask=scene.dynamic_mask,
                    depth_eval=dict(DEPTH_EVAL_PRESETS["synthetic"]), rgb=scene.rgb)


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------

DATASETS: dict[str, Callable[..., Sequence]] = {
    "sintel": read_sintel, "bonn": read_bonn, "tum": read_tum_dynamics, "kitti": read_kitti,
    "scannet": read_scannet, "davis": read_davis, "synthetic": read_synthetic,
}


def list_sequences(dataset: str, root: str | Path) -> list[str]:
    """Sequence names available under ``root`` for ``dataset`` (MonST3R's subsets where it uses one)."""
    base = Path(root)
    if dataset == "sintel":
        if (base / "training").is_dir():
            base = base / "training"
        have = sorted(p.name for p in (base / "final").iterdir() if p.is_dir()) if (base / "final").is_dir() else []
        subset = [s for s in SINTEL_SEQUENCES if s in have]
        return subset or have
    if dataset == "bonn":
        have = sorted(p.name.removeprefix("rgbd_bonn_") for p in base.glob("rgbd_bonn_*") if p.is_dir())
        subset = [s for s in BONN_SEQUENCES if s in have]
        return subset or have
    if dataset == "kitti":
        if (base / "depth_selection" / "val_selection_cropped").is_dir():
            base = base / "depth_selection" / "val_selection_cropped"
        g = base / "groundtruth_depth_gathered"
        return sorted(p.name for p in g.iterdir() if p.is_dir()) if g.is_dir() else []
    if dataset == "davis":
        if (base / "DAVIS").is_dir():
            base = base / "DAVIS"
        j = base / "JPEGImages" / "480p"
        return sorted(p.name for p in j.iterdir() if p.is_dir()) if j.is_dir() else []
    if dataset == "synthetic":
        if (base / "gt.npz").is_file():
            return [""]
        return sorted(p.name for p in base.iterdir() if (p / "gt.npz").is_file())
    if dataset in ("tum", "scannet"):
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    raise InputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def read_sequence(dataset: str, root: str | Path, seq: Optional[str] = None, **kwargs) -> Sequence:
    """Read one sequence of ``dataset`` under ``root``; ``seq=None`` takes ``root`` itself as the sequence
    folder when that is unambiguous (synthetic, or a root holding exactly one sequence)."""
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    root = Path(root)
    if not root.exists():
        raise InputError(f"{dataset}: {root} does not exist; pass --gt pointing at the dataset root or sequence")
    if dataset == "synthetic":
        return read_synthetic(root, seq)
    if seq is None:
        names = list_sequences(dataset, root)
        if len(names) == 1:
            seq = names[0]
        else:
            # Maybe root is itself the sequence folder.
            parent = root.parent
            if dataset == "sintel" and parent.name in ("final", "clean"):
                kwargs.setdefault("pass_name", parent.name)
                parent = parent.parent
            name = root.name.removeprefix("rgbd_bonn_") if dataset == "bonn" else root.name
            return DATASETS[dataset](parent, name, **kwargs)
    return DATASETS[dataset](root, seq, **kwargs)
