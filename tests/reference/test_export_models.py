"""glb, ply, colmap and nerfstudio exporters, read back with trimesh, plyfile and pycolmap."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from monst3r_fw_reference import export as ex
from test_export_data import NET_FROM_ORIG, make_inputs, run_exporter

CV_FROM_GL = np.diag([1.0, -1.0, -1.0, 1.0])


def expected_selection(inputs, min_conf, static_only):
    rec = inputs.reconstruction
    keep = rec.conf >= min_conf
    if static_only:
        keep &= ~inputs.masks.dynamic
    return np.flatnonzero(keep)


# ------------------------------------------------------------------------------------ glb / ply


@pytest.mark.parametrize("static_only", [False, True])
def test_glb_loads_in_trimesh_with_points_and_frustums(tmp_path, static_only):
    trimesh = pytest.importorskip("trimesh")
    out = tmp_path / "glb"
    inputs = make_inputs(out)
    rec = inputs.reconstruction
    run_exporter(ex.GlbExporter, inputs, min_conf=1.7, static_only=static_only)
    scene = trimesh.load(out / "scene.glb")
    assert isinstance(scene, trimesh.Scene)
    pc = scene.geometry["points"]
    idx = expected_selection(inputs, 1.7, static_only)
    assert isinstance(pc, trimesh.PointCloud) and len(pc.vertices) == idx.size
    # default view: the first camera's OpenGL frame
    view = np.linalg.inv(rec.world_from_cam[0] @ CV_FROM_GL)
    pts = rec.pts3d_world.reshape(-1, 3)[idx].astype(np.float64)
    np.testing.assert_allclose(pc.vertices, pts @ view[:3, :3].T + view[:3, 3], atol=1e-5)
    np.testing.assert_array_equal(pc.colors[:, :3], inputs.frames.rgb.reshape(-1, 3)[idx])
    cams = sorted(k for k in scene.geometry if k.startswith("camera_"))
    assert cams == [f"camera_{i:04d}" for i in range(4)]
    # each frustum's apex sits at its camera centre (in the exported frame)
    for i, name in enumerate(cams):
        centre = view @ rec.world_from_cam[i][:, 3]
        np.testing.assert_allclose(scene.geometry[name].vertices[0], centre[:3], atol=1e-6)


def test_glb_world_view_and_subsampling(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    out = tmp_path / "glb"
    inputs = make_inputs(out)
    run_exporter(ex.GlbExporter, inputs, min_conf=0.0, max_points=50, view="world", show_cameras=False)
    scene = trimesh.load(out / "scene.glb")
    assert list(scene.geometry) == ["points"]
    v = scene.geometry["points"].vertices
    assert len(v) == 50
    allpts = inputs.reconstruction.pts3d_world.reshape(-1, 3)
    # every exported vertex is one of the reconstruction's points (world coordinates, no transform)
    d = np.linalg.norm(v[:, None, :] - allpts[None], axis=-1).min(1)
    assert d.max() < 1e-6


@pytest.mark.parametrize("binary", [True, False])
def test_ply_attributes_read_by_trimesh_and_plyfile(tmp_path, binary):
    trimesh = pytest.importorskip("trimesh")
    from plyfile import PlyData

    out = tmp_path / "ply"
    inputs = make_inputs(out)
    rec = inputs.reconstruction
    result = run_exporter(ex.PlyExporter, inputs, min_conf=1.2, per_frame=True, binary=binary)
    idx = expected_selection(inputs, 1.2, False)
    assert set(result.files) == {"points.ply"} | {f"frames/frame_{i:04d}.ply" for i in range(4)}

    pc = trimesh.load(out / "points.ply")
    assert isinstance(pc, trimesh.PointCloud) and len(pc.vertices) == idx.size
    np.testing.assert_allclose(pc.vertices, rec.pts3d_world.reshape(-1, 3)[idx], atol=1e-6)
    np.testing.assert_array_equal(pc.colors[:, :3], inputs.frames.rgb.reshape(-1, 3)[idx])

    v = PlyData.read(str(out / "points.ply"))["vertex"]
    assert {p.name for p in v.properties} >= {"x", "y", "z", "red", "green", "blue", "confidence", "dynamic", "frame"}
    np.testing.assert_array_equal(v["confidence"], rec.conf.reshape(-1)[idx])
    np.testing.assert_array_equal(v["dynamic"].astype(bool), rec.dynamic.reshape(-1)[idx])
    np.testing.assert_array_equal(v["frame"], idx // (12 * 16))
    assert v["dynamic"].any() and not v["dynamic"].all()

    counts = [len(trimesh.load(out / "frames" / f"frame_{i:04d}.ply").vertices) for i in range(4)]
    assert counts == [int((rec.conf[i] >= 1.2).sum()) for i in range(4)]


def test_ply_static_only_drops_dynamic_points(tmp_path):
    from plyfile import PlyData

    out = tmp_path / "ply"
    inputs = make_inputs(out)
    run_exporter(ex.PlyExporter, inputs, static_only=True)
    v = PlyData.read(str(out / "points.ply"))["vertex"]
    assert len(v["x"]) == int((~inputs.masks.dynamic).sum())
    assert not v["dynamic"].any()


# ------------------------------------------------------------------------------------ colmap


def _pycolmap():
    return pytest.importorskip("pycolmap")


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_colmap_round_trip_through_pycolmap(tmp_path, fmt):
    pycolmap = _pycolmap()
    out = tmp_path / "colmap"
    inputs = make_inputs(out)
    rec = inputs.reconstruction
    result = run_exporter(ex.ColmapExporter, inputs, format="both", min_conf=1.5)
    for name in ("cameras", "images", "points3D"):
        assert f"sparse/0/{name}.bin" in result.files and f"sparse/0/{name}.txt" in result.files

    model = pycolmap.Reconstruction()
    (model.read_binary if fmt == "bin" else model.read_text)(str(out / "sparse" / "0"))
    assert model.num_cameras() == 4 and model.num_images() == 4   # per-frame intrinsics differ
    for i in range(4):
        image = model.images[i + 1]
        assert image.name == f"frame_{i:04d}.png"
        cam_from_world = np.vstack([image.cam_from_world().matrix(), [0, 0, 0, 1]])
        np.testing.assert_allclose(cam_from_world, np.linalg.inv(rec.world_from_cam[i]), atol=1e-6)
        cam = model.cameras[image.camera_id]
        assert cam.model_name == "PINHOLE" and (cam.height, cam.width) == (24, 32)
        k = rec.intrinsics_original[i]
        # COLMAP's pixel grid has the top-left pixel centre at (0.5, 0.5); ours at (0, 0)
        np.testing.assert_allclose(cam.params, [k[0, 0], k[1, 1], k[0, 2] + 0.5, k[1, 2] + 0.5], atol=1e-6)

    idx = expected_selection(inputs, 1.5, True)
    assert model.num_points3D() == idx.size
    frame_of = idx // (12 * 16)
    xyz = rec.pts3d_world.reshape(-1, 3)[idx]
    order = np.lexsort(xyz.T)
    got = np.array([p.xyz for p in model.points3D.values()])
    got_frames = np.array([p.track.elements[0].image_id - 1 for p in model.points3D.values()])
    assert all(p.track.length() == 1 for p in model.points3D.values())
    got_order = np.lexsort(got.T)
    np.testing.assert_allclose(got[got_order], xyz[order], atol=1e-6)
    np.testing.assert_array_equal(got_frames[got_order], frame_of[order])
    # every observation re-projects onto its stored 2-D point (intrinsics, pose, pixel convention)
    errors = []
    for p in model.points3D.values():
        el = p.track.elements[0]
        image = model.images[el.image_id]
        uv = image.camera.img_from_cam(image.cam_from_world() * p.xyz)
        errors.append(np.linalg.norm(uv - image.points2D[el.point2D_idx].xy))
    assert max(errors) < 1e-4


def test_colmap_observations_are_the_source_pixels(tmp_path):
    from monst3r_fw_reference.export._common import scene_arrays
    from monst3r_fw_reference.export.colmap import observations_original

    inputs = make_inputs(tmp_path / "c")
    scene = scene_arrays(inputs, "test")
    # network pixel (x=3, y=5) of frame 1: x_orig = (3 + 0.25) / 0.5 = 6.5, y_orig = 10.5 (our
    # centre convention) -> COLMAP (7, 11)
    flat = np.array([1 * 12 * 16 + 5 * 16 + 3])
    np.testing.assert_allclose(observations_original(scene, flat, np.asarray(NET_FROM_ORIG)), [[7.0, 11.0]])


def test_colmap_shared_camera_subsampling_and_images(tmp_path):
    pycolmap = _pycolmap()
    out = tmp_path / "colmap"
    inputs = make_inputs(out)
    rec = inputs.reconstruction
    k = np.repeat(rec.intrinsics[:1], 4, axis=0)
    shared = dataclasses.replace(inputs, reconstruction=dataclasses.replace(
        rec, intrinsics=k, intrinsics_original=np.linalg.inv(np.asarray(NET_FROM_ORIG))[None] @ k))
    result = run_exporter(ex.ColmapExporter, shared, format="bin", max_points=37, min_conf=0.0)
    assert not any(f.endswith(".txt") for f in result.files)
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert model.num_cameras() == 1 and model.num_points3D() == 37
    assert {img.camera_id for img in model.images.values()} == {1}
    img = cv2.imread(str(out / "images" / "frame_0002.png"))
    assert img.shape == (24, 32, 3)
    # the original-resolution image is the upsampled network frame: pixel (2x+0.5) ~ network pixel x
    small = cv2.resize(img, (16, 12), interpolation=cv2.INTER_AREA)[..., ::-1].astype(float)
    assert np.abs(small - inputs.frames.rgb[2]).mean() < 40  # bilinear upsample + area downsample of noise


# ------------------------------------------------------------------------------------ nerfstudio


def _project_nerfstudio(frame: dict, pts_world: np.ndarray) -> np.ndarray:
    """Pixel indices (u, v) where nerfstudio's camera sees world points: it shoots the ray of pixel
    (u, v) through (u + 0.5, v + 0.5) of an OpenGL camera (x right, y up, looking down -z)."""
    c2w = np.asarray(frame["transform_matrix"])
    p = (pts_world - c2w[:3, 3]) @ c2w[:3, :3]   # camera (OpenGL) coordinates
    u = frame["fl_x"] * p[:, 0] / -p[:, 2] + frame["cx"] - 0.5
    v = -frame["fl_y"] * p[:, 1] / -p[:, 2] + frame["cy"] - 0.5
    return np.stack([u, v], -1)


def test_nerfstudio_transforms_json(tmp_path):
    from plyfile import PlyData

    out = tmp_path / "ns"
    inputs = make_inputs(out)
    rec = inputs.reconstruction
    run_exporter(ex.NerfstudioExporter, inputs, depth=True, min_conf=1.0)
    meta = json.loads((out / "transforms.json").read_text())
    assert meta["camera_model"] == "OPENCV"
    assert len(meta["frames"]) == 4
    h, w = 12, 16
    ys, xs = np.mgrid[0:h, 0:w]
    for i, frame in enumerate(meta["frames"]):
        assert {"file_path", "transform_matrix", "fl_x", "fl_y", "cx", "cy", "w", "h", "mask_path",
                "depth_file_path"} <= set(frame)
        assert (frame["w"], frame["h"]) == (w, h)
        tm = np.asarray(frame["transform_matrix"])
        assert tm.shape == (4, 4)
        np.testing.assert_allclose(tm @ CV_FROM_GL, rec.world_from_cam[i], atol=1e-12)   # pose round trip
        np.testing.assert_allclose(np.linalg.det(tm[:3, :3]), 1.0, atol=1e-9)
        uv = _project_nerfstudio(frame, rec.pts3d_world[i].reshape(-1, 3).astype(np.float64))
        np.testing.assert_allclose(uv, np.stack([xs.ravel(), ys.ravel()], -1), atol=1e-3)

        image = np.asarray(Image.open(out / frame["file_path"]).convert("RGB"))
        np.testing.assert_array_equal(image, inputs.frames.rgb[i])
        mask = np.asarray(Image.open(out / frame["mask_path"]))
        assert mask.shape == (h, w) and mask.dtype == np.uint8
        np.testing.assert_array_equal(mask == 0, inputs.masks.dynamic[i])   # 0 = ignore = dynamic
        depth = cv2.imread(str(out / frame["depth_file_path"]), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16
        np.testing.assert_allclose(depth * meta["depth_unit_scale_factor"], rec.depth[i], atol=5e-4 + 1e-7)
    assert meta["ply_file_path"] == "points.ply"
    v = PlyData.read(str(out / "points.ply"))["vertex"]
    assert len(v["x"]) == int((~inputs.masks.dynamic).sum()) and not v["dynamic"].any()


def test_nerfstudio_original_resolution(tmp_path):
    out = tmp_path / "ns"
    inputs = make_inputs(out)
    rec = inputs.reconstruction
    run_exporter(ex.NerfstudioExporter, inputs, resolution="original", point_cloud=False, masks=True)
    meta = json.loads((out / "transforms.json").read_text())
    assert "ply_file_path" not in meta and not (out / "points.ply").exists()
    for i, frame in enumerate(meta["frames"]):
        assert (frame["w"], frame["h"]) == (32, 24)
        assert Image.open(out / frame["file_path"]).size == (32, 24)
        assert Image.open(out / frame["mask_path"]).size == (32, 24)
        k = rec.intrinsics_original[i]
        assert frame["fl_x"] == pytest.approx(k[0, 0]) and frame["cx"] == pytest.approx(k[0, 2] + 0.5)
        # the network pixel (x, y) lands on original pixel index (2x + 0.5, 2y + 0.5) -> between 2x and 2x+1
        uv = _project_nerfstudio(frame, rec.pts3d_world[i, 4, 6][None].astype(np.float64))
        np.testing.assert_allclose(uv, [[12.5, 8.5]], atol=1e-3)


def test_point_selection_streams_frames_with_the_same_subset_and_a_frame_stride(tmp_path):
    """select_points reads one frame at a time: the budgeted subset is the one drawn from the whole
    candidate list (as before streaming); frame_stride keeps every n-th frame; gather_points reads back."""
    from monst3r_fw_reference.export._common import gather_points, scene_arrays, select_points

    inputs = make_inputs(tmp_path / "s")
    scene = scene_arrays(inputs, "test")
    rec = inputs.reconstruction
    keep = (rec.conf >= 1.2) & ~inputs.masks.dynamic
    whole = np.flatnonzero(keep)
    budget = len(whole) // 3
    expected = np.sort(np.random.default_rng(7).choice(whole, size=budget, replace=False))
    got = select_points(scene, min_conf=1.2, static_only=True, max_points=budget, seed=7, dynamic=inputs.masks.dynamic)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(select_points(scene, min_conf=1.2, static_only=True, max_points=None, seed=7,
                                                dynamic=lambda f: np.asarray(inputs.masks.dynamic[f])), whole)
    strided = select_points(scene, min_conf=1.2, static_only=True, max_points=None, seed=7,
                            dynamic=inputs.masks.dynamic, frame_stride=2)
    hw = keep[0].size
    np.testing.assert_array_equal(strided, whole[(whole // hw) % 2 == 0])
    np.testing.assert_array_equal(gather_points(scene, "pts3d_world", got),
                                  np.asarray(rec.pts3d_world).reshape(-1, 3)[got])
    np.testing.assert_array_equal(gather_points(scene, "conf", got), np.asarray(rec.conf).reshape(-1)[got])
