"""`monst3r-fw batch` on 3 tiny synthetic videos + 1 corrupt one, local and Ray backends."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from monst3r_framework.batch import EXIT_PARTIAL, BatchSettings, read_manifest, run_batch
from monst3r_framework.cli import main

from batch_testing import OVERRIDES, RECIPE, read_batch


def _cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _check_first_batch(out: Path, videos: Path, code: int) -> None:
    assert code == EXIT_PARTIAL == 3
    batch = read_batch(out)
    rows = {r["id"]: r for r in batch["videos"]}
    assert sorted(rows) == ["corrupt", "scene0", "scene1", "scene2"]
    assert batch["status"] == "partial" and batch["counts"]["complete"] == 3 and batch["counts"]["failed"] == 1
    bad = rows["corrupt"]
    assert bad["status"] == "failed" and "corrupt.mp4" in bad["error"] and "cannot be opened" in bad["error"]
    assert "\n" not in bad["error"]
    assert not (out / "corrupt" / "run.json").exists() or \
        json.loads((out / "corrupt" / "run.json").read_text())["status"] == "failed"
    from monst3r_fw_eval.evaluate import evaluate_run

    for name in ("scene0", "scene1", "scene2"):
        row = rows[name]
        assert row["status"] == "complete" and row["frames"] == 5, row
        assert json.loads((out / name / "run.json").read_text())["status"] == "complete"
        kinds = {s["kind"] for s in row["stages"]}
        assert {"frames", "flow_estimator", "pair_predictor", "pose_solver", "mask_builder", "global_aligner"} <= kinds
        assert all(not s["cached"] for s in row["stages"])  # a fresh OUT computes everything
        m = row["metrics"]
        # the classical recipe on 5 frames: a usable trajectory and depth, not noise
        assert 0 <= m["ate_percent_of_path"] < 40 and m["rpe_rot"] < 5, m
        assert 0 < m["abs_rel"] < 0.6 and 0 <= m["mask_iou"] <= 1, m
        # the row's numbers are the store's reconstruction against the scene's ground truth
        direct = evaluate_run(out / name, videos / name)
        assert m["ate"] == pytest.approx(direct["ate"], rel=1e-9)
        assert m["abs_rel"] == pytest.approx(direct["abs_rel"], rel=1e-9)
        import zarr

        store = zarr.open_group(str(out / name / "store.zarr"), mode="r")
        (key, group), = list(store["stages/global_aligner"].groups())
        pred = np.asarray(group["dynamic"][...], bool)
        gt = np.load(videos / name / "gt.npz")["dynamic_mask"]
        iou = np.logical_and(pred, gt).sum() / np.logical_or(pred, gt).sum()
        assert m["mask_iou"] == pytest.approx(float(iou), rel=1e-9)
    means = batch["means"]
    assert means["videos"] == 3
    assert means["metrics"]["ate"] == pytest.approx(np.mean([rows[n]["metrics"]["ate"] for n in ("scene0", "scene1", "scene2")]))


def _check_rerun(out: Path, code: int) -> None:
    assert code == EXIT_PARTIAL
    rows = {r["id"]: r for r in read_batch(out)["videos"]}
    for name in ("scene0", "scene1", "scene2"):
        assert rows[name]["status"] == "complete"
        assert rows[name]["computed"] == [], rows[name]["computed"]
        assert rows[name]["stages"] and all(s["cached"] for s in rows[name]["stages"])
    assert rows["corrupt"]["status"] == "failed"


def test_local_batch_then_rerun(videos, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")
    out = tmp_path / "out"
    args = ["batch", RECIPE, str(videos), "--out", str(out)] + [a for o in OVERRIDES for a in ("--set", o)]
    _check_first_batch(out, videos, _cli(args))
    from monst3r_framework.batch import worker

    # one stage object per (type, config, device) for the whole process: weights load once
    pooled = [key for key in worker._WORKER["stages"] if key[0].kind == "pair_predictor" and '"fov_deg":60.0' in
              key[1].replace(" ", "")]
    assert len(pooled) == 1
    text = capsys.readouterr().out
    assert "3 complete, 1 failed" in text and "mean" in text and "ATE" in text and "mask IoU" in text
    assert "failed corrupt:" in text
    _check_rerun(out, _cli(args))
    assert "cached" in capsys.readouterr().out


def test_ray_batch_then_rerun(videos, tmp_path, ray_session, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")
    out = tmp_path / "out"
    args = ["batch", RECIPE, str(videos), "--out", str(out), "--backend", "ray"] + \
        [a for o in OVERRIDES for a in ("--set", o)]
    _check_first_batch(out, videos, _cli(args))
    rows = {r["id"]: r for r in read_batch(out)["videos"]}
    assert all(rows[n]["worker"].split(":")[-1] != str(os.getpid()) for n in rows)  # ran in Ray workers
    assert max(r["videos_in_worker"] for r in rows.values()) >= 2  # 4 videos, 2 slots: workers are reused
    _check_rerun(out, _cli(args))
    # eval-suite runs on the same machinery: over the same OUT it reuses every stage of the batch's
    # stores, and its rows are `monst3r-fw eval` of those runs (masks' J&F at full resolution too)
    from monst3r_fw_eval.evaluate import evaluate_run

    code = _cli(["eval-suite", RECIPE, "--dataset", "synthetic", "--gt", str(videos), "--out", str(out),
                 "--backend", "ray", "--seq", "scene0", "--seq", "scene2"] + [a for o in OVERRIDES for a in ("--set", o)])
    assert code == 0
    suite = json.loads((out / "metrics.json").read_text())
    assert [r["sequence"] for r in suite["sequences"]] == ["scene0", "scene2"] and suite["failed"] == []
    rows = {r["id"]: r for r in read_batch(out)["videos"]}
    assert sorted(rows) == ["scene0", "scene2"] and all(r["computed"] == [] for r in rows.values())
    for got in suite["sequences"]:
        direct = evaluate_run(out / got["sequence"], videos / got["sequence"])
        for key in ("ate", "rpe_trans", "rpe_rot", "abs_rel"):
            assert got[key] == pytest.approx(direct[key], rel=1e-9), key
        assert got["masks"]["JF_mean"] == pytest.approx(direct["masks"]["JF_mean"], rel=1e-9)
    assert suite["average"]["ate"] == pytest.approx(np.mean([r["ate"] for r in suite["sequences"]]))


def test_killed_ray_worker_is_retried(videos, tmp_path, ray_session):
    """SIGKILL the worker process while it computes the pair predictor: Ray reruns the task, which
    reuses the flow computed before the kill and completes."""
    out = tmp_path / "out"
    items = [it for it in read_manifest(videos) if it.id == "scene1"]
    lock = out / "scene1" / "store.zarr" / ".monst3r_fw.lock"
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            flow_done = list((out / "scene1" / "store.zarr" / "stages").glob("flow_estimator/*/zarr.json"))
            if flow_done and (out / "scene1" / "store.zarr" / "stages" / "pair_predictor").exists():
                pid = int(lock.read_text().strip())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    report = run_batch(items, BatchSettings(recipe=RECIPE, out=str(out), overrides=tuple(OVERRIDES)), backend="ray",
                       max_retries=2, show_progress=False)
    thread.join(timeout=5)
    assert killed, "the worker was never seen mid-video"
    row = report.rows[0]
    assert row["status"] == "complete", row
    assert row["attempt"] == 2 and row["worker"].split(":")[-1] != str(killed[0])
    by_kind = {s["kind"]: s for s in row["stages"]}
    assert by_kind["frames"]["cached"] and not by_kind["pair_predictor"]["cached"]
    assert json.loads((out / "scene1" / "run.json").read_text())["status"] == "complete"


def test_ray_missing_says_how_to_install(videos, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'", name="ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    code = _cli(["batch", RECIPE, str(videos), "--out", str(tmp_path / "o"), "--backend", "ray"])
    assert code == 2
    assert "pip install 'monst3r-fw[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
