"""Shared plumbing of the exporter stages: input checks, file writing, point selection (the runner
makes output folders atomic).

Conventions follow :mod:`monst3r_framework.stages` (OpenCV cameras, camera-to-world poses, pixel
intrinsics with integer coordinates at pixel centres). Formats that put the pixel *corner* at the
origin (COLMAP, nerfstudio) get :data:`CORNER_FROM_CENTRE` added to their principal point.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from monst3r_framework.checks import check_shape
from monst3r_framework.errors import ShapeError, StageError
from monst3r_framework.stages import ExportInputs, Exporter, ExportResult, RunContext

#: Offset from our pixel-centre convention (centre of the top-left pixel at (0, 0)) to the
#: corner convention of COLMAP and nerfstudio (that centre at (0.5, 0.5)).
CORNER_FROM_CENTRE = 0.5

#: OpenCV camera axes (x right, y down, z forward) -> OpenGL ones (x right, y up, z backward).
CV_FROM_GL = np.diag([1.0, -1.0, -1.0, 1.0])


_SCENE_SPECS: dict[str, tuple[str, str, Optional[str]]] = {
    # name: (source, axis spec, dtype to convert to)
    "rgb": ("frames", "F H W 3", None),
    "world_from_cam": ("reconstruction", "F 4 4", "float64"),
    "intrinsics": ("reconstruction", "F 3 3", "float64"),
    "intrinsics_original": ("reconstruction", "F 3 3", "float64"),
    "depth": ("reconstruction", "F H W", "float32"),
    "conf": ("reconstruction", "F H W", "float32"),
    "pts3d_world": ("reconstruction", "F H W 3", "float32"),
    "dynamic": ("reconstruction", "F H W", "bool"),
}


class SceneArrays:
    """The reconstruction and frames, shape-checked up front and loaded into numpy on first use
    (inputs may be lazy Zarr arrays; an exporter that only needs poses never reads the point maps).

    rgb: (F, H, W, 3) uint8, network resolution.
    world_from_cam: (F, 4, 4) float64, camera-to-world, OpenCV axes.
    intrinsics: (F, 3, 3) float64, network resolution, pixel-centre convention.
    intrinsics_original: (F, 3, 3) float64, original resolution, pixel-centre convention.
    depth: (F, H, W) float32, z-depth.
    conf: (F, H, W) float32, per-pixel confidence.
    pts3d_world: (F, H, W, 3) float32, world points of each frame at its own time.
    dynamic: (F, H, W) bool, True on moving objects.
    """

    rgb: np.ndarray
    world_from_cam: np.ndarray
    intrinsics: np.ndarray
    intrinsics_original: np.ndarray
    depth: np.ndarray
    conf: np.ndarray
    pts3d_world: np.ndarray
    dynamic: np.ndarray

    def __init__(self, raw: dict[str, object], dims: dict[str, int]) -> None:
        self._raw = raw
        self._dims = dims
        self._cache: dict[str, np.ndarray] = {}

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_") or name not in _SCENE_SPECS:
            raise AttributeError(name)
        if name not in self._cache:
            dtype = _SCENE_SPECS[name][2]
            arr = np.asarray(self._raw[name][...])  # type: ignore[index]
            self._cache[name] = arr.astype(dtype, copy=False) if dtype else arr
        return self._cache[name]

    def frame(self, name: str, i: int) -> np.ndarray:
        """Frame ``i`` of array ``name`` (same dtype as the attribute), read alone from a lazy store
        array unless the whole array is already loaded: exporters that go frame by frame stay flat in
        memory on long videos."""
        if name in self._cache:
            return self._cache[name][i]
        dtype = _SCENE_SPECS[name][2]
        arr = np.asarray(self._raw[name][i])  # type: ignore[index]
        return arr.astype(dtype, copy=False) if dtype else arr

    @property
    def n_frames(self) -> int:
        return int(self._dims["F"])

    @property
    def size_hw(self) -> tuple[int, int]:
        return int(self._dims["H"]), int(self._dims["W"])


def _check(where: str, name: str, array: object, spec: str, dims: dict[str, int]) -> None:
    check_shape(f"{where}.{name}", array, spec, dims)


def scene_arrays(inputs: ExportInputs, where: str) -> SceneArrays:
    """Check that the frames and the reconstruction agree in shape and wrap them for lazy loading.

    Raises:
        ShapeError: naming the array and axis that disagrees, or non-uint8 frames.
    """
    dims: dict[str, int] = {}
    raw: dict[str, object] = {}
    for name, (source, spec, _) in _SCENE_SPECS.items():
        record = inputs.frames if source == "frames" else inputs.reconstruction
        arr = getattr(record, name)
        _check(where, f"{source}.{name}", arr, spec, dims)
        raw[name] = arr
    if np.dtype(getattr(raw["rgb"], "dtype", np.uint8)) != np.uint8:
        raise ShapeError(f"{where}.frames.rgb: expected uint8 RGB frames, got dtype {raw['rgb'].dtype}; "  # type: ignore[attr-defined]
                         "convert the FrameSet to uint8 before exporting")
    return SceneArrays(raw, dims)


def dynamic_masks(inputs: ExportInputs, scene: SceneArrays, where: str) -> tuple[np.ndarray, str]:
    """(F, H, W) bool dynamic mask and its source: the mask builder's when given, else the reconstruction's."""
    if inputs.masks is None:
        return scene.dynamic, "reconstruction"
    dyn = np.asarray(inputs.masks.dynamic).astype(bool)
    _check(where, "masks.dynamic", dyn, "F H W", {"F": scene.n_frames, "H": scene.size_hw[0], "W": scene.size_hw[1]})
    return dyn, inputs.masks.source


def dynamic_frames(inputs: ExportInputs, scene: SceneArrays, where: str) -> tuple[Callable[[int], np.ndarray], str]:
    """Like :func:`dynamic_masks`, as a per-frame reader ``mask(i) -> (H, W) bool`` (nothing whole-video
    is loaded)."""
    if inputs.masks is None:
        return (lambda i: scene.frame("dynamic", i)), "reconstruction"
    dyn = inputs.masks.dynamic
    _check(where, "masks.dynamic", dyn, "F H W", {"F": scene.n_frames, "H": scene.size_hw[0], "W": scene.size_hw[1]})
    return (lambda i: np.asarray(dyn[i]).astype(bool)), inputs.masks.source


def gl_from_cv(world_from_cam: np.ndarray) -> np.ndarray:
    """(F, 4, 4) OpenCV camera-to-world -> OpenGL camera-to-world (flip the camera's y and z axes)."""
    return np.asarray(world_from_cam, np.float64) @ CV_FROM_GL


def select_points(
    scene: SceneArrays,
    *,
    min_conf: float,
    static_only: bool,
    max_points: Optional[int],
    seed: int,
    dynamic: Optional[np.ndarray | Callable[[int], np.ndarray]] = None,
    frame_stride: int = 1,
) -> np.ndarray:
    """Pick pixels whose world points get exported, reading one frame at a time.

    Args:
        scene: the reconstruction.
        min_conf: keep pixels with ``conf >= min_conf``.
        static_only: drop pixels flagged dynamic.
        max_points: keep at most this many (uniform random subset, reproducible from ``seed``,
            returned in frame/row/column order); None keeps all.
        seed: random seed of the subset.
        dynamic: (F, H, W) bool mask, or a per-frame reader ``f -> (H, W) bool``, to use instead of
            ``scene.dynamic``.
        frame_stride: use every ``frame_stride``-th frame only (long videos).
    Returns:
        (N,) int64 flat indices into the (F, H, W) grid.

    Memory holds one frame plus the result: a first pass counts each frame's candidates, the random
    subset is drawn over those counts (the same subset as drawing from the list of all candidates),
    a second pass maps it back to pixels.
    """
    h, w = scene.size_hw
    dyn = (lambda f: scene.frame("dynamic", f)) if dynamic is None else (
        dynamic if callable(dynamic) else (lambda f: np.asarray(dynamic[f], bool)))
    frames = range(0, scene.n_frames, max(1, int(frame_stride)))

    def candidates(f: int) -> np.ndarray:
        keep = (scene.frame("conf", f) >= min_conf) & np.isfinite(scene.frame("pts3d_world", f)).all(-1)
        if static_only:
            keep &= ~dyn(f)
        return np.flatnonzero(keep).astype(np.int64) + f * h * w

    empty = np.zeros(0, np.int64)
    if max_points is None:
        return np.concatenate([empty] + [candidates(f) for f in frames])
    counts = np.array([len(candidates(f)) for f in frames], np.int64)
    total = int(counts.sum())
    if total <= max_points:
        return np.concatenate([empty] + [candidates(f) for f, c in zip(frames, counts) if c])
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=max_points, replace=False))
    starts = np.concatenate([[0], np.cumsum(counts)])
    bounds = np.searchsorted(chosen, starts)
    parts = [candidates(f)[chosen[bounds[k]:bounds[k + 1]] - starts[k]]
             for k, f in enumerate(frames) if bounds[k + 1] > bounds[k]]
    return np.concatenate([empty] + parts)


