"""Safe checkpoint loading for DUSt3R-family networks.

Accepted inputs:

* the official ``.pth`` layout ``{'args': argparse.Namespace(model='AsymmetricCroCo3DStereo(...)', ...),
  'model': state_dict, ...}`` (zip, stored or DEFLATE), read with ``torch.load(weights_only=True)``
  with only ``argparse.Namespace`` allow-listed. Any other pickled global makes the load fail
  *before* anything runs (the official loader would execute it), and the error says so;
* a bare state dict ``.pth`` plus a JSON config;
* ``model.safetensors`` plus ``config.json`` (the Hugging Face layout: constructor keywords), or a
  folder holding them, or a ``.safetensors`` file whose metadata holds the model string.

Key handling: a leading ``module.`` is stripped, alias keys (``dpt.scratch.layer_rn.{0..3}`` vs
``layer{1..4}_rn``) are filled from each other, ``dec_blocks2.*`` is copied from ``dec_blocks.*``
when absent (as the official ``load_state_dict`` does), then the key set must match exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor

from monst3r_framework.errors import InputError

from .config import NetworkConfig, config_from_model_string
from .env import CHECKPOINT_ENV, DUST3R_CHECKPOINT_ENV
from .model import Monst3rNetwork

OFFICIAL_REPO = "https://github.com/Junyi42/monst3r"
OFFICIAL_HF = "Junyi42/MonST3R_PO-TA-S-W_ViTLarge_BaseDecoder_512_dpt"
DUST3R_REPO = "https://github.com/naver/dust3r"
DUST3R_HF = "naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt"

PathLike = Union[str, "os.PathLike[str]"]


def weights_hint(env_var: str = CHECKPOINT_ENV) -> str:
    if env_var == DUST3R_CHECKPOINT_ENV:
        what = (f"the official DUSt3R weights (e.g. DUSt3R_ViTLarge_BaseDecoder_512_dpt.pth, see the README of "
                f"{DUST3R_REPO}, or Hugging Face {DUST3R_HF})")
    else:
        what = (f"the official weights (MonST3R_PO-TA-S-W_ViTLarge_BaseDecoder_512_dpt.pth, see the README of "
                f"{OFFICIAL_REPO}, or Hugging Face {OFFICIAL_HF})")
    return (
        f"download {what} and point to the file with --checkpoint, the {env_var} environment variable, "
        "or the recipe key stages.pair_predictor.checkpoint"
    )


def resolve_checkpoint(path: Optional[PathLike], env_var: str = CHECKPOINT_ENV) -> Path:
    """The checkpoint path to use: ``path``, else ``$env_var``; raises InputError with download hints."""
    source = "the given checkpoint path"
    if path is None or str(path) == "":
        path = os.environ.get(env_var) or None
        source = f"${env_var}"
        if path is None:
            raise InputError(f"no network checkpoint configured; {weights_hint(env_var)}")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise InputError(f"checkpoint not found: {resolved} (from {source}); {weights_hint(env_var)}")
    return resolved


@dataclass
class LoadedCheckpoint:
    """What a checkpoint file holds.

    state_dict: parameter name -> tensor (CPU), as stored.
    config: the network configuration as written in the file (None when the file has none).
    model_string: the raw ``args.model`` string, when present.
    extra: other top-level entries that are plain values (``epoch``, ``best_so_far``).
    """

    state_dict: dict[str, Tensor]
    config: Optional[NetworkConfig]
    model_string: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _torch_load_safely(path: Path) -> Any:
    from ..safe_load import load_weights_only

    return load_weights_only(path, allowed=[argparse.Namespace], what="checkpoint", hint=weights_hint())


def _config_from_json(data: Mapping[str, Any], where: str) -> NetworkConfig:
    if "model" in data and isinstance(data["model"], str):
        return config_from_model_string(data["model"], where=where)
    return NetworkConfig.from_kwargs(dict(data), where=where)


def read_config_json(path: PathLike) -> NetworkConfig:
    """JSON config: constructor keywords (Hugging Face ``config.json``) or ``{"model": "<string>"}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"network config {path}: cannot read JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"network config {path}: expected a JSON object of network arguments")
    return _config_from_json(data, str(path))


