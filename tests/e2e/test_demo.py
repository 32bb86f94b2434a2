"""`monst3r-fw demo` (README's main job) on a tiny scene: runs, evaluates, writes metrics."""

from __future__ import annotations

import json

from monst3r_framework.cli import main


def test_demo_runs_and_reports_metrics(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    main(["demo", "--out", str(tmp_path), "--frames", "6", "--size", "96x64",
          "--set", "stages.global_aligner.iterations=20", "--set", "stages.global_aligner.threads=1"])
    out = capsys.readouterr().out
    assert "ATE" in out and "Abs Rel" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("ate", "rpe_trans", "rpe_rot", "abs_rel", "delta_1.25", "ate_percent_of_path"):
        assert key in metrics and metrics[key] == metrics[key]  # present and not NaN
    assert 0 < metrics["delta_1.25"] <= 1
    assert (tmp_path / "run" / "monst3r_layout" / "pred_traj.txt").exists()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "complete"
    # the report exporter (enabled in every recipe) computed the same metrics as metrics.json
    assert f"report: {tmp_path / 'run' / 'report' / 'report.html'}" in out.replace("\n", "")
    reported = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())
    for key in ("ate", "rpe_trans", "rpe_rot", "abs_rel"):
        assert abs(reported[key] - metrics[key]) <= 1e-9 * max(1.0, abs(metrics[key])), key
