"""Mask builders: ``flow_static`` on a synthetic moving object, ``user_masks`` folders, ``sam2_refine`` gating."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from monst3r_framework.errors import InputError, StageError
from monst3r_framework.stages import CameraTrajectory, MaskInputs, RunContext
from monst3r_fw_reference.mask.flow_static import FlowStaticConfig, FlowStaticMask
from monst3r_fw_reference.mask.sam2_refine import SAM2Refine, SAM2RefineConfig
from monst3r_fw_reference.mask.user_masks import UserMasks, UserMasksConfig

synth = pytest.importorskip("monst3r_fw_eval.synth")


def swinstride_pairs(n: int, window: int = 5) -> np.ndarray:
    edges = sorted({(i, i + k) for i in range(n) for k in range(1, 2 * window, 2) if i + k < n})
    return np.array(edges + [(j, i) for i, j in edges], np.int64)


@pytest.fixture(scope="module")
def scene():
    return synth.make_scene(n_frames=8, size_hw=(64, 96), seed=0, n_objects=1)


@pytest.fixture(scope="module")
def inputs(scene):
    pairs = swinstride_pairs(scene.n_frames)
    return MaskInputs(frames=scene.frameset(), predictions=scene.pair_predictions(pairs), flow=scene.flow_field(pairs))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_flow_static_iou_gt_pointmaps_and_flow(scene, inputs):
    out = FlowStaticMask(FlowStaticConfig(num_workers=2)).run(inputs, RunContext())
    assert out.dynamic.shape == scene.dynamic_mask.shape and out.dynamic.dtype == bool
    assert out.error.dtype == np.float32 and 0.0 <= out.error.min() and out.error.max() <= 1.0
    score = iou(out.dynamic, scene.dynamic_mask)
    per_frame = [iou(d, g) for d, g in zip(out.dynamic, scene.dynamic_mask)]
    print(f"flow_static IoU (GT pointmaps + GT flow, 8x64x96): overall {score:.3f}, per frame min {min(per_frame):.3f}")
    assert score >= 0.8
    assert min(per_frame) >= 0.7
    # the residual is small on the static background (only the (W/2, H/2) vs ((W-1)/2, (H-1)/2)
    # principal-point mismatch between MonST3R's convention and the synthetic camera remains)
    assert float(np.median(out.error[~scene.dynamic_mask])) < 0.1


def test_flow_static_solver_poses(scene, inputs):
    cams = CameraTrajectory(world_from_cam=scene.cam_to_world, intrinsics=np.tile(scene.K, (scene.n_frames, 1, 1)),
                            depth=scene.depth, conf=np.ones_like(scene.depth))
    out = FlowStaticMask(FlowStaticConfig(pose_source="solver")).run(
        dataclasses.replace(inputs, cameras=cams), RunContext())
    assert iou(out.dynamic, scene.dynamic_mask) >= 0.8


def test_flow_static_threads(scene, inputs, monkeypatch):
    """threads: torch's intra-op thread count inside the stage only, the masks unchanged."""
    import torch

    from monst3r_fw_reference.mask import flow_static

    seen = []
    real = flow_static.flow_residual_maps
    monkeypatch.setattr(flow_static, "flow_residual_maps", lambda *a, **kw: seen.append(torch.get_num_threads()) or real(*a, **kw))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = dict(pose_source="homography", temporal_radius=1)
        one = FlowStaticMask(FlowStaticConfig(threads=1, **cfg)).run(inputs, RunContext())
        assert seen == [1] and torch.get_num_threads() == 2
        two = FlowStaticMask(FlowStaticConfig(**cfg)).run(inputs, RunContext())
        assert seen == [1, 2]
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(one.error, two.error)
    np.testing.assert_array_equal(one.dynamic, two.dynamic)


def test_flow_static_reacts_to_the_flow(scene, inputs):
    # a patch of static background given a wrong flow (+6 px in x, both directions) must turn dynamic
    ff = inputs.flow
    fij, fji = ff.flow_ij.copy(), ff.flow_ji.copy()
    rows, cols = slice(4, 16), slice(4, 28)
    assert not scene.dynamic_mask[:, rows, cols].any()
    fij[:, rows, cols, 0] += 6.0
    fji[:, rows, cols, 0] += 6.0
    bad = dataclasses.replace(ff, flow_ij=fij, flow_ji=fji)
    out = FlowStaticMask(FlowStaticConfig(num_workers=2)).run(dataclasses.replace(inputs, flow=bad), RunContext())
    assert out.dynamic[:, rows, cols].mean() > 0.9
    assert iou(out.dynamic, scene.dynamic_mask) < 0.8


