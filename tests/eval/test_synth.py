"""The synthetic scenes' ground truth is exact: geometry reprojects onto the same texture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from monst3r_framework.errors import InputError
from monst3r_fw_eval.synth import load_scene, make_scene

PAIRS = [(0, 1), (0, 5), (3, 7), (7, 2)]


@pytest.fixture(scope="module")
def scene():
    return make_scene(n_frames=8, size_hw=(64, 96), seed=3, n_objects=2)


def _grid(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs, ys], axis=-1).astype(np.float64)


def _bilinear(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    return cv2.remap(img.astype(np.float32), uv[..., 0].astype(np.float32), uv[..., 1].astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _interior(mask: np.ndarray) -> np.ndarray:
    """Drop pixels next to a mask boundary (colours there mix two surfaces)."""
    return cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def _colour_error(scene, i: int, j: int, flow: np.ndarray) -> np.ndarray:
    h, w = scene.size_hw
    warped = _bilinear(scene.rgb[j], _grid(h, w) + flow)
    return np.abs(warped - scene.rgb[i].astype(np.float32)).mean(axis=-1)


def test_shapes_and_types(scene):
    n, h, w = 8, 64, 96
    assert scene.rgb.shape == (n, h, w, 3) and scene.rgb.dtype == np.uint8
    assert scene.depth.shape == (n, h, w) and scene.depth.dtype == np.float32
    assert scene.dynamic_mask.shape == (n, h, w) and scene.dynamic_mask.dtype == bool
    assert scene.K.shape == (3, 3) and scene.cam_to_world.shape == (n, 4, 4)
    assert scene.flow(0, 1).shape == (h, w, 2) and scene.flow(0, 1).dtype == np.float32
    assert scene.points_in_cam(0, 1).shape == (h, w, 3)
    # ~60 degree horizontal field of view and a centred principal point.
    assert np.degrees(2 * np.arctan(w / 2 / scene.K[0, 0])) == pytest.approx(60.0)
    assert scene.K[0, 2] == pytest.approx((w - 1) / 2)
    # Objects cover 5-25% of the image; depth is finite and positive everywhere (closed room).
    frac = scene.dynamic_mask.mean(axis=(1, 2))
    assert 0.05 <= frac.mean() <= 0.25
    assert np.isfinite(scene.depth).all() and scene.depth.min() > 0.5


def test_camera_rotates_and_translates(scene):
    rel = np.linalg.inv(scene.cam_to_world[0]) @ scene.cam_to_world[-1]
    angle = np.degrees(np.arccos(np.clip((np.trace(rel[:3, :3]) - 1) / 2, -1, 1)))
    assert angle > 1.0
    assert np.linalg.norm(rel[:3, 3]) > 0.05
    assert np.allclose(scene.cam_to_world[:, 3], [0, 0, 0, 1])
    assert np.allclose(scene.cam_to_world[:, :3, :3] @ np.swapaxes(scene.cam_to_world[:, :3, :3], 1, 2), np.eye(3), atol=1e-12)


@pytest.mark.parametrize("pair", PAIRS)
def test_static_reprojection_matches_flow_and_texture(scene, pair):
    """Back-project static pixels of frame i with GT depth, move them to camera j, project: this is
    computed here independently of ``scene.flow`` and must agree with it and hit the same colour."""
    i, j = pair
    h, w = scene.size_hw
    k = scene.K
    uv = _grid(h, w)
    z = scene.depth[i].astype(np.float64)
    cam_i = np.stack([(uv[..., 0] - k[0, 2]) / k[0, 0] * z, (uv[..., 1] - k[1, 2]) / k[1, 1] * z, z], -1)
    j_from_i = np.linalg.inv(scene.cam_to_world[j]) @ scene.cam_to_world[i]
    cam_j = cam_i @ j_from_i[:3, :3].T + j_from_i[:3, 3]
    proj = (cam_j @ k.T)[..., :2] / cam_j[..., 2:3]
    flow = scene.flow(i, j)
    static = ~scene.dynamic_mask[i]
    assert np.abs(proj - uv - flow)[static].max() < 1e-3

    visible = _interior(scene.covisible(i, j) & static)
    assert visible.sum() > 0.3 * h * w
    err = _colour_error(scene, i, j, flow)[visible]
    # A 0.7 px error in the flow gives a much larger colour error: the test can tell.
    err_off = _colour_error(scene, i, j, flow + 0.7)[visible]
    assert np.median(err) < 4.0 and np.percentile(err, 90) < 10.0
    assert np.median(err_off) > 2.5 * np.median(err)


@pytest.mark.parametrize("pair", PAIRS)
def test_dynamic_flow_lands_on_same_texture(scene, pair):
    i, j = pair
    flow = scene.flow(i, j)
    dyn = _interior(scene.covisible(i, j) & scene.dynamic_mask[i])
    assert dyn.sum() > 50
    err = _colour_error(scene, i, j, flow)[dyn]
    # Camera-only flow (what the object would have if it were static) must not fit.
    h, w = scene.size_hw
    k = scene.K
    z = scene.depth[i].astype(np.float64)
    uv = _grid(h, w)
    cam_i = np.stack([(uv[..., 0] - k[0, 2]) / k[0, 0] * z, (uv[..., 1] - k[1, 2]) / k[1, 1] * z, z], -1)
    j_from_i = np.linalg.inv(scene.cam_to_world[j]) @ scene.cam_to_world[i]
    cam_j = cam_i @ j_from_i[:3, :3].T + j_from_i[:3, 3]
    ego_flow = (cam_j @ k.T)[..., :2] / cam_j[..., 2:3] - uv
    assert np.abs(ego_flow - flow)[dyn].mean() > 0.3  # the objects really move
    err_ego = _colour_error(scene, i, j, ego_flow)[dyn]
    assert np.median(err) < 4.0 and np.percentile(err, 90) < 10.0
    assert np.median(err_ego) > 2.0 * np.median(err)


@pytest.mark.parametrize("pair", PAIRS)
def test_points_in_cam_consistent(scene, pair):
    i, j = pair
    pij = scene.points_in_cam(i, j).astype(np.float64)
    # Frame j's pointmap in camera i, projected with K, lands where frame j's pixels flow to in frame i
    # for the static part (static points do not move between the two times).
    pjj = scene.points_in_cam(j, j)
    assert np.allclose(pjj[..., 2], scene.depth[j], rtol=1e-6)
    world_from_i = scene.cam_to_world[i]
    world_a = pij @ world_from_i[:3, :3].T + world_from_i[:3, 3]
    world_b = scene.world_points(j)
    assert np.abs(world_a - world_b).max() < 1e-4
    static = ~scene.dynamic_mask[j]
    proj = (pij @ scene.K.T)[..., :2] / pij[..., 2:3]
    h, w = scene.size_hw
    assert np.abs(proj - _grid(h, w) - scene.flow(j, i))[static].max() < 1e-3


def test_records(scene):
    pairs = [(0, 1), (2, 5)]
    pp = scene.pair_predictions(pairs)
    assert pp.pts3d_i.shape == (2, 64, 96, 3) and (np.asarray(pp.conf_i) >= 1).all()
    assert np.allclose(pp.pts3d_j[1], scene.points_in_cam(2, 5))
    ff = scene.flow_field(pairs)
    assert np.allclose(ff.flow_ji[1], scene.flow(5, 2))
    fs = scene.frameset()
    assert fs.n_frames == 8 and fs.size_hw == (64, 96)
    with pytest.raises(InputError, match="out of range"):
        scene.flow(0, 8)


def test_static_scene_and_determinism():
    a = make_scene(n_frames=3, size_hw=(32, 48), seed=1, n_objects=0, supersample=1)
    b = make_scene(n_frames=3, size_hw=(32, 48), seed=1, n_objects=0, supersample=1)
    assert not a.dynamic_mask.any()
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth)
    with pytest.raises(InputError, match="n_objects"):
        make_scene(n_frames=3, size_hw=(32, 48), n_objects=5)


def test_save_load_roundtrip(scene, tmp_path):
    scene.save(tmp_path / "s")
    assert (tmp_path / "s" / "frames" / "frame_0007.png").is_file()
    cap = cv2.VideoCapture(str(tmp_path / "s" / "video.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    cap.release()
    gt = np.load(tmp_path / "s" / "gt.npz")
    assert gt["depth"].dtype == np.float32 and gt["dynamic_mask"].dtype == bool
    assert gt["K"].shape == (3, 3) and gt["cam_to_world"].shape == (8, 4, 4)
    loaded = load_scene(tmp_path / "s")
    assert np.array_equal(loaded.rgb, scene.rgb)
    assert np.array_equal(loaded.depth, scene.depth)
    assert np.array_equal(loaded.dynamic_mask, scene.dynamic_mask)
    for i, j in PAIRS:
        assert np.array_equal(loaded.flow(i, j), scene.flow(i, j))
        assert np.array_equal(loaded.points_in_cam(i, j), scene.points_in_cam(i, j))
    with pytest.raises(InputError, match="gt.npz"):
        load_scene(tmp_path / "nothing")
