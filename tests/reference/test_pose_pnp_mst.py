"""``pnp_mst`` on ground-truth synthetic pointmaps: relative rotations and translation directions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pydantic import ValidationError

from monst3r_framework.errors import InputError, StageError
from monst3r_framework.stages import PoseInputs, RunContext
from monst3r_fw_reference.pose import PnPMST, PnPMSTConfig, edge_scores, image_confidence, load_known_poses

synth = pytest.importorskip("monst3r_fw_eval.synth")


def swinstride_pairs(n: int, window: int = 5) -> np.ndarray:
    """swinstride-<window>-noncyclic, symmetrised: partners i+1, i+3, ..., i+2*window-1."""
    edges = sorted({(i, i + k) for i in range(n) for k in range(1, 2 * window, 2) if i + k < n})
    return np.array(edges + [(j, i) for i, j in edges], np.int64)


@pytest.fixture(scope="module")
def scene():
    # fps 1 and motion_scale 2 give baselines of 0.3-2 m at 4-6 m depth: translation directions are
    # well defined (at 10 fps consecutive baselines are ~2 cm and their direction is noise-dominated).
    return synth.make_scene(n_frames=8, size_hw=(64, 96), seed=0, n_objects=0, fps=1.0, motion_scale=2.0)


@pytest.fixture(scope="module")
def predictions(scene):
    return scene.pair_predictions(swinstride_pairs(scene.n_frames))


def relative_errors(est: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Max over all frame pairs of the relative rotation error and translation direction error (deg)."""
    worst_r = worst_t = 0.0
    n = len(gt)
    for a in range(n):
        for b in range(a + 1, n):
            re = np.linalg.inv(est[a]) @ est[b]
            rg = np.linalg.inv(gt[a]) @ gt[b]
            cos_r = (np.trace(re[:3, :3].T @ rg[:3, :3]) - 1) / 2
            te, tg = re[:3, 3] / np.linalg.norm(re[:3, 3]), rg[:3, 3] / np.linalg.norm(rg[:3, 3])
            worst_r = max(worst_r, float(np.degrees(np.arccos(np.clip(cos_r, -1, 1)))))
            worst_t = max(worst_t, float(np.degrees(np.arccos(np.clip(te @ tg, -1, 1)))))
    return worst_r, worst_t


def noisy(pred, sigma: float, seed: int = 0):
    """Multiplicative noise on every point (along the ray of the pair's camera i) = depth noise."""
    rng = np.random.default_rng(seed)

    def f(a):
        return (a * (1 + sigma * rng.standard_normal(a.shape[:-1] + (1,)))).astype(np.float32)

    return dataclasses.replace(pred, pts3d_i=f(pred.pts3d_i), pts3d_j=f(pred.pts3d_j))


def run(scene, pred, **cfg):
    return PnPMST(PnPMSTConfig(num_workers=2, **cfg)).run(PoseInputs(frames=scene.frameset(), predictions=pred), RunContext())


def test_exact_pointmaps(scene, predictions):
    # the synthetic camera has its principal point at ((W-1)/2, (H-1)/2): use that convention so the
    # model matches the data exactly (MonST3R's (W/2, H/2) is the default; see the next test)
    out = run(scene, predictions, principal_point="pixel_center")
    rot, tdir = relative_errors(out.world_from_cam, scene.cam_to_world)
    print(f"pnp_mst exact GT pointmaps: max rel rotation {rot:.2e} deg, max translation direction {tdir:.2e} deg")
    assert rot < 0.5 and tdir < 1.0
    np.testing.assert_allclose(out.intrinsics[:, 0, 0], scene.K[0, 0], rtol=1e-3)
    # GT pointmaps are metric and the world is camera 0's frame scaled by 1: depth is the GT depth
    np.testing.assert_allclose(out.depth, scene.depth, rtol=1e-3)
    assert out.world_from_cam.dtype == np.float64 and out.conf.shape == scene.depth.shape


def test_official_principal_point_convention(scene, predictions):
    out = run(scene, predictions)  # (W/2, H/2): half a pixel off this scene's camera
    np.testing.assert_allclose(out.intrinsics[0, :2, 2], (48.0, 32.0))
    rot, tdir = relative_errors(out.world_from_cam, scene.cam_to_world)
    print(f"pnp_mst exact GT pointmaps, pp=(W/2,H/2): max rel rotation {rot:.3f} deg, translation dir {tdir:.3f} deg")
    assert rot < 1.0 and tdir < 5.0