def test_flow_static_needs_flow(inputs):
    with pytest.raises(StageError, match="flow_estimator"):
        FlowStaticMask(FlowStaticConfig()).run(dataclasses.replace(inputs, flow=None), RunContext())


def _write_masks(folder, masks, names):
    folder.mkdir(exist_ok=True)
    for m, name in zip(masks, names):
        Image.fromarray((m * 255).astype(np.uint8)).save(folder / name)


def test_user_masks_network_and_original_size(scene, tmp_path):
    frames = scene.frameset()
    gt = scene.dynamic_mask
    _write_masks(tmp_path / "net", gt, [f"mask_{k:04d}.png" for k in range(len(gt))])
    out = UserMasks(UserMasksConfig(path=str(tmp_path / "net"))).run(MaskInputs(frames=frames), RunContext())
    assert out.source == "user" and np.array_equal(out.dynamic, gt)
    # original video twice as large, network = downscale by 2: nearest lookup through the affine
    big = np.repeat(np.repeat(gt, 2, axis=1), 2, axis=2)
    frames2 = dataclasses.replace(frames, original_hw=(128, 192),
                                  network_from_original=((0.5, 0.0, -0.25), (0.0, 0.5, -0.25), (0.0, 0.0, 1.0)))
    _write_masks(tmp_path / "orig", big, [f"{k}.png" for k in range(len(gt))])
    out2 = UserMasks(UserMasksConfig(path=str(tmp_path / "orig"))).run(MaskInputs(frames=frames2), RunContext())
    assert np.array_equal(out2.dynamic, gt)
    inv = UserMasks(UserMasksConfig(path=str(tmp_path / "net"), dynamic_is="black")).run(
        MaskInputs(frames=frames), RunContext())
    assert np.array_equal(inv.dynamic, ~gt)


def test_user_masks_errors(scene, tmp_path):
    frames = scene.frameset()
    gt = scene.dynamic_mask
    _write_masks(tmp_path / "gap", gt[:-1], [f"m{k}.png" for k in range(len(gt) - 1)])
    with pytest.raises(InputError, match=r"lacks masks for frames \[7\]"):
        UserMasks(UserMasksConfig(path=str(tmp_path / "gap"))).run(MaskInputs(frames=frames), RunContext())
    _write_masks(tmp_path / "dup", gt[:2], ["a_1.png", "b_01.png"])
    with pytest.raises(InputError, match="both claim frame 1"):
        UserMasks(UserMasksConfig(path=str(tmp_path / "dup"))).run(MaskInputs(frames=frames), RunContext())
    with pytest.raises(InputError, match="folder not found"):
        UserMasks(UserMasksConfig(path=str(tmp_path / "nope"))).run(MaskInputs(frames=frames), RunContext())


def test_sam2_refine_not_installed_message(tmp_path):
    stage = SAM2Refine(SAM2RefineConfig(checkpoint=str(tmp_path / "missing.pt")))
    try:
        import sam2  # noqa: F401
        match = "checkpoint not found"
    except ImportError:
        match = r"not installed: pip install monst3r-fw\[sam2\]"
    with pytest.raises(StageError, match=match):
        stage.setup(RunContext())


def test_flow_static_streams_through_the_store_workspace(scene, inputs, tmp_path):
    """Under the runner the error and mask are written frame by frame into the workspace and the raw
    maps wait there for the temporal average: the same masks, errors and confidences as in memory."""
    from monst3r_framework.stages import DynamicMasks
    from monst3r_framework.store import RunStore

    cfg = FlowStaticConfig(pose_source="homography", valid_pixels="fb_consistent", normalisation="median",
                           temporal_radius=1, batch_size=3, min_component=0.003, morph_radius=1)
    in_memory = FlowStaticMask(cfg).run(inputs, RunContext())
    ws = RunStore(tmp_path / "ws.zarr", lock=False).begin("mask_builder", "k", {}, record=DynamicMasks)
    streamed = FlowStaticMask(cfg).run(inputs, RunContext(workspace=ws))
    assert "scratch_raw_error" in ws and type(streamed.error).__name__ == "OutputArray"
    np.testing.assert_array_equal(np.asarray(streamed.error), in_memory.error)
    np.testing.assert_array_equal(np.asarray(streamed.dynamic), in_memory.dynamic)
    np.testing.assert_array_equal(streamed.confidence, in_memory.confidence)
    assert streamed.notices == in_memory.notices and in_memory.dynamic.any()
