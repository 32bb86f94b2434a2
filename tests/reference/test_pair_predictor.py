"""Pair-predictor stage: cached encoder tokens == per-pair re-encoding, encoder pass counts, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from monst3r_framework.errors import InputError, StageError
from monst3r_framework.scene_graph import make_pairs
from monst3r_framework.stages import FrameSet, PairInputs, RunContext
from monst3r_fw_reference.network import load_model
from monst3r_fw_reference.pair_predictor import (
    STAGES,
    Dust3rPairPredictor,
    MonST3RPairPredictor,
    images_to_network,
)
from tests.conftest import shared_path

H, W, N_FRAMES = 64, 96, 4


@pytest.fixture(scope="module")
def tiny_model():
    torch.set_num_threads(1)
    return load_model(shared_path("fixtures", "monst3r_parity", "tiny_checkpoint.pth"))


@pytest.fixture(scope="module")
def frames() -> FrameSet:
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.stack([
        np.stack([np.sin(xx / 7 + f) * 100 + 120, np.cos(yy / 5 - f) * 90 + 120, (xx + yy + 13 * f) % 255], -1)
        + rng.normal(0, 8, (H, W, 3))
        for f in range(N_FRAMES)
    ]).clip(0, 255).astype(np.uint8)
    return FrameSet(rgb=rgb, frame_index=np.arange(N_FRAMES), timestamps=np.arange(N_FRAMES) / 10.0,
                    original_hw=(H, W), network_from_original=((1, 0, 0), (0, 1, 0), (0, 0, 1)))


def _stage(model, **cfg):
    cls = Dust3rPairPredictor if cfg.get("type") == "dust3r" else MonST3RPairPredictor
    return cls(cls.config_model.model_validate(cfg), model=model)


def _run(stage, frames, pairs, workspace=None):
    ctx = RunContext(device="cpu", workspace=workspace)
    stage.setup(ctx)
    return stage.run(PairInputs(frames=frames, pairs=pairs), ctx)


def test_cached_equals_uncached_and_counts_encoder_passes(tiny_model, frames):
    pairs = make_pairs(N_FRAMES, "complete")
    assert len(pairs) == 12
    cached_stage = _stage(tiny_model, batch_size=5)
    cached = _run(cached_stage, frames, pairs)
    assert cached_stage.encoder_passes == N_FRAMES
    naive_stage = _stage(tiny_model, batch_size=3, cache_encoder=False)
    naive = _run(naive_stage, frames, pairs)
    assert naive_stage.encoder_passes == 2 * len(pairs)
    for key in ("pts3d_i", "pts3d_j", "conf_i", "conf_j"):
        a, b = getattr(cached, key), getattr(naive, key)
        assert a.shape == b.shape and a.dtype == np.float32
        assert np.allclose(a, b, rtol=1e-5, atol=1e-5), f"{key}: max err {np.abs(a - b).max():.3g}"
    assert np.array_equal(cached.pairs, pairs)
    assert (cached.conf_i >= 1).all() and (cached.conf_j >= 1).all()
    # pair 5 equals the official-style forward call on that pair
    i, j = pairs[5]
    shape = torch.tensor([[H, W]])
    view = lambda k: {"img": images_to_network(frames.rgb[[k]], torch.device("cpu")), "true_shape": shape,
                      "instance": [str(k)]}
    with torch.no_grad():
        pred1, pred2 = tiny_model(view(i), view(j))
    assert np.allclose(cached.pts3d_i[5], pred1["pts3d"][0].numpy(), rtol=1e-5, atol=1e-5)
    assert np.allclose(cached.pts3d_j[5], pred2["pts3d_in_other_view"][0].numpy(), rtol=1e-5, atol=1e-5)
    assert np.allclose(cached.conf_j[5], pred2["conf"][0].numpy(), rtol=1e-5, atol=1e-5)


def test_encoder_passes_equal_frames_for_any_graph(tiny_model, frames):
    for graph in ("swin-1-noncyclic", "oneref-mid"):
        pairs = make_pairs(N_FRAMES, graph)
        stage = _stage(tiny_model, type="dust3r", storage_dtype="float16")
        out = _run(stage, frames, pairs)
        assert stage.encoder_passes == len(np.unique(pairs)) == N_FRAMES
        assert out.pts3d_j.dtype == np.float16 and out.pts3d_j.shape == (len(pairs), H, W, 3)


def test_resume_from_workspace_skips_done_pairs(tiny_model, frames, tmp_path):
    from monst3r_framework.stages import PairPredictions
    from monst3r_framework.store import RunStore

    ws = RunStore(tmp_path / "ws.zarr", lock=False).begin("pair_predictor", "k", {}, record=PairPredictions)
    pairs = make_pairs(N_FRAMES, "swin-1-noncyclic")  # (0,1) (1,2) (2,3)
    first = _run(_stage(tiny_model), frames, pairs, ws)
    full = {k: np.asarray(getattr(first, k)[:]) for k in ("pts3d_i", "pts3d_j", "conf_i", "conf_j")}
    assert np.asarray(ws["done"][:]).all()
    # simulate an interruption after the first two pairs
    ws["done"][2] = False
    ws["pts3d_j"][2] = np.zeros((H, W, 3), np.float32)
    stage = _stage(tiny_model)
    second = _run(stage, frames, pairs, ws)
    assert stage.encoder_passes == 2  # only frames 2 and 3 are encoded again
    for key, value in full.items():
        again = np.asarray(getattr(second, key)[:])
        assert np.array_equal(again[:2], value[:2]), key  # kept as stored
        assert np.allclose(again[2], value[2], rtol=1e-5, atol=1e-5), key  # recomputed (other batch shape)


def test_bad_inputs_and_config_contract(tiny_model, frames, monkeypatch):
    with pytest.raises(StageError, match="outside 0..3"):
        _run(_stage(tiny_model), frames, np.array([[0, 4]]))
    for cls in STAGES:
        cfg = cls.config_model.model_validate({"type": cls.name})
        assert cls.config_model.model_validate(cfg.model_dump(mode="json")) == cfg
        assert cfg.checkpoint is None and cfg.batch_size == 0 and cfg.cache_encoder is True
        with pytest.raises(ValidationError):
            cls.config_model.model_validate({"type": cls.name, "no_such_option": 1})
        with pytest.raises(ValidationError):
            cls.config_model.model_validate({"type": cls.name, "dtype": "fp8"})
    monkeypatch.delenv("MONST3R_CHECKPOINT", raising=False)
    with pytest.raises(InputError, match="MONST3R_CHECKPOINT"):
        MonST3RPairPredictor(MonST3RPairPredictor.config_model()).setup(RunContext())
    monkeypatch.delenv("DUST3R_CHECKPOINT", raising=False)
    with pytest.raises(InputError, match="DUST3R_CHECKPOINT.*stages.pair_predictor.checkpoint"):
        Dust3rPairPredictor(Dust3rPairPredictor.config_model()).setup(RunContext())
