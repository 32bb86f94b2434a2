"""``monst3r-fw synth | eval | eval-suite``: synthetic scenes, metrics of a run, a recipe over a dataset.

Import-light (``--help`` imports this): numpy and the evaluation modules load inside the commands.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from monst3r_framework.errors import InputError

_out = Console()
_err = Console(stderr=True)

_POSE_ALIGN = ("none", "se3", "sim3", "scale")
_DEPTH_ALIGN = ("median", "scale_shift", "scale_shift_l1", "monst3r_lad", "none")
# The batch evaluator (module:function), imported by name in batch workers (Ray processes too).
EVALUATOR = "monst3r_fw_eval.batch:evaluate_item"


def _parse_size(size: str) -> tuple[int, int]:
    """"512x288" (W x H) -> (H, W)."""
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {size!r}: expected WIDTHxHEIGHT, e.g. 512x288") from None
    if w < 2 or h < 2:
        raise InputError(f"--size {size!r}: width and height must be >= 2")
    return h, w


def _depth_aligns(value: str) -> tuple[str, ...]:
    aligns = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [a for a in aligns if a not in _DEPTH_ALIGN]
    if bad or not aligns:
        raise InputError(f"--depth-align {value!r}: choose from {', '.join(_DEPTH_ALIGN)} (comma-separated)")
    return aligns


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def metrics_table(rows: list[dict[str, Any]], title: str) -> Table:
    """One row per sequence: ATE, RPE trans/rot, Abs Rel and δ<1.25 for each depth alignment."""
    aligns: list[str] = []
    for r in rows:
        for a in r.get("depth", {}):
            if a not in aligns:
                aligns.append(a)
    table = Table(title=title)
    for col in ("sequence", "frames", "ATE", "RPE tr", "RPE rot°"):
        table.add_column(col, justify="left" if col == "sequence" else "right")
    short = {"median": "med", "scale_shift": "s&s", "scale_shift_l1": "s&s L1", "monst3r_lad": "LAD", "none": "raw"}
    for a in aligns:
        table.add_column(f"AbsRel {short.get(a, a)}", justify="right")
        table.add_column(f"δ<1.25 {short.get(a, a)}", justify="right")
    for r in rows:
        cells = [str(r.get("sequence", "")), str(r.get("n_frames", "")), _fmt(r.get("ate")), _fmt(r.get("rpe_trans")),
                 _fmt(r.get("rpe_rot"), 3)]
        for a in aligns:
            d = r.get("depth", {}).get(a, {})
            cells += [_fmt(d.get("abs_rel")), _fmt(d.get("delta_1.25"), 3)]
        table.add_row(*cells)
    return table


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pose metrics: mean over sequences (MonST3R); depth: pixel-weighted mean (official notebook)."""
    import numpy as np

    from .metrics import average_depth_metrics

    out: dict[str, Any] = {"sequence": "average", "n_frames": int(sum(r.get("n_frames", 0) for r in rows))}
    for key in ("ate", "rpe_trans", "rpe_rot"):
        vals = [r[key] for r in rows if r.get(key) is not None]
        if vals:
            out[key] = float(np.mean(vals))
    depth: dict[str, Any] = {}
    aligns = {a for r in rows for a in r.get("depth", {})}
    for a in sorted(aligns):
        per = [r["depth"][a] for r in rows if a in r.get("depth", {})]
        try:
            depth[a] = average_depth_metrics(per)
        except InputError:
            continue
    if depth:
        out["depth"] = depth
        first = next((r["depth_alignment"] for r in rows if "depth_alignment" in r), None)
        if first in depth:
            out["abs_rel"], out["delta_1.25"] = depth[first]["abs_rel"], depth[first]["delta_1.25"]
            out["depth_alignment"] = first
    if rows and "pose_alignment" in rows[0]:
        out["pose_alignment"] = rows[0]["pose_alignment"]
    return out


