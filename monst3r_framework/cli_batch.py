"""``monst3r-fw batch RECIPE MANIFEST --out OUT``: many videos, locally or on a Ray cluster.

Exit codes: 0 every video complete, 3 some failed (see the table and OUT/batch.json), 2 bad
arguments or manifest, 130 interrupted (rerun the same command to continue).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("batch")
    def batch_cmd(
        recipe: Annotated[str, typer.Argument(help="Recipe YAML run on every video, e.g. recipes/classical.yaml.")],
        manifest: Annotated[str, typer.Argument(help="Folder of videos / frame folders, a quoted glob, or a .jsonl/.csv of rows {id, input, gt?, set?}.")],
        out: Annotated[str, typer.Option("--out", "-o", help="Output: OUT/<id>/ per video, OUT/batch.json. A folder or an fsspec URL (s3://bucket/prefix).")],
        backend: Annotated[str, typer.Option(help="local (one video after another in this process) or ray.")] = "local",
        address: Annotated[Optional[str], typer.Option(help="Ray cluster address (ray://host:10001 or auto); default: a local Ray instance sized to this machine.")] = None,
        gpus_per_video: Annotated[float, typer.Option(min=0, help="GPUs each Ray task reserves (fractions share a GPU, e.g. 0.5).")] = 0.0,
        cpus_per_video: Annotated[float, typer.Option(min=0, help="CPUs each Ray task reserves.")] = 1.0,
        max_retries: Annotated[int, typer.Option(min=0, help="Ray: reruns of a video whose worker process died.")] = 2,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="Recipe override for every video (repeatable); manifest rows may add their own.")] = None,
        num_frames: Annotated[Optional[int], typer.Option(help="Keep at most N frames of every video.")] = None,
        stride: Annotated[Optional[int], typer.Option(help="Keep every k-th frame.")] = None,
        fps: Annotated[Optional[float], typer.Option(help="Resample every video to this frame rate first.")] = None,
        device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda (default: the recipe's).")] = None,
        metrics: Annotated[bool, typer.Option("--metrics/--no-metrics", help="Evaluate rows that name a gt.")] = True,
    ) -> None:
        """Run a recipe on many videos: resumable, failures recorded, one table at the end."""
        from .batch import default_evaluator
        from .batch.engine import batch_table, run_batch
        from .batch.location import normalise
        from .batch.manifest import read_manifest
        from .batch.worker import BatchSettings
        from .cli import _overrides, console, out_console
        from .errors import InputError
        from .recipe import load_recipe

        if backend not in ("local", "ray"):
            raise InputError(f"--backend {backend!r}: choose local or ray")
        if backend == "ray":
            from .batch.ray_backend import import_ray

            import_ray()
        items = read_manifest(manifest)
        overrides = _overrides(set_, **{"input.num_frames": num_frames, "input.stride": stride, "input.fps": fps})
        load_recipe(recipe, overrides=list(overrides))  # a bad recipe or override stops here, before any video
        out = normalise(out)
        if "://" not in out:
            out = os.path.abspath(out)  # Ray workers need paths that do not depend on their cwd
        if Path(recipe).is_file():
            recipe = os.path.abspath(recipe)
        settings = BatchSettings(recipe=recipe, out=out, overrides=tuple(overrides), device=device,
                                 evaluator=default_evaluator() if metrics else None)
        report = run_batch(items, settings, backend=backend, address=address, gpus_per_video=gpus_per_video,
                           cpus_per_video=cpus_per_video, max_retries=max_retries, console=console)
        # Files and pipes get the whole table; a narrow terminal gets it without per-stage seconds
        # (those are in OUT/batch.json either way).
        width = out_console.width if out_console.is_terminal else 200
        out_console.print(batch_table(report, stage_columns=width >= 150), width=width)
        for row in report.failed:
            out_console.print(f"[red]failed[/red] {row['id']}: {row['error']}", soft_wrap=True, highlight=False)
        out_console.print(f"wrote {settings.out.rstrip('/')}/batch.json")
        if report.interrupted:
            console.print("interrupted: finished videos are recorded and their stages kept; rerun the same command "
                          "to continue")
        if report.exit_code:
            sys.exit(report.exit_code)
