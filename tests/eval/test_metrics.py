"""Depth and pose metrics: hand-worked cases, and every reference value from evo and the TUM scripts."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from monst3r_framework.errors import InputError
from monst3r_fw_eval.datasets import read_pose_rows, read_tum_trajectory
from monst3r_fw_eval.metrics import (
    absolute_trajectory_error,
    associate_timestamps,
    average_depth_metrics,
    depth_metrics,
    evaluate,
    evaluate_poses,
    matrix_to_quaternion,
    quaternion_to_matrix,
    relative_pose_error,
    rotation_angle,
    trajectory_metric_table,
    tum_benchmark_ate,
    tum_benchmark_rpe,
    umeyama_alignment,
)
from tests.conftest import shared_path

# --------------------------------------------------------------------------------------------- depth


def test_depth_hand_worked_no_alignment():
    gt = np.array([[[1.0, 2.0], [4.0, 0.0]]])      # the 0 is invalid
    pred = np.array([[[1.1, 3.0], [4.0, 9.0]]])
    m = depth_metrics(pred, gt, align="none")
    # |0.1|/1, |1|/2, 0/4 -> mean 0.2; ratios 1.1, 1.5, 1.0 -> two of three below 1.25
    assert m["abs_rel"] == pytest.approx(0.6 / 3)
    assert m["sq_rel"] == pytest.approx((0.01 / 1 + 1.0 / 2 + 0) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((0.01 + 1.0) / 3))
    assert m["delta_1.25"] == pytest.approx(2 / 3)
    assert m["delta_1.25^2"] == pytest.approx(1.0)  # 1.5 < 1.5625
    assert m["valid_pixels"] == 3


def test_depth_median_scaling_uses_lower_median_and_max_depth():
    gt = np.array([[1.0, 2.0, 3.0, 4.0, 100.0]])
    pred = np.array([[2.0, 4.0, 6.0, 8.0, 1.0]])
    # max_depth=70 drops the 100 m pixel; 4 valid pixels -> lower medians 2.0 / 4.0 (torch.median).
    m = depth_metrics(pred, gt, align="median", max_depth=70)
    assert m["scale"] == pytest.approx(0.5)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-12) and m["delta_1.25"] == 1.0
    assert m["valid_pixels"] == 4
    # max_depth is exclusive: gt == max_depth is invalid.
    assert depth_metrics(pred, gt, align="median", max_depth=4.0)["valid_pixels"] == 3


def test_depth_scale_shift_least_squares_exact_and_hand_worked():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 10, size=(3, 8, 8))
    pred = (gt - 0.7) / 2.5  # affine-invariant prediction
    m = depth_metrics(pred, gt, align="scale_shift")
    assert m["scale"] == pytest.approx(2.5) and m["shift"] == pytest.approx(0.7)
    assert m["abs_rel"] < 1e-12
    # Hand-worked LS: pred (0, 1, 2), gt (1, 1, 4): s = cov/var = 1.5, t = mean_g - s mean_p = 2 - 1.5 = 0.5
    m = depth_metrics(np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 4.0]), align="scale_shift")
    assert (m["scale"], m["shift"]) == pytest.approx((1.5, 0.5))
    # aligned (0.5, 2, 3.5) -> |.|/g = 0.5, 1, 0.125 -> abs_rel 0.541666...
    assert m["abs_rel"] == pytest.approx((0.5 + 1.0 + 0.125) / 3)


def test_depth_l1_alignment_ignores_outliers_and_post_clip():
    gt = np.linspace(1, 5, 50)
    pred = 0.5 * gt + 1.0
    gt_out = gt.copy()
    gt_out[::10] = 30.0  # 10% wrong ground-truth values (vertical outliers)
    m = depth_metrics(pred, gt_out, align="scale_shift_l1")
    assert m["scale"] == pytest.approx(2.0, rel=1e-4) and m["shift"] == pytest.approx(-2.0, abs=1e-3)
    ls = depth_metrics(pred, gt_out, align="scale_shift")
    assert abs(ls["scale"] - 2.0) > 0.05  # least squares is pulled by the outliers
    # post_clip_max clamps the aligned prediction (Sintel: 70).
    clipped = depth_metrics(np.array([100.0, 1.0]), np.array([60.0, 1.0]), align="none", post_clip_max=70)
    assert clipped["abs_rel"] == pytest.approx((10 / 60) / 2)


def test_depth_monst3r_lad_matches_torch_adam_procedure():
    """'monst3r_lad' replays the official notebook: torch Adam (lr 1e-4) on the L1 loss from the median
    scale. Compared with torch itself over the first 60 steps (the full 1000 are slow on a busy CPU)."""
    import torch

    from monst3r_fw_eval.metrics import _monst3r_lad

    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 5, 300)
    pred = gt / 3.0 + 0.2 + rng.normal(scale=0.05, size=300)
    s0 = float(np.sort(gt)[149] / np.sort(pred)[149])  # lower medians
    pt, gtt = torch.from_numpy(pred), torch.from_numpy(gt)
    s = torch.tensor([s0], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([s, t], lr=1e-4)
    for _ in range(60):
        opt.zero_grad()
        torch.abs(s * pt + t - gtt).sum().backward()
        opt.step()
    ours = _monst3r_lad(pred, gt, s0, max_iters=60)
    assert ours[0] == pytest.approx(s.item(), rel=1e-12) and ours[1] == pytest.approx(t.item(), abs=1e-12)
    m = depth_metrics(pred, gt, align="monst3r_lad")
    assert m["abs_rel"] <= depth_metrics(pred, gt, align="median")["abs_rel"]


def test_depth_mask_restricts_metrics_not_alignment():
    gt = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([2.0, 4.0, 6.0, 100.0])
    mask = np.array([True, True, True, False])
    m = depth_metrics(pred, gt, align="median", mask=mask)
    # lower medians over all 4 valid: gt 2, pred 4 -> scale 0.5; metrics only on the first three
    assert m["scale"] == pytest.approx(0.5) and m["abs_rel"] == pytest.approx(0.0) and m["valid_pixels"] == 3


def test_depth_errors_and_average():
    with pytest.raises(InputError, match="shape"):
        depth_metrics(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(InputError, match="no valid"):
        depth_metrics(np.ones((2, 2)), np.zeros((2, 2)))
    avg = average_depth_metrics([
        {"abs_rel": 0.1, "sq_rel": 0, "rmse": 0, "log_rmse": 0, "delta_1.25": 1.0, "delta_1.25^2": 1, "delta_1.25^3": 1, "valid_pixels": 300},
        {"abs_rel": 0.5, "sq_rel": 0, "rmse": 0, "log_rmse": 0, "delta_1.25": 0.0, "delta_1.25^2": 1, "delta_1.25^3": 1, "valid_pixels": 100},
    ])
    assert avg["abs_rel"] == pytest.approx(0.2) and avg["delta_1.25"] == pytest.approx(0.75)


# --------------------------------------------------------------------------------------------- poses


def _random_poses(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    out = np.tile(np.eye(4), (n, 1, 1))
    out[:, :3, :3] = quaternion_to_matrix(q)
    out[:, :3, 3] = rng.normal(size=(n, 3))
    return out


def test_quaternion_roundtrip_and_angle():
    poses = _random_poses(50, 1)
    q = matrix_to_quaternion(poses[:, :3, :3])
    assert np.allclose(quaternion_to_matrix(q), poses[:, :3, :3], atol=1e-12)
    axis = np.array([0.0, 0.0, 1.0])
    for ang in (1e-7, 0.3, 3.0):
        r = quaternion_to_matrix(np.r_[axis * math.sin(ang / 2), math.cos(ang / 2)])
        assert rotation_angle(r) == pytest.approx(ang, rel=1e-9)


def test_umeyama_recovers_similarity():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3))
    r = quaternion_to_matrix(rng.normal(size=4))
    y = 2.5 * x @ r.T + np.array([1.0, -2.0, 0.5])
    r_est, t_est, s_est = umeyama_alignment(x, y, with_scale=True)
    assert np.allclose(r_est, r) and np.allclose(t_est, [1.0, -2.0, 0.5]) and s_est == pytest.approx(2.5)


def test_ate_rpe_invariances():
    ref = _random_poses(30, 3)
    sim = np.eye(4)
    sim[:3, :3] = quaternion_to_matrix(np.array([0.1, 0.2, 0.3, 0.9]))
    sim[:3, 3] = [3, 2, 1]
    est = sim @ ref
    est[:, :3, 3] = 0.4 * est[:, :3, 3]  # scale the whole trajectory about the origin
    res = evaluate_poses(est, ref, align="sim3")
    assert res["ate"] < 1e-10 and res["rpe_trans"] < 1e-10 and res["rpe_rot"] < 1e-6
    assert res["alignment"]["scale"] == pytest.approx(2.5)
    assert absolute_trajectory_error(est, ref, "se3")["stats"].rmse > 0.1
    # Known perturbation: one pose shifted by 0.3 m -> RPE sees it twice (in and out).
    noisy = ref.copy()
    noisy[10, :3, 3] += [0.3, 0.0, 0.0]
    rpe = relative_pose_error(noisy, ref)
    assert np.count_nonzero(rpe["trans_errors"] > 1e-9) == 2
    assert rpe["trans_errors"].max() == pytest.approx(0.3)
    assert absolute_trajectory_error(noisy, ref, "none")["stats"].max == pytest.approx(0.3)


def test_association_evo_and_tum():
    ref = np.array([0.00, 0.10, 0.20, 0.30])
    est = np.array([0.005, 0.104, 0.196, 0.292])
    ir, ie = associate_timestamps(ref, est, max_diff=0.01)
    assert ir.tolist() == [0, 1, 2, 3] and ie.tolist() == [0, 1, 2, 3]
    ir, ie = associate_timestamps(ref, est, max_diff=0.005)
    assert ir.tolist() == [0, 1, 2] and ie.tolist() == [0, 1, 2]  # evo: inclusive bound
    ir, ie = associate_timestamps(ref, est, max_diff=0.005, method="tum")
    assert ir.tolist() == [1, 2]  # TUM: strict bound
    ir, ie = associate_timestamps(ref, est - 1.0, max_diff=0.01, offset=1.0)
    assert len(ir) == 4
    # TUM greedy uniqueness: two estimates near one reference stamp -> only the closer one.
    ir, ie = associate_timestamps(np.array([1.0]), np.array([0.995, 1.002]), max_diff=0.01, method="tum")
    assert ie.tolist() == [1]


# ------------------------------------------------------------------ reference values (shared data)

CASES = {
    "fr1_xyz_rgbdslam": ("freiburg1_xyz-groundtruth.txt", "freiburg1_xyz-rgbdslam.txt"),
    "fr1_xyz_ORB_kf_mono": ("freiburg1_xyz-groundtruth.txt", "freiburg1_xyz-ORB_kf_mono.txt"),
    "fr2_desk_ORB": ("fr2_desk_groundtruth.txt", "fr2_desk_ORB.txt"),
    "fr2_desk_ORB_kf_mono": ("fr2_desk_groundtruth.txt", "fr2_desk_ORB_kf_mono.txt"),
    "KITTI_00_ORB": ("KITTI_00_gt.txt", "KITTI_00_ORB.txt"),
}


def _load_pair(name: str):
    d = shared_path("data", "trajectories")
    gt_file, est_file = CASES[name]
    if name.startswith("KITTI"):
        return read_pose_rows(d / est_file), read_pose_rows(d / gt_file)
    t_ref, ref = read_tum_trajectory(d / gt_file)
    t_est, est = read_tum_trajectory(d / est_file)
    ir, ie = associate_timestamps(t_ref, t_est, max_diff=0.02)  # the reference settings
    return est[ie], ref[ir]


@pytest.mark.parametrize("name", list(CASES))
def test_reproduces_evo_reference(name):
    ref_json = json.loads((shared_path("data", "trajectories") / "reference_metrics_evo.json").read_text())["results"][name]
    est, ref = _load_pair(name)
    assert len(est) == ref_json["n_matched"]
    scale, ours = trajectory_metric_table(est, ref)
    assert set(ours) | {"sim3_scale", "n_matched"} == set(ref_json)  # every figure evo reported is compared
    assert scale == pytest.approx(ref_json["sim3_scale"], rel=1e-5)
    for key, stats in ours.items():
        got = stats.to_dict()
        for stat, value in ref_json[key].items():
            assert got[stat] == pytest.approx(value, rel=1e-5, abs=1e-12), (key, stat)
    # The MonST3R protocol is the same numbers through one call.
    mon = evaluate_poses(est, ref, align="sim3")
    assert mon["ate"] == pytest.approx(ref_json["ate_trans_sim3"]["rmse"], rel=1e-5)
    assert mon["rpe_trans"] == pytest.approx(ref_json["rpe_trans_delta1frame_after_sim3"]["rmse"], rel=1e-5)
    assert mon["rpe_rot"] == pytest.approx(ref_json["rpe_rot_deg_delta1frame"]["rmse"], rel=1e-5)


def _tum_script_reference() -> dict:
    text = (shared_path("data", "trajectories") / "reference_metrics_tum_official_scripts.txt").read_text()
    out = {}
    for block in re.split(r"^== ", text, flags=re.M)[1:]:
        gt, est = re.match(r"GT=(\S+) EST=(\S+)", block).groups()
        vals, sec = {}, None
        for line in block.splitlines()[1:]:
            if line.startswith("-- "):
                sec = line[3:].strip()
            elif m := re.match(r"(\S+) ([0-9.]+)", line):
                vals[(sec, m.group(1))] = float(m.group(2))
        out[(gt, est)] = vals
    return out


def test_reproduces_tum_benchmark_scripts():
    refs = _tum_script_reference()
    assert len(refs) == 4
    d = shared_path("data", "trajectories")
    for (gt_file, est_file), vals in refs.items():
        t_ref, ref = read_tum_trajectory(d / gt_file)
        t_est, est = read_tum_trajectory(d / est_file)
        ate = tum_benchmark_ate(t_ref, ref[:, :3, 3], t_est, est[:, :3, 3], max_diff=0.02)
        rpe = tum_benchmark_rpe(t_ref, ref, t_est, est, delta=1)
        assert ate["n_matched"] == vals[("ATE", "compared_pose_pairs")]
        assert rpe["n_pairs"] == vals[("RPE", "compared_pose_pairs")]
        for stat in ("rmse", "mean", "median", "std", "min", "max"):
            # The scripts print 6 decimals: agree to within half a unit in the last place.
            assert abs(getattr(ate["stats"], stat) - vals[("ATE", f"absolute_translational_error.{stat}")]) <= 5.01e-7
            assert abs(getattr(rpe["trans"], stat) - vals[("RPE", f"translational_error.{stat}")]) <= 5.01e-7
            assert abs(getattr(rpe["rot_deg"], stat) - vals[("RPE", f"rotational_error.{stat}")]) <= 5.01e-7


def test_cross_check_with_evo_package():
    """evo itself (test-only dependency) on a synthetic noisy trajectory: same numbers."""
    evo_main_ape = pytest.importorskip("evo.main_ape")
    from evo.core.metrics import PoseRelation, Unit
    from evo.core.trajectory import PosePath3D
    import evo.main_rpe as evo_main_rpe

    ref = _random_poses(25, 7)
    rng = np.random.default_rng(8)
    est = ref.copy()
    est[:, :3, 3] = 1.7 * est[:, :3, 3] + rng.normal(scale=0.02, size=(25, 3))
    est[:, :3, :3] = quaternion_to_matrix(matrix_to_quaternion(est[:, :3, :3]) + rng.normal(scale=0.01, size=(25, 4)))
    ours = evaluate_poses(est, ref, align="sim3")
    ape = evo_main_ape.ape(PosePath3D(poses_se3=list(ref)), PosePath3D(poses_se3=list(est)),
                           pose_relation=PoseRelation.translation_part, align=True, correct_scale=True)
    rpe = evo_main_rpe.rpe(PosePath3D(poses_se3=list(ref)), PosePath3D(poses_se3=list(est)),
                           pose_relation=PoseRelation.rotation_angle_deg, align=True, correct_scale=True,
                           delta=1, delta_unit=Unit.frames, all_pairs=True)
    assert ours["ate"] == pytest.approx(ape.stats["rmse"], rel=1e-9)
    assert ours["rpe_rot"] == pytest.approx(rpe.stats["rmse"], rel=1e-7)


def test_evaluate_on_synthetic_scene():
    from monst3r_fw_eval.synth import make_scene

    scene = make_scene(n_frames=5, size_hw=(24, 32), seed=0, n_objects=1, supersample=1)
    pred_c2w = scene.cam_to_world.copy()
    pred_c2w[:, :3, 3] *= 0.5  # right up to scale
    res = evaluate(pred_c2w, scene.depth * 0.5, scene)
    assert res["ate"] < 1e-9 and res["rpe_trans"] < 1e-9 and res["abs_rel"] < 1e-6 and res["delta_1.25"] == 1.0
    assert res["pose"]["alignment"]["scale"] == pytest.approx(2.0)
    half = np.stack([d[::2, ::2] for d in scene.depth * 3.0])  # other resolution: resized bicubically
    res = evaluate(None, half, scene, depth_align=("scale_shift",))
    assert res["abs_rel"] < 0.1 and "ate" not in res
