"""Ctrl-C and SIGTERM end a run cleanly (one line, exit 130 / 143, run.json says so, the rerun
resumes); a run killed outright is reported as such by the next run; one run per --out (issue 13
part 5). Real CLI subprocesses on the toy recipe, slowed down per pair with TOY_DELAY."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from monst3r_framework.video import write_test_video
from reliability_harness import TOY_RECIPE, finish_cli, run_cli, start_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def clip(tmp_path) -> Path:
    return write_test_video(tmp_path / "clip.mp4", 6, (48, 64), fps=10)


def _wait_for_pair_stage(out: Path, timeout: float = 90.0) -> None:
    """Until the pair predictor has started (its group exists, not complete)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if list((out / "store.zarr" / "stages" / "pair_predictor").glob("*/zarr.json")):
            return
        time.sleep(0.1)
    raise AssertionError("the pair_predictor stage never started")


@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_signal_one_line_exit_code_status_and_resume(clip, tmp_path, sig, code, name):
    out = tmp_path / "out"
    proc = start_cli("run", TOY_RECIPE, clip, "--out", out, env={"TOY_DELAY": "0.5"})
    _wait_for_pair_stage(out)
    time.sleep(0.3)
    proc.send_signal(sig)
    result = finish_cli(proc)
    # progress lines (plain, not a terminal) come first; the interruption is one line, the last
    assert result.code == code and "Traceback" not in result.stderr + result.stdout, result.describe()
    lines = [line for line in result.stderr_lines if line.startswith("interrupted")]
    assert len(lines) == 1 and lines[0] == result.stderr_lines[-1], result.describe()
    assert name in lines[0] and "rerun" in lines[0] and "resume" in lines[0]
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "interrupted" and name.split()[0] in status["reason"]
    assert not (out / "toy_export").exists()

    again = run_cli("run", TOY_RECIPE, clip, "--out", out)
    again.assert_ok()
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "complete"
    by_kind = {s["kind"]: s for s in status["stages"]}
    assert by_kind["frames"]["cached"] and by_kind["flow_estimator"]["cached"]
    assert not by_kind["pair_predictor"]["cached"]


def test_killed_run_is_reported_by_the_next_one(clip, tmp_path):
    out = tmp_path / "out"
    proc = start_cli("run", TOY_RECIPE, clip, "--out", out, env={"TOY_DELAY": "0.5"})
    _wait_for_pair_stage(out)
    first = json.loads((out / "run.json").read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert json.loads((out / "run.json").read_text())["status"] == "running"  # nothing could record it

    again = run_cli("run", TOY_RECIPE, clip, "--out", out)
    again.assert_ok()
    assert f"previous run {first['run_id']}" in again.stderr + again.stdout
    assert "ended without finishing" in again.stderr + again.stdout
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "complete"
    assert status["previous"]["run_id"] == first["run_id"] and status["previous"]["status"] == "abandoned"


def test_second_run_on_the_same_out_is_refused_even_with_another_store(clip, tmp_path):
    out = tmp_path / "out"
    first = start_cli("run", TOY_RECIPE, clip, "--out", out, env={"TOY_DELAY": "1.0"})
    try:
        _wait_for_pair_stage(out)
        second = run_cli("run", TOY_RECIPE, clip, "--out", out, "--store", tmp_path / "other.zarr")
        second.assert_user_error("in use by another run", "--out")
        assert not (tmp_path / "other.zarr").exists()
    finally:
        first.kill()
        first.wait()
