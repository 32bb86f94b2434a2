"""The ``sea_raft`` flow-estimator stage on a tiny FrameSet (tiny parity checkpoint)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from monst3r_framework.checks import check_record
from monst3r_framework.errors import InputError, StageError
from monst3r_framework.stages import FlowInputs, FrameSet, RunContext
from monst3r_fw_reference import plugin
from monst3r_fw_reference.searaft import load_searaft
from monst3r_fw_reference.searaft.stage import SeaRaftFlow, SeaRaftFlowConfig

try:
    from tests.conftest import shared_path
except ImportError:  # plain `pytest` without the repo root on sys.path
    from conftest import shared_path  # type: ignore[no-redef]

FLOW_RTOL, FLOW_ATOL = 1e-5, 2e-4  # README tolerance for flow_final (px)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fx_dir() -> Path:
    return shared_path("fixtures", "searaft_parity")


@pytest.fixture(scope="module")
def scene(fx_dir):
    """Frames [A.img1[0], A.img2[0], A.img1[1], A.img2[1]] (integer-valued, so uint8 is exact)."""
    with np.load(fx_dir / "forward_A_landscape.npz") as a, np.load(fx_dir / "occlusion_mask.npz") as occ:
        img1, img2, flow_ij, flow_ji = a["img1"], a["img2"], a["flow_final"], occ["A_landscape__flow_ji"]
    frames_chw = np.stack([img1[0], img2[0], img1[1], img2[1]])
    assert np.array_equal(frames_chw, np.round(frames_chw))
    rgb = frames_chw.transpose(0, 2, 3, 1).astype(np.uint8)
    frames = FrameSet(
        rgb=rgb, frame_index=np.arange(4, dtype=np.int64), timestamps=np.arange(4, dtype=np.float64) / 10,
        original_hw=(128, 192), network_from_original=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    )
    pairs = np.array([[0, 1], [2, 3]], dtype=np.int64)
    return frames, pairs, flow_ij, flow_ji


def test_config_contract() -> None:
    cfg = SeaRaftFlowConfig.model_validate({"type": "sea_raft"})
    assert (cfg.checkpoint, cfg.iters, cfg.batch_size, cfg.dtype) == (None, 20, 4, "fp32")
    assert SeaRaftFlowConfig.model_validate(cfg.model_dump(mode="json")) == cfg
    for bad in ({"no_such_option": 1}, {"iters": -1}, {"batch_size": 0}, {"dtype": "fp64"}):
        with pytest.raises(ValidationError):
            SeaRaftFlowConfig.model_validate({"type": "sea_raft", **bad})


def test_registered_by_reference_plugin() -> None:
    assert SeaRaftFlow in plugin.monst3r_fw_stage_classes()
    assert (SeaRaftFlow.kind, SeaRaftFlow.name) == ("flow_estimator", "sea_raft")


def test_run_matches_network_and_fixtures(fx_dir, scene) -> None:
    frames, pairs, flow_ij_ref, flow_ji_ref = scene
    # batch_size 2: the first call is exactly the pairs (0,1), (2,3), like the direct call below.
    stage = SeaRaftFlow(SeaRaftFlowConfig(checkpoint=str(fx_dir / "tiny_searaft_spring-M.pth"), batch_size=2))
    ctx = RunContext(device="cpu")
    result = stage.run(FlowInputs(frames=frames, pairs=pairs), ctx)
    dims = check_record(result, "flow_estimator")
    assert dims == {"P": 2, "H": 128, "W": 192}
    for name in ("flow_ij", "flow_ji", "uncertainty_ij", "uncertainty_ji"):
        assert getattr(result, name).dtype == np.float32
    np.testing.assert_array_equal(result.pairs, pairs)

    model = load_searaft(fx_dir / "tiny_searaft_spring-M.pth")
    rgb = torch.from_numpy(frames.rgb).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        direct = model(rgb[pairs[:, 0]], rgb[pairs[:, 1]], iters=20)
    np.testing.assert_array_equal(result.flow_ij, direct.flow.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(result.uncertainty_ij, direct.uncertainty().numpy())
    # and both directions agree with the official outputs (flow_ji = net(img2, img1)[1])
    np.testing.assert_allclose(result.flow_ij, flow_ij_ref.transpose(0, 2, 3, 1), rtol=FLOW_RTOL, atol=FLOW_ATOL)
    np.testing.assert_allclose(result.flow_ji, flow_ji_ref.transpose(0, 2, 3, 1), rtol=FLOW_RTOL, atol=FLOW_ATOL)
    assert float(result.uncertainty_ij.min()) >= 1.0 - 1e-6


def test_env_checkpoint_and_errors(fx_dir, scene, monkeypatch) -> None:
    frames, _, _, _ = scene
    monkeypatch.setenv("SEARAFT_CHECKPOINT", str(fx_dir / "tiny_searaft_spring-M_module_prefix.pth"))
    stage = SeaRaftFlow(SeaRaftFlowConfig(iters=1))
    ctx = RunContext(device="cpu")
    flow, unc = stage.estimate(frames.rgb[:1], frames.rgb[1:2], ctx)
    assert flow.shape == (1, 128, 192, 2) and unc.shape == (1, 128, 192)
    with pytest.raises(StageError, match="B, H, W, 3"):
        stage.estimate(frames.rgb[:1], frames.rgb[1:3], ctx)
    monkeypatch.delenv("SEARAFT_CHECKPOINT")
    with pytest.raises(InputError, match="Tartan-C-T-TSKH-spring540x960-M.pth"):
        SeaRaftFlow(SeaRaftFlowConfig()).setup(ctx)
