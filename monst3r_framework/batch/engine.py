"""Run a batch: schedule the videos on a backend, show progress, keep ``OUT/batch.json`` current.

Backends (docs/batch.md):

* ``local``: videos one after another in this process (:func:`run_item` directly);
* ``ray``: one Ray task per video (:mod:`.ray_backend`; Ray is imported only there).

``OUT/batch.json`` is rewritten whenever a video finishes, so an interrupted batch says which
videos completed; a rerun of the same command runs every video again, and each completed one
costs only its cache lookups (every stage is reused from its store).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from .. import __version__
from . import location as loc
from .manifest import BatchItem
from .worker import BatchSettings, run_item

EXIT_PARTIAL = 3  # some videos failed, the others completed
METRIC_KEYS = (("ate", "ATE"), ("rpe_trans", "RPE tr"), ("rpe_rot", "RPE rot°"), ("abs_rel", "AbsRel"),
               ("mask_iou", "mask IoU"))


@dataclass
class BatchReport:
    """Outcome of a batch: one row per video (see :func:`run_item`), plus the batch's own facts."""

    batch_id: str
    out: str
    backend: str
    rows: list[dict[str, Any]]
    seconds: float = 0.0
    interrupted: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "failed"]

    @property
    def complete(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "complete"]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return EXIT_PARTIAL if self.failed else 0

    def means(self) -> dict[str, Any]:
        """Means over completed videos: frames, seconds per stage kind, total seconds, each metric."""
        done = self.complete
        out: dict[str, Any] = {"videos": len(done)}
        if not done:
            return out
        out["frames"] = sum(r["frames"] or 0 for r in done) / len(done)
        per_kind: dict[str, list[float]] = {}
        for r in done:
            for kind, seconds in stage_seconds(r).items():
                per_kind.setdefault(kind, []).append(seconds)
        out["stage_seconds"] = {k: sum(v) / len(v) for k, v in per_kind.items()}
        out["seconds"] = sum(r["seconds"] for r in done) / len(done)
        metrics: dict[str, float] = {}
        for key, _ in METRIC_KEYS:
            vals = [float(r["metrics"][key]) for r in done if r.get("metrics", {}).get(key) is not None]
            if vals:
                metrics[key] = sum(vals) / len(vals)
                metrics[f"{key}_videos"] = len(vals)
        out["metrics"] = metrics
        return out

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(r["status"] == s for r in self.rows) for s in ("complete", "failed", "running", "pending")}
        return {"batch_id": self.batch_id, "out": self.out, "backend": self.backend, "monst3r-fw": __version__,
                "status": "interrupted" if self.interrupted else ("running" if counts["running"] + counts["pending"]
                                                                  else ("partial" if self.failed else "complete")),
                "counts": counts, "seconds": round(self.seconds, 3), **self.info, "means": self.means(),
                "videos": self.rows}


def stage_seconds(row: dict[str, Any]) -> dict[str, float]:
    """Seconds per stage kind of one row (exporters summed)."""
    out: dict[str, float] = {}
    for st in row.get("stages", []):
        out[st["kind"]] = out.get(st["kind"], 0.0) + float(st["seconds"])
    return out


class Display:
    """One rich bar over videos plus one line per running video naming its current stage."""

    def __init__(self, total: int, console: Any = None, enabled: bool = True) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False,
                                 disable=not enabled or (console is not None and not console.is_terminal))
        self.videos = self.progress.add_task("[bold]videos", total=total)
        self.lines: dict[str, Any] = {}

    def stage(self, item_id: str, stage: str) -> None:
        if item_id not in self.lines:
            self.lines[item_id] = self.progress.add_task(f"  {item_id}", total=None)
        self.progress.update(self.lines[item_id], description=f"  {item_id}: {stage}")

    def done(self, row: dict[str, Any]) -> None:
        task = self.lines.pop(row["id"], None)
        if task is not None:
            self.progress.remove_task(task)
        self.progress.advance(self.videos)

    def __enter__(self) -> "Display":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()


def _pending_row(item: BatchItem) -> dict[str, Any]:
    return {"id": item.id, "input": item.input, "status": "pending", "error": None, "frames": None, "stages": [],
            "computed": [], "metrics": {}, "seconds": 0.0, "attempt": 0}


