"""Evaluation: depth and camera-pose metrics (:mod:`.metrics`) and dataset readers (:mod:`.datasets`)."""

from __future__ import annotations

from .metrics import (
    ErrorStats,
    absolute_trajectory_error,
    associate_timestamps,
    depth_metrics,
    error_stats,
    evaluate,
    evaluate_poses,
    relative_pose_error,
    umeyama_alignment,
)

__all__ = [
    "ErrorStats", "absolute_trajectory_error", "associate_timestamps", "depth_metrics", "error_stats",
    "evaluate", "evaluate_poses", "relative_pose_error", "umeyama_alignment",
]
