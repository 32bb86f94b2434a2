"""Every stage that runs torch on ``ctx.device``, on CUDA: same outputs as on the CPU (within fp32 noise).

Skipped without a CUDA device (``gpu`` marker). Stages that run torch on the CPU whatever the device
(``flow_static``, ``pnp_mst``, ``flow_triangulation``, ``opencv_dis``, ``monst3r_ga``) are covered
by the CPU suite; ``sam2_refine`` needs the optional ``sam2`` package and a checkpoint.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from monst3r_framework.scene_graph import make_pairs  # noqa: E402
from monst3r_framework.stages import FlowInputs, FrameSet, PairInputs, RunContext  # noqa: E402
from tests.conftest import REPO_ROOT, shared_path  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

H, W, N_FRAMES = 64, 96, 4


@pytest.fixture(scope="module")
def frames() -> FrameSet:
    synth = pytest.importorskip("monst3r_fw_eval.synth")
    return synth.make_scene(n_frames=N_FRAMES, size_hw=(H, W), seed=2, n_objects=1).frameset()


def _run_on(stage_factory, inputs, device: str):
    stage = stage_factory()
    ctx = RunContext(device=device)
    stage.setup(ctx)
    return stage.run(inputs, ctx)


@pytest.mark.parametrize("type_name", ["monst3r", "dust3r"])
def test_pair_predictor_cuda_matches_cpu(frames, type_name):
    from monst3r_fw_reference.pair_predictor import Dust3rPairPredictor, MonST3RPairPredictor

    ckpt = str(shared_path("fixtures", "monst3r_parity", "tiny_checkpoint.pth"))
    cls = Dust3rPairPredictor if type_name == "dust3r" else MonST3RPairPredictor
    inputs = PairInputs(frames=frames, pairs=make_pairs(N_FRAMES, "complete"))

    def make():
        return cls(cls.config_model.model_validate({"type": type_name, "checkpoint": ckpt, "dtype": "fp32"}))

    cpu, gpu = _run_on(make, inputs, "cpu"), _run_on(make, inputs, "cuda")
    for name in ("pts3d_i", "pts3d_j", "conf_i", "conf_j"):
        np.testing.assert_allclose(np.asarray(getattr(gpu, name)), np.asarray(getattr(cpu, name)),
                                   rtol=1e-3, atol=1e-3, err_msg=name)


def test_sea_raft_cuda_matches_cpu():
    from monst3r_fw_reference.searaft.stage import SeaRaftFlow, SeaRaftFlowConfig

    fx = shared_path("fixtures", "searaft_parity")
    with np.load(fx / "forward_A_landscape.npz") as a:
        chw = np.stack([a["img1"][0], a["img2"][0]])
    rgb = chw.transpose(0, 2, 3, 1).astype(np.uint8)
    frames = FrameSet(rgb=rgb, frame_index=np.arange(2), timestamps=np.arange(2) / 10.0, original_hw=rgb.shape[1:3],
                      network_from_original=((1, 0, 0), (0, 1, 0), (0, 0, 1)))
    inputs = FlowInputs(frames=frames, pairs=np.array([[0, 1]], np.int64))

    def make():
        return SeaRaftFlow(SeaRaftFlowConfig(checkpoint=str(fx / "tiny_searaft_spring-M.pth"), batch_size=2))

    cpu, gpu = _run_on(make, inputs, "cpu"), _run_on(make, inputs, "cuda")
    for name in ("flow_ij", "flow_ji"):
        np.testing.assert_allclose(np.asarray(getattr(gpu, name)), np.asarray(getattr(cpu, name)),
                                   rtol=1e-4, atol=2e-3, err_msg=name)


def test_spynet_example_cuda_matches_cpu(frames, monkeypatch):
    example = REPO_ROOT / "docs" / "examples" / "monst3r_fw_spynet"
    monkeypatch.syspath_prepend(str(example))
    from monst3r_fw_spynet.stage import SPyNetConfig, SPyNetFlow

    weights = str(shared_path("data", "spynet", "models"))
    inputs = FlowInputs(frames=frames, pairs=np.array([[0, 1], [1, 2]], np.int64))
    cpu = _run_on(lambda: SPyNetFlow(SPyNetConfig(weights=weights)), inputs, "cpu")
    gpu = _run_on(lambda: SPyNetFlow(SPyNetConfig(weights=weights)), inputs, "cuda")
    np.testing.assert_allclose(np.asarray(gpu.flow_ij), np.asarray(cpu.flow_ij), rtol=1e-3, atol=2e-3)
