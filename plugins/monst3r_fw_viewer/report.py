"""``report`` exporter: one self-contained ``report.html`` (figures embedded as base64 PNG) plus the
PNGs beside it.

Contents: trajectory top view (x, z) and side view (z, -y) with camera frustums coloured by time
(and the ground truth, the estimate Sim(3)-aligned onto it, when the input is a synthetic scene
with ``gt.npz``); a montage of frame / depth / confidence / dynamic mask for a sample of frames; the
aligner's per-term loss curves; per-stage timings and cache hits; metrics against the ground truth;
the resolved recipe; and a list of what was skipped and why.

``monst3r-fw report RUN_DIR`` re-makes it from a finished (or unfinished) run folder.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field

from monst3r_framework.stages import ExportInputs, RunContext, StageConfig

from monst3r_fw_reference.export._common import AtomicExporter, SceneArrays, dynamic_frames

FIGURES = ("trajectory_top.png", "trajectory_side.png", "montage.png", "losses.png", "timings.png")


class ReportConfig(StageConfig):
    type: Literal["report"] = "report"
    sample_frames: int = Field(6, ge=1, le=32, description="Frames shown in the frame/depth/confidence/mask montage (evenly spaced).")
    max_frustums: int = Field(40, ge=0, description="At most this many camera frustums in the trajectory views (evenly spaced).")
    dpi: int = Field(100, ge=50, le=300, description="Resolution of the PNG figures.")
    metrics: bool = Field(True, description="Compute metrics when the input is a synthetic scene with ground truth (gt.npz), unless the run folder already has metrics.json.")


@dataclass
class ReportInputs:
    """What the report shows, gathered from an exporter's inputs or from a run folder.

    world_from_cam: (F, 4, 4) float64 camera-to-world; intrinsics (F, 3, 3) network resolution.
    rgb (F, H, W, 3) uint8, depth (F, H, W), conf (F, H, W), dynamic (F, H, W) bool: lazy arrays
    are fine, only the sampled frames are read.
    """

    run_dir: Path
    world_from_cam: np.ndarray
    intrinsics: np.ndarray
    rgb: Any
    depth: Any
    conf: Any
    dynamic: Any
    frame_index: np.ndarray
    source: str
    shown: str = "global_aligner"
    loss_history: Optional[np.ndarray] = None
    loss_names: tuple[str, ...] = ()
    stages: list[dict[str, Any]] = field(default_factory=list)
    recipe_text: str = ""
    run_id: str = ""
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- figures


def _frustum_lines(c2w: np.ndarray, k: np.ndarray, hw: tuple[int, int], size: float) -> np.ndarray:
    """(8, 2, 3) world segments of a camera pyramid: centre to the 4 image corners at depth ``size``, and the rim."""
    h, w = hw
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    rays = np.stack([(corners[:, 0] - k[0, 2]) / k[0, 0], (corners[:, 1] - k[1, 2]) / k[1, 1], np.ones(4)], axis=1)
    pts = (rays * size) @ c2w[:3, :3].T + c2w[:3, 3]
    centre = c2w[:3, 3]
    spokes = np.stack([np.repeat(centre[None], 4, 0), pts], axis=1)
    rim = np.stack([pts, np.roll(pts, -1, axis=0)], axis=1)
    return np.concatenate([spokes, rim])


def _trajectory_figure(path: Path, view: Literal["top", "side"], data: ReportInputs, gt: Optional[np.ndarray],
                       cfg: ReportConfig) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    # OpenCV world axes (y down): top view looks down -y onto (x, z); side view shows (z, up = -y).
    axes = (0, 2) if view == "top" else (2, 1)
    sign = np.array([1.0, 1.0]) if view == "top" else np.array([1.0, -1.0])
    c2w = data.world_from_cam
    ok = np.isfinite(c2w).all(axis=(1, 2))
    centres = c2w[ok][:, :3, 3]
    n = len(c2w)
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(6, 5), dpi=cfg.dpi)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.1, top=0.93)
    if gt is not None:
        g = gt[:, :3, 3][:, axes] * sign
        ax.plot(g[:, 0], g[:, 1], "--", color="0.3", lw=1.5, label="ground truth")
    if len(centres):
        p = centres[:, axes] * sign
        ax.plot(p[:, 0], p[:, 1], "-", color="tab:red", lw=1.0, alpha=0.6,
                label="estimate (Sim(3)-aligned to ground truth)" if gt is not None else "estimate")
        ax.scatter(p[:, 0], p[:, 1], c=np.flatnonzero(ok) / max(n - 1, 1), cmap=cmap, s=12, zorder=3)
        extent = float(np.ptp(centres, axis=0).max()) if len(centres) > 1 else 0.0
        med_depth = float(np.nanmedian(np.asarray(data.depth[0]))) if len(data.depth) else 1.0
        size = 0.12 * extent if extent > 0 else 0.1 * med_depth
        picks = np.flatnonzero(ok)
        if cfg.max_frustums and len(picks) > cfg.max_frustums:
            picks = picks[np.unique(np.linspace(0, len(picks) - 1, cfg.max_frustums).round().astype(int))]
        segs, cols = [], []
        for i in (picks if cfg.max_frustums else []):
            lines = _frustum_lines(c2w[i], data.intrinsics[i], tuple(np.asarray(data.rgb.shape[1:3])), size)
            segs.append(lines[:, :, axes] * sign)
            cols += [cmap(i / max(n - 1, 1))] * len(lines)
        if segs:
            ax.add_collection(LineCollection(np.concatenate(segs), colors=cols, linewidths=0.8))
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, max(n - 1, 1)))
    fig.colorbar(sm, ax=ax, label="frame")
    ax.set_xlabel("x" if view == "top" else "z (forward of frame 0)")
    ax.set_ylabel("z (forward of frame 0)" if view == "top" else "up (-y)")
    ax.set_title(f"camera trajectory, {'top' if view == 'top' else 'side'} view ({int(ok.sum())} cameras)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path)
    plt.close(fig)


def sample_frames(n: int, k: int) -> np.ndarray:
    """``k`` evenly spaced frame indices in [0, n)."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int))


