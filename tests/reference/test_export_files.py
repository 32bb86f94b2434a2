"""monst3r_layout, tum, depth_png16, mask_png and summary: files checked with independent readers."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation
from scipy.spatial.transform import Rotation

from monst3r_fw_reference import export as ex
from monst3r_fw_reference.export.monst3r_layout import format_monst3r_traj, format_tum
from test_export_data import make_inputs, run_exporter

# Poses whose official pred_traj.txt lines were worked out by hand (quaternions of 0/180/90 degrees).
HAND_C2W = np.tile(np.eye(4), (4, 1, 1))
HAND_C2W[1, :3, :3] = np.diag([1.0, -1.0, -1.0])            # 180 deg about x: q = (w 0, x 1, y 0, z 0)
HAND_C2W[1, :3, 3] = [0.5, -2.0, 3.25]
HAND_C2W[2, :3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]    # 90 deg about z: w = z = sqrt(1/2)
HAND_C2W[2, :3, 3] = [0.1, 0.2, 0.3]
HAND_C2W[3, :3, :3] = np.diag([-1.0, -1.0, 1.0])            # 180 deg about z
HAND_C2W[3, :3, 3] = [1e-5, 100.0, -7.0]

HAND_PRED_TRAJ = (
    "0.0 0.0 0.0 0.0 1.0 0.0 0.0 0.0\n"
    "1.0 0.5 -2.0 3.25 0.0 1.0 0.0 0.0\n"
    "2.0 0.1 0.2 0.3 0.7071067811865475 0.0 0.0 0.7071067811865475\n"
    "3.0 1e-05 100.0 -7.0 0.0 0.0 0.0 1.0\n"
)


def official_pred_traj(c2w: np.ndarray) -> str:
    """The official writer's logic, rebuilt from its documented steps with evo (test-only):
    c2w_to_tumpose -> [x y z qw qx qy qz], make_traj, then one f-string line per pose."""
    from evo.core.trajectory import PoseTrajectory3D

    rows = []
    for pose in c2w:
        qx, qy, qz, qw = Rotation.from_matrix(pose[:3, :3]).as_quat()
        rows.append(np.concatenate([pose[:3, -1], [qw, qx, qy, qz]]))
    tum = np.stack(rows)
    traj = PoseTrajectory3D(positions_xyz=tum[:, :3], orientations_quat_wxyz=tum[:, 3:],
                            timestamps=np.arange(len(c2w)).astype(float))
    text = ""
    for i in range(traj.num_poses):
        pos = " ".join(map(str, traj.positions_xyz[i]))
        quat = " ".join(map(str, traj.orientations_quat_wxyz[i][[0, 1, 2, 3]]))
        text += f"{traj.timestamps[i]} {pos} {quat}\n"
    return text


def test_pred_traj_matches_hand_worked_official_lines():
    assert format_monst3r_traj(HAND_C2W) == HAND_PRED_TRAJ
    assert official_pred_traj(HAND_C2W) == HAND_PRED_TRAJ


def test_pred_traj_matches_official_writer_on_random_poses(tmp_path):
    inputs = make_inputs(tmp_path / "out", n_frames=6, seed=3)
    assert format_monst3r_traj(inputs.reconstruction.world_from_cam) == official_pred_traj(
        inputs.reconstruction.world_from_cam)


def test_monst3r_layout_files(tmp_path):
    out = tmp_path / "layout"
    inputs = make_inputs(out)
    rec, n = inputs.reconstruction, 4
    result = run_exporter(ex.Monst3rLayoutExporter, inputs)
    expected = {"pred_traj.txt", "pred_intrinsics.txt", "_depth_maps.gif"}
    for i in range(n):
        expected |= {f"frame_{i:04d}.npy", f"frame_{i:04d}.png", f"conf_{i}.npy", f"init_conf_{i}.npy",
                     f"dynamic_mask_{i}.png", f"enlarged_dynamic_mask_{i}.png"}
    assert set(result.files) == expected

    assert (out / "pred_traj.txt").read_text() == official_pred_traj(rec.world_from_cam)
    # pred_intrinsics.txt: one row of 9 numbers per frame, %.6f, as np.savetxt writes it
    line0 = (out / "pred_intrinsics.txt").read_text().splitlines()[0]
    k0 = rec.intrinsics[0]
    assert line0 == (f"20.000000 0.000000 {k0[0, 2]:.6f} 0.000000 21.000000 {k0[1, 2]:.6f} "
                     "0.000000 0.000000 1.000000")
    assert line0 == "20.000000 0.000000 7.750000 0.000000 21.000000 5.000000 0.000000 0.000000 1.000000"
    ks = np.loadtxt(out / "pred_intrinsics.txt")
    assert ks.shape == (n, 9)
    np.testing.assert_allclose(ks.reshape(n, 3, 3), rec.intrinsics, atol=5e-7)

    for i in range(n):
        depth = np.load(out / f"frame_{i:04d}.npy")
        assert depth.dtype == np.float32 and depth.shape == (12, 16)
        np.testing.assert_array_equal(depth, rec.depth[i])
        np.testing.assert_allclose(np.load(out / f"conf_{i}.npy"), np.log(rec.conf[i]), rtol=1e-6)
        np.testing.assert_allclose(np.load(out / f"init_conf_{i}.npy"), np.log(inputs.init.conf[i]), rtol=1e-6)
        mask = np.asarray(Image.open(out / f"dynamic_mask_{i}.png"))
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, rec.dynamic[i])
        big = np.asarray(Image.open(out / f"enlarged_dynamic_mask_{i}.png"))
        np.testing.assert_array_equal(big == 255, binary_dilation(rec.dynamic[i], np.ones((3, 3), bool)))
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"frame_{i:04d}.png").convert("RGB")),
                                      inputs.frames.rgb[i])
    gif = Image.open(out / "_depth_maps.gif")
    assert gif.n_frames == n and gif.size == (16, 12)
    assert gif.info.get("loop") == 0 and gif.info.get("duration") == 100


def test_depth_gif_exact_jet_colours_written_frame_by_frame(tmp_path):
    """The GIF holds exactly colourise_depth's colours, and each frame is on disk before the next one is
    drawn from the iterator (nothing whole-video in memory: Image.save(save_all=True) writes at the end)."""
    from monst3r_fw_reference.export.monst3r_layout import colourise_depth, write_depth_gif

    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 3.0, (6, 12, 16))
    depth[0] = 1.0  # a frame with two colours only: the palette must not be fitted to frame 0
    depth[0, :3] = 3.0
    depth[2, 0, 0] = np.nan
    path = tmp_path / "d.gif"
    sizes = []

    def frames():
        for d in depth:
            sizes.append(path.stat().st_size if path.exists() else 0)
            yield d

    write_depth_gif(path, frames(), 80, top=float(np.nanmax(depth)))
    assert all(b > a for a, b in zip(sizes[1:], sizes[2:])), sizes  # grows with every frame drawn
    gif = Image.open(path)
    assert gif.n_frames == 6 and gif.info.get("loop") == 0 and gif.info.get("duration") == 80
    want = colourise_depth(depth, float(np.nanmax(depth)))
    for k in range(6):
        gif.seek(k)
        np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), want[k], err_msg=f"frame {k}")
    # colourise_depth is OpenCV's jet of the rounded 0..255 level
    level = np.round(np.nan_to_num(depth[3]) / np.nanmax(depth) * 255).astype(np.uint8)
    np.testing.assert_array_equal(want[3], cv2.applyColorMap(level, cv2.COLORMAP_JET)[..., ::-1])


def test_monst3r_layout_user_masks_dilate_5x5_and_raw_conf(tmp_path):
    out = tmp_path / "layout"
    inputs = make_inputs(out, mask_source="user", with_init=False)
    run_exporter(ex.Monst3rLayoutExporter, inputs, conf_transform="none", depth_gif=False)
    dyn = inputs.masks.dynamic
    for i in range(4):
        big = np.asarray(Image.open(out / f"enlarged_dynamic_mask_{i}.png")) == 255
        np.testing.assert_array_equal(big, binary_dilation(dyn[i], np.ones((5, 5), bool)))
        # no init: init_conf falls back to the final confidences
        np.testing.assert_array_equal(np.load(out / f"init_conf_{i}.npy"), inputs.reconstruction.conf[i])
        np.testing.assert_array_equal(np.load(out / f"conf_{i}.npy"), inputs.reconstruction.conf[i])
    assert not (out / "_depth_maps.gif").exists()


def test_tum_parses_with_evo_and_matches_poses(tmp_path):
    from evo.tools.file_interface import read_tum_trajectory_file

    out = tmp_path / "tum"
    inputs = make_inputs(out, n_frames=5, seed=2)
    run_exporter(ex.TumExporter, inputs)
    traj = read_tum_trajectory_file(str(out / "trajectory_tum.txt"))
    np.testing.assert_array_equal(traj.timestamps, inputs.frames.timestamps)
    c2w = inputs.reconstruction.world_from_cam
    np.testing.assert_array_equal(traj.positions_xyz, c2w[:, :3, 3])
    np.testing.assert_allclose(np.stack(traj.poses_se3), c2w, atol=1e-12)
    # the scalar-last order really differs from pred_traj.txt's scalar-first one
    first = (out / "trajectory_tum.txt").read_text().splitlines()[1].split()
    q = Rotation.from_matrix(c2w[0, :3, :3]).as_quat()
    np.testing.assert_array_equal(np.array(first[4:], float), q)


def test_tum_hand_worked_lines():
    text = format_tum(np.array([1.5, 2.0, 3.25, 10.0]), HAND_C2W, header=False)
    assert text == ("1.5 0.0 0.0 0.0 0.0 0.0 0.0 1.0\n"
                    "2.0 0.5 -2.0 3.25 1.0 0.0 0.0 0.0\n"
                    "3.25 0.1 0.2 0.3 0.0 0.0 0.7071067811865475 0.7071067811865475\n"
                    "10.0 1e-05 100.0 -7.0 0.0 0.0 1.0 0.0\n")


def test_tum_index_timestamps(tmp_path):
    out = tmp_path / "tum"
    run_exporter(ex.TumExporter, make_inputs(out), timestamps="index", header=False, filename="t.txt")
    data = np.loadtxt(out / "t.txt")
    np.testing.assert_array_equal(data[:, 0], np.arange(4.0))


def test_depth_png16_round_trips_with_stated_scale(tmp_path):
    out = tmp_path / "d16"
    inputs = make_inputs(out)
    rec = inputs.reconstruction
    run_exporter(ex.DepthPng16Exporter, inputs, scale=5000.0, min_conf=1.5)
    meta = json.loads((out / "depth_png16.json").read_text())
    assert meta["scale"] == 5000.0 and meta["invalid_value"] == 0
    for i in range(4):
        raw = cv2.imread(str(out / f"depth_{i:04d}.png"), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16 and raw.shape == (12, 16)
        valid = rec.conf[i] >= 1.5
        np.testing.assert_array_equal(raw == 0, ~valid)
        err = np.abs(raw[valid] / 5000.0 - rec.depth[i][valid])
        assert err.max() <= 0.5 / 5000.0 + 1e-7


def test_depth_png16_out_of_range_is_zero(tmp_path):
    out = tmp_path / "d16"
    inputs = make_inputs(out)
    run_exporter(ex.DepthPng16Exporter, inputs, scale=30000.0)   # depth > 2.1845 overflows uint16
    raw = cv2.imread(str(out / "depth_0000.png"), cv2.IMREAD_UNCHANGED)
    too_deep = inputs.reconstruction.depth[0] * 30000.0 > 65535
    assert too_deep.any() and (raw[too_deep] == 0).all() and (raw[~too_deep] > 0).all()
    assert json.loads((out / "depth_png16.json").read_text())["pixels_out_of_range"] > 0


@pytest.mark.parametrize("invert,dilate", [(False, 0), (True, 3)])
def test_mask_png(tmp_path, invert, dilate):
    out = tmp_path / "m"
    inputs = make_inputs(out)
    run_exporter(ex.MaskPngExporter, inputs, invert=invert, dilate=dilate)
    for i in range(4):
        m = cv2.imread(str(out / f"mask_{i:04d}.png"), cv2.IMREAD_UNCHANGED)
        assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
        dyn = inputs.masks.dynamic[i]
        if dilate:
            dyn = binary_dilation(dyn, np.ones((dilate, dilate), bool))
        np.testing.assert_array_equal(m == 255, ~dyn if invert else dyn)


def test_mask_png_source_masks_requires_mask_builder(tmp_path):
    from monst3r_framework.errors import StageError

    with pytest.raises(StageError, match="no mask builder output"):
        run_exporter(ex.MaskPngExporter, make_inputs(tmp_path / "m", with_masks=False), source="masks")


def test_summary_json(tmp_path):
    out = tmp_path / "s"
    info = {"run_id": "0412", "config_hash": "3f9c0a1d2b7e4c55",
            "timings": {"pair_predictor": 1.5, "global_aligner": np.float64(2.25)}}
    inputs = make_inputs(out, run_info=info)
    run_exporter(ex.SummaryExporter, inputs)
    s = json.loads((out / "summary.json").read_text())
    assert s["n_frames"] == 4 and s["size_hw"] == [12, 16] and s["original_hw"] == [24, 32]
    assert s["frame_index"] == [0, 2, 4, 6] and s["timestamps"] == [1234.5, 1234.75, 1235.0, 1235.25]
    assert s["config_hash"] == "3f9c0a1d2b7e4c55" and s["run_id"] == "0412"
    assert s["timings"] == {"pair_predictor": 1.5, "global_aligner": 2.25} and s["total_seconds"] == 3.75
    rec = inputs.reconstruction
    st = s["statistics"]
    assert st["depth_min"] == pytest.approx(float(rec.depth.min()))
    assert st["dynamic_fraction"] == pytest.approx(float(rec.dynamic.mean()))
    centres = rec.world_from_cam[:, :3, 3]
    assert st["camera_path_length"] == pytest.approx(float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()))


def test_summary_hashes_the_recipe_when_no_hash_given(tmp_path):
    out = tmp_path / "s"
    recipe = {"schema": 1, "stages": {"pose_solver": {"type": "pnp_mst", "iterations": 10}}}
    inputs = make_inputs(out, run_info={"recipe": recipe})
    run_exporter(ex.SummaryExporter, dataclasses.replace(inputs), statistics=False)
    s = json.loads((out / "summary.json").read_text())
    expected = hashlib.sha256(json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert s["config_hash"] == expected
    assert "statistics" not in s and s["timings"] == {}