def _sidecar_json(path: Path) -> Optional[Path]:
    for candidate in (path.with_suffix(".json"), path.parent / "config.json"):
        if candidate.is_file():
            return candidate
    return None


def read_checkpoint(path: PathLike) -> LoadedCheckpoint:
    """Read weights and configuration from a ``.pth``/``.safetensors`` file or a folder holding one.

    Raises:
        InputError: unreadable file, disallowed pickled object, or no usable state dict.
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / "model.safetensors"] + sorted(path.glob("*.safetensors")) + sorted(path.glob("*.pth"))
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise InputError(f"checkpoint folder {path}: no model.safetensors or *.pth inside")
        path = found

    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                state = {k: handle.get_tensor(k) for k in handle.keys()}
        except Exception as exc:  # safetensors raises its own error types
            raise InputError(f"checkpoint {path}: cannot read safetensors ({exc})") from exc
        config = None
        model_string = metadata.get("model")
        if model_string:
            config = config_from_model_string(model_string, where=f"{path} metadata 'model'")
        elif "config" in metadata:
            config = _config_from_json(json.loads(metadata["config"]), f"{path} metadata 'config'")
        else:
            sidecar = _sidecar_json(path)
            if sidecar is not None:
                config = read_config_json(sidecar)
        return LoadedCheckpoint(state_dict=state, config=config, model_string=model_string)

    obj = _torch_load_safely(path)
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        state = dict(obj["model"])
        args = obj.get("args")
        model_string = getattr(args, "model", None) if args is not None else None
        if model_string is None and isinstance(args, Mapping):
            model_string = args.get("model")
        config = config_from_model_string(model_string, where=f"{path} args.model") if model_string else None
        extra = {k: v for k, v in obj.items() if k not in ("model", "args") and isinstance(v, (int, float, str))}
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        state, model_string, extra = dict(obj), None, {}
        sidecar = _sidecar_json(path)
        config = read_config_json(sidecar) if sidecar is not None else None
    else:
        raise InputError(
            f"checkpoint {path}: expected {{'args': Namespace(model=...), 'model': state_dict}} or a plain "
            f"state dict, got {type(obj).__name__}"
        )
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise InputError(f"checkpoint {path}: state dict entries that are not tensors: {bad[:5]}")
    return LoadedCheckpoint(state_dict=state, config=config, model_string=model_string, extra=extra)


# --------------------------------------------------------------------------------------------
# Key handling
# --------------------------------------------------------------------------------------------

_ALIAS = re.compile(r"^(downstream_head[12]\.dpt\.scratch\.)(?:layer_rn\.(\d)|layer(\d)_rn)\.weight$")


def _alias_of(key: str) -> Optional[str]:
    m = _ALIAS.match(key)
    if not m:
        return None
    prefix, rn_idx, named_idx = m.groups()
    if rn_idx is not None:
        return f"{prefix}layer{int(rn_idx) + 1}_rn.weight"
    return f"{prefix}layer_rn.{int(named_idx) - 1}.weight"


def summarize_keys(keys: list[str], limit: int = 8) -> str:
    """Readable key list: numeric path parts folded (``dec_blocks.{0..9}.norm1.weight``), then truncated."""
    groups: dict[str, list[str]] = {}
    for key in sorted(keys):
        parts = key.split(".")
        pattern = ".".join("#" if p.isdigit() else p for p in parts)
        groups.setdefault(pattern, []).append(key)
    items = []
    for pattern, members in groups.items():
        if len(members) == 1:
            items.append(members[0])
        else:
            items.append(f"{pattern} (x{len(members)})")
    shown = ", ".join(items[:limit])
    more = f", ... (+{len(items) - limit} more patterns)" if len(items) > limit else ""
    return f"{len(keys)} keys: {shown}{more}"


def prepare_state_dict(state_dict: Mapping[str, Tensor], model: torch.nn.Module, *, where: str = "checkpoint"
                       ) -> dict[str, Tensor]:
    """Normalise a checkpoint's keys to ``model``'s and check them strictly.

    Steps: strip ``module.``; fill alias keys from each other; copy ``dec_blocks.*`` to
    ``dec_blocks2.*`` when the checkpoint has no ``dec_blocks2`` key; then require the exact key set
    and shapes of ``model.state_dict()``.

    Raises:
        InputError: naming the missing, unexpected and mis-shaped keys (folded and truncated).
    """
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    for key in list(state):
        alias = _alias_of(key)
        if alias is not None and alias not in state:
            state[alias] = state[key]
    if not any(k.startswith("dec_blocks2.") for k in state):
        for key in [k for k in state if k.startswith("dec_blocks.")]:
            state["dec_blocks2." + key[len("dec_blocks."):]] = state[key]

    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or mis_shaped:
        parts = []
        if missing:
            parts.append(f"missing {summarize_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected {summarize_keys(unexpected)}")
        if mis_shaped:
            parts.append(f"shape mismatch in {len(mis_shaped)} keys: " + "; ".join(mis_shaped[:4]))
        raise InputError(
            f"{where}: weights do not match the network built from its config ({' | '.join(parts)}); "
            "check that the checkpoint and its config (args.model / config.json) belong together"
        )
    return state


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def build_model(config: NetworkConfig) -> Monst3rNetwork:
    """A randomly initialised network for ``config`` (benchmarks, tests)."""
    return Monst3rNetwork(config)


def load_model(path: Optional[PathLike] = None, device: Union[str, torch.device] = "cpu", *,
               config: Optional[Union[NetworkConfig, Mapping[str, Any], str]] = None, inference: bool = True,
               env_var: str = CHECKPOINT_ENV) -> Monst3rNetwork:
    """Load a DUSt3R-family network from a checkpoint, safely.

    Args:
        path: ``.pth`` / ``.safetensors`` file or folder; None -> ``$MONST3R_CHECKPOINT``.
        device: where to put the network.
        config: explicit configuration (a :class:`NetworkConfig`, constructor keywords, or a model
            string) overriding the one in the file.
        inference: apply the official ``load_model`` rewrite (``ManyAR_PatchEmbed`` ->
            ``PatchEmbedDust3R``, ``landscape_only=False``). False keeps the training layout.
        env_var: environment variable consulted when ``path`` is None.

    Returns:
        The network in eval mode with gradients disabled, on ``device``.

    Raises:
        InputError: missing file (with download hints), refused pickle, missing config, key mismatch.
    """
    resolved = resolve_checkpoint(path, env_var)
    loaded = read_checkpoint(resolved)
    if config is None:
        cfg = loaded.config
    elif isinstance(config, NetworkConfig):
        cfg = config.validate()
    elif isinstance(config, str):
        cfg = config_from_model_string(config, where="explicit model string")
    else:
        cfg = NetworkConfig.from_kwargs(dict(config), where="explicit network config")
    if cfg is None:
        raise InputError(
            f"checkpoint {resolved}: it carries no network configuration (no args.model); put a config.json "
            "(constructor keywords or {\"model\": \"AsymmetricCroCo3DStereo(...)\"}) beside it or pass config="
        )
    if inference:
        cfg = cfg.for_inference()
    model = Monst3rNetwork(cfg)
    state = prepare_state_dict(loaded.state_dict, model, where=f"checkpoint {resolved}")
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    return model.to(device)


def save_safetensors(model: Monst3rNetwork, out_dir: PathLike) -> Path:
    """Write ``model.safetensors`` (alias keys dropped) and ``config.json`` into ``out_dir``.

    Returns:
        Path of the written ``model.safetensors``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
             if not re.search(r"\.scratch\.layer_rn\.\d\.weight$", k)}
    target = out / "model.safetensors"
    save_file(state, str(target))
    cfg = model.config.to_dict()
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    return target


def convert_checkpoint(src: PathLike, out_dir: PathLike) -> Path:
    """Convert an official ``.pth`` (read safely) to ``model.safetensors`` + ``config.json``."""
    model = load_model(src, "cpu", inference=False)
    return save_safetensors(model, out_dir)