def _colourise(values: np.ndarray, lo: float, hi: float, cmap: int) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 RGB through an OpenCV colormap over [lo, hi]; NaN -> black."""
    import cv2

    values = np.asarray(values, np.float64)
    v = np.nan_to_num((values - lo) / max(hi - lo, 1e-12), nan=0.0, posinf=1.0, neginf=0.0)
    img = cv2.applyColorMap(np.clip(v * 255, 0, 255).astype(np.uint8), cmap)[..., ::-1].copy()
    img[~np.isfinite(values)] = 0
    return img


def _label(img: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``img`` with a dark strip and white text on top (OpenCV's Hershey font)."""
    import cv2

    bar = max(14, img.shape[0] // 12)
    out = np.concatenate([np.full((bar,) + img.shape[1:], 30, np.uint8), img])
    cv2.putText(out, text, (4, bar - 4), cv2.FONT_HERSHEY_SIMPLEX, bar / 32, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _montage_figure(path: Path, data: ReportInputs, cfg: ReportConfig) -> list[int]:
    """Rows = sampled frames; columns = frame, depth (turbo, 2-98th percentile of the sampled
    frames), confidence (magma, same), dynamic mask in red over the dimmed frame. Composed with
    OpenCV (matplotlib's layout of 4xN axes costs seconds per report)."""
    import cv2

    idx = sample_frames(len(data.world_from_cam), cfg.sample_frames)
    depth = np.stack([np.asarray(data.depth[int(i)], np.float32) for i in idx])
    conf = np.stack([np.asarray(data.conf[int(i)], np.float32) for i in idx])
    finite = depth[np.isfinite(depth) & (depth > 0)]
    d_lo, d_hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
    c_lo, c_hi = np.percentile(conf, [2, 98]) if conf.size else (0.0, 1.0)
    h, w = depth.shape[1:]
    scale = max(1.0, 240.0 / w)  # small frames are enlarged so the labels stay readable
    size = (int(round(w * scale)), int(round(h * scale)))
    rows = []
    for row, i in enumerate(idx):
        rgb = np.asarray(data.rgb[int(i)])
        dyn = np.asarray(data.dynamic[int(i)], bool)
        overlay = rgb.astype(np.float32) * 0.45
        overlay[dyn] = overlay[dyn] * 0.3 + np.array([255, 40, 40]) * 0.7
        panels = [(rgb, f"frame {int(i)}"),
                  (_colourise(depth[row], d_lo, d_hi, cv2.COLORMAP_TURBO), f"depth {d_lo:.3g}-{d_hi:.3g}"),
                  (_colourise(conf[row], c_lo, c_hi, cv2.COLORMAP_MAGMA), f"confidence {c_lo:.3g}-{c_hi:.3g}"),
                  (overlay.astype(np.uint8), f"dynamic {100 * dyn.mean():.1f}%")]
        tiles = [_label(cv2.resize(np.ascontiguousarray(img), size, interpolation=cv2.INTER_NEAREST), text)
                 for img, text in panels]
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], axis=1))
    from monst3r_fw_reference.export._common import write_png

    write_png(path, np.concatenate(rows, axis=0))
    return [int(i) for i in idx]