def run_batch(items: list[BatchItem], settings: BatchSettings, *, backend: str = "local",
              address: Optional[str] = None, gpus_per_video: float = 0.0, cpus_per_video: float = 1.0,
              max_retries: int = 2, console: Any = None, show_progress: bool = True,
              on_row: Optional[Callable[[dict[str, Any]], None]] = None) -> BatchReport:
    """Run every item, writing ``OUT/<id>/`` per video and ``OUT/batch.json``; never raises for a
    video's own failure (its row says ``failed`` with the error). KeyboardInterrupt returns a report
    with ``interrupted=True`` after recording which videos completed.
    """
    if backend not in ("local", "ray"):
        from ..errors import InputError

        raise InputError(f"--backend {backend!r}: choose local or ray")
    loc.ensure_writable(settings.out)
    batch_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    report = BatchReport(batch_id, settings.out, backend, [_pending_row(it) for it in items],
                         info={"recipe": settings.recipe, "overrides": list(settings.overrides),
                               "started": time.time(), "manifest": [it.to_dict() for it in items]})
    index = {it.id: n for n, it in enumerate(items)}
    batch_json = loc.join(settings.out, "batch.json")
    started = time.perf_counter()

    def record(row: dict[str, Any]) -> None:
        report.rows[index[row["id"]]] = row
        report.seconds = time.perf_counter() - started
        loc.write_json(batch_json, report.to_dict())
        if on_row is not None:
            on_row(row)

    def mark_running(item_id: str) -> None:
        row = report.rows[index[item_id]]
        if row["status"] == "pending":
            row["status"] = "running"

    loc.write_json(batch_json, report.to_dict())
    with Display(len(items), console, show_progress) as display:
        try:
            if backend == "local":
                for item in items:
                    mark_running(item.id)
                    display.stage(item.id, "starting")
                    row = run_item(item, settings, on_stage=lambda s, i=item.id: display.stage(i, s))
                    display.done(row)
                    record(row)
            else:
                from .ray_backend import run_on_ray

                run_on_ray(items, settings, address=address, gpus_per_video=gpus_per_video,
                           cpus_per_video=cpus_per_video, max_retries=max_retries, display=display,
                           record=lambda row: (display.done(row), record(row)), mark_running=mark_running)
        except KeyboardInterrupt:
            report.interrupted = True
            for row in report.rows:
                if row["status"] == "running":
                    row["status"] = "pending"
                    row["error"] = "interrupted; rerun the same command to continue"
    report.seconds = time.perf_counter() - started
    report.info["finished"] = time.time()
    loc.write_json(batch_json, report.to_dict())
    return report


def batch_table(report: BatchReport, stage_columns: bool = True) -> Any:
    """The final table: id, status, frames, seconds per stage (unless ``stage_columns`` is False),
    metrics where ground truth was given, and a last row of means over completed videos."""
    from rich.table import Table

    kinds = [k for k in STAGE_ORDER if stage_columns and any(k in stage_seconds(r) for r in report.rows)]
    metric_cols = [(k, name) for k, name in METRIC_KEYS if any(r.get("metrics", {}).get(k) is not None
                                                                for r in report.rows)]
    table = Table(title=f"batch {report.batch_id} ({report.backend}): {len(report.complete)} complete, "
                        f"{len(report.failed)} failed, {report.seconds:.1f} s")
    table.add_column("id")
    table.add_column("status")
    table.add_column("frames", justify="right")
    for k in kinds:
        table.add_column(f"{COLUMN_NAMES[k]} s", justify="right")
    table.add_column("total s", justify="right")
    for _, name in metric_cols:
        table.add_column(name, justify="right")

    def fmt(value: Any, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for r in report.rows:
        status = r["status"]
        if status == "complete":
            status = "cached" if not r.get("computed") else "complete"
        per = stage_seconds(r)
        cells = [r["id"], status, "-" if r.get("frames") is None else str(r["frames"])]
        cells += [fmt(per.get(k), 2) for k in kinds]
        cells.append(fmt(r.get("seconds"), 1) if r["status"] in ("complete", "failed") else "-")
        cells += [fmt(r.get("metrics", {}).get(k), 4) for k, _ in metric_cols]
        table.add_row(*cells)
    means = report.means()
    if means.get("videos"):
        cells = ["mean", f"{means['videos']} complete", f"{means['frames']:.1f}"]
        cells += [fmt(means["stage_seconds"].get(k), 2) for k in kinds]
        cells.append(fmt(means["seconds"], 1))
        cells += [fmt(means["metrics"].get(k), 4) for k, _ in metric_cols]
        table.add_row(*cells, style="bold")
    return table


STAGE_ORDER = ("frames", "flow_estimator", "pair_predictor", "pose_solver", "mask_builder", "global_aligner",
               "exporter")
COLUMN_NAMES = {"frames": "load", "flow_estimator": "flow", "pair_predictor": "pairs", "pose_solver": "pose",
                "mask_builder": "mask", "global_aligner": "align", "exporter": "export"}
