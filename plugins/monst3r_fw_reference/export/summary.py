"""``summary``: summary.json describing a run (frames, resolution, timings, config hash, a few
statistics of the reconstruction). Layout: docs/exporters.md."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from monst3r_framework.stages import ExportInputs, RunContext, StageConfig
from monst3r_framework.store import jsonable as _jsonable

from ._common import AtomicExporter, SceneArrays, dynamic_masks

SUMMARY_SCHEMA = 1


def config_hash(run_info: dict[str, Any]) -> str | None:
    """The run's config hash: run_info['config_hash'] when the runner gives one, else the first 16
    hex digits of sha256 over the canonical JSON of run_info['recipe'], else None."""
    if run_info.get("config_hash"):
        return str(run_info["config_hash"])
    if "recipe" in run_info:
        blob = json.dumps(_jsonable(run_info["recipe"]), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
    return None


def _stats(scene: SceneArrays, dyn: np.ndarray) -> dict[str, Any]:
    d = scene.depth[np.isfinite(scene.depth) & (scene.depth > 0)]
    centres = scene.world_from_cam[:, :3, 3]
    return {
        "depth_min": float(d.min()) if d.size else None,
        "depth_median": float(np.median(d)) if d.size else None,
        "depth_max": float(d.max()) if d.size else None,
        "conf_median": float(np.median(scene.conf)) if scene.conf.size else None,
        "dynamic_fraction": float(dyn.mean()) if dyn.size else 0.0,
        "camera_path_length": float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()),
        "focal_mean_px": float(scene.intrinsics[:, [0, 1], [0, 1]].mean()),
    }


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN / inf become None (summary.json is written with allow_nan=False)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class SummaryConfig(StageConfig):
    type: Literal["summary"] = "summary"
    statistics: bool = Field(True, description="Add depth/confidence/mask/camera-path statistics (reads the depth and confidence maps).")
    include_run_info: bool = Field(True, description="Copy the runner's whole run_info (JSON-converted) under 'run_info'.")


class SummaryExporter(AtomicExporter):
    """summary.json: frame count and indices, resolutions, per-stage timings and config hash."""

    name = "summary"
    config_model = SummaryConfig
    config: SummaryConfig

    def write(self, inputs: ExportInputs, scene: SceneArrays, out: Path, ctx: RunContext) -> None:
        info = inputs.run_info or {}
        frames = inputs.frames
        timings = info.get("timings", info.get("seconds", {}))
        summary: dict[str, Any] = {
            "schema": SUMMARY_SCHEMA,
            "run_id": info.get("run_id"),
            "config_hash": config_hash(info),
            "source": frames.source,
            "n_frames": scene.n_frames,
            "size_hw": list(scene.size_hw),
            "original_hw": [int(v) for v in frames.original_hw],
            "frame_index": np.asarray(frames.frame_index).astype(np.int64).tolist(),
            "timestamps": np.asarray(frames.timestamps, np.float64).tolist(),
            "timings": _jsonable(timings),
            "total_seconds": float(sum(v for v in timings.values() if isinstance(v, (int, float))))
            if isinstance(timings, dict) else None,
            "has_init": inputs.init is not None,
            "has_masks": inputs.masks is not None,
            "loss_names": list(inputs.reconstruction.loss_names),
        }
        # what the stages reported about themselves (docs/exporters.md: summary.json)
        recon = inputs.reconstruction
        summary["notices"] = list(info.get("notices", []))
        summary["aligner"] = _finite(recon.run_summary) if recon.run_summary else None
        if recon.frame_quality is not None:
            q = np.asarray(recon.frame_quality, np.float64)
            summary["frame_quality"] = {name: _finite(q[:, k].tolist()) for k, name in enumerate(recon.quality_names)}
        if inputs.masks is not None and inputs.masks.confidence is not None:
            summary["mask_confidence"] = _finite(np.asarray(inputs.masks.confidence, np.float64).tolist())
        if self.config.statistics:
            dyn, _ = dynamic_masks(inputs, scene, f"exporter {self.name}")
            summary["statistics"] = _stats(scene, dyn)
        if self.config.include_run_info:
            summary["run_info"] = _jsonable(info)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False))


STAGES = (SummaryExporter,)