def _loss_figure(path: Path, history: np.ndarray, names: tuple[str, ...], cfg: ReportConfig) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=cfg.dpi)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.14, top=0.9)
    for t in range(history.shape[1]):
        name = names[t] if t < len(names) else f"term {t}"
        values = history[:, t]
        ax.plot(np.arange(1, len(values) + 1), values, label=f"{name} (last {values[-1]:.4g})")
    if np.all(history[np.isfinite(history)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title("global aligner: loss per term")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)
    plt.close(fig)


def _timing_figure(path: Path, stages: list[dict[str, Any]], cfg: ReportConfig) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    labels = [str(s.get("label") or s.get("kind")) for s in stages]
    secs = [float(s.get("seconds", 0.0)) for s in stages]
    cached = [bool(s.get("cached")) for s in stages]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(stages) + 1.2), dpi=cfg.dpi)
    fig.subplots_adjust(left=0.38, right=0.97, bottom=0.8 / (0.4 * len(stages) + 1.2), top=1 - 0.45 / (0.4 * len(stages) + 1.2))
    ax.barh(range(len(stages)), secs, color=["tab:green" if c else "tab:blue" for c in cached])
    ax.set_yticks(range(len(stages)), labels, fontsize=8)
    ax.invert_yaxis()
    for y, (s, c) in enumerate(zip(secs, cached)):
        ax.text(s, y, f" {s:.2f} s{' (cached)' if c else ''}", va="center", fontsize=8)
    ax.set_xlabel("seconds (green: reused from the store)")
    ax.set_title(f"stage timings ({sum(cached)}/{len(stages)} cache hits)")
    ax.set_xlim(0, max(secs + [1e-3]) * 1.35)
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------- ground truth


def find_ground_truth(source: str) -> Optional[Path]:
    """The synthetic scene folder (holds gt.npz) the input came from, if any: the input itself or its parent."""
    if not source or "://" in source:
        return None
    p = Path(source)
    for cand in (p, p.parent):
        if (cand / "gt.npz").is_file():
            return cand
    return None


def ground_truth_metrics(data: ReportInputs) -> tuple[dict[str, Any], Optional[np.ndarray], Optional[np.ndarray]]:
    """(metrics, gt (F, 4, 4), estimate Sim(3)-aligned onto gt) against the scene's ground truth,
    computed as ``monst3r-fw demo`` computes metrics.json; empty/None when there is none."""
    from monst3r_fw_eval.metrics import align_trajectory, evaluate
    from monst3r_fw_eval.synth import load_scene

    scene_dir = find_ground_truth(data.source)
    if scene_dir is None:
        return {}, None, None
    scene = load_scene(scene_dir)
    ids = np.asarray(data.frame_index, np.int64)
    if ids.max(initial=-1) >= scene.n_frames:
        return {}, None, None
    gt = np.asarray(scene.cam_to_world, np.float64)[ids]
    depth = np.stack([np.asarray(data.depth[i], np.float32) for i in range(len(ids))])
    metrics = evaluate(data.world_from_cam, depth, scene, frame_ids=ids)
    path_length = float(np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1).sum())
    metrics["path_length"] = path_length
    if "ate" in metrics and path_length > 0:
        metrics["ate_percent_of_path"] = 100.0 * float(metrics["ate"]) / path_length
    aligned, _ = align_trajectory(data.world_from_cam, gt, "sim3")
    return metrics, gt, aligned


