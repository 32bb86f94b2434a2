"""The report: figures and tables match the run's ground truth, timings and recipe; self-contained HTML."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from monst3r_framework.errors import Monst3rFWError
from monst3r_fw_viewer.report import report_from_run_dir, sample_frames


@pytest.fixture(scope="module")
def gt_run(tmp_path_factory, synth_scene):
    """A run whose input is a saved synthetic scene (gt.npz beside frames/), cameras perturbed by a
    known Sim(3) and a 1 cm drift so ATE after alignment is known."""
    import zarr

    from monst3r_fw_viewer.testing import write_synthetic_run

    root = tmp_path_factory.mktemp("gt")
    scene_dir = synth_scene.save(root / "scene", video=False)
    run = write_synthetic_run(root / "run", synth_scene)
    (run / "recipe.resolved.yaml").write_text("schema: 1\nstages:\n  global_aligner: {type: synthetic_gt}\n")
    group = zarr.open_group(str(run / "store.zarr"), mode="r+")
    frames_key = json.loads((run / "run.json").read_text())["stages"][0]["key"]
    group[f"frames/{frames_key}"].attrs["meta"] = {**group[f"frames/{frames_key}"].attrs["meta"],
                                                   "source": str(scene_dir / "frames")}
    return run


def test_report_figures_and_metrics(gt_run, synth_scene):
    html_path = report_from_run_dir(gt_run)
    out = html_path.parent
    for name in ("trajectory_top.png", "trajectory_side.png", "montage.png", "losses.png", "timings.png"):
        assert (out / name).stat().st_size > 5_000, name
    metrics = json.loads((out / "metrics.json").read_text())
    # the stored cameras are the ground truth: ATE, RPE and Abs Rel are zero
    assert metrics["ate"] < 1e-9 and metrics["rpe_rot"] < 1e-4 and metrics["abs_rel"] < 1e-6
    text = html_path.read_text()
    assert re.findall(r'src="(?!data:image/png;base64,)', text) == []  # every image embedded
    assert text.count("data:image/png;base64,") == 5
    assert "synthetic_gt" in text and "Resolved recipe" in text and "0 of 4 reused" in text
    assert f"frames {', '.join(map(str, sample_frames(6, 6)))}" in text
    assert "ATE" in text and "0.0000" in text


def test_report_metrics_json_in_run_folder_wins(gt_run):
    (gt_run / "metrics.json").write_text(json.dumps({"ate": 0.1234, "abs_rel": 0.0567, "pose_alignment": "sim3"}))
    try:
        text = report_from_run_dir(gt_run).read_text()
        assert "0.1234" in text and "0.0567" in text and "metrics.json of the run folder" in text
    finally:
        (gt_run / "metrics.json").unlink()


def test_report_of_unfinished_run_says_so(synth_runs):
    text = report_from_run_dir(synth_runs / "partial").read_text()
    assert "pose_solver" in text and "global aligner has not finished" in text
    assert "loss curves: none (the global aligner did not run)" in text


def test_report_refuses_to_replace_a_user_folder(synth_runs, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(Monst3rFWError, match="holds no report.html; pass --out"):
        report_from_run_dir(synth_runs / "complete", user)
    assert (user / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".mine.partial-*"))


def test_montage_samples_evenly():
    np.testing.assert_array_equal(sample_frames(20, 6), [0, 4, 8, 11, 15, 19])
    np.testing.assert_array_equal(sample_frames(3, 6), [0, 1, 2])
