"""Checkpoint loading: refused pickles, download hints, key handling, safetensors round trip."""

from __future__ import annotations

import argparse
import builtins

import pytest
import torch

from monst3r_framework.errors import InputError
from monst3r_fw_reference.network import (
    CHECKPOINT_ENV,
    Monst3rNetwork,
    NetworkConfig,
    load_model,
    parse_model_string,
    prepare_state_dict,
    read_checkpoint,
    save_safetensors,
)
from tests.conftest import shared_path

# A network small enough to save and reload in milliseconds (linear head, 2+2 blocks).
MICRO = ("AsymmetricCroCo3DStereo(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(64, 64), "
         "head_type='linear', output_mode='pts3d', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
         "enc_embed_dim=32, enc_depth=2, enc_num_heads=2, dec_embed_dim=32, dec_depth=2, dec_num_heads=2, "
         "freeze='encoder')")


class _RunsCode:
    """Unpickling this calls builtins.exec(code) - what a hostile checkpoint would do."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (builtins.exec, (self.code,))


@pytest.fixture
def micro_model() -> Monst3rNetwork:
    torch.manual_seed(0)
    cfg = NetworkConfig.from_kwargs(parse_model_string(MICRO)).for_inference()
    model = Monst3rNetwork(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm/bias values so swapped tensors would show
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _save_official(path, state, model_string=MICRO, **extra):
    torch.save({"args": argparse.Namespace(model=model_string, lr=1e-4), "model": state, "epoch": 3, **extra}, path)
    return path


def _views(b=2, h=32, w=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    imgs = [torch.rand(b, 3, h, w, generator=g) * 2 - 1 for _ in range(2)]
    shape = torch.tensor([[h, w]] * b, dtype=torch.int32)
    return [{"img": im, "true_shape": shape, "instance": [str(i) for i in range(b)]} for im in imgs]


def test_official_layout_loads_and_matches(tmp_path, micro_model):
    path = _save_official(tmp_path / "ckpt.pth", micro_model.state_dict())
    loaded = load_model(path)
    assert loaded.config.patch_embed_cls == "PatchEmbedDust3R" and loaded.config.landscape_only is False
    v1, v2 = _views()
    with torch.no_grad():
        a1, a2 = micro_model(v1, v2)
        b1, b2 = loaded(v1, v2)
    assert torch.equal(a1["pts3d"], b1["pts3d"]) and torch.equal(a2["conf"], b2["conf"])
    assert not any(p.requires_grad for p in loaded.parameters())


@pytest.mark.parametrize("where", ["top_level", "inside_args"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, micro_model, where):
    marker = tmp_path / "pwned.txt"
    evil = _RunsCode(f"open({str(marker)!r}, 'w').write('code ran')")
    path = tmp_path / "evil.pth"
    if where == "top_level":
        _save_official(path, micro_model.state_dict(), optimizer=evil)
    else:
        torch.save({"args": argparse.Namespace(model=MICRO, hook=evil), "model": micro_model.state_dict()}, path)
    # sanity: the file really is hostile (a plain unpickle would run the payload)
    with pytest.raises(InputError, match=r"refusing to load it: it contains the pickled global (builtins\.)?exec,"):
        load_model(path)
    assert not marker.exists()
    with pytest.raises(InputError, match="only tensors and argparse.Namespace are allowed"):
        read_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # what the official loader does ...
    assert marker.read_text() == "code ran"  # ... and this is why we refuse


def test_model_string_is_parsed_never_evaluated(tmp_path, micro_model):
    marker = tmp_path / "pwned2.txt"
    hostile = f"AsymmetricCroCo3DStereo(enc_depth=__import__('os').system('touch {marker}'))"
    path = _save_official(tmp_path / "hostile_args.pth", micro_model.state_dict(), model_string=hostile)
    with pytest.raises(InputError, match="only literals"):
        load_model(path)
    assert not marker.exists()
    with pytest.raises(InputError, match="model class 'Evil' is not supported"):
        parse_model_string("Evil(a=1)")
    raw = "AsymmetricCroCo3DStereo(pos_embed='RoPE100',\n                 depth_mode=('exp', -inf, inf), img_size=(512, 512))"
    assert parse_model_string(raw) == {"pos_embed": "RoPE100", "depth_mode": ("exp", float("-inf"), float("inf")),
                                       "img_size": (512, 512)}


def test_missing_checkpoint_says_where_to_get_weights(tmp_path, monkeypatch):
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    with pytest.raises(InputError) as info:
        load_model(tmp_path / "nope.pth")
    msg = str(info.value)
    assert "nope.pth" in msg and "Junyi42/MonST3R_PO-TA-S-W_ViTLarge_BaseDecoder_512_dpt" in msg
    assert "--checkpoint" in msg and CHECKPOINT_ENV in msg and "stages.pair_predictor.checkpoint" in msg
    assert "github.com/Junyi42/monst3r" in msg and "\n" not in msg
    with pytest.raises(InputError, match="no network checkpoint configured"):
        load_model(None)


def test_env_var_selects_checkpoint(tmp_path, monkeypatch, micro_model):
    path = _save_official(tmp_path / "env.pth", micro_model.state_dict())
    monkeypatch.setenv(CHECKPOINT_ENV, str(path))
    assert load_model(None).config.enc_embed_dim == 32


def test_dec_blocks2_fallback_from_file(tmp_path, micro_model):
    state = {k: v for k, v in micro_model.state_dict().items() if not k.startswith("dec_blocks2.")}
    loaded = load_model(_save_official(tmp_path / "nodec2.pth", state))
    for name, value in loaded.dec_blocks.state_dict().items():
        assert torch.equal(loaded.dec_blocks2.state_dict()[name], value)
        assert torch.equal(value, micro_model.dec_blocks.state_dict()[name])


def test_missing_and_unexpected_keys_are_listed(micro_model):
    state = dict(micro_model.state_dict())
    for k in [k for k in state if k.startswith("enc_blocks.1.")]:
        del state[k]
    state["extra_head.weight"] = torch.zeros(2)
    state["decoder_embed.weight"] = torch.zeros(5, 5)
    with pytest.raises(InputError) as info:
        prepare_state_dict(state, micro_model, where="checkpoint X")
    msg = str(info.value)
    assert msg.startswith("checkpoint X: weights do not match")
    assert "missing 12 keys" in msg and "enc_blocks.#.attn.qkv.weight" not in msg
    assert "enc_blocks.1.attn.qkv.weight" in msg
    assert "unexpected 1 keys: extra_head.weight" in msg
    assert "decoder_embed.weight (5, 5) vs model (32, 32)" in msg
    # module. prefixes (DDP) are accepted
    ok = prepare_state_dict({f"module.{k}": v for k, v in micro_model.state_dict().items()}, micro_model)
    assert set(ok) == set(micro_model.state_dict())


@pytest.fixture(scope="module")
def tiny():
    return read_checkpoint(shared_path("fixtures", "monst3r_parity", "tiny_checkpoint.pth"))


def test_alias_keys_filled_from_each_other(tiny):
    model = Monst3rNetwork(tiny.config.for_inference())
    for drop in ("layer_rn.", "_rn.weight"):
        state = {k: v for k, v in tiny.state_dict.items()
                 if not (".scratch." in k and drop in k and (drop != "_rn.weight" or "layer_rn" not in k))}
        assert len(state) == len(tiny.state_dict) - 8
        fixed = prepare_state_dict(state, model)
        assert torch.equal(fixed["downstream_head2.dpt.scratch.layer_rn.2.weight"],
                           tiny.state_dict["downstream_head2.dpt.scratch.layer3_rn.weight"])


def test_safetensors_round_trip(tmp_path, micro_model):
    target = save_safetensors(micro_model, tmp_path / "st")
    assert target.name == "model.safetensors" and (target.parent / "config.json").is_file()
    for source in (target.parent, target):
        loaded = load_model(source)
        v1, v2 = _views(seed=3)
        with torch.no_grad():
            a1, a2 = micro_model(v1, v2)
            b1, b2 = loaded(v1, v2)
        assert torch.equal(a1["pts3d"], b1["pts3d"]) and torch.equal(a2["pts3d_in_other_view"], b2["pts3d_in_other_view"])
    (target.parent / "config.json").unlink()
    with pytest.raises(InputError, match="carries no network configuration"):
        load_model(target)
    assert load_model(target, config=MICRO).config.enc_depth == 2


def test_safetensors_of_dpt_model_drops_aliases(tmp_path, tiny):
    from safetensors import safe_open

    model = Monst3rNetwork(tiny.config.for_inference())
    model.load_state_dict(prepare_state_dict(tiny.state_dict, model))
    target = save_safetensors(model, tmp_path / "tiny_st")
    with safe_open(str(target), "pt") as f:
        keys = set(f.keys())
    assert len(keys) == 673 - 8 and not any(".layer_rn." in k for k in keys)
    reloaded = load_model(target.parent).state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(reloaded[k], v), k