# ---------------------------------------------------------------------------------------- HTML

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%;border:1px solid #eee}
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}.row{display:flex;gap:1em;flex-wrap:wrap}
.row img{max-width:49%}"""

_METRIC_KEYS = [("ate", "ATE"), ("ate_percent_of_path", "ATE % of path"), ("rpe_trans", "RPE trans"),
                ("rpe_rot", "RPE rot (deg)"), ("abs_rel", "Abs Rel"), ("delta_1.25", "δ<1.25"),
                ("path_length", "GT path length")]


def _img(png: Path, alt: str) -> str:
    blob = base64.b64encode(png.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{blob}">'


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:  # type: ignore[assignment]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if j in numeric else ""}>{html.escape(c)}</td>'
                                    for j, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out: Path, data: ReportInputs, cfg: ReportConfig) -> Path:
    """Write the PNGs and report.html into ``out``; returns the HTML's path."""
    out.mkdir(parents=True, exist_ok=True)
    notes = list(data.notes)
    metrics: dict[str, Any] = {}
    metrics_from = ""
    gt = aligned = None
    metrics_file = data.run_dir / "metrics.json"
    if cfg.metrics:
        try:
            metrics, gt, aligned = ground_truth_metrics(data)
            metrics_from = "computed against the scene's gt.npz" if metrics else ""
        except Exception as exc:  # a report must not fail a run over metrics
            notes.append(f"metrics: not computed ({type(exc).__name__}: {exc})")
    if metrics_file.is_file():
        try:
            metrics = json.loads(metrics_file.read_text())
            metrics_from = f"{metrics_file.name} of the run folder"
        except (OSError, ValueError):
            notes.append(f"metrics: {metrics_file} unreadable")
    if not metrics:
        notes.append("metrics: no ground truth found for the input (needs a synthetic scene folder with gt.npz, "
                     "or metrics.json in the run folder)")
    plot_poses = data
    if aligned is not None:
        plot_poses = ReportInputs(**{**data.__dict__, "world_from_cam": aligned})
    _trajectory_figure(out / "trajectory_top.png", "top", plot_poses, gt, cfg)
    _trajectory_figure(out / "trajectory_side.png", "side", plot_poses, gt, cfg)
    sampled = _montage_figure(out / "montage.png", data, cfg)
    history = None if data.loss_history is None else np.asarray(data.loss_history, np.float64)
    if history is not None and history.ndim == 2 and history.shape[0] > 0:
        _loss_figure(out / "losses.png", history, data.loss_names, cfg)
    else:
        notes.append(f"loss curves: none ({'the global aligner did not run' if data.shown != 'global_aligner' else 'the aligner stored no loss history'})")
    if data.stages:
        _timing_figure(out / "timings.png", data.stages, cfg)
    if metrics:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))

    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>monst3r-fw report {html.escape(data.run_id)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Run {html.escape(data.run_id)}</h1>",
             f"<p>{len(data.world_from_cam)} frames at {data.rgb.shape[2]}×{data.rgb.shape[1]} from "
             f"<code>{html.escape(data.source)}</code>; poses and depth shown are the <b>{html.escape(data.shown)}</b> outputs.</p>"]
    if metrics:
        rows = [[label, f"{float(metrics[k]):.4f}"] for k, label in _METRIC_KEYS if isinstance(metrics.get(k), (int, float))]
        parts += [f"<h2>Metrics</h2><p>From {html.escape(metrics_from)}; poses Sim(3)-aligned "
                  f"({html.escape(str(metrics.get('pose_alignment', 'sim3')))}), depth aligned by "
                  f"{html.escape(str(metrics.get('depth_alignment', 'median')))}.</p>", _table(["metric", "value"], rows, {1})]
    parts += ["<h2>Camera trajectory</h2><div class=row>", _img(out / "trajectory_top.png", "trajectory top view"),
              _img(out / "trajectory_side.png", "trajectory side view"), "</div>",
              f"<h2>Frames, depth, confidence, dynamic mask</h2><p>frames {', '.join(map(str, sampled))}</p>",
              _img(out / "montage.png", "montage")]
    if (out / "losses.png").exists():
        parts += ["<h2>Global aligner losses</h2>", _img(out / "losses.png", "loss curves")]
    if data.stages:
        rows = [[str(s.get("label") or s.get("kind")), str(s.get("type", "")), str(s.get("key", "")),
                 "cached" if s.get("cached") else ("resumed" if s.get("resumed") else "computed"),
                 f"{float(s.get('seconds', 0.0)):.2f}"] for s in data.stages]
        hits = sum(1 for s in data.stages if s.get("cached"))
        parts += [f"<h2>Stages</h2><p>{hits} of {len(data.stages)} reused from the store; "
                  f"total {sum(float(s.get('seconds', 0.0)) for s in data.stages):.2f} s.</p>",
                  _table(["stage", "type", "key", "status", "seconds"], rows, {4}), _img(out / "timings.png", "timings")]
    if notes:
        parts += ["<h2>Skipped</h2><ul>", *(f"<li>{html.escape(n)}</li>" for n in notes), "</ul>"]
    if data.recipe_text:
        parts += ["<h2>Resolved recipe</h2>", f"<pre>{html.escape(data.recipe_text)}</pre>"]
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path


