"""Dataset readers parse small hand-made samples of each layout (written here, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from monst3r_framework.errors import InputError
from monst3r_fw_eval.datasets import (
    list_sequences,
    read_depth_png,
    read_sequence,
    read_sintel_cam,
    read_sintel_depth,
    write_sintel_cam,
    write_sintel_depth,
)
from monst3r_fw_eval.metrics import matrix_to_quaternion, quaternion_to_matrix

H, W = 6, 8


def _img(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((H, W, 3), value, np.uint8))


def _depth_png(path: Path, metres: np.ndarray, scale: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.round(metres * scale).astype(np.uint16))


def _poses(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.tile(np.eye(4), (n, 1, 1))
    out[:, :3, :3] = quaternion_to_matrix(rng.normal(size=(n, 4)))
    out[:, :3, 3] = rng.normal(size=(n, 3))
    return out


def _tum_lines(stamps: np.ndarray, poses: np.ndarray) -> str:
    q = matrix_to_quaternion(poses[:, :3, :3])
    return "# timestamp tx ty tz qx qy qz qw\n" + "".join(
        f"{t:.6f} {p[0, 3]:.9f} {p[1, 3]:.9f} {p[2, 3]:.9f} {qq[0]:.9f} {qq[1]:.9f} {qq[2]:.9f} {qq[3]:.9f}\n"
        for t, p, qq in zip(stamps, poses, q))


def test_sintel_files_and_sequence(tmp_path):
    root = tmp_path / "sintel" / "training"
    n = 3
    poses = _poses(n)
    k = np.array([[100.0, 0, 4], [0, 100.0, 3], [0, 0, 1]])
    for i in range(n):
        name = f"frame_{i + 1:04d}"
        _img(root / "final" / "alley_2" / f"{name}.png", 10 * i)
        (root / "depth" / "alley_2").mkdir(parents=True, exist_ok=True)
        (root / "camdata_left" / "alley_2").mkdir(parents=True, exist_ok=True)
        write_sintel_depth(root / "depth" / "alley_2" / f"{name}.dpt", np.full((H, W), 1.5 + i, np.float32))
        write_sintel_cam(root / "camdata_left" / "alley_2" / f"{name}.cam", k, np.linalg.inv(poses[i]))
        if i < n - 1:  # the mask script writes none for the last frame
            m = np.zeros((H, W), np.uint8)
            m[:2] = 255
            (root / "dynamic_label_perfect" / "alley_2").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "dynamic_label_perfect" / "alley_2" / f"{name}.png"), m)
    # Byte layout of .dpt: float32 tag, int32 width, int32 height, then data.
    raw = (root / "depth" / "alley_2" / "frame_0001.dpt").read_bytes()
    assert np.frombuffer(raw[:4], "<f4")[0] == np.float32(202021.25)
    assert np.frombuffer(raw[4:12], "<i4").tolist() == [W, H] and len(raw) == 12 + 4 * H * W
    assert read_sintel_depth(root / "depth" / "alley_2" / "frame_0002.dpt")[0, 0] == pytest.approx(2.5)
    k_read, c2w = read_sintel_cam(root / "camdata_left" / "alley_2" / "frame_0003.cam")
    assert np.allclose(k_read, k) and np.allclose(c2w, poses[2])

    assert list_sequences("sintel", tmp_path / "sintel") == ["alley_2"]
    seq = read_sequence("sintel", tmp_path / "sintel", "alley_2")
    assert seq.n_frames == 3 and seq.depth.shape == (3, H, W)
    assert np.allclose(seq.cam_to_world, poses) and np.allclose(seq.intrinsics[1], k)
    assert seq.dynamic_mask[:, :2].all() and not seq.dynamic_mask[:, 2:].any()  # last frame reuses previous
    assert seq.depth_eval == {"max_depth": 70.0, "post_clip_max": 70.0}
    assert seq.load_rgb()[2, 0, 0, 0] == 20
    bad = tmp_path / "bad.dpt"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(InputError, match="tag"):
        read_sintel_depth(bad)


def test_bonn_subset_prepared_and_on_the_fly(tmp_path):
    d = tmp_path / "rgbd_bonn_dataset" / "rgbd_bonn_balloon2"
    n = 145
    stamps = 1000.0 + np.arange(n) * 0.033
    poses = _poses(n, 1)
    for i, t in enumerate(stamps):
        _img(d / "rgb" / f"{t:.6f}.png", i % 250)
        _depth_png(d / "depth" / f"{t:.6f}.png", np.full((H, W), 1.0 + i / 100), 5000.0)
    (d / "groundtruth.txt").write_text(_tum_lines(stamps, poses))
    (d / "rgb.txt").write_text("".join(f"{t:.6f} rgb/{t:.6f}.png\n" for t in stamps))
    (d / "depth.txt").write_text("".join(f"{t + 0.001:.6f} depth/{t:.6f}.png\n" for t in stamps))
    root = tmp_path / "rgbd_bonn_dataset"
    assert list_sequences("bonn", root) == ["balloon2"]
    seq = read_sequence("bonn", root, "balloon2")
    # MonST3R's subset: sorted frames 30..139.
    assert seq.n_frames == 110 and seq.rgb_paths[0].name == f"{stamps[30]:.6f}.png"
    assert seq.depth[0, 0, 0] == pytest.approx(1.30, abs=2e-4)
    assert np.allclose(seq.cam_to_world, poses[30:140], atol=1e-6)
    assert seq.depth_eval["max_depth"] == 70.0
    full = read_sequence("bonn", root, "balloon2", subset=False)
    assert full.n_frames == n and np.allclose(full.cam_to_world, poses, atol=1e-6)
    # A prepared subset (rgb_110/depth_110/groundtruth_110.txt) is read as is.
    import shutil

    for sub, src in (("rgb_110", "rgb"), ("depth_110", "depth")):
        (d / sub).mkdir()
        for p in sorted((d / src).iterdir())[30:140]:
            shutil.copy(p, d / sub / p.name)
    np.savetxt(d / "groundtruth_110.txt", np.loadtxt(d / "groundtruth.txt")[30:140])
    shutil.rmtree(d / "rgb")
    prepared = read_sequence("bonn", root, "balloon2")
    assert prepared.n_frames == 110 and np.allclose(prepared.cam_to_world, poses[30:140], atol=1e-6)


def test_tum_dynamics_association_and_subset(tmp_path):
    d = tmp_path / "tum" / "rgbd_dataset_freiburg3_walking_xyz"
    n = 200
    t_rgb = 5000.0 + np.arange(n) * 0.0333
    t_gt = 5000.0 + np.arange(-10, 2 * n) * 0.01 + 0.002  # mocap at 100 Hz
    gt_poses = _poses(len(t_gt), 2)
    for i, t in enumerate(t_rgb):
        _img(d / "rgb" / f"{t:.6f}.png", i % 250)
        _depth_png(d / "depth" / f"{t:.6f}.png", np.full((H, W), 2.0), 5000.0)
    (d / "rgb.txt").write_text("# rgb\n" + "".join(f"{t:.6f} rgb/{t:.6f}.png\n" for t in t_rgb))
    (d / "depth.txt").write_text("".join(f"{t + 0.004:.6f} depth/{t:.6f}.png\n" for t in t_rgb))
    (d / "groundtruth.txt").write_text(_tum_lines(t_gt, gt_poses))
    seq = read_sequence("tum", tmp_path / "tum", d.name)
    # Mocap ends at 5003.992 s, so rgb frames 0..120 associate (121 frames); every 3rd -> 41.
    assert seq.n_frames == 41
    # Each frame's pose is the mocap pose nearest in time (all within 5 ms here).
    nearest = np.abs(t_gt[None] - seq.timestamps[:, None]).argmin(axis=1)
    assert np.allclose(seq.cam_to_world, gt_poses[nearest], atol=1e-6)
    assert np.allclose(seq.timestamps, t_rgb[:121:3])
    assert seq.depth.shape == (41, H, W) and np.allclose(seq.depth, 2.0)


def test_kitti_depth_png(tmp_path):
    base = tmp_path / "kitti" / "depth_selection" / "val_selection_cropped"
    seq = "2011_09_26_drive_0002_sync_02"
    depth = np.zeros((H, W))
    depth[2:, :] = 12.5
    for i in range(3):
        _depth_png(base / "groundtruth_depth_gathered" / seq / f"{i + 5:010d}.png", depth, 256.0)
        _img(base / "image_gathered" / seq / f"{i + 5:010d}.png", 50)
    s = read_sequence("kitti", tmp_path / "kitti", seq)
    assert s.n_frames == 3 and s.cam_to_world is None
    assert s.depth[0, 3, 3] == pytest.approx(12.5) and (s.depth[:, :2] == 0).all()  # 0 = invalid
    assert s.depth_eval["max_depth"] is None
    assert read_depth_png(base / "groundtruth_depth_gathered" / seq / "0000000005.png", 256.0).dtype == np.float32
    eight_bit = tmp_path / "vis.png"
    cv2.imwrite(str(eight_bit), np.zeros((H, W), np.uint8))
    with pytest.raises(InputError, match="16-bit"):
        read_depth_png(eight_bit, 256.0)


def test_scannet_prepared_and_raw(tmp_path):
    d = tmp_path / "scannetv2" / "scene0707_00"
    n = 9
    poses = _poses(n, 4)
    for i in range(n):
        _img(d / "color" / f"{i}.jpg", 3 * i)
        _depth_png(d / "depth" / f"{i}.png", np.full((H, W), 0.5 + i / 10), 1000.0)
        (d / "pose").mkdir(exist_ok=True)
        np.savetxt(d / "pose" / f"{i}.txt", poses[i])
    (d / "intrinsic").mkdir()
    np.savetxt(d / "intrinsic" / "intrinsic_color.txt", np.array([[500, 0, 4, 0], [0, 500, 3, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    s = read_sequence("scannet", tmp_path / "scannetv2", "scene0707_00")
    assert s.n_frames == 3  # [:270:3] of 9 frames -> 0, 3, 6
    assert np.allclose(s.cam_to_world, poses[[0, 3, 6]]) and s.depth[1, 0, 0] == pytest.approx(0.8)
    assert s.intrinsics[0, 0, 0] == 500
    # The prepared layout: color_90/frame_0000.jpg, depth_90/frame_0000.png, pose_90.txt (16 numbers/line).
    for j, i in enumerate([0, 3, 6]):
        _img(d / "color_90" / f"frame_{j:04d}.jpg", 3 * i)
        _depth_png(d / "depth_90" / f"frame_{j:04d}.png", np.full((H, W), 0.5 + i / 10), 1000.0)
    (d / "pose_90.txt").write_text("".join(" ".join(map(str, poses[i].ravel())) + "\n" for i in [0, 3, 6]))
    p = read_sequence("scannet", tmp_path / "scannetv2", "scene0707_00")
    assert p.rgb_paths[0].name == "frame_0000.jpg" and np.allclose(p.cam_to_world, poses[[0, 3, 6]])


def test_davis_frames_and_masks(tmp_path):
    base = tmp_path / "davis" / "DAVIS"
    for i in range(4):
        _img(base / "JPEGImages" / "480p" / "car-shadow" / f"{i:05d}.jpg", 100)
        m = np.zeros((H, W), np.uint8)
        m[:, : i + 1] = 255
        (base / "Annotations" / "480p" / "car-shadow").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(base / "Annotations" / "480p" / "car-shadow" / f"{i:05d}.png"), m)
    assert list_sequences("davis", tmp_path / "davis") == ["car-shadow"]
    s = read_sequence("davis", tmp_path / "davis", "car-shadow")
    assert s.n_frames == 4 and s.depth is None
    assert s.dynamic_mask.sum(axis=(1, 2)).tolist() == [H * 1, H * 2, H * 3, H * 4]


def test_synthetic_layout(tmp_path):
    from monst3r_fw_eval.synth import make_scene

    scene = make_scene(n_frames=3, size_hw=(16, 24), seed=2, n_objects=1, supersample=1)
    scene.save(tmp_path / "synth", video=False)
    s = read_sequence("synthetic", tmp_path / "synth")
    assert s.n_frames == 3 and np.array_equal(s.depth, scene.depth)
    assert np.allclose(s.cam_to_world, scene.cam_to_world) and np.allclose(s.intrinsics[0], scene.K)
    assert np.array_equal(s.dynamic_mask, scene.dynamic_mask) and np.array_equal(s.load_rgb(), scene.rgb)


def test_unknown_dataset_and_missing_paths(tmp_path):
    with pytest.raises(InputError, match="unknown dataset"):
        read_sequence("nyu2", tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        read_sequence("sintel", tmp_path / "nothing", "alley_2")
    with pytest.raises(InputError, match="not found"):
        read_sequence("bonn", tmp_path, "balloon2")
