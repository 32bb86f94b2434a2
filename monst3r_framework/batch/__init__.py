"""Batches of videos: manifest, per-video worker, local and Ray backends (docs/batch.md)."""

from __future__ import annotations

from .engine import EXIT_PARTIAL, BatchReport, batch_table, run_batch
from .manifest import BatchItem, read_manifest
from .worker import BatchSettings, run_item

# The evaluator `monst3r-fw batch` uses for rows with ground truth: "module:function", set by the
# package that provides evaluation when it registers its CLI verbs (the core names none; Ray
# workers import it by this name). Empty: batch rows carry no metrics.
_DEFAULT_EVALUATOR: list[str] = []


def set_default_evaluator(spec: str) -> None:
    """Name the function (``"module:function"``, called as ``function(result, item, **options)``) that
    computes a batch row's metrics; an evaluation package calls this when it registers its verbs."""
    _DEFAULT_EVALUATOR[:] = [spec]


def default_evaluator() -> str | None:
    return _DEFAULT_EVALUATOR[0] if _DEFAULT_EVALUATOR else None


__all__ = ["default_evaluator", "set_default_evaluator", "EXIT_PARTIAL", "BatchItem", "BatchReport", "BatchSettings", "batch_table", "read_manifest", "run_batch",
           "run_item"]