def register(app: typer.Typer) -> None:
    """Add ``synth``, ``eval`` and ``eval-suite`` to the main ``monst3r-fw`` app."""

    @app.command("synth")
    def synth_cmd(
        out: Annotated[Path, typer.Argument(help="Output folder: frames/, video.mp4, gt.npz.")],
        frames: Annotated[int, typer.Option("--frames", min=1, help="Number of frames.")] = 60,
        size: Annotated[str, typer.Option("--size", help="WIDTHxHEIGHT.")] = "512x288",
        seed: Annotated[int, typer.Option("--seed", help="Seed of textures, camera path and objects.")] = 0,
        objects: Annotated[int, typer.Option("--objects", min=0, max=3, help="Moving objects (0 = static scene).")] = 1,
        fps: Annotated[float, typer.Option("--fps", min=0.1, help="Frame rate of the path and video.")] = 10.0,
        supersample: Annotated[int, typer.Option("--supersample", min=1, max=4, help="Anti-aliasing rays per pixel side.")] = 2,
        no_video: Annotated[bool, typer.Option("--no-video", help="Skip video.mp4.")] = False,
    ) -> None:
        """Render a synthetic dynamic scene with exact ground truth (docs/synthetic.md)."""
        from .synth import make_scene

        h, w = _parse_size(size)
        start = time.perf_counter()
        scene = make_scene(n_frames=frames, size_hw=(h, w), seed=seed, n_objects=objects, fps=fps,
                           supersample=supersample)
        rendered = time.perf_counter()
        scene.save(out, video=not no_video)
        frac = scene.dynamic_mask.mean(axis=(1, 2))
        _out.print(f"wrote {out}: {frames} frames {w}x{h}, {objects} moving object(s) covering "
                   f"{100 * frac.min():.1f}-{100 * frac.max():.1f}% of the image; render {rendered - start:.1f} s, "
                   f"save {time.perf_counter() - rendered:.1f} s")

    @app.command("eval")
    def eval_cmd(
        run_dir: Annotated[Path, typer.Argument(help="A run's OUT folder (store or monst3r_layout export).")],
        gt: Annotated[Path, typer.Option("--gt", help="Ground truth: dataset root or sequence folder.")],
        dataset: Annotated[str, typer.Option("--dataset", help="sintel, bonn, tum, kitti, scannet, davis, synthetic.")] = "synthetic",
        seq: Annotated[Optional[str], typer.Option("--seq", help="Sequence name under --gt (default: --gt is the sequence).")] = None,
        pose_align: Annotated[str, typer.Option("--pose-align", help="none, se3, sim3 (MonST3R) or scale.")] = "sim3",
        depth_align: Annotated[str, typer.Option("--depth-align", help="Comma-separated: median, scale_shift, scale_shift_l1, monst3r_lad, none.")] = "median,scale_shift",
    ) -> None:
        """Depth and pose metrics of a run; prints a table and writes RUN_DIR/metrics.json."""
        from monst3r_framework.store import jsonable as _jsonable

        from .evaluate import evaluate_run

        if pose_align not in _POSE_ALIGN:
            raise InputError(f"--pose-align {pose_align!r}: choose from {', '.join(_POSE_ALIGN)}")
        res = evaluate_run(run_dir, gt, dataset=dataset, seq=seq, pose_align=pose_align,
                           depth_align=_depth_aligns(depth_align))
        (Path(run_dir) / "metrics.json").write_text(json.dumps(_jsonable(res), indent=1, allow_nan=False))
        if "ate" in res or "abs_rel" in res:
            _out.print(metrics_table([res], f"{dataset}: {res['sequence']} (poses: {pose_align} aligned)"))
        if "masks" in res:
            m = res["masks"]
            _out.print(f"{dataset}: {res['sequence']} dynamic masks over {len(m['J_per_frame'])} frames at the "
                       f"original resolution: IoU (J) {m['J_mean']:.4f}  F {m['F_mean']:.4f}  J&F {m['JF_mean']:.4f}  "
                       f"(all-frames IoU {m['iou_all']:.4f})", soft_wrap=True)
        _out.print(f"wrote {Path(run_dir) / 'metrics.json'}")

    @app.command("eval-suite")
    def eval_suite_cmd(
        recipe: Annotated[str, typer.Argument(help="Recipe run on every sequence: a YAML path or a name (classical, paper).")],
        dataset: Annotated[str, typer.Option("--dataset", help="sintel, bonn, tum, kitti, scannet, davis, synthetic.")],
        gt: Annotated[Path, typer.Option("--gt", help="Dataset root.")],
        out: Annotated[Path, typer.Option("--out", help="Output folder: OUT/<sequence>/ per run, OUT/metrics.json, OUT/batch.json.")],
        seq: Annotated[Optional[list[str]], typer.Option("--seq", help="Only these sequences (repeatable).")] = None,
        overrides: Annotated[Optional[list[str]], typer.Option("--set", help="Recipe override key=value (repeatable).")] = None,
        max_sequences: Annotated[Optional[int], typer.Option("--max-sequences", min=1, help="Stop after this many.")] = None,
        pose_align: Annotated[str, typer.Option("--pose-align", help="none, se3, sim3 or scale.")] = "sim3",
        depth_align: Annotated[str, typer.Option("--depth-align", help="Comma-separated depth alignments.")] = "median,scale_shift",
        backend: Annotated[str, typer.Option(help="local (one sequence after another in this process) or ray (docs/batch.md).")] = "local",
        address: Annotated[Optional[str], typer.Option(help="Ray cluster address (auto, HOST:6379, ray://HEAD:10001); default: a local Ray instance.")] = None,
        gpus_per_video: Annotated[float, typer.Option(min=0, help="GPUs each sequence reserves with --backend ray (fractions share a GPU).")] = 0.0,
        cpus_per_video: Annotated[float, typer.Option(min=0, help="CPUs each sequence reserves with --backend ray.")] = 1.0,
        max_retries: Annotated[int, typer.Option(min=0, help="Ray: reruns of a sequence whose worker process died.")] = 2,
        device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda (default: the recipe's).")] = None,
    ) -> None:
        """Run a recipe over a dataset's sequences on the batch machinery (`monst3r-fw batch`: local or Ray,
        resumable) and tabulate the metrics: OUT/metrics.json, OUT/<sequence>/metrics.json, OUT/batch.json.
        Exit code 3 when a sequence failed (listed below the table and in metrics.json)."""
        import os
        import re
        import sys

        from monst3r_framework.batch import EXIT_PARTIAL, BatchItem, BatchSettings, run_batch
        from monst3r_framework.recipe import load_recipe
        from monst3r_framework.store import jsonable as _jsonable

        from .datasets import list_sequences, read_sequence

        if pose_align not in _POSE_ALIGN:
            raise InputError(f"--pose-align {pose_align!r}: choose from {', '.join(_POSE_ALIGN)}")
        if backend not in ("local", "ray"):
            raise InputError(f"--backend {backend!r}: choose local or ray")
        aligns = _depth_aligns(depth_align)
        if backend == "ray":
            from monst3r_framework.batch.ray_backend import import_ray

            import_ray()  # says how to install Ray before anything runs
        load_recipe(recipe, overrides=list(overrides or []))  # a bad recipe or override stops here
        names = list(seq) if seq else list_sequences(dataset, gt)
        if not names:
            raise InputError(f"eval-suite: no {dataset} sequences under {gt}; check --gt and --dataset")
        names = names[:max_sequences] if max_sequences else names
        out = Path(os.path.abspath(out))  # Ray workers need paths that do not depend on their cwd
        out.mkdir(parents=True, exist_ok=True)
        items: list[Any] = []
        for name in names:
            sequence = read_sequence(dataset, gt, name or None)
            label = re.sub(r"[^A-Za-z0-9._-]+", "_", name or sequence.name or "sequence").strip("._-") or "sequence"
            frames_in = _input_folder(sequence, out / label)
            items.append(BatchItem(id=label, input=os.path.abspath(frames_in), gt=os.path.abspath(gt), dataset=dataset,
                                   seq=name or None))
        settings = BatchSettings(recipe=os.path.abspath(recipe) if Path(recipe).is_file() else recipe, out=str(out),
                                 overrides=tuple(overrides or ()), device=device, evaluator=EVALUATOR,
                                 evaluator_options={"pose_align": pose_align, "depth_align": list(aligns), "full": True})
        report = run_batch(items, settings, backend=backend, address=address, gpus_per_video=gpus_per_video,
                           cpus_per_video=cpus_per_video, max_retries=max_retries, console=_err)
        rows = [r["metrics"] for r in report.rows if r["status"] == "complete" and r.get("metrics")]
        failed = [{"sequence": r["id"], "error": r.get("error") or r.get("metrics_error") or "no metrics"}
                  for r in report.rows if r["status"] != "complete" or not r.get("metrics")]
        summary = _summarise(rows)
        (out / "metrics.json").write_text(json.dumps(_jsonable({"dataset": dataset, "recipe": str(recipe),
                                                                "average": summary, "sequences": rows,
                                                                "failed": failed, "batch": str(out / "batch.json")}),
                                                     indent=1, allow_nan=False))
        _out.print(metrics_table(rows + [summary], f"{dataset} with {Path(recipe).name} (poses: {pose_align} aligned)"))
        for f in failed:
            _out.print(f"failed {f['sequence']}: {f['error']}", soft_wrap=True, highlight=False, markup=False)
        _out.print(f"wrote {out / 'metrics.json'} ({len(rows)} of {len(items)} sequences; "
                   f"per-stage seconds in {out / 'batch.json'})", soft_wrap=True, highlight=False)
        if report.interrupted:
            _err.print("interrupted: finished sequences are recorded and their stages kept; rerun the same command "
                       "to continue")
            sys.exit(report.exit_code)
        if failed:
            sys.exit(EXIT_PARTIAL)  # as `monst3r-fw batch`: some sequences failed, the others are in the table


def _input_folder(sequence: Any, run_out: Path) -> Path:
    """A folder holding exactly the sequence's frames, in order: the frames' own folder when it has
    nothing else, else ``run_out/input_frames`` with numbered links (e.g. Bonn's on-the-fly subset)."""
    paths = [Path(p) for p in sequence.rgb_paths]
    folder = paths[0].parent
    exts = {".png", ".jpg", ".jpeg"}
    if all(p.parent == folder for p in paths):
        present = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts)
        if present == sorted(paths) and sorted(paths) == paths:
            return folder
    link_dir = run_out / "input_frames"
    link_dir.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(paths):
        target = link_dir / f"frame_{i:05d}{p.suffix.lower()}"
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(p.resolve())
    return link_dir