# ---------------------------------------------------------------------------------------- stage


def _recipe_text(run_dir: Path, recipe: Any) -> str:
    resolved = run_dir / "recipe.resolved.yaml"
    if resolved.is_file():
        return resolved.read_text()
    if recipe:
        import yaml

        return yaml.safe_dump(recipe, sort_keys=False)
    return ""


class ReportExporter(AtomicExporter):
    """report.html (figures embedded) + PNGs: trajectory, montage, losses, timings, metrics, recipe."""

    name = "report"
    config_model = ReportConfig
    config: ReportConfig

    def write(self, inputs: ExportInputs, scene: SceneArrays, out: Path, ctx: RunContext) -> None:
        info = inputs.run_info or {}
        run_dir = Path(inputs.out_dir).parent
        dynamic_frames(inputs, scene, f"exporter {self.name}")  # checks the masks' shape
        rec = inputs.reconstruction
        # lazy: the montage reads its few sampled frames only (a long video's masks stay in the store)
        dyn = inputs.masks.dynamic if inputs.masks is not None else rec.dynamic
        stages = [dict(s) for s in info.get("stages", [])] or \
            [{"label": k, "seconds": v, "cached": False} for k, v in (info.get("timings") or {}).items()]
        keys = info.get("keys") or {}
        data = ReportInputs(
            run_dir=run_dir, world_from_cam=np.asarray(rec.world_from_cam, np.float64),
            intrinsics=np.asarray(rec.intrinsics, np.float64), rgb=inputs.frames.rgb, depth=rec.depth, conf=rec.conf,
            dynamic=dyn, frame_index=np.asarray(inputs.frames.frame_index, np.int64), source=inputs.frames.source,
            shown="pose_solver" if keys.get("global_aligner") == "disabled" else "global_aligner",
            loss_history=None if rec.loss_history is None else np.asarray(rec.loss_history),
            loss_names=tuple(rec.loss_names), stages=stages, recipe_text=_recipe_text(run_dir, info.get("recipe")),
            run_id=str(info.get("run_id", "")))
        write_report(out, data, self.config)


def report_from_run_dir(run_dir: Path, out: Optional[Path] = None, config: Optional[ReportConfig] = None) -> Path:
    """Make the report of a run folder from its store (the aligner's outputs, or the initial poses
    when it has not finished); written atomically to ``out`` (default ``RUN_DIR/report``)."""
    import os
    import shutil
    import uuid

    from .run_data import RunData

    run = RunData(Path(run_dir))
    if run.recon is not None:
        depth, conf = run.recon.depth, run.recon.conf
        dyn = run.masks.dynamic if run.masks is not None else run.recon.dynamic
    elif run.cameras is not None:
        depth, conf = run.cameras.depth, run.cameras.conf
        dyn = run.masks.dynamic if run.masks is not None else np.zeros((run.n_frames,) + run.size_hw, bool)
    else:
        from monst3r_framework.errors import StoreError

        raise StoreError(f"run {run_dir}: no cameras yet (only {run.shown} outputs); the report needs the pose "
                         "solver's or the aligner's outputs: wait for the run or rerun it")
    notes = [] if run.shown == "global_aligner" else [f"shown: {run.label}"]
    stages = [dict(s) for s in run.status_json.get("stages") or []]
    data = ReportInputs(
        run_dir=run.run_dir, world_from_cam=run.world_from_cam, intrinsics=run.intrinsics, rgb=run.frames.rgb,
        depth=depth, conf=conf, dynamic=dyn, frame_index=np.asarray(run.frames.frame_index, np.int64),
        source=run.frames.source, shown=run.shown,
        loss_history=None if run.recon is None or run.recon.loss_history is None else np.asarray(run.recon.loss_history),
        loss_names=tuple(run.recon.loss_names) if run.recon is not None else (), stages=stages,
        recipe_text=_recipe_text(run.run_dir, None), run_id=run.run_id, notes=notes)
    target = Path(out) if out is not None else run.run_dir / "report"
    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        write_report(staging, data, config or ReportConfig())
        if target.exists():
            marker_ok = (target / "report.html").exists()
            if not marker_ok:
                from monst3r_framework.errors import InputError

                raise InputError(f"{target} exists and holds no report.html; pass --out to write the report elsewhere")
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / "report.html"


STAGES = (ReportExporter,)
