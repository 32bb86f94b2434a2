"""Tiny hand-built reconstructions for the exporter tests, and the exporters' shared contract
(config round-trip, registration, atomic output folders, input checks).

The scene: F frames at network resolution H x W; the original video is twice as large (resize by
0.5 in the pixel-centre convention: x_net = 0.5 * x_orig - 0.25); per-frame intrinsics differ;
poses are random rotations and translations; depth is random in [1, 3] and the world points are
its exact back-projection, so every exporter's geometry can be checked by re-projection.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from monst3r_framework.errors import ShapeError, StageError
from monst3r_framework.geometry import depth_to_world_points
from monst3r_framework.stages import (
    CameraTrajectory,
    DynamicMasks,
    ExportInputs,
    FrameSet,
    Reconstruction,
    RunContext,
)
from monst3r_fw_reference import export as ex

NET_FROM_ORIG = ((0.5, 0.0, -0.25), (0.0, 0.5, -0.25), (0.0, 0.0, 1.0))


def random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3, 3) random rotations (QR of Gaussian matrices, determinant +1)."""
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return q


def make_inputs(out_dir: Path, n_frames: int = 4, hw: tuple[int, int] = (12, 16), seed: int = 0,
                mask_source: str = "flow", with_init: bool = True, with_masks: bool = True,
                run_info: dict | None = None) -> ExportInputs:
    rng = np.random.default_rng(seed)
    h, w = hw
    c2w = np.tile(np.eye(4), (n_frames, 1, 1))
    c2w[:, :3, :3] = random_rotations(rng, n_frames)
    c2w[:, :3, 3] = rng.normal(size=(n_frames, 3))
    k = np.tile(np.eye(3), (n_frames, 1, 1))
    k[:, 0, 0] = 20.0 + np.arange(n_frames)
    k[:, 1, 1] = 21.0 + 0.5 * np.arange(n_frames)
    k[:, 0, 2] = (w - 1) / 2 + 0.25
    k[:, 1, 2] = (h - 1) / 2 - 0.5
    k_orig = np.linalg.inv(np.asarray(NET_FROM_ORIG))[None] @ k
    depth = rng.uniform(1.0, 3.0, size=(n_frames, h, w)).astype(np.float32)
    conf = rng.uniform(1.0, 3.0, size=(n_frames, h, w)).astype(np.float32)
    dynamic = np.zeros((n_frames, h, w), bool)
    dynamic[:, 3:7, 5:9] = True
    dynamic[1, 0, 0] = True
    rgb = rng.integers(0, 256, size=(n_frames, h, w, 3), dtype=np.uint8)
    frames = FrameSet(rgb=rgb, frame_index=np.arange(n_frames, dtype=np.int64) * 2,
                      timestamps=1234.5 + 0.25 * np.arange(n_frames), original_hw=(2 * h, 2 * w),
                      network_from_original=NET_FROM_ORIG, source="tiny.mp4")
    rec = Reconstruction(world_from_cam=c2w, intrinsics=k, intrinsics_original=k_orig, depth=depth, conf=conf,
                         pts3d_world=depth_to_world_points(depth, k, c2w), dynamic=dynamic,
                         loss_names=("pointmap", "flow"))
    init = None
    if with_init:
        init = CameraTrajectory(world_from_cam=c2w, intrinsics=k, depth=depth,
                                conf=rng.uniform(1.0, 5.0, size=(n_frames, h, w)).astype(np.float32))
    masks = DynamicMasks(dynamic=dynamic, source=mask_source) if with_masks else None
    return ExportInputs(frames=frames, reconstruction=rec, out_dir=out_dir, init=init, masks=masks,
                        run_info=run_info or {})


def run_exporter(cls, inputs: ExportInputs, seed: int = 0, **config):
    stage = cls(cls.config_model.model_validate({"type": cls.name, **config}))
    stage.setup(RunContext(seed=seed))
    return stage.run(inputs, RunContext(seed=seed))


