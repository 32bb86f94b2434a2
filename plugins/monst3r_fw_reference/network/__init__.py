"""The MonST3R / DUSt3R network (``AsymmetricCroCo3DStereo``) in pure PyTorch, with safe loading.

    >>> from monst3r_fw_reference.network import load_model
    >>> model = load_model("MonST3R_PO-TA-S-W_ViTLarge_BaseDecoder_512_dpt.pth", device="cuda")
    >>> pred1, pred2 = model(view1, view2)   # same call as the official model

See :mod:`.model` for the pieces (``encode``, ``decode_and_head``) used to cache encoder tokens.
"""

from __future__ import annotations

import importlib
from typing import Any

from .env import CHECKPOINT_ENV, DUST3R_CHECKPOINT_ENV

# Attributes load lazily (PEP 562), so that registering the pair predictor does not import torch.
_EXPORTS = {
    "LoadedCheckpoint": "checkpoint", "build_model": "checkpoint", "convert_checkpoint": "checkpoint",
    "load_model": "checkpoint", "prepare_state_dict": "checkpoint", "read_checkpoint": "checkpoint",
    "resolve_checkpoint": "checkpoint", "save_safetensors": "checkpoint",
    "NetworkConfig": "config", "config_from_model_string": "config", "parse_model_string": "config",
    "RoPE2D": "layers", "rope_angle_table": "layers",
    "AsymmetricCroCo3DStereo": "model", "Monst3rNetwork": "model",
}
__all__ = sorted([*_EXPORTS, "CHECKPOINT_ENV", "DUST3R_CHECKPOINT_ENV"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
