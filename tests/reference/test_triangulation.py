"""flow_triangulation: pose, dense depth and confidence against a synthetic scene with exact flow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from monst3r_framework.errors import StageError
from monst3r_framework.stages import FlowField, PairInputs, RunContext
from monst3r_fw_eval.synth import make_scene
from monst3r_fw_reference.rotation_averaging import average_rotations
from monst3r_fw_reference.triangulation import FlowTriangulation, FlowTriangulationConfig, _fb_error, intrinsics_from_config
from monst3r_fw_reference.two_view import relative_pose_from_flow, sample_correspondences, translation_given_rotation

HW = (64, 96)
# Pairs 2 to 9 frames apart (adjacent frames of this scene move < 1 px), both directions of one edge.
PAIRS = np.array([(0, 2), (2, 0), (0, 4), (1, 5), (3, 7), (2, 11), (5, 10)], np.int64)


@pytest.fixture(scope="module")
def scene():
    # fov 60 deg over the long edge, as the stage's default prior
    return make_scene(n_frames=12, size_hw=HW, seed=0, n_objects=1)


@pytest.fixture(scope="module")
def predictions(scene):
    edges = np.unique(np.sort(PAIRS, axis=1), axis=0)
    stage = FlowTriangulation(FlowTriangulationConfig())
    return stage.run(PairInputs(frames=scene.frameset(), pairs=PAIRS, flow=scene.flow_field(edges)), RunContext())


def _rotation_deg(r: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))


def test_default_intrinsics_match_the_fov_prior(scene):
    np.testing.assert_allclose(intrinsics_from_config(*HW, None, 60.0), scene.K, rtol=1e-12)
    k = intrinsics_from_config(*HW, 123.0, 60.0)
    assert k[0, 0] == k[1, 1] == 123.0 and k[0, 2] == (HW[1] - 1) / 2 and k[1, 2] == (HW[0] - 1) / 2


@pytest.mark.parametrize("i, j", [(0, 2), (0, 4), (3, 7), (2, 11)])
def test_relative_pose_from_exact_flow(scene, i, j):
    f_ij = torch.from_numpy(scene.flow(i, j)[None])
    f_ji = torch.from_numpy(scene.flow(j, i)[None])
    geo = relative_pose_from_flow(f_ij[0].numpy(), _fb_error(f_ij, f_ji)[0].numpy(), scene.K, seed=1)
    cam_j_from_cam_i = np.linalg.inv(scene.cam_to_world[j]) @ scene.cam_to_world[i]
    assert not geo.degenerate
    assert _rotation_deg(geo.cam_b_from_cam_a[:3, :3] @ cam_j_from_cam_i[:3, :3].T) < 0.05
    t_gt = cam_j_from_cam_i[:3, 3] / np.linalg.norm(cam_j_from_cam_i[:3, 3])
    assert np.linalg.norm(geo.cam_b_from_cam_a[:3, 3]) == pytest.approx(1.0)
    assert np.degrees(np.arccos(np.clip(t_gt @ geo.cam_b_from_cam_a[:3, 3], -1, 1))) < 1.0
    # the moving object (about 14 % of the pixels) is not in the inlier set
    assert geo.inliers < 0.95 * 2000


def _random_rotation(rng: np.random.Generator, deg: float) -> np.ndarray:
    import cv2

    axis = rng.normal(size=3)
    return cv2.Rodrigues(np.radians(deg) * axis / np.linalg.norm(axis))[0]


def test_rotation_averaging_rejects_wrong_edges():
    rng = np.random.default_rng(0)
    n = 12
    truth = np.stack([_random_rotation(rng, 20.0) for _ in range(n)])  # cam_from_world
    edges = np.array([(i, i + d) for i in range(n) for d in (1, 3, 5) if i + d < n])
    rel = np.stack([truth[b] @ truth[a].T @ _random_rotation(rng, 0.02) for a, b in edges])
    wrong = np.flatnonzero(edges[:, 1] - edges[:, 0] == 5)[::2]  # a third of the long edges off by 3 deg
    for m in wrong:
        rel[m] = _random_rotation(rng, 3.0) @ rel[m]
    rots, resid = average_rotations(edges, rel, n)
    errors = [_rotation_deg((rots[b] @ rots[a].T) @ (truth[b] @ truth[a].T).T) for a, b in edges]
    assert max(errors) < 0.1, max(errors)
    # the wrong edges keep their error as residual, the others fit
    assert resid[wrong].min() > 2.5 and np.delete(resid, wrong).max() < 0.2


def test_translation_given_the_true_rotation(scene):
    i, j = 1, 2  # adjacent frames: a small baseline
    cam_j_from_cam_i = np.linalg.inv(scene.cam_to_world[j]) @ scene.cam_to_world[i]
    f_ij = torch.from_numpy(scene.flow(i, j)[None])
    f_ji = torch.from_numpy(scene.flow(j, i)[None])
    p1, p2 = sample_correspondences(f_ij[0].numpy(), _fb_error(f_ij, f_ji)[0].numpy(), seed=0)
    # a start pointing the wrong way must not win
    pose = translation_given_rotation(cam_j_from_cam_i[:3, :3], p1, p2, scene.K, starts=(np.array([0.0, 0.0, 1.0]),))
    t_gt = cam_j_from_cam_i[:3, 3] / np.linalg.norm(cam_j_from_cam_i[:3, 3])
    np.testing.assert_allclose(pose[:3, :3], cam_j_from_cam_i[:3, :3])
    assert np.degrees(np.arccos(np.clip(t_gt @ pose[:3, 3], -1, 1))) < 1.0


def test_border_pixels_are_left_out():
    flow = np.zeros((20, 30, 2), np.float32)
    flow[..., 0] = 2.0
    p1, p2 = sample_correspondences(flow, np.zeros((20, 30), np.float32), max_correspondences=10_000, border_px=3)
    assert p1[:, 0].min() == 3 and p2[:, 0].max() == 26 and p1[:, 1].min() == 3 and p1[:, 1].max() == 16
    assert len(p1) == (30 - 3 - 3 - 2) * (20 - 6)


def test_dense_pointmaps_match_ground_truth_on_static_pixels(scene, predictions):
    for p, (i, j) in enumerate(PAIRS):
        gt_i, gt_j = scene.points_in_cam(i, i), scene.points_in_cam(i, j)
        static_i = ~scene.dynamic_mask[i] & scene.covisible(i, j)
        static_j = ~scene.dynamic_mask[j] & scene.covisible(j, i)
        z = np.asarray(predictions.pts3d_i[p])[..., 2]
        scale = np.median(gt_i[..., 2][static_i] / z[static_i])  # per-pair scale (unit baseline)
        abs_rel = np.mean(np.abs(scale * z[static_i] - gt_i[..., 2][static_i]) / gt_i[..., 2][static_i])
        assert abs_rel < 0.005, (i, j, abs_rel)
        # view j's points in camera i, with the same scale: exact up to the pair's scale
        err_j = np.linalg.norm(scale * np.asarray(predictions.pts3d_j[p])[static_j] - gt_j[static_j], axis=-1)
        assert np.median(err_j / np.linalg.norm(gt_j[static_j], axis=-1)) < 0.005, (i, j)
        # pixel-aligned: pts3d_i lies on the rays of K
        pts = np.asarray(predictions.pts3d_i[p])
        u = scene.K[0, 0] * pts[..., 0] / pts[..., 2] + scene.K[0, 2]
        np.testing.assert_allclose(u, np.broadcast_to(np.arange(HW[1], dtype=np.float64), HW), atol=1e-3)


def test_reverse_pair_is_the_same_edge_reexpressed(predictions):
    fwd, bwd = 0, 1  # (0, 2) and (2, 0)
    np.testing.assert_allclose(predictions.conf_i[fwd], predictions.conf_j[bwd])
    np.testing.assert_allclose(predictions.conf_j[fwd], predictions.conf_i[bwd])
    # frame 0's points: in camera 0 for (0, 2), in camera 2 for (2, 0): same distances between points
    a = np.asarray(predictions.pts3d_i[fwd]).reshape(-1, 3)
    b = np.asarray(predictions.pts3d_j[bwd]).reshape(-1, 3)
    np.testing.assert_allclose(np.linalg.norm(a[::97] - a[5], axis=-1), np.linalg.norm(b[::97] - b[5], axis=-1),
                               rtol=1e-4, atol=1e-4)


def test_pointmaps_stream_into_the_store_workspace(scene, predictions, tmp_path):
    """Under the runner the pointmaps and confidences are written pair by pair into the workspace
    (``ctx.output``), never held for the whole video: the same values as in memory."""
    from monst3r_framework.stages import PairPredictions
    from monst3r_framework.store import RunStore

    ws = RunStore(tmp_path / "ws.zarr", lock=False).begin("pair_predictor", "k", {}, record=PairPredictions)
    edges = np.unique(np.sort(PAIRS, axis=1), axis=0)
    streamed = FlowTriangulation(FlowTriangulationConfig()).run(
        PairInputs(frames=scene.frameset(), pairs=PAIRS, flow=scene.flow_field(edges)), RunContext(workspace=ws))
    for name in ("pts3d_i", "pts3d_j", "conf_i", "conf_j"):
        assert type(getattr(streamed, name)).__name__ == "OutputArray", name
        np.testing.assert_array_equal(np.asarray(getattr(streamed, name)), getattr(predictions, name), err_msg=name)


def test_confidence_is_low_on_the_moving_object(scene, predictions):
    conf_i = np.asarray(predictions.conf_i)
    assert conf_i.min() >= 1.0 and conf_i.max() <= 10.0 + 1e-5
    dyn_meds, static_meds = [], []
    for p, (i, j) in enumerate(PAIRS):
        static = ~scene.dynamic_mask[i] & scene.covisible(i, j)
        dyn_meds.append(np.median(conf_i[p][scene.dynamic_mask[i]]))
        static_meds.append(np.median(conf_i[p][static]))
    assert np.median(dyn_meds) < 1.3, dyn_meds
    assert min(static_meds) > 2.0, static_meds
    # larger baselines -> larger parallax -> higher confidence on the static scene
    assert static_meds[PAIRS.tolist().index([2, 11])] > static_meds[0]


def test_degenerate_edges_get_unit_confidence_instead_of_failing(scene):
    h, w = HW
    pairs = np.array([(0, 1), (1, 0), (3, 3)], np.int64)
    zero = np.zeros((1, h, w, 2), np.float32)  # no motion at all: no parallax
    flow = FlowField(pairs=pairs[:1], flow_ij=zero, flow_ji=zero.copy())
    logs: list[str] = []
    out = FlowTriangulation(FlowTriangulationConfig()).run(
        PairInputs(frames=scene.frameset(), pairs=pairs, flow=flow), RunContext(log=logs.append))
    for name in ("conf_i", "conf_j"):
        np.testing.assert_array_equal(np.asarray(getattr(out, name)), 1.0)
    for name in ("pts3d_i", "pts3d_j"):
        assert np.isfinite(np.asarray(getattr(out, name))).all()
        assert (np.asarray(getattr(out, name))[..., 2] > 0).all()
    assert logs and "degenerate" in logs[0] and "(0, 1)" in logs[0]


def test_missing_flow_is_a_clear_error(scene):
    with pytest.raises(StageError, match="flow_estimator"):
        FlowTriangulation(FlowTriangulationConfig()).run(
            PairInputs(frames=scene.frameset(), pairs=PAIRS, flow=None), RunContext())
    partial = scene.flow_field([(0, 2)])
    with pytest.raises(StageError, match=r"pair \(0, 4\)"):
        FlowTriangulation(FlowTriangulationConfig()).run(
            PairInputs(frames=scene.frameset(), pairs=np.array([(0, 2), (0, 4)]), flow=partial), RunContext())


def test_config_contract():
    cfg = FlowTriangulationConfig.model_validate({"type": "flow_triangulation", "focal": 300.0})
    assert FlowTriangulationConfig.model_validate(cfg.model_dump(mode="json")) == cfg
    for bad in ({"no_such_option": 1}, {"focal": -1.0}, {"fov_deg": 200.0}, {"max_conf": 1.0}):
        with pytest.raises(ValidationError):
            FlowTriangulationConfig.model_validate({"type": "flow_triangulation", **bad})
    assert FlowTriangulation.reads == FlowTriangulation.requires == frozenset({"flow_estimator"})
