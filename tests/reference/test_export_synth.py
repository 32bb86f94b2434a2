"""Exported camera models agree with a synthetic scene's exact optical flow: static points of frame
0 projected into frame 1 through the COLMAP model (pycolmap) and through transforms.json land where
the ground-truth flow says they move."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monst3r_framework.stages import CameraTrajectory, DynamicMasks, ExportInputs, reconstruction_from_cameras
from monst3r_fw_reference import export as ex
from test_export_data import run_exporter

synth = pytest.importorskip("monst3r_fw_eval.synth", reason="synthetic scenes not available yet")


@pytest.fixture(scope="module")
def scene():
    return synth.make_scene(n_frames=3, size_hw=(48, 64), seed=0, n_objects=1)


def _inputs(scene, out_dir) -> ExportInputs:
    frames = scene.frameset()
    n = scene.n_frames
    cams = CameraTrajectory(world_from_cam=scene.cam_to_world, intrinsics=np.repeat(scene.K[None], n, 0),
                            depth=scene.depth, conf=np.full(scene.depth.shape, 2.0, np.float32))
    masks = DynamicMasks(dynamic=scene.dynamic_mask, source="flow")
    return ExportInputs(frames=frames, reconstruction=reconstruction_from_cameras(frames, cams, masks),
                        out_dir=out_dir, init=cams, masks=masks)


def _static_frame0(scene):
    h, w = scene.depth.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w]
    target = np.stack([xs, ys], -1) + scene.flow(0, 1)
    # static pixels that stay inside frame 1 (flow of occluded pixels still exact: it is geometric)
    keep = ~scene.dynamic_mask[0] & (target[..., 0] > 0) & (target[..., 0] < w - 1) \
        & (target[..., 1] > 0) & (target[..., 1] < h - 1)
    return keep, target


def test_colmap_model_reproduces_ground_truth_flow(scene, tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    out = tmp_path / "colmap"
    inputs = _inputs(scene, out)
    run_exporter(ex.ColmapExporter, inputs, min_conf=0.0, max_points=None, write_images=False, format="bin")
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    keep, target = _static_frame0(scene)
    pts = np.asarray(inputs.reconstruction.pts3d_world[0], np.float64)[keep]
    image1 = model.images[2]
    cam_pts = pts @ image1.cam_from_world().rotation.matrix().T + image1.cam_from_world().translation
    uv = image1.camera.img_from_cam(cam_pts) - 0.5          # COLMAP corner convention -> ours
    assert keep.sum() > 1000
    np.testing.assert_allclose(uv, target[keep], atol=1e-3)
    # the model holds every static pixel of every frame exactly once
    assert model.num_points3D() == int((~scene.dynamic_mask).sum())


def test_nerfstudio_cameras_reproduce_ground_truth_flow(scene, tmp_path):
    out = tmp_path / "ns"
    inputs = _inputs(scene, out)
    run_exporter(ex.NerfstudioExporter, inputs, point_cloud=False)
    frame1 = json.loads((out / "transforms.json").read_text())["frames"][1]
    keep, target = _static_frame0(scene)
    pts = np.asarray(inputs.reconstruction.pts3d_world[0], np.float64)[keep]
    c2w_gl = np.asarray(frame1["transform_matrix"])
    p = (pts - c2w_gl[:3, 3]) @ c2w_gl[:3, :3]                # OpenGL camera: looking down -z, y up
    u = frame1["fl_x"] * p[:, 0] / -p[:, 2] + frame1["cx"] - 0.5
    v = -frame1["fl_y"] * p[:, 1] / -p[:, 2] + frame1["cy"] - 0.5
    np.testing.assert_allclose(np.stack([u, v], -1), target[keep], atol=1e-3)