def test_noisy_pointmaps(scene, predictions):
    out = run(scene, noisy(predictions, 0.02), principal_point="pixel_center")
    rot, tdir = relative_errors(out.world_from_cam, scene.cam_to_world)
    print(f"pnp_mst 2% depth noise: max rel rotation {rot:.3f} deg, max translation direction {tdir:.3f} deg")
    assert rot < 2.0 and tdir < 5.0


def test_known_intrinsics_and_poses(scene, predictions, tmp_path):
    k = tuple(tuple(float(v) for v in row) for row in scene.K)
    # shift the known poses by a similarity: the output must be the known poses, depth rescaled
    world2_from_world = np.eye(4)
    world2_from_world[:3, 3] = (1.0, -2.0, 0.5)
    known = world2_from_world @ scene.cam_to_world
    known[:, :3, 3] *= 2.0
    np.savez(tmp_path / "poses.npz", world_from_cam=known)
    out = run(scene, predictions, intrinsics=k, known_poses=str(tmp_path / "poses.npz"))
    np.testing.assert_allclose(out.intrinsics[0], scene.K, atol=1e-9)
    np.testing.assert_array_equal(out.world_from_cam, known)
    np.testing.assert_allclose(out.depth, 2.0 * scene.depth, rtol=2e-3)
    # TUM text layout loads to the same matrices
    import roma
    import torch

    q = roma.rotmat_to_unitquat(torch.from_numpy(known[:, :3, :3])).numpy()  # xyzw
    np.savetxt(tmp_path / "poses.txt", np.c_[np.arange(len(known)), known[:, :3, 3], q])
    np.testing.assert_allclose(load_known_poses(str(tmp_path / "poses.txt"), len(known)), known, atol=1e-9)
    with pytest.raises(InputError, match="expected 8 camera-to-world poses"):
        np.savez(tmp_path / "bad.npz", poses=known[:5])
        load_known_poses(str(tmp_path / "bad.npz"), 8)


def test_edge_scores_and_image_conf(scene):
    pairs = np.array([[0, 1], [1, 0], [1, 2]], np.int64)
    pred = scene.pair_predictions(pairs)
    ci = np.asarray(pred.conf_i).copy()
    cj = np.asarray(pred.conf_j).copy()
    ci[0] = 3.0
    cj[2, 0, 0] = 9.0
    pred = dataclasses.replace(pred, conf_i=ci, conf_j=cj)
    np.testing.assert_allclose(edge_scores(pred), [3.0 * 2.0, 4.0, 2.0 * (2.0 + 7.0 / ci[2].size)])
    im = image_confidence(pred, 3)
    assert im[0].max() == 3.0 and im[2, 0, 0] == 9.0 and im[1].max() == 2.0
    np.testing.assert_array_equal(image_confidence(pred, 3, block=2), im)  # frame blocks: same maxima


def test_bad_inputs(scene, predictions):
    with pytest.raises(ValidationError):
        PnPMSTConfig(intrinsics=((0, 0, 1), (0, 1, 1), (0, 0, 1)))
    few = dataclasses.replace(predictions, pairs=predictions.pairs[:2], pts3d_i=predictions.pts3d_i[:2],
                              pts3d_j=predictions.pts3d_j[:2], conf_i=predictions.conf_i[:2],
                              conf_j=predictions.conf_j[:2])
    with pytest.raises(StageError, match="appear in no pair"):
        run(scene, few)


def ray_distorted(scene, pred, amount: float, seed: int = 0):
    """Each pair's views get a smooth per-pair depth tilt ``1 + a * x`` along their *own* camera rays
    (x in [-1, 1] across the image), as triangulation from a slightly wrong relative pose does."""
    rng = np.random.default_rng(seed)
    w = pred.pts3d_i.shape[2]
    ramp = np.linspace(-1.0, 1.0, w)[None, :, None]
    pts_i, pts_j = pred.pts3d_i.copy(), pred.pts3d_j.copy()
    for k, (i, j) in enumerate(pred.pairs):
        a_i, a_j = amount * rng.standard_normal(2)
        pts_i[k] = pts_i[k] * (1 + a_i * ramp)
        centre_j = (np.linalg.inv(scene.cam_to_world[i]) @ scene.cam_to_world[j])[:3, 3]  # camera j in camera i
        pts_j[k] = centre_j + (pts_j[k] - centre_j) * (1 + a_j * ramp)
    return dataclasses.replace(pred, pts3d_i=pts_i.astype(np.float32), pts3d_j=pts_j.astype(np.float32))


