"""The MonST3R / DUSt3R network (``AsymmetricCroCo3DStereo``) in pure PyTorch, with safe loading.

    >>> from monst3r_fw_reference.network import load_model
    >>> model = load_model("MonST3R_PO-TA-S-W_ViTLarge_BaseDecoder_512_dpt.pth", device="cuda")
    >>> pred1, pred2 = model(view1, view2)   # same call as the official model

See :mod:`.model` for the pieces (``encode``, ``decode_and_head``) used to cache encoder tokens.
"""

from __future__ import annotations

from .checkpoint import (
    CHECKPOINT_ENV,
    LoadedCheckpoint,
    build_model,
    convert_checkpoint,
    load_model,
    prepare_state_dict,
    read_checkpoint,
    resolve_checkpoint,
    save_safetensors,
)
from .config import NetworkConfig, config_from_model_string, parse_model_string
from .layers import RoPE2D, rope_angle_table
from .model import AsymmetricCroCo3DStereo, Monst3rNetwork

__all__ = [
    "AsymmetricCroCo3DStereo", "CHECKPOINT_ENV", "LoadedCheckpoint", "Monst3rNetwork", "NetworkConfig", "RoPE2D",
    "build_model", "config_from_model_string", "convert_checkpoint", "load_model", "parse_model_string",
    "prepare_state_dict", "read_checkpoint", "resolve_checkpoint", "rope_angle_table", "save_safetensors",
]