def gather_points(scene: SceneArrays, name: str, idx: np.ndarray) -> np.ndarray:
    """``scene.<name>`` at the flat (F*H*W) indices ``idx`` (sorted, as :func:`select_points` returns
    them), read one frame at a time: (N, C) for per-pixel vectors, (N,) for scalars."""
    h, w = scene.size_hw
    frames = idx // (h * w)
    parts = []
    for f in np.unique(frames):
        sel = idx[frames == f] - f * h * w
        arr = scene.frame(name, int(f))
        parts.append(arr.reshape(h * w, -1)[sel] if arr.ndim == 3 else arr.reshape(-1)[sel])
    if parts:
        return np.concatenate(parts)
    probe = scene.frame(name, 0)
    return np.zeros((0,) + probe.shape[2:], probe.dtype)


def warp_to_original(image: np.ndarray, network_from_original: np.ndarray, original_hw: tuple[int, int],
                     nearest: bool = False) -> np.ndarray:
    """Resample a network-resolution image to the original resolution.

    Args:
        image: (H, W[, C]) image at network resolution.
        network_from_original: (3, 3) affine mapping original pixel centres to network ones.
        original_hw: (height, width) of the output.
        nearest: nearest-neighbour (masks, depth) instead of bilinear (colour).
    Returns:
        (H0, W0[, C]) image; pixels outside the network crop are 0.
    """
    import cv2

    m = np.asarray(network_from_original, np.float64)[:2]
    h0, w0 = int(original_hw[0]), int(original_hw[1])
    flags = (cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    # WARP_INVERSE_MAP: m maps destination (original) pixels to source (network) pixels.
    return cv2.warpAffine(image, m, (w0, h0), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def depth_to_u16(depth: np.ndarray, scale: float, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W) z-depth -> (H, W) uint16 ``round(depth * scale)``; invalid, non-finite, non-positive
    and out-of-range (> 65535) pixels become 0 (= no depth)."""
    d = np.asarray(depth, np.float64) * scale
    ok = np.isfinite(d) & (d > 0) & (d <= 65535.0)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    return np.where(ok, np.round(np.where(ok, d, 0.0)), 0).astype(np.uint16)


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an (H, W) gray (uint8/uint16) or (H, W, 3) RGB uint8 image as PNG, raising on failure."""
    import cv2

    arr = np.ascontiguousarray(image)
    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr[..., ::-1])  # OpenCV writes BGR
    # Encode in memory and write with Python: OpenCV's own file functions take a UTF-8 C string
    # and crash on a path that is not UTF-8 (any --out a user may choose).
    ok, encoded = cv2.imencode(".png", arr)
    if not ok:
        raise StageError(f"could not encode {path} as PNG (array {arr.shape} {arr.dtype})")
    try:
        with open(path, "wb") as fh:
            fh.write(encoded.tobytes())
    except OSError as exc:
        raise StageError(f"could not write {path} ({exc.strerror or exc}); check that the folder is writable "
                         "and has free space") from None


def relative_files(root: Path) -> tuple[str, ...]:
    """Every file under ``root`` as sorted POSIX paths relative to it (the runner's own
    ``.monst3r_fw*`` bookkeeping files excluded)."""
    import os

    # os.walk, not Path.rglob: plain strings, no Path object per file (a long video's export has
    # several files per frame)
    out = []
    for folder, _, names in os.walk(root):
        rel = os.path.relpath(folder, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        out.extend(prefix + name for name in names
                   if not name.startswith(".monst3r_fw") and os.path.isfile(os.path.join(folder, name)))
    return tuple(sorted(out))


class AtomicExporter(Exporter):
    """Base of the reference exporters: checks the inputs, then :meth:`write` fills ``out_dir``.

    Atomicity lives in one place, the runner (``monst3r_framework.runner.publish_export``): it hands
    over an empty staging folder as ``out_dir`` and renames it into place only when ``run`` returns,
    so an interrupted export never looks complete. Subclasses implement :meth:`write`.
    """

    def run(self, inputs: ExportInputs, ctx: RunContext) -> ExportResult:
        out_dir = Path(inputs.out_dir)
        scene = scene_arrays(inputs, f"exporter {self.name}")
        out_dir.mkdir(parents=True, exist_ok=True)
        self.write(inputs, scene, out_dir, ctx)
        files = relative_files(out_dir)
        ctx.log(f"{self.name}: wrote {len(files)} files to {out_dir}")
        return ExportResult(files=files)

    @abstractmethod
    def write(self, inputs: ExportInputs, scene: SceneArrays, out: Path, ctx: RunContext) -> None:
        """Write every output file under ``out`` (the staging folder)."""
