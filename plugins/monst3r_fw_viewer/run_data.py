"""Lazy, read-only access to one run's outputs for the viewer and the report.

A run folder (the ``--out`` of ``monst3r-fw run``) holds ``run.json``, which names the store and,
once the run is complete, every stage key it used. Nothing is loaded up front except the small
per-frame arrays (poses, intrinsics); point maps, depth, confidence, masks and frames are read one
frame chunk at a time, so opening a long run costs the same as opening a short one.

Which outputs are shown, most downstream first:

* ``global_aligner``: the final reconstruction (``pts3d_world``, poses, confidence, masks);
* ``pose_solver``: the initial cameras; points are its depth back-projected with its poses
  (shown while the aligner has not finished, or when the recipe switches it off);
* ``pair_predictor``: the pair pointmaps of the reference view (frame ``ref``): view ``ref``'s
  own pointmap and every ``(ref, j)`` pair's view-``j`` pointmap, all in camera ``ref``'s frame.
  Only the reference camera has a known pose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from monst3r_framework.errors import StoreError

#: Stage kinds whose outputs can be shown, most downstream first.
SHOWABLE = ("global_aligner", "pose_solver", "pair_predictor")


def _fail(message: str) -> StoreError:
    return StoreError(message)


def find_runs(folder: Path, max_depth: int = 3) -> list[Path]:
    """Run folders (holding ``run.json``) at or below ``folder``, sorted; ``folder`` itself first."""
    folder = Path(folder)
    if (folder / "run.json").is_file():
        return [folder]
    found: list[Path] = []
    frontier = [folder]
    for _ in range(max_depth):
        nxt = []
        for d in frontier:
            try:
                children = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")
                                  and p.suffix != ".zarr")
            except OSError:
                continue
            for c in children:
                (found if (c / "run.json").is_file() else nxt).append(c)
        frontier = nxt
    return sorted(found)


def read_status(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a run folder, or a one-line error saying what the folder is missing."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise _fail(f"{run_dir} does not exist; pass the --out folder of a `monst3r-fw run`")
    path = run_dir / "run.json"
    if not path.is_file():
        raise _fail(f"{run_dir} is not a run folder (no run.json, and no run folders inside); pass the --out "
                    "folder of a `monst3r-fw run`, or a folder holding several")
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _fail(f"{path}: unreadable ({exc}); the run was interrupted while writing it, rerun it") from None
    if not isinstance(status, dict):
        raise _fail(f"{path}: expected a JSON object; rerun the run")
    return status


def resolve_store(run_dir: Path, status: dict[str, Any]) -> str:
    """The run's store location: run.json's ``store`` (relative paths are tried against the current
    folder, then the run folder), else ``RUN_DIR/store.zarr``."""
    named = str(status.get("store") or "")
    if "://" in named:
        return named
    candidates = []
    if named:
        p = Path(named)
        candidates += [p] if p.is_absolute() else [p, run_dir / p, run_dir / p.name]
    candidates.append(run_dir / "store.zarr")
    for c in candidates:
        if (c / "zarr.json").is_file():
            return str(c)
    raise _fail(f"{run_dir}: its store {named or 'store.zarr'} is missing; the run's arrays were moved or deleted "
                "(pass the folder that holds store.zarr, or rerun `monst3r-fw run`)")


@dataclass(frozen=True)
class StageRef:
    kind: str
    key: str
    type: str
    seconds: float
    cached: bool


class RunData:
    """One run, opened lazily.

    Attributes:
        run_dir: the run folder.
        run_id, status: from run.json ("complete", "running", "failed").
        shown: the stage kind whose outputs are shown (one of :data:`SHOWABLE`).
        label: one line for people: which stage's outputs are shown and why.
        n_frames, size_hw: frames of the run and network resolution (H, W).
        world_from_cam: (F, 4, 4) float64 camera-to-world, NaN rows for frames with no pose.
        intrinsics: (F, 3, 3) float64 at network resolution (NaN where unknown).
        has_pose: (F,) bool.
    """

    def __init__(self, run_dir: Path) -> None:
        from monst3r_framework.store import RunStore

        self.run_dir = Path(run_dir)
        status = read_status(self.run_dir)
        self.status_json = status
        self.run_id = str(status.get("run_id", self.run_dir.name))
        self.status = str(status.get("status", "unknown"))
        self.store_location = resolve_store(self.run_dir, status)
        self.store = RunStore(self.store_location, lock=False)
        self.keys = self._stage_keys(status)
        self._open()

    # ------------------------------------------------------------------------------ keys
    def _stage_keys(self, status: dict[str, Any]) -> dict[str, str]:
        """kind -> key of every stage this run used that the store knows of."""
        keys: dict[str, str] = {}
        for rep in status.get("stages") or []:
            if rep.get("kind") and rep.get("kind") != "exporter":
                keys[str(rep["kind"])] = str(rep["key"])
        run_attrs = self.store.runs().get(self.run_id, {})
        for kind, key in (run_attrs.get("keys") or {}).items():
            keys.setdefault(kind, key)
        if self.status != "complete":
            # An unfinished run lists nothing yet: take the groups this run computed, then follow
            # their upstream keys to the (possibly cached) inputs they were computed from.
            groups = list(self.store.iter_stage_groups())
            upstream: dict[str, str] = {}
            for kind, key, attrs in groups:
                if attrs.get("run_id") != self.run_id:
                    continue
                if attrs.get("complete") is True:
                    keys.setdefault(kind, key)
                upstream.update({k: v for k, v in (attrs.get("upstream") or {}).items() if v != "disabled"})
            for kind in SHOWABLE:
                if kind in keys:
                    upstream.update({k: v for k, v in (self.store.stage_attrs(kind, keys[kind]).get("upstream") or {}).items()
                                     if v != "disabled"})
            for kind, key in upstream.items():
                keys.setdefault(kind, key)
            frames = [key for kind, key, attrs in groups if kind == "frames" and attrs.get("complete") is True]
            if "frames" not in keys and len(frames) == 1:
                keys["frames"] = frames[0]
        return keys

    def _complete(self, kind: str) -> bool:
        key = self.keys.get(kind)
        return bool(key and key != "disabled" and self.store.is_complete(kind, key))

    def stage_seconds(self) -> list[StageRef]:
        """Per-stage type, key, seconds and cached flag (run.json's, for the report)."""
        out = []
        for rep in self.status_json.get("stages") or []:
            out.append(StageRef(str(rep.get("kind")), str(rep.get("key")), str(rep.get("type", "")),
                                float(rep.get("seconds", 0.0)), bool(rep.get("cached", False))))
        return out

    # ------------------------------------------------------------------------------ open
    def _open(self) -> None:
        from monst3r_framework.stages import (
            CameraTrajectory, DynamicMasks, FrameSet, PairPredictions, Reconstruction,
        )

        where = f"run {self.run_dir}"
        frames_key = self.keys.get("frames")
        if not frames_key or not self.store.is_complete("frames", frames_key):
            raise _fail(f"{where}: its frames ({frames_key or 'no key'}) are missing from store {self.store_location}; "
                        "the run stopped before reading its input or the store was cleaned: rerun `monst3r-fw run`")
        self.frames = self.store.load("frames", frames_key, FrameSet)
        f, h, w = (int(s) for s in self.frames.rgb.shape[:3])
        self.n_frames, self.size_hw = f, (h, w)
        if self.status == "complete":
            for kind, key in self.keys.items():
                if kind in SHOWABLE + ("mask_builder",) and key != "disabled" and not self.store.is_complete(kind, key):
                    raise _fail(f"{where}: stage {kind} output {key} is missing from store {self.store_location} "
                                "(deleted or moved); rerun `monst3r-fw run` with the same recipe to recompute it")
        self.masks = self.store.load("mask_builder", self.keys["mask_builder"], DynamicMasks) \
            if self._complete("mask_builder") else None
        self.recon = self.cameras = self.preds = None
        self.world_from_cam = np.full((f, 4, 4), np.nan)
        self.intrinsics = np.full((f, 3, 3), np.nan)
        aligner_off = self.keys.get("global_aligner") == "disabled"
        if self._complete("global_aligner"):
            self.shown = "global_aligner"
            self.recon = self.store.load("global_aligner", self.keys["global_aligner"], Reconstruction)
            self.world_from_cam = np.asarray(self.recon.world_from_cam, np.float64)
            self.intrinsics = np.asarray(self.recon.intrinsics, np.float64)
        elif self._complete("pose_solver"):
            self.shown = "pose_solver"
            self.cameras = self.store.load("pose_solver", self.keys["pose_solver"], CameraTrajectory)
            self.world_from_cam = np.asarray(self.cameras.world_from_cam, np.float64)
            self.intrinsics = np.asarray(self.cameras.intrinsics, np.float64)
        elif self._complete("pair_predictor"):
            self.shown = "pair_predictor"
            self.preds = self.store.load("pair_predictor", self.keys["pair_predictor"], PairPredictions)
            self._setup_pairs()
        else:
            raise _fail(f"{where}: no stage output to show yet (status {self.status}; the pair predictor has not "
                        "finished); wait for the run or rerun it")
        self.has_pose = np.isfinite(self.world_from_cam).all(axis=(1, 2))
        stype = self.store.stage_attrs(self.shown, self.keys[self.shown]).get("type", "")
        why = {
            "global_aligner": "final reconstruction",
            "pose_solver": "initial poses; the global aligner is switched off" if aligner_off
            else "initial poses; the global aligner has not finished",
            "pair_predictor": f"pair pointmaps of reference frame {getattr(self, 'ref', 0)}; no poses yet",
        }[self.shown]
        self.label = f"{self.shown} ({stype}) outputs: {why} · run {self.run_id} ({self.status})"

    def _setup_pairs(self) -> None:
        pairs = np.asarray(self.preds.pairs, np.int64)  # type: ignore[union-attr]
        self.ref = int(pairs[0, 0])
        self.pair_of: dict[int, tuple[int, str]] = {}
        for p, (i, j) in enumerate(pairs):
            if int(i) == self.ref:
                self.pair_of.setdefault(self.ref, (p, "i"))
                self.pair_of.setdefault(int(j), (p, "j"))
        self.world_from_cam[self.ref] = np.eye(4)
        # The reference intrinsics are not stored with pair predictions; take the focal that makes
        # the reference pointmap project onto its pixel grid (median of x/z against pixel offsets).
        p, _ = self.pair_of[self.ref]
        pts = np.asarray(self.preds.pts3d_i[p], np.float64)  # type: ignore[union-attr]
        h, w = self.size_hw
        u = np.arange(w)[None, :] - (w - 1) / 2
        z = pts[..., 2]
        ok = (z > 0) & (np.abs(u) > w / 8)
        focal = float(np.median((u * z / np.where(ok, pts[..., 0], 1))[ok])) if ok.any() else float(max(h, w))
        self.intrinsics[self.ref] = [[abs(focal), 0, (w - 1) / 2], [0, abs(focal), (h - 1) / 2], [0, 0, 1]]

    # ------------------------------------------------------------------------------ per frame
    def rgb(self, i: int, stride: int = 1) -> np.ndarray:
        """(H/s, W/s, 3) uint8 frame ``i``."""
        return self.frames.rgb[i, ::stride, ::stride]

    def thumbnail(self, i: int, max_side: int = 96) -> np.ndarray:
        """Frame ``i`` with its longer side at most ``max_side`` pixels (strided, uint8)."""
        h, w = self.size_hw
        stride = max(1, int(np.ceil(max(h, w) / max_side)))
        return np.ascontiguousarray(self.rgb(i, stride))

    def thumbnails(self, max_side: int = 96) -> np.ndarray:
        """(F, h, w, 3) uint8 every frame strided to at most ``max_side`` pixels a side (one read)."""
        h, w = self.size_hw
        stride = max(1, int(np.ceil(max(h, w) / max_side)))
        return np.ascontiguousarray(self.frames.rgb[:, ::stride, ::stride])

    def frame_points(self, i: int, stride: int = 1) -> Optional[dict[str, np.ndarray]]:
        """Frame ``i``'s points at pixel stride ``stride``, flattened, finite points only.

        Returns:
            None when the shown stage has no points for this frame, else a dict with
            ``xyz`` (N, 3) float32 world points, ``rgb`` (N, 3) uint8, ``conf`` (N,) float32 and
            ``dynamic`` (N,) bool (all False when the run has no masks).
        """
        s = (i, slice(None, None, stride), slice(None, None, stride))
        if self.recon is not None:
            xyz = np.asarray(self.recon.pts3d_world[s], np.float32)
            conf = np.asarray(self.recon.conf[s], np.float32)
            dyn = np.asarray((self.masks.dynamic if self.masks is not None else self.recon.dynamic)[s], bool)
        elif self.cameras is not None:
            depth = np.asarray(self.cameras.depth[s], np.float64)
            conf = np.asarray(self.cameras.conf[s], np.float32)
            xyz = self._unproject(i, depth, stride)
            dyn = np.asarray(self.masks.dynamic[s], bool) if self.masks is not None else np.zeros(depth.shape, bool)
        else:
            if i not in self.pair_of:
                return None
            p, side = self.pair_of[i]
            ps = (p, slice(None, None, stride), slice(None, None, stride))
            xyz = np.asarray((self.preds.pts3d_i if side == "i" else self.preds.pts3d_j)[ps], np.float32)  # type: ignore[union-attr]
            conf = np.asarray((self.preds.conf_i if side == "i" else self.preds.conf_j)[ps], np.float32)  # type: ignore[union-attr]
            dyn = np.asarray(self.masks.dynamic[s], bool) if self.masks is not None else np.zeros(conf.shape, bool)
        rgb = self.rgb(i, stride)
        xyz = xyz.reshape(-1, 3)
        ok = np.isfinite(xyz).all(axis=1)
        return {"xyz": xyz[ok], "rgb": rgb.reshape(-1, 3)[ok], "conf": conf.reshape(-1)[ok],
                "dynamic": dyn.reshape(-1)[ok]}

    def _unproject(self, i: int, depth: np.ndarray, stride: int) -> np.ndarray:
        """(h, w) depth sampled at every ``stride``-th pixel -> (h, w, 3) world points of frame ``i``."""
        k, c2w = self.intrinsics[i], self.world_from_cam[i]
        ys, xs = np.mgrid[0:self.size_hw[0]:stride, 0:self.size_hw[1]:stride].astype(np.float64)
        cam = np.stack([(xs - k[0, 2]) / k[0, 0] * depth, (ys - k[1, 2]) / k[1, 1] * depth, depth], axis=-1)
        return (cam @ c2w[:3, :3].T + c2w[:3, 3]).astype(np.float32)

    def conf_sample(self, n_frames: int = 8, stride: int = 8) -> np.ndarray:
        """Confidences of a few evenly spaced frames (for percentile thresholds)."""
        idx = np.unique(np.linspace(0, self.n_frames - 1, min(n_frames, self.n_frames)).astype(int))
        parts = [fp["conf"] for i in idx if (fp := self.frame_points(int(i), stride)) is not None]
        return np.concatenate(parts) if parts else np.ones(1, np.float32)

    def scene_scale(self) -> float:
        """A length for default point and frustum sizes: the median depth of the shown points."""
        for i in range(self.n_frames):
            fp = self.frame_points(i, 8)
            if fp is not None and len(fp["xyz"]):
                c2w = self.world_from_cam[i] if self.has_pose[i] else np.eye(4)
                d = np.linalg.norm(fp["xyz"] - c2w[:3, 3], axis=1)
                return float(np.median(d)) or 1.0
        return 1.0
