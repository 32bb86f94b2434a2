"""Reference exporter stages (kind ``exporter``). File layouts of each: docs/exporters.md.

Every exporter writes into the folder it is given; the runner gives a hidden staging folder and
renames it into place only when complete (``monst3r_framework.runner.publish_export``).
"""

from __future__ import annotations

from .colmap import ColmapConfig, ColmapExporter
from .images import DepthPng16Config, DepthPng16Exporter, MaskPngConfig, MaskPngExporter
from .monst3r_layout import Monst3rLayoutConfig, Monst3rLayoutExporter, TumConfig, TumExporter
from .nerfstudio import NerfstudioConfig, NerfstudioExporter
from .pointcloud import GlbConfig, GlbExporter, PlyConfig, PlyExporter
from .summary import SummaryConfig, SummaryExporter

__all__ = [
    "ColmapConfig", "ColmapExporter", "DepthPng16Config", "DepthPng16Exporter", "GlbConfig", "GlbExporter",
    "MaskPngConfig", "MaskPngExporter", "Monst3rLayoutConfig", "Monst3rLayoutExporter", "NerfstudioConfig",
    "NerfstudioExporter", "PlyConfig", "PlyExporter", "SummaryConfig", "SummaryExporter", "TumConfig", "TumExporter",
]

STAGES = (
    Monst3rLayoutExporter, TumExporter, GlbExporter, PlyExporter, ColmapExporter, NerfstudioExporter,
    DepthPng16Exporter, MaskPngExporter, SummaryExporter,
)
