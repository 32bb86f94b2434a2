"""Parity of the pure-PyTorch MonST3R network with the official implementation.

Golden data: ``../shared/fixtures/monst3r_parity`` (made by calling the official MonST3R/CroCo code
on a tiny checkpoint of the same class). Every file's sha256 is checked against MANIFEST.json
before it is used. Tolerances are the fixture README's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from monst3r_fw_reference.network import (
    Monst3rNetwork,
    NetworkConfig,
    RoPE2D,
    config_from_model_string,
    load_model,
    prepare_state_dict,
    read_checkpoint,
    rope_angle_table,
)
from tests.conftest import shared_path

TOK = dict(rtol=1e-4, atol=1e-5)   # tokens, RoPE, conf
PTS = dict(rtol=1e-4, atol=1e-4)   # pointmaps
BATCHES = ("landscape", "portrait", "oddgrid")


def _dir() -> Path:
    return shared_path("fixtures", "monst3r_parity")


@lru_cache(maxsize=None)
def _verified(name: str) -> Path:
    """Path of a fixture file after checking its size and sha256 against MANIFEST.json."""
    folder = _dir()
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    entry = manifest[name]
    path = folder / name
    data = path.read_bytes()
    assert len(data) == entry["bytes"], f"{name}: size {len(data)} != manifest {entry['bytes']}"
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{name}: sha256 differs from MANIFEST.json"
    return path


def _npz(name: str) -> dict[str, np.ndarray]:
    with np.load(_verified(name)) as data:
        return {k: data[k] for k in data.files}


def _maxerr(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.abs(a.detach().double().numpy() - b.astype(np.float64)).max())


def _close(name: str, ours: torch.Tensor, ref: np.ndarray, tol: dict) -> None:
    assert tuple(ours.shape) == ref.shape, f"{name}: shape {tuple(ours.shape)} != {ref.shape}"
    a = ours.detach().numpy()
    assert np.allclose(a, ref, **tol), f"{name}: max abs error {_maxerr(ours, ref):.3g} (tol {tol})"


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_manifest_sha256_first():
    manifest = json.loads((_dir() / "MANIFEST.json").read_text())
    assert "tiny_checkpoint.pth" in manifest and len(manifest) >= 12
    for name in manifest:
        _verified(name)


@pytest.fixture(scope="module")
def model() -> Monst3rNetwork:
    return load_model(_verified("tiny_checkpoint.pth"), "cpu")


@lru_cache(maxsize=None)
def _tiny_checkpoint():
    return read_checkpoint(_verified("tiny_checkpoint.pth"))


def _tiny_model(config: NetworkConfig) -> Monst3rNetwork:
    net = Monst3rNetwork(config)
    net.load_state_dict(prepare_state_dict(_tiny_checkpoint().state_dict, net), strict=True)
    return net.eval()


@pytest.fixture(scope="module")
def manyar_model() -> Monst3rNetwork:
    """Training-path layout (ManyAR patch embed, landscape-only head wrapper), same weights."""
    return _tiny_model(_tiny_checkpoint().config)


def _views(d: dict[str, np.ndarray], dtype=torch.float32):
    out = []
    for v in (1, 2):
        b = d[f"view{v}_img"].shape[0]
        out.append({
            "img": torch.from_numpy(d[f"view{v}_img"]).to(dtype),
            "true_shape": torch.from_numpy(d[f"view{v}_true_shape"]),
            "instance": [f"{v}{i}" for i in range(b)],
        })
    return out


def _check_intermediates(model: Monst3rNetwork, d: dict[str, np.ndarray]):
    v1, v2 = _views(d)
    with torch.no_grad():
        feat1, feat2, pos1, pos2 = model.encode_pair(v1["img"], v2["img"], v1["true_shape"], v2["true_shape"])
        _close("enc_tokens_view1", feat1, d["enc_tokens_view1"], TOK)
        _close("enc_tokens_view2", feat2, d["enc_tokens_view2"], TOK)
        assert torch.equal(pos1, torch.from_numpy(d["enc_pos_view1"]))
        assert torch.equal(pos2, torch.from_numpy(d["enc_pos_view2"]))
        dec1, dec2 = model.decode(feat1, pos1, feat2, pos2)
        assert len(dec1) == 1 + model.config.dec_depth
        for layer in range(model.config.dec_depth):
            _close(f"dec view1 layer {layer + 1}", dec1[layer + 1], d["dec_tokens_view1_all"][layer], TOK)
            _close(f"dec view2 layer {layer + 1}", dec2[layer + 1], d["dec_tokens_view2_all"][layer], TOK)
        _close("dec_final_tokens_view1", dec1[-1], d["dec_final_tokens_view1"], TOK)
        _close("dec_final_tokens_view2", dec2[-1], d["dec_final_tokens_view2"], TOK)
    return dec1, dec2


def _check_preds(pred1, pred2, d):
    _close("pred1_pts3d", pred1["pts3d"], d["pred1_pts3d"], PTS)
    _close("pred1_conf", pred1["conf"], d["pred1_conf"], TOK)
    _close("pred2_pts3d_in_other_view", pred2["pts3d_in_other_view"], d["pred2_pts3d_in_other_view"], PTS)
    _close("pred2_conf", pred2["conf"], d["pred2_conf"], TOK)


@pytest.mark.parametrize("batch", BATCHES)
def test_inference_batches(model, batch):
    d = _npz(f"tiny_forward_{batch}.npz")
    dec1, dec2 = _check_intermediates(model, d)
    hw = tuple(int(x) for x in d["view1_true_shape"][0])
    with torch.no_grad():
        _close("head1_raw_output", model.head_raw(1, dec1, hw), d["head1_raw_output"], PTS)
        _close("head2_raw_output", model.head_raw(2, dec2, hw), d["head2_raw_output"], PTS)
        # the per-frame part of the heads, precomputed from the encoder tokens, gives the same output
        skip1 = model.head_encoder_skip(1, dec1[0], hw)
        _close("head1 with cached skip", model.downstream_head1.raw(dec1, hw, skip1), d["head1_raw_output"], PTS)
        v1, v2 = _views(d)
        pred1, pred2 = model(v1, v2)
    _check_preds(pred1, pred2, d)
    assert set(pred1) == {"pts3d", "conf"} and set(pred2) == {"pts3d_in_other_view", "conf"}


def test_mixed_manyar_batch(manyar_model, model):
    d = _npz("tiny_forward_mixed_manyar.npz")
    assert manyar_model.config.patch_embed_cls == "ManyAR_PatchEmbed" and manyar_model.config.landscape_only
    dec1, dec2 = _check_intermediates(manyar_model, d)
    with torch.no_grad():
        for head, dec in ((1, dec1), (2, dec2)):
            call0 = manyar_model.head_raw(head, [t[0:1] for t in dec], (64, 96))
            call1 = manyar_model.head_raw(head, [t[1:2] for t in dec], (96, 64))
            _close(f"head{head}_raw_output_call0", call0, d[f"head{head}_raw_output_call0"], PTS)
            _close(f"head{head}_raw_output_call1", call1, d[f"head{head}_raw_output_call1"], PTS)
        v1, v2 = _views(d)
        pred1, pred2 = manyar_model(v1, v2)
        _check_preds(pred1, pred2, d)
        # portrait pair, transposed back, equals the inference path on batch B
        b = _npz("tiny_forward_portrait.npz")
        bv1, bv2 = _views(b)
        ref1, ref2 = model(bv1, bv2)
    assert torch.allclose(pred1["pts3d"][1].transpose(0, 1), ref1["pts3d"][0], rtol=1e-5, atol=1e-5)
    assert torch.allclose(pred2["pts3d_in_other_view"][1].transpose(0, 1), ref2["pts3d_in_other_view"][0],
                          rtol=1e-5, atol=1e-5)


def test_float64_matches_f64_reference():
    model = _tiny_model(_tiny_checkpoint().config.for_inference()).double()
    d = _npz("tiny_forward_landscape.npz")
    v1, v2 = _views(d, torch.float64)
    with torch.no_grad():
        pred1, pred2 = model(v1, v2)
    ours = {"pred1_pts3d": pred1["pts3d"], "pred1_conf": pred1["conf"],
            "pred2_pts3d_in_other_view": pred2["pts3d_in_other_view"], "pred2_conf": pred2["conf"]}
    for key, value in ours.items():
        ref = d[f"f64ref_{key}"]
        assert value.dtype == torch.float64 and ref.dtype == np.float64
        assert np.allclose(value.numpy(), ref, rtol=1e-9, atol=0), f"{key}: max abs err {_maxerr(value, ref):.3g}"


def test_rope_against_official():
    d = _npz("rope_check.npz")
    base = float(d["freq"])
    assert base == 100.0
    cos, sin = rope_angle_table(8, 13, base)
    _close("cos_table", cos, d["cos_table_D8_len13"], dict(rtol=0, atol=1e-7))
    _close("sin_table", sin, d["sin_table_D8_len13"], dict(rtol=0, atol=1e-7))
    rope = RoPE2D(base)
    for dim in (16, 32):
        out = rope(torch.from_numpy(d[f"tokens_d{dim}"]), torch.from_numpy(d[f"positions_d{dim}"]))
        _close(f"rope d{dim}", out, d[f"out_d{dim}"], TOK)
    # the angle table is built in float32 even for float64 tokens (needed for the f64 reference)
    cos64, _ = rope_angle_table(8, 13, base, torch.float64)
    assert cos64.dtype == torch.float64
    angles32 = torch.arange(13).float()[:, None] * (1.0 / (base ** (torch.arange(0, 8, 2).float() / 8)))
    assert torch.equal(cos64[:, :4], angles32.double().cos())
    angles64 = torch.arange(13).double()[:, None] * (1.0 / (base ** (torch.arange(0, 8, 2).double() / 8)))
    assert not torch.equal(cos64[:, :4], angles64.cos())  # float64 angles would miss the f64 reference


# --------------------------------------------------------------------------------------------
# checkpoint_load_report.json behaviours
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report() -> dict:
    return json.loads(_verified("checkpoint_load_report.json").read_text())


def test_plain_weights_only_refuses_namespace_but_ours_loads(report):
    path = _verified("tiny_checkpoint.pth")
    assert report["weights_only_true_without_allowlist"].startswith("fails")
    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):
        torch.load(path, map_location="cpu", weights_only=True)
    loaded = read_checkpoint(path)  # allow-lists exactly argparse.Namespace
    assert loaded.model_string == report["args_model"]
    assert set(loaded.extra) | {"args", "model"} == set(report["top_level_keys"])
    assert loaded.extra["epoch"] == 50 and loaded.extra["best_so_far"] == pytest.approx(0.125)
    assert report["type_of_args"] == "argparse.Namespace"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == report["sha256"]


def test_instantiation_string_and_strict_reload(report):
    tiny = json.loads(_verified("tiny_config.json").read_text())
    loaded = _tiny_checkpoint()
    instantiated = report["official_load_model_stdout"][1].split("instantiating : ", 1)[1]
    assert instantiated == tiny["args_model_as_instantiated_by_load_model"]
    assert loaded.config.for_inference() == config_from_model_string(instantiated)
    assert loaded.config.patch_embed_cls == "ManyAR_PatchEmbed"
    model = Monst3rNetwork(loaded.config.for_inference())
    # strict: "All keys matched" -> nothing missing or unexpected, exact key set
    assert report["official_load_model_strict_reload"].startswith("<All keys matched")
    state = prepare_state_dict(loaded.state_dict, model)
    assert set(state) == set(model.state_dict()) == set(loaded.state_dict)
    assert len(state) == tiny["n_keys"] == 673
    unique = {p.data_ptr(): p.numel() for p in model.parameters()}
    assert sum(unique.values()) == tiny["parameter_count_unique"]
    table = {e["key"]: e for e in tiny["keys"]}
    for key, value in model.state_dict().items():
        assert list(value.shape) == table[key]["shape"], key


def test_dec_blocks2_fallback(report):
    assert "copied from dec_blocks: True" in report["official_load_state_dict_without_dec_blocks2"]
    loaded = _tiny_checkpoint()
    without = {k: v for k, v in loaded.state_dict.items() if not k.startswith("dec_blocks2.")}
    model = Monst3rNetwork(loaded.config.for_inference())
    model.load_state_dict(prepare_state_dict(without, model), strict=True)
    for (k1, v1), (k2, v2) in zip(model.dec_blocks.state_dict().items(), model.dec_blocks2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    # the stored dec_blocks2 differs from dec_blocks (biases, LayerNorms), so the copy is observable
    assert not torch.equal(model.dec_blocks2[0].norm1.weight, loaded.state_dict["dec_blocks2.0.norm1.weight"])


def test_full_size_key_table_on_meta_device():
    full = json.loads(_verified("full_config_state_dict.json").read_text())
    raw = config_from_model_string(full["args_model_training_default_raw"])
    assert raw == config_from_model_string(full["args_model_training_default"])
    cfg = raw.for_inference()
    assert cfg == config_from_model_string(full["args_model_as_instantiated_by_load_model"])
    with torch.device("meta"):
        model = Monst3rNetwork(cfg)
    sd = model.state_dict()
    table = {e["key"]: e for e in full["keys"]}
    assert len(sd) == full["n_keys"] == 1009
    assert set(sd) == set(table)
    for key, value in sd.items():
        assert list(value.shape) == table[key]["shape"], key
    unique = {id(p): p.numel() for p in model.parameters()}
    assert sum(unique.values()) == full["parameter_count_unique"] == 571_171_208
    aliases = [k for k, e in table.items() if e["alias_of"]]
    assert len(aliases) == full["n_alias_keys"] == 8
    for key in aliases:  # one module under two names, as in the official network
        alias_module = model.get_submodule(key.rsplit(".", 1)[0])
        assert alias_module is model.get_submodule(table[key]["alias_of"].rsplit(".", 1)[0])
