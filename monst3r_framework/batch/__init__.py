"""Batches of videos: manifest, per-video worker, local and Ray backends (docs/batch.md)."""

from __future__ import annotations

from .engine import EXIT_PARTIAL, BatchReport, batch_table, run_batch
from .manifest import BatchItem, read_manifest
from .worker import BatchSettings, run_item

__all__ = ["EXIT_PARTIAL", "BatchItem", "BatchReport", "BatchSettings", "batch_table", "read_manifest", "run_batch",
           "run_item"]
