"""monst3r-fw: MonST3R (monocular dynamic video -> depth, poses, intrinsics, masks, 4D points) as swappable stages."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
