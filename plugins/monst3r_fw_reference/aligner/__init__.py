"""MonST3R global aligner (``monst3r_ga``): parametrisation, losses, batched and windowed optimisation."""

from __future__ import annotations

from .config import MonST3RGAConfig
from .stage import MonST3RGlobalAligner

STAGES = (MonST3RGlobalAligner,)

__all__ = ["MonST3RGAConfig", "MonST3RGlobalAligner", "STAGES"]
