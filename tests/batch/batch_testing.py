"""Constants and helpers shared by the batch tests."""

from __future__ import annotations

import json
from pathlib import Path

# Small enough for 2 busy cores: 5 frames at 64x48, 20 aligner iterations, one exporter.
OVERRIDES = ["input.long_edge=64", "stages.global_aligner.iterations=20", "stages.global_aligner.threads=1",
             "stages.exporters=[{type: tum}]"]
RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "classical.yaml")


def read_batch(out: Path) -> dict:
    return json.loads((out / "batch.json").read_text())
