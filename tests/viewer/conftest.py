"""A tiny synthetic run folder (exact cameras, depth, masks; confidence uniform in [1, 5))."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_scene():
    from monst3r_fw_eval.synth import make_scene

    return make_scene(n_frames=6, size_hw=(48, 64), seed=0, n_objects=1, supersample=1)


@pytest.fixture(scope="session")
def synth_runs(tmp_path_factory, synth_scene) -> Path:
    """runs/complete (aligner finished) and runs/partial (aligner not finished, status running)."""
    from monst3r_fw_viewer.testing import write_synthetic_run

    root = tmp_path_factory.mktemp("runs")
    write_synthetic_run(root / "complete", synth_scene)
    write_synthetic_run(root / "partial", synth_scene, stages=("pose_solver", "mask_builder"), status="running",
                        run_id="partial-run")
    return root
