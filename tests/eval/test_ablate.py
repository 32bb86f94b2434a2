"""`monst3r-fw ablate`: several recipes on one input share one store; the table has metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monst3r_framework.cli import main
from monst3r_fw_eval.synth import make_scene

pytestmark = pytest.mark.slow  # several end-to-end runs

HERE = Path(__file__).resolve().parents[1] / "core"  # toy.yaml and toy_plugin.py


def test_ablate_reuses_common_stages_and_reports_metrics(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(HERE))
    scene = tmp_path / "scene"
    make_scene(n_frames=5, size_hw=(64, 96), seed=1, n_objects=1).save(scene)
    variant = tmp_path / "toy_offset.yaml"
    variant.write_text(f"extends: {HERE / 'toy.yaml'}\ninput: {{long_edge: 96}}\n"
                       "stages:\n  global_aligner: {offset: 1.0}\n")
    base = tmp_path / "toy_base.yaml"
    base.write_text(f"extends: {HERE / 'toy.yaml'}\ninput: {{long_edge: 96}}\n")
    monkeypatch.setenv("COLUMNS", "200")
    main(["ablate", str(base), str(variant), "--input", str(scene), "--out", str(tmp_path / "abl")])
    out = capsys.readouterr().out
    assert "toy_base" in out and "toy_offset" in out and "Abs Rel" in out and "5/7" in out
    rows = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [r["recipe"] for r in rows] == ["toy_base", "toy_offset"]
    assert rows[0]["cached"] == []
    # only the aligner and exporter differ: frames, flow, pairs, poses and masks are reused
    assert sorted(r.split(" ")[0] for r in rows[1]["cached"]) == [
        "flow_estimator", "frames", "mask_builder", "pair_predictor", "pose_solver"]
    assert all(k in rows[1]["metrics"] for k in ("ate", "rpe_trans", "rpe_rot", "abs_rel", "delta_1.25"))