def test_camera_scale_chaining(scene, predictions):
    exact = run(scene, predictions, principal_point="pixel_center", chaining="camera_scale")
    rot, tdir = relative_errors(exact.world_from_cam, scene.cam_to_world)
    assert rot < 0.5 and tdir < 1.0
    np.testing.assert_allclose(exact.depth, scene.depth, rtol=1e-3)
    # Depth distortion along each view's own rays: Procrustes turns it into rotation drift, a
    # pose + scale attachment does not.
    bent = ray_distorted(scene, predictions, 0.05)
    rot_sim, _ = relative_errors(run(scene, bent, principal_point="pixel_center").world_from_cam, scene.cam_to_world)
    rot_cam, _ = relative_errors(run(scene, bent, principal_point="pixel_center", chaining="camera_scale").world_from_cam,
                                 scene.cam_to_world)
    print(f"ray-distorted pointmaps: max rel rotation similarity {rot_sim:.3f} deg, camera_scale {rot_cam:.3f} deg")
    assert rot_cam < 0.5 * rot_sim and rot_cam < 1.0


@pytest.mark.parametrize("chaining", ["similarity", "camera_scale"])
def test_world_pointmaps_in_the_store_workspace_give_identical_results(scene, predictions, chaining, tmp_path):
    """Under the runner the traversal keeps its float64 world pointmaps, depth and confidence in the
    store workspace (memory flat in the number of frames); results are bit-identical to numpy."""
    from monst3r_framework.stages import CameraTrajectory
    from monst3r_framework.store import RunStore

    pred = noisy(predictions, 0.01)
    cfg = PnPMSTConfig(num_workers=2, chaining=chaining)
    inputs = PoseInputs(frames=scene.frameset(), predictions=pred)
    in_memory = PnPMST(cfg).run(inputs, RunContext())
    ws = RunStore(tmp_path / "ws.zarr", lock=False).begin("pose_solver", "k", {}, record=CameraTrajectory)
    spilled = PnPMST(cfg).run(inputs, RunContext(workspace=ws))
    assert "scratch_world_pointmaps" in ws and type(spilled.depth).__name__ == "OutputArray"
    for name in ("world_from_cam", "intrinsics", "depth", "conf"):
        np.testing.assert_array_equal(np.asarray(getattr(spilled, name)), np.asarray(getattr(in_memory, name)))


@pytest.mark.parametrize("chaining", ["similarity", "camera_scale"])
def test_frame_that_is_never_a_first_view_gets_its_focal_from_pnp(scene, chaining):
    """``swin-1-noncyclic`` is not symmetrised (official prefix quirk): the last frame is only ever
    a pair's second view, so no pointmap in its own camera gives its focal. The official fast_pnp
    searches 21 focals over [max(H, W) / 2, 3 max(H, W)]; the pose and a focal from that grid follow."""
    from monst3r_framework.scene_graph import make_pairs

    pairs = make_pairs(scene.n_frames, "swin-1-noncyclic", symmetrize=True)
    assert not np.any(pairs[:, 0] == scene.n_frames - 1)  # the case: last frame never first view
    out = run(scene, scene.pair_predictions(pairs), principal_point="pixel_center", chaining=chaining)
    rot, tdir = relative_errors(out.world_from_cam[:-1], scene.cam_to_world[:-1])
    assert rot < 0.5 and tdir < 1.0
    np.testing.assert_allclose(out.intrinsics[:-1, 0, 0], scene.K[0, 0], rtol=1e-3)
    # the last camera: the inlier count at a 5 px threshold only brackets the focal (official
    # criterion), and PnP trades a wrong focal for a shift along the optical axis: its rotation is
    # checked, its focal against the grid
    rot_last, _ = relative_errors(out.world_from_cam[-2:], scene.cam_to_world[-2:])
    print(f"{chaining}: last frame focal {out.intrinsics[-1, 0, 0]:.2f} (true {scene.K[0, 0]:.2f}), "
          f"relative rotation to its neighbour {rot_last:.3f} deg")
    assert rot_last < 1.0
    grid = np.geomspace(48, 288, 21)
    step = grid[1] / grid[0]  # the search is only as fine as its grid
    f_last = out.intrinsics[-1, 0, 0]
    assert np.isclose(grid, f_last).any() and abs(np.log(f_last / scene.K[0, 0])) <= 2 * np.log(step)
