"""``monst3r-fw demo`` and ``monst3r-fw ablate``: the weight-free main job and recipe comparisons."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from monst3r_framework.errors import InputError


def resolve_scene_input(scene_or_input: Path) -> tuple[Path, Optional[Path]]:
    """A synthetic scene folder (holds gt.npz) -> (its frames folder, the scene); else (input, None)."""
    if scene_or_input.is_dir() and (scene_or_input / "gt.npz").exists():
        frames = scene_or_input / "frames"
        return (frames if frames.is_dir() else scene_or_input / "video.mp4"), scene_or_input
    return scene_or_input, None


def evaluate_against(result: Any, gt_path: Path) -> dict[str, Any]:
    """Metrics of a run (a ``RunResult``) against a ground-truth folder in the synthetic layout."""
    import numpy as np

    from .metrics import evaluate
    from .synth import load_scene

    scene = load_scene(gt_path)
    rec, frames = result.reconstruction, result.frames
    metrics = evaluate(np.asarray(rec.world_from_cam), np.asarray(rec.depth), scene,
                       frame_ids=np.asarray(frames.frame_index))
    centres = np.asarray(scene.cam_to_world)[np.asarray(frames.frame_index), :3, 3]
    path_length = float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum())
    metrics["path_length"] = path_length
    if "ate" in metrics and path_length > 0:
        metrics["ate_percent_of_path"] = 100.0 * float(metrics["ate"]) / path_length
    return metrics


def _metrics_row(metrics: dict[str, Any]) -> list[str]:
    def fmt(key: str, scale: float = 1.0, digits: int = 4) -> str:
        value = metrics.get(key)
        return "-" if value is None else f"{float(value) * scale:.{digits}f}"

    return [fmt("ate"), fmt("ate_percent_of_path", 1.0, 2), fmt("rpe_trans"), fmt("rpe_rot", 1.0, 3),
            fmt("abs_rel"), fmt("delta_1.25", 1.0, 3)]


METRIC_COLUMNS = ["ATE", "ATE % path", "RPE trans", "RPE rot (deg)", "Abs Rel", "δ<1.25"]


def register(app: typer.Typer) -> None:
    from monst3r_framework.cli import _log, out_console, rich_progress, timing_table

    @app.command()
    def demo(
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("demo_out"),
        frames: Annotated[int, typer.Option(help="Frames in the synthetic scene.")] = 20,
        size: Annotated[str, typer.Option(help="WxH of the synthetic scene (multiples of 16); the network runs at this size.")] = "256x144",
        seed: Annotated[int, typer.Option(help="Scene seed.")] = 0,
        objects: Annotated[int, typer.Option(help="Independently moving objects (0-3).")] = 1,
        recipe: Annotated[str, typer.Option(help="Recipe name or file to run.")] = "classical",
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="Recipe overrides.")] = None,
    ) -> None:
        """Synthesise a dynamic scene, run the weight-free classical recipe on it, and evaluate it."""
        from monst3r_framework.catalog import resolve_recipe
        from monst3r_framework.runner import run_pipeline

        from .synth import make_scene

        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise InputError(f"--size {size!r}: expected WxH, e.g. 512x288") from None
        recipe_path = resolve_recipe(recipe)
        start = time.perf_counter()
        scene_dir = out / "scene"
        if not (scene_dir / "gt.npz").exists():
            make_scene(n_frames=frames, size_hw=(h, w), seed=seed, n_objects=objects).save(scene_dir)
        synth_s = time.perf_counter() - start
        out_console.print(f"synthetic scene: {scene_dir} ({frames} frames, {w}x{h}, {synth_s:.1f} s)")
        overrides = [f"input.long_edge={max(w, h)}", *(set_ or [])]
        with rich_progress() as factory:
            result = run_pipeline(recipe_path, scene_dir / "frames", out / "run", overrides=overrides,
                                  progress_factory=factory, log=_log)
        out_console.print(timing_table(result.reports, title=f"{recipe_path.name} on the synthetic scene"))
        metrics = evaluate_against(result, scene_dir)
        (out / "run" / "metrics.json").write_text(json.dumps(metrics, indent=2))
        table = Table(title="accuracy against the synthetic ground truth")
        for col in METRIC_COLUMNS:
            table.add_column(col, justify="right")
        table.add_row(*_metrics_row(metrics))
        out_console.print(table)
        out_console.print(f"outputs: {out / 'run'} (exports in its subfolders; metrics.json; store.zarr)  "
                          f"total {time.perf_counter() - start:.1f} s")
        report = out / "run" / "report" / "report.html"
        if report.exists():
            out_console.print(f"report: {report}  (look at it: `monst3r-fw view {out / 'run'}` opens the 4D viewer)")

    @app.command()
    def ablate(
        recipes: Annotated[list[Path], typer.Argument(help="Base recipe first, then the ablations.")],
        input: Annotated[Path, typer.Option("--input", help="Video, image folder, or a synthetic scene folder (with gt.npz).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (one subfolder per recipe).")] = Path("ablation_out"),
        gt: Annotated[Optional[Path], typer.Option(help="Ground truth (synthetic layout); default: the scene folder.")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="Overrides applied to every recipe.")] = None,
    ) -> None:
        """Run several recipes on one input sharing one store (common stages computed once) and compare them."""
        from monst3r_framework.runner import run_pipeline

        source, scene = resolve_scene_input(input)
        gt_path = gt or scene
        store = str(out / "store.zarr")
        rows = []
        for recipe_path in recipes:
            name = recipe_path.stem
            start = time.perf_counter()
            with rich_progress() as factory:
                result = run_pipeline(recipe_path, source, out / name, overrides=list(set_ or []), store=store,
                                      progress_factory=factory, log=_log)
            seconds = time.perf_counter() - start
            metrics = evaluate_against(result, gt_path) if gt_path is not None else {}
            if metrics:
                (out / name / "metrics.json").write_text(json.dumps(metrics, indent=2))
            rows.append({"recipe": name, "seconds": seconds, "metrics": metrics,
                         "cached": [r.label for r in result.reports if r.cached],
                         "computed": [r.label for r in result.reports if not r.cached],
                         "stage_seconds": {r.label: r.seconds for r in result.reports}})
        table = Table(title=f"ablation on {input}")
        table.add_column("recipe", no_wrap=True)
        if gt_path is not None:
            for col in METRIC_COLUMNS:
                table.add_column(col, justify="right")
        table.add_column("seconds", justify="right")
        table.add_column("reused stages")
        for row in rows:
            cells = [row["recipe"]] + (_metrics_row(row["metrics"]) if gt_path is not None else [])
            cells += [f"{row['seconds']:.1f}", f"{len(row['cached'])}/{len(row['cached']) + len(row['computed'])}"]
            table.add_row(*cells)
        out_console.print(table)
        (out / "ablation.json").write_text(json.dumps(rows, indent=2, default=float))
        out_console.print(f"table and per-recipe outputs: {out}")