def test_fixture_points_are_backprojected_depth(tmp_path):
    inputs = make_inputs(tmp_path / "out")
    rec = inputs.reconstruction
    # camera-frame z of every world point equals the depth map
    w2c = np.linalg.inv(rec.world_from_cam)
    pts = rec.pts3d_world.reshape(len(w2c), -1, 3).astype(np.float64)
    z = np.einsum("fj,fnj->fn", w2c[:, 2, :3], pts) + w2c[:, 2, 3][:, None]
    np.testing.assert_allclose(z.reshape(rec.depth.shape), rec.depth, rtol=1e-5)


@pytest.mark.parametrize("cls", ex.STAGES, ids=lambda c: f"{c.kind}:{c.name}")
def test_config_contract(cls):
    config = cls.config_model.model_validate({"type": cls.name})
    assert cls.config_model.model_validate(config.model_dump(mode="json")) == config
    with pytest.raises(ValidationError):
        cls.config_model.model_validate({"type": cls.name, "no_such_option": 1})
    for name, field in cls.config_model.model_fields.items():
        assert field.description or name == "type", f"{cls.name}.{name} has no description"
    assert cls.kind == "exporter"


def test_exporters_are_registered():
    from monst3r_fw_reference import plugin

    assert "monst3r_fw_reference.export" in plugin._STAGE_MODULES
    names = {c.name for c in ex.STAGES}
    assert names == {"monst3r_layout", "tum", "glb", "ply", "colmap", "nerfstudio", "depth_png16", "mask_png", "summary"}


@pytest.mark.parametrize("cls", ex.STAGES, ids=lambda c: c.name)
def test_every_exporter_lists_exactly_the_files_it_wrote(cls, tmp_path):
    out = tmp_path / cls.name
    out.mkdir()  # the runner creates the folder before calling run
    result = run_exporter(cls, make_inputs(out))
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert list(result.files) == on_disk
    assert len(on_disk) > 0
    assert not list(tmp_path.glob(".*")), "staging folders left behind"


def test_interrupted_export_never_looks_complete(tmp_path, monkeypatch):
    """Atomicity is the runner's (publish_export): an exporter interrupted mid-write leaves the
    previous complete folder and no staging folder."""
    import dataclasses as dc

    from monst3r_framework.runner import EXPORT_MARKER, publish_export

    def export(seed: int) -> None:
        def write(staging):
            return list(run_exporter(ex.Monst3rLayoutExporter, dc.replace(make_inputs(staging, seed=seed), out_dir=staging)).files)
        publish_export(tmp_path, "layout", write, {"key": str(seed)})

    export(0)
    out = tmp_path / "layout"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert EXPORT_MARKER in before

    from monst3r_fw_reference.export import monst3r_layout

    calls = {"n": 0}
    real = monst3r_layout.write_png

    def flaky(path, image):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated interruption")
        real(path, image)

    monkeypatch.setattr(monst3r_layout, "write_png", flaky)
    with pytest.raises(KeyboardInterrupt):
        export(1)
    # the previous complete export is untouched, nothing half-written is visible, no staging left
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["layout"]

    monkeypatch.setattr(monst3r_layout, "write_png", real)
    export(1)
    assert (out / "pred_traj.txt").read_bytes() != before["pred_traj.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["layout"]


def test_shape_mismatch_is_one_clear_error(tmp_path):
    inputs = make_inputs(tmp_path / "x")
    bad = dataclasses.replace(inputs, reconstruction=dataclasses.replace(
        inputs.reconstruction, depth=np.zeros((4, 12, 15), np.float32)))
    with pytest.raises(ShapeError, match=r"reconstruction\.depth: axis W should be 16"):
        run_exporter(ex.TumExporter, bad)
    assert not (tmp_path / "x").exists()


def test_log_confidence_needs_positive_values(tmp_path):
    inputs = make_inputs(tmp_path / "x", with_init=False)
    bad = dataclasses.replace(inputs, reconstruction=dataclasses.replace(
        inputs.reconstruction, conf=np.zeros_like(inputs.reconstruction.conf)))
    with pytest.raises(StageError, match="conf_transform: none"):
        run_exporter(ex.Monst3rLayoutExporter, bad)
    result = run_exporter(ex.Monst3rLayoutExporter, bad, conf_transform="none")
    assert "conf_0.npy" in result.files
    assert json.dumps(list(result.files))  # plain strings
