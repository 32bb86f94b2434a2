"""Recipe ``storage:``: float16 pair predictions / flow in the store (workspace outputs and numpy
records alike), the dtype in the keys, dropping pair predictions after a complete run, and the store
size per frame in run.json (toy stages)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from monst3r_framework.runner import run_pipeline
from monst3r_framework.stages import FlowField, PairPredictions
from monst3r_framework.store import RunStore, compact

HERE = Path(__file__).resolve().parent
TOY = HERE / "toy.yaml"


def _calls(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _group(out: Path, result, kind: str):
    store = RunStore(out / "store.zarr", lock=False)
    key = store.runs()[result.run_id]["keys"][kind]
    return store, key, store.get_group(store.group_path(kind, key))


def test_compact_rounds_to_float16_and_saturates():
    x = np.array([1.0, 1.0 + 1e-4, 3.14159, -70000.0, 1e9], np.float32)
    y = compact(x, "float16")
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y[:3], x[:3].astype(np.float16))
    assert y[3] == -65504 and y[4] == 65504 and np.isfinite(y).all()
    assert compact(x, "float32") is x and compact(np.arange(3), "float16").dtype.kind == "i"


def test_float16_by_default_float32_selectable_and_keys_differ(toy_env, clip, tmp_path):
    half = run_pipeline(TOY, clip, tmp_path / "half")
    full = run_pipeline(TOY, clip, tmp_path / "full", overrides=["storage.float_dtype=float32"])
    stored = {}
    for name, result, dtype in (("half", half, np.float16), ("full", full, np.float32)):
        out = tmp_path / name
        _, _, preds = _group(out, result, "pair_predictor")     # numpy record -> commit casts
        _, _, flow = _group(out, result, "flow_estimator")      # ctx.output workspace arrays
        for arr in (preds["pts3d_i"], preds["pts3d_j"], preds["conf_i"], preds["conf_j"], flow["flow_ij"], flow["flow_ji"]):
            assert np.dtype(arr.dtype) == dtype
        assert np.dtype(preds["pairs"].dtype) == np.int64
        store, key, _ = _group(out, result, "pair_predictor")
        loaded = store.load("pair_predictor", key, PairPredictions)
        assert loaded.pts3d_i.dtype == np.float32 and np.asarray(loaded.pts3d_i).dtype == np.float32  # read widened
        stored[name] = np.asarray(loaded.pts3d_i)
        store, key, _ = _group(out, result, "flow_estimator")
        assert store.load("flow_estimator", key, FlowField).flow_ij[0].dtype == np.float32
    # float32 storage is exact; float16 is the float32 result rounded once
    np.testing.assert_array_equal(stored["half"], stored["full"].astype(np.float16).astype(np.float32))
    assert not np.array_equal(stored["half"], stored["full"])
    # the storage dtype enters the key of the stages it shrinks and so of everything downstream
    k16 = RunStore(tmp_path / "half" / "store.zarr", lock=False).runs()[half.run_id]["keys"]
    k32 = RunStore(tmp_path / "full" / "store.zarr", lock=False).runs()[full.run_id]["keys"]
    for kind in ("flow_estimator", "pair_predictor", "pose_solver", "global_aligner"):
        assert k16[kind] != k32[kind], kind
    assert k16["frames"] == k32["frames"] and k16["mask_builder"] == k32["mask_builder"]  # toy mask reads frames only
    # run.json / the result report the store size per frame, smaller with float16
    size16 = json.loads((tmp_path / "half" / "run.json").read_text())["store_mib_per_frame"]
    size32 = json.loads((tmp_path / "full" / "run.json").read_text())["store_mib_per_frame"]
    assert size16 == half.store_mib_per_frame and size16["total"] > 0
    assert size16["pair_predictor"] < 0.75 * size32["pair_predictor"]


def test_drop_pair_predictions_keeps_what_a_rerun_needs(toy_env, clip, tmp_path):
    out = tmp_path / "run"
    first = run_pipeline(TOY, clip, out, overrides=["storage.drop_pair_predictions=true"])
    store, key, group = _group(out, first, "pair_predictor")
    assert sorted(name for name, _ in group.arrays()) == ["pairs"]
    assert group.attrs["dropped"] is True and group.attrs["complete"] is True
    assert first.store_bytes["pair_predictor"] < 4096
    n_calls = len(_calls(toy_env))

    # every stage reading the predictions is complete: a rerun reuses it all and computes nothing
    again = run_pipeline(TOY, clip, out, overrides=["storage.drop_pair_predictions=true"])
    assert all(r.cached for r in again.reports) and len(_calls(toy_env)) == n_calls
    np.testing.assert_array_equal(np.asarray(again.reconstruction.depth), np.asarray(first.reconstruction.depth))

    # a changed pose solver needs them again: they are recomputed (same key), then what depends on it
    changed = run_pipeline(TOY, clip, out, overrides=["stages.pose_solver.step=0.2"])
    computed = [r.kind for r in changed.reports if not r.cached]
    assert computed == ["pair_predictor", "pose_solver", "global_aligner", "exporter"]
    assert _calls(toy_env)[n_calls:].count("toy_pairs") == 1
    np.testing.assert_allclose(np.asarray(changed.reconstruction.depth), np.asarray(first.reconstruction.depth),
                               rtol=1e-6)
    group = RunStore(out / "store.zarr", lock=False).get_group(f"stages/pair_predictor/{key}")
    assert "pts3d_i" in group and not group.attrs.get("dropped")
