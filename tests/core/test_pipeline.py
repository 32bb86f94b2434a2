"""Runner, store caching/invalidation, kill-and-resume, lock, and CLI bad-input behaviour (toy stages)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from monst3r_framework.errors import StoreError
from monst3r_framework.runner import run_pipeline
from monst3r_framework.store import RunStore

HERE = Path(__file__).resolve().parent
TOY = HERE / "toy.yaml"


def _calls(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_second_run_is_fully_cached_and_one_key_change_recomputes_downstream_only(toy_env, clip, tmp_path):
    out = tmp_path / "run"
    first = run_pipeline(TOY, clip, out)
    assert not any(r.cached for r in first.reports)
    n_calls = len(_calls(toy_env))
    assert sorted(set(_calls(toy_env))) == sorted(
        ["toy_flow", "toy_pairs", "toy_pose", "toy_mask", "toy_aligner", "toy_export"])

    second = run_pipeline(TOY, clip, out)
    assert all(r.cached for r in second.reports), [(r.label, r.cached) for r in second.reports]
    assert len(_calls(toy_env)) == n_calls  # nothing computed

    third = run_pipeline(TOY, clip, out, overrides=["stages.global_aligner.offset=1.5"])
    computed = [r.kind for r in third.reports if not r.cached]
    assert computed == ["global_aligner", "exporter"]
    depth_1 = np.load(out / "toy_export" / "depth.npy")
    np.testing.assert_allclose(depth_1, np.asarray(first.reconstruction.depth) + 1.0, rtol=1e-6)
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "complete"
    assert (out / "recipe.resolved.yaml").read_text().count("offset: 1.5") == 1


def test_shared_store_reuses_stages_across_output_folders(toy_env, clip, tmp_path):
    store = str(tmp_path / "shared.zarr")
    run_pipeline(TOY, clip, tmp_path / "a", store=store)
    b = run_pipeline(TOY, clip, tmp_path / "b", store=store, overrides=["stages.mask_builder.threshold=10"])
    computed = [r.kind for r in b.reports if not r.cached]
    # the aligner reads the mask, so it is recomputed; flow, pairs and poses are reused
    assert computed == ["mask_builder", "global_aligner", "exporter"]


def test_disabled_optional_stages(toy_env, clip, tmp_path):
    res = run_pipeline(TOY, clip, tmp_path / "o", overrides=[
        "stages.flow_estimator.enabled=false", "stages.mask_builder.enabled=false",
        "stages.global_aligner.enabled=false"])
    kinds = [r.kind for r in res.reports if not r.cached]
    assert kinds == ["frames", "pair_predictor", "pose_solver", "exporter"]
    assert not np.asarray(res.reconstruction.dynamic).any()


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "monst3r_framework.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _wait_for_incomplete_pairs(store: Path, timeout: float = 180.0) -> None:  # CLI start-up on a busy machine
    deadline = time.time() + timeout
    while time.time() < deadline:
        groups = list((store / "stages" / "pair_predictor").glob("*/zarr.json")) if store.exists() else []
        if groups:
            return
        time.sleep(0.1)
    raise AssertionError("pair_predictor stage never started")


def test_sigkill_mid_stage_then_resume_matches_uninterrupted(tmp_path, clip):
    calls = tmp_path / "calls.txt"
    out = tmp_path / "killed"
    proc = _cli(["run", str(TOY), str(clip), "--out", str(out)],
                _env({"TOY_DELAY": "0.5", "TOY_CALLS_FILE": str(calls)}))
    _wait_for_incomplete_pairs(out / "store.zarr")
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "running"  # never claims completion
    assert not (out / "toy_export").exists()

    again = _cli(["run", str(TOY), str(clip), "--out", str(out)], _env({"TOY_CALLS_FILE": str(calls)}))
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "complete"
    by_kind = {s["kind"]: s for s in status["stages"]}
    assert by_kind["frames"]["cached"] and by_kind["flow_estimator"]["cached"]
    assert not by_kind["pair_predictor"]["cached"] and by_kind["pair_predictor"]["resumed"]

    fresh = tmp_path / "fresh"
    run = _cli(["run", str(TOY), str(clip), "--out", str(fresh)], _env({}))
    assert run.wait(timeout=120) == 0
    for name in ("depth.npy", "poses.npy"):
        np.testing.assert_array_equal(np.load(out / "toy_export" / name), np.load(fresh / "toy_export" / name))


def test_store_lock_refuses_second_run(tmp_path):
    path = tmp_path / "s.zarr"
    with RunStore(path):
        with pytest.raises(StoreError, match="in use by another run"):
            RunStore(path)
    RunStore(path).close()  # released


def test_concurrent_cli_run_is_refused(tmp_path, clip):
    out = tmp_path / "busy"
    # 1 s per pair keeps the first run inside its pair stage (18 pairs) while the second one starts
    first = _cli(["run", str(TOY), str(clip), "--out", str(out)], _env({"TOY_DELAY": "1.0"}))
    try:
        _wait_for_incomplete_pairs(out / "store.zarr")
        second = _cli(["run", str(TOY), str(clip), "--out", str(tmp_path / "other"), "--store", str(out / "store.zarr")],
                      _env({}))
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2
        assert "in use by another run" in err and "Traceback" not in err
    finally:
        first.kill()
        first.wait()
